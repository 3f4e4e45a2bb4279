"""Stage 4: candidate rows → the dataset: drop incomplete rows, merge entities, resolve conflicts, rank, cut."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from contracts import (
    GENERATED_SOURCE,
    CandidateRow,
    Citation,
    CitationMetadata,
    Confidence,
    Conflict,
    ConflictValue,
    Dataset,
    DatasetRow,
    DatasetStats,
    Document,
    ExtractionStats,
    FieldValue,
    Flow,
    GenerateRequest,
    JobRecord,
    Paper,
    PaperVerdict,
    PreparedSchema,
)
from pipeline.entities import EntityMatcher, aliases_from
from pipeline.extractors.heuristic import make_identifier
from pipeline.reprocess import earlier_stages
from pipeline.schema import row_type_for
from pipeline.screening import flow as screening_flow
from pipeline.stages.context import StageContext
from pipeline.text import head_terms, normalise_key, plural, slug

#: a row whose papers' screening score is below this is at most of medium confidence
_SURE_RELEVANCE = 0.75


@dataclass
class _Entity:
    """Candidate rows found to describe the same thing, best-ranked first; then their merged values."""

    members: list[CandidateRow]
    key: str = ""  # the normalised name (abbreviations expanded) identifiers are made from
    values: dict[str, FieldValue] = field(default_factory=dict)
    citations: list[Citation] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    #: field → (papers stating the value kept, whether one quotes it exactly, whether others state another value)
    cells: dict[str, tuple[int, bool, bool]] = field(default_factory=dict)

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
    threshold: float = 90.0,
    papers: list[Paper] | None = None,
    searched: Flow | None = None,
    verdicts: dict[str, PaperVerdict] | None = None,
) -> Dataset:
    """Merge, rank and cut candidate rows to the requested count; never pad. Each row gets its confidence and
    the candidate rows merged into it; each candidate row left out, why; each paper considered, the number of
    rows citing it."""
    generated = set(schema.identifier_fields) if schema.key_field else set()  # made from the key below
    required = [f.name for f in schema.fields if f.required and f.name not in generated]
    complete: list[CandidateRow] = []
    left_out: dict[str, str] = {}  # candidate id → why it is in no row
    for candidate in candidates:
        missing = [name for name in required if candidate.values.get(name) is None]
        if not missing:
            complete.append(candidate)
        elif candidate.candidate:
            left_out[candidate.candidate] = f"missing a required value: {', '.join(missing)}"
    complete.sort(key=lambda c: c.rank)
    entities = _group(schema, request.user_query, complete, threshold)
    for entity in entities:
        _resolve(schema, entity)
    ranked = sorted(entities, key=lambda e: (-e.support, -_completeness(schema, e.values), e.best_rank))
    row_type = row_type_for(schema.model_name, tuple(schema.fields))
    rows = []
    row_ids: set[str] = set()
    for place, entity in enumerate(ranked[request.rows :], request.rows + 1):
        why = f"ranked {place} of {len(ranked)} distinct rows, below the {plural(request.rows, 'row')} requested"
        left_out |= {m.candidate: why for m in entity.members if m.candidate}
    for entity in ranked[: request.rows]:
        msgspec.convert(entity.values, row_type, strict=False)  # every row fits the schema, or assembly fails loudly
        flags = {
            name: why for m in reversed(entity.members) for name, why in m.flags.items() if entity.values[name] is None
        }
        level, cells, basis = confidence(schema, entity)
        rows.append(
            DatasetRow(
                row=entity.values,
                citations=entity.citations,
                flags=flags,
                confidence=level,
                cell_confidence=cells,
                basis=basis,
                row_id=_row_id(entity, row_ids),
                candidates=[m.candidate for m in entity.members if m.candidate],
            )
        )
    papers = _count_citations(_apply(papers or [], verdicts or {}), rows)
    searched = searched or Flow()
    flow = screening_flow(papers, found=searched.found, duplicates=searched.duplicates_removed)
    flow = msgspec.structs.replace(flow, queries=searched.queries)
    shortfall = None
    if not rows:
        shortfall = _nothing_found(request, papers, flow, candidates, extraction)
    elif len(rows) < request.rows:
        checks = extraction.dropped_by_check if extraction else {}
        dropped = "".join(f", {count} dropped: {why}" for why, count in checks.items())
        shortfall = (
            f"only {len(rows)} of {request.rows} requested rows are supported by the literature found: "
            f"{plural(len(candidates), 'candidate row')} from {plural(documents, 'document')}{dropped}, "
            f"{len(candidates) - len(complete)} missing a required field, {len(entities)} distinct after merging; "
            f"rows are never invented to fill the gap"
        )
    stats = DatasetStats(
        requested_rows=request.rows,
        returned_rows=len(rows),
        documents_searched=len(papers) or documents,
        documents_with_rows=len({c.source_id for c in candidates}),
        candidate_rows=len(candidates),
        rows_dropped_missing_required=len(candidates) - len(complete),
        rows_merged=len(complete) - len(entities),
        distinct_rows=len(entities),
        merge_threshold=threshold,
        conflicts=[conflict for entity in ranked[: request.rows] for conflict in entity.conflicts],
        sources=sources or [],
        extractor=extraction.extractor if extraction else "",
        extraction=extraction,
        shortfall=shortfall,
        flow=flow if papers else None,
        queries=searched.queries,
        dropped_candidates=left_out,
    )
    return Dataset(
        task_id=task_id,
        model_name=schema.model_name,
        query=request.user_query,
        schema=schema.fields,
        rows=rows,
        stats=stats,
        papers=papers,
    )


def confidence(schema: PreparedSchema, entity: _Entity) -> tuple[Confidence, dict[str, Confidence], str]:
    """The row's confidence, each filled cell's, and why (docs/quality.md).

    A cell is high when two or more papers state its value with no paper stating another and one quotes it
    exactly; low when its only support is a repaired (fuzzily matched) quote, or papers disagree and only one
    states the value kept; medium otherwise. The row is its weakest required cell (the key
    when there is one), never above medium when its papers only just passed screening, and low when it cites a
    retracted paper.
    """
    cells: dict[str, Confidence] = {}
    for name, (support, exact, conflict) in entity.cells.items():
        if support >= 2 and exact and not conflict:
            cells[name] = "high"
        elif not exact or (conflict and support < 2):
            cells[name] = "low"
        else:
            cells[name] = "medium"
    required = [f.name for f in schema.fields if f.required and f.name in cells] or list(cells)
    order: list[Confidence] = ["low", "medium", "high"]
    level: Confidence = min((cells[name] for name in required), key=order.index, default="low")
    relevance = max(m.relevance for m in entity.members)
    if level == "high" and relevance < _SURE_RELEVANCE:
        level = "medium"
    quotes = "exact quotes" if all(exact for _, exact, _ in entity.cells.values()) else "a repaired quote"
    conflicts = sum(conflict for _, _, conflict in entity.cells.values())
    basis = (
        f"{entity.support} paper{'s' if entity.support != 1 else ''}, {quotes}, "
        f"{f'{conflicts} conflicting field(s)' if conflicts else 'no conflicts'}, screening score {relevance:.0%}"
    )
    reason = next((m.reason for m in entity.members if m.reason), None)
    if reason:
        basis += f"; the model: {reason}"
    retracted = sorted({c.metadata.title for c in entity.citations if c.metadata.retracted})
    if retracted:
        level = "low"
        basis += f"; cites a retracted paper: {'; '.join(retracted)}"
    return level, cells, basis


def _count_citations(papers: list[Paper], rows: list[DatasetRow]) -> list[Paper]:
    cited = Counter(source for row in rows for source in {c.source_id for c in row.citations})
    return [msgspec.structs.replace(p, rows=cited[p.id]) if cited[p.id] else p for p in papers]


def _apply(papers: list[Paper], verdicts: dict[str, PaperVerdict]) -> list[Paper]:
    """The papers list with the extractor's own screening applied (its reason and quote replace the search's)."""
    return [
        p
        if (verdict := verdicts.get(p.id)) is None
        else msgspec.structs.replace(
            p,
            decision="included" if verdict.included else "excluded",
            reason=f"model: {verdict.reason}",
            exclusion=verdict.exclusion,
            quote=verdict.quote,
        )
        for p in papers
    ]


def _nothing_found(
    request: GenerateRequest,
    papers: list[Paper],
    flow: Flow,
    candidates: list[CandidateRow],
    extraction: ExtractionStats | None,
) -> str:
    """Why the dataset is empty, in words a user can act on."""
    sources = ", ".join(request.sources or sorted({p.source for p in papers})) or "the sources"
    if flow.read == 0:
        return (
            f"none of the {flow.screened} documents searched in {sources} addresses {request.user_query!r}; "
            f"rows are never invented"
        )
    checks = extraction.dropped_by_check if extraction else {}
    dropped = "; ".join(f"{count} dropped: {why}" for why, count in checks.items()) or "none survived grounding"
    return (
        f"none of the {flow.read} documents read states a row that answers {request.user_query!r} "
        f"({len(candidates)} candidate rows; {dropped}); rows are never invented"
    )


def _group(schema: PreparedSchema, query: str, candidates: list[CandidateRow], threshold: float) -> list[_Entity]:
    """Entities from rank-ordered candidates: by fuzzy key match, or by equal values when there is no key."""
    key_field = schema.key_field
    if key_field is None:
        values = [msgspec.json.encode(c.values, order="sorted").decode() for c in candidates]
        index = {value: i for i, value in enumerate(dict.fromkeys(values))}
        groups, keys = [index[value] for value in values], [""] * len(candidates)
    else:
        names = ["" if c.values.get(key_field) is None else str(c.values[key_field]) for c in candidates]  # "": alone
        spans = [cite.text_span for c in candidates for cite in c.citations if cite.field == key_field]
        matcher = EntityMatcher(threshold=threshold, generic=head_terms(query), aliases=aliases_from(names + spans))
        groups, keys = matcher.group(names), [matcher.key(name) for name in names]
    entities: list[_Entity] = []
    for candidate, group, key in zip(candidates, groups, keys, strict=True):
        if group == len(entities):
            entities.append(_Entity(members=[candidate], key=key))
        else:
            entities[group].members.append(candidate)
    return entities


def _resolve(schema: PreparedSchema, entity: _Entity) -> None:
    """Each field's value by support (independent sources stating it), ties to the best-ranked source.

    The row keeps the citations of the values it holds; the citations of outvoted values go into ``conflicts``.
    Identifier fields are made from the key value.
    """
    key_field = schema.key_field
    generated = schema.identifier_fields if key_field is not None else []
    names = [f.name for f in schema.fields if f.name not in generated]
    if key_field is not None:
        names = [key_field] + [name for name in names if name != key_field]
    row = ""
    kept: list[Citation] = []
    for name in names:
        options: dict[str, list[tuple[CandidateRow, FieldValue]]] = {}
        for member in entity.members:
            value = member.values.get(name)
            if value is not None:
                options.setdefault(_comparable(value), []).append((member, value))
        if not options:
            continue
        ranked = sorted(options.values(), key=lambda o: -len({m.source_id for m, _ in o}))  # stable: rank breaks ties
        chosen = ranked[0]
        entity.values[name] = chosen[0][1]
        if name == key_field:  # every member names the entity, in whatever spelling
            row = str(chosen[0][1])
            kept += [c for m in entity.members for c in m.citations if c.field == name]
            entity.cells[name] = (entity.support, any(name not in m.repaired for m in entity.members), False)
            continue
        support = len({m.source_id for m, _ in chosen})
        entity.cells[name] = (support, any(name not in m.repaired for m, _ in chosen), len(ranked) > 1)
        kept += [c for m, _ in chosen for c in m.citations if c.field == name]
        if len(ranked) > 1:
            entity.conflicts.append(
                Conflict(
                    row=row,
                    field=name,
                    chosen=_option(name, chosen, with_citations=False),
                    alternatives=[_option(name, option, with_citations=True) for option in ranked[1:]],
                )
            )
    for name in generated:
        spec = next(f for f in schema.fields if f.name == name)
        basis = entity.key or row or f"{entity.members[0].source_id} {msgspec.json.encode(entity.values).decode()}"
        entity.values[name] = make_identifier(spec, basis)
        kept.append(
            Citation(
                source_id=GENERATED_SOURCE,
                field=name,
                text_span=f"generated by litminer from {key_field} {row!r}",
                metadata=CitationMetadata(title="Identifier generated by litminer", source="litminer"),
            )
        )
    entity.values = {f.name: entity.values.get(f.name) for f in schema.fields}
    entity.citations = list({(c.source_id, c.field, c.text_span): c for c in kept}.values())


def _row_id(entity: _Entity, taken: set[str]) -> str:
    """A short id for the entity's row, unique in the dataset: a slug of its key (so the same entity keeps it
    when the job is reprocessed), else of its first text value, with "-2", "-3"… when taken."""
    text = entity.key or next((v for v in entity.values.values() if isinstance(v, str) and slug(v)), "row")
    base = slug(text)[:60].strip("-") or "row"
    row_id, n = base, 1
    while row_id in taken:
        n += 1
        row_id = f"{base}-{n}"
    taken.add(row_id)
    return row_id


def _comparable(value: FieldValue) -> str:
    """Values stating the same thing compare equal: case, spacing and plural forms of text, 2 = 2.0, key order."""
    if isinstance(value, str):
        return "s:" + normalise_key(value)
    if isinstance(value, bool):
        return f"b:{value}"
    if isinstance(value, int | float):
        return f"n:{float(value)!r}"
    return "j:" + msgspec.json.encode(value, order="sorted").decode()


def _option(name: str, option: list[tuple[CandidateRow, FieldValue]], *, with_citations: bool) -> ConflictValue:
    sources = list(dict.fromkeys(m.source_id for m, _ in option))
    citations = [c for m, _ in option for c in m.citations if c.field == name] if with_citations else []
    return ConflictValue(value=option[0][1], support=len(sources), sources=sources, citations=citations)


def _completeness(schema: PreparedSchema, values: dict[str, FieldValue]) -> float:
    return sum(values.get(f.name) is not None for f in schema.fields) / len(schema.fields)


def durations(job: JobRecord, now: float) -> dict[str, float]:
    """Seconds each stage of the job took so far, the current one (assembly) until ``now``."""
    current = {job.stage: round(now - job.stage_entered_at, 3)} if job.stage_entered_at is not None else {}
    return job.durations_s | current


def process(ctx: StageContext, task_id: str) -> None:
    """Assemble the dataset, store it, complete the job."""
    job = ctx.job(task_id)
    names = ("schema", "candidates", "documents", "papers", "flow", "extraction_stats", "verdicts")
    inputs = ctx.inputs(task_id, *names)
    schema = inputs.get("schema", PreparedSchema)
    candidates = inputs.get("candidates", list[CandidateRow])
    documents = inputs.get("documents", list[Document])
    dataset = run(
        task_id,
        job.request,
        schema,
        candidates,
        documents=len(documents),
        sources=sorted({d.source for d in documents}),
        extraction=inputs.optional("extraction_stats", ExtractionStats),
        threshold=ctx.settings.merge_threshold,
        papers=inputs.get("papers", list[Paper]),
        searched=inputs.get("flow", Flow),
        verdicts=inputs.get("verdicts", dict[str, PaperVerdict]),
    )
    stats = msgspec.structs.replace(
        dataset.stats,
        durations_s=durations(job, time.time()),
        parent_task_id=job.parent_task_id,
        reused_stages=earlier_stages(job.from_stage) if job.from_stage else [],
    )
    dataset = msgspec.structs.replace(dataset, stats=stats)
    done = f"Dataset ready: {plural(len(dataset.rows), 'row')}"
    if dataset.stats.shortfall:
        done += f" ({dataset.stats.shortfall})"
    ctx.complete(task_id, dataset, message=done)
