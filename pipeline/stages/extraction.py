"""Stage 3: documents → candidate rows, each value backed by a verbatim quote."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from contracts import CandidateRow, Document, PreparedSchema
from pipeline.extractors.base import Extractor
from pipeline.middleware import STAGE_START

if TYPE_CHECKING:
    from pipeline.runtime import Pipeline

_START, _END = STAGE_START["extraction"], STAGE_START["assembly"]


def run(
    query: str,
    schema: PreparedSchema,
    documents: list[Document],
    extractor: Extractor,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[CandidateRow]:
    """Candidate rows of every document, calling ``on_progress`` at each tenth of the work."""
    rows: list[CandidateRow] = []
    step = max(1, len(documents) // 10)
    for done, document in enumerate(documents, start=1):
        rows.extend(extractor.extract(query, schema, document))
        if done % step == 0 or done == len(documents):
            on_progress(done, len(documents))
    return rows


def choose_extractor(pipeline: Pipeline, requested: str | None) -> Extractor:
    """The extractor a job asked for, or the configured default (``auto`` → the best available)."""
    name = requested or pipeline.settings.extractor
    if name == "auto":
        name = "openai" if "openai" in pipeline.extractors else "heuristic"
    return pipeline.extractors[name]


def process(pipeline: Pipeline, task_id: str) -> None:
    """Actor body: extract from every document, store candidates, hand off to assembly."""
    job = pipeline.job(task_id)
    schema = pipeline.input(task_id, "schema", PreparedSchema)
    documents = pipeline.input(task_id, "documents", list[Document])
    extractor = choose_extractor(pipeline, job.request.extractor)

    def progress(done: int, total: int) -> None:
        pipeline.report(
            task_id,
            progress=_START + (_END - _START) * done // max(total, 1),
            message=f"Extracted {done}/{total} documents",
            data={"documents_done": done, "documents": total, "extractor": extractor.name},
        )

    rows = run(job.request.user_query, schema, documents, extractor, progress)
    pipeline.store.put_output(task_id, "candidates", rows)
    pipeline.hand_off(
        task_id,
        "assembly",
        progress=_END,
        message=f"Extracted {len(rows)} candidate rows from {len(documents)} documents",
        data={"candidate_rows": len(rows), "extractor": extractor.name},
    )
