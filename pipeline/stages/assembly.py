"""Stage 4: candidate rows → the dataset: drop incomplete rows, merge duplicates, rank, cut, validate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from contracts import (
    CandidateRow,
    Citation,
    Dataset,
    DatasetRow,
    DatasetStats,
    Document,
    ExtractionStats,
    FieldValue,
    GenerateRequest,
    PreparedSchema,
)
from pipeline.extractors.heuristic import make_identifier
from pipeline.schema import row_type_for
from pipeline.text import normalise_key

if TYPE_CHECKING:
    from pipeline.runtime import Pipeline


class _Group:
    """Candidate rows found to describe the same thing."""

    def __init__(self, first: CandidateRow) -> None:
        self.members = [first]

    @property
    def support(self) -> int:
        return len({m.source_id for m in self.members})

    @property
    def best_rank(self) -> int:
        return min(m.rank for m in self.members)


def run(
    task_id: str,
    request: GenerateRequest,
    schema: PreparedSchema,
    candidates: list[CandidateRow],
    *,
    documents: int = 0,
    sources: list[str] | None = None,
    extraction: ExtractionStats | None = None,
) -> Dataset:
    """Merge, rank and cut candidate rows to the requested count; never pad."""
    generated = set(schema.identifier_fields) if schema.key_field else set()  # made from the key below
    required = [f.name for f in schema.fields if f.required and f.name not in generated]
    complete = [c for c in candidates if all(c.values.get(name) is not None for name in required)]
    groups: dict[str, _Group] = {}
    for candidate in sorted(complete, key=lambda c: c.rank):
        key = _merge_key(schema, candidate)
        if key in groups:
            groups[key].members.append(candidate)
        else:
            groups[key] = _Group(candidate)
    ranked = sorted(
        groups.values(), key=lambda g: (-g.support, -_completeness(schema, _merged_values(schema, g)), g.best_rank)
    )
    row_type = row_type_for(schema.model_name, tuple(schema.fields))
    rows = []
    for group in ranked[: request.rows]:
        values = _merged_values(schema, group)
        msgspec.convert(values, row_type, strict=False)  # every row fits the schema, or assembly fails loudly
        flags = {name: why for m in reversed(group.members) for name, why in m.flags.items() if values[name] is None}
        rows.append(DatasetRow(row=values, citations=_merged_citations(group), flags=flags))
    shortfall = None
    if len(rows) < request.rows:
        shortfall = (
            f"only {len(rows)} of {request.rows} requested rows are supported by the literature found "
            f"({len(candidates)} candidate rows from {documents} documents, {len(candidates) - len(complete)} "
            "missing a required field); rows are never invented to fill the gap"
        )
    stats = DatasetStats(
        requested_rows=request.rows,
        returned_rows=len(rows),
        documents_searched=documents,
        candidate_rows=len(candidates),
        rows_dropped_missing_required=len(candidates) - len(complete),
        rows_merged=len(complete) - len(groups),
        sources=sources or [],
        extractor=extraction.extractor if extraction else "",
        extraction=extraction,
        shortfall=shortfall,
    )
    return Dataset(
        task_id=task_id,
        model_name=schema.model_name,
        query=request.user_query,
        schema=schema.fields,
        rows=rows,
        stats=stats,
    )


def _merge_key(schema: PreparedSchema, candidate: CandidateRow) -> str:
    if schema.key_field is not None:
        return normalise_key(str(candidate.values.get(schema.key_field)))
    return msgspec.json.encode(candidate.values).decode()


def _merged_values(schema: PreparedSchema, group: _Group) -> dict[str, FieldValue]:
    """Values of the best-ranked member, gaps filled from the others; identifiers made from the key."""
    values: dict[str, FieldValue] = {}
    for field in schema.fields:
        values[field.name] = next(
            (m.values[field.name] for m in group.members if m.values.get(field.name) is not None), None
        )
    key = values.get(schema.key_field) if schema.key_field else None
    if isinstance(key, str):
        for name in schema.identifier_fields:
            field = next(f for f in schema.fields if f.name == name)
            values[name] = make_identifier(field, key)
    return values


def _merged_citations(group: _Group) -> list[Citation]:
    seen: set[tuple[str, str, str]] = set()
    citations = []
    for member in group.members:
        for citation in member.citations:
            identity = (citation.source_id, citation.field, citation.text_span)
            if identity not in seen:
                seen.add(identity)
                citations.append(citation)
    return citations


def _completeness(schema: PreparedSchema, values: dict[str, FieldValue]) -> float:
    return sum(values.get(f.name) is not None for f in schema.fields) / len(schema.fields)


def process(pipeline: Pipeline, task_id: str) -> None:
    """Actor body: assemble the dataset, store it, complete the job."""
    job = pipeline.job(task_id)
    schema = pipeline.input(task_id, "schema", PreparedSchema)
    candidates = pipeline.input(task_id, "candidates", list[CandidateRow])
    documents = pipeline.input(task_id, "documents", list[Document])
    dataset = run(
        task_id,
        job.request,
        schema,
        candidates,
        documents=len(documents),
        sources=sorted({d.source for d in documents}),
        extraction=pipeline.store.get_output(task_id, "extraction_stats", ExtractionStats),
    )
    done = f"Dataset ready: {len(dataset.rows)} rows"
    if dataset.stats.shortfall:
        done += f" ({dataset.stats.shortfall})"
    pipeline.complete(task_id, dataset, message=done)
