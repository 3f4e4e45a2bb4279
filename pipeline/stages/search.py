"""Stage 2: the user's question → ranked, de-duplicated documents from the chosen sources."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import zip_longest
from typing import TYPE_CHECKING

import msgspec

from contracts import Document
from pipeline.errors import PermanentError
from pipeline.middleware import STAGE_START
from pipeline.sources.base import Source
from pipeline.text import normalise_key

if TYPE_CHECKING:
    from pipeline.runtime import Pipeline

_START, _END = STAGE_START["search"], STAGE_START["extraction"]


def run(
    query: str,
    sources: Sequence[Source],
    limit: int,
    on_progress: Callable[[int, int, int], None] = lambda done, total, found: None,
) -> list[Document]:
    """Documents from every source, interleaved by rank, duplicates (same DOI or title) dropped.

    ``on_progress(sources_done, sources, documents_found)`` is called after each source.
    """
    per_source: list[list[Document]] = []
    for source in sources:
        per_source.append(source.search(query, limit))
        on_progress(len(per_source), len(sources), sum(map(len, per_source)))
    documents: list[Document] = []
    seen: set[str] = set()
    for batch in zip_longest(*per_source):
        for document in batch:
            if document is None:
                continue
            identity = {normalise_key(document.title)} | ({document.doi.lower()} if document.doi else set())
            if identity & seen:
                continue
            seen |= identity
            documents.append(msgspec.structs.replace(document, rank=len(documents) + 1))
            if len(documents) == limit:
                return documents
    return documents


def process(pipeline: Pipeline, task_id: str) -> None:
    """Actor body: search, store the documents, hand off to extraction."""
    request = pipeline.job(task_id).request
    names = request.sources or [n for n in pipeline.settings.sources if n in pipeline.sources]
    unknown = [n for n in names if n not in pipeline.sources]
    if unknown or not names:
        raise PermanentError(f"no usable source among {names} (available: {', '.join(pipeline.sources)})")
    limit = min(request.rows * pipeline.settings.docs_per_row, pipeline.settings.max_documents)

    def progress(done: int, total: int, found: int) -> None:
        pipeline.report(
            task_id,
            progress=_START + (_END - _START) * done // total,
            message=f"Searched {done}/{total} sources: {found} documents",
            data={"sources_done": done, "sources_total": total, "documents": found},
        )

    documents = run(request.user_query, [pipeline.sources[n] for n in names], limit, progress)
    pipeline.store.put_output(task_id, "documents", documents)
    pipeline.hand_off(
        task_id,
        "extraction",
        progress=_END,
        message=f"Found {len(documents)} documents",
        data={"documents": len(documents), "sources": ",".join(names)},
    )
