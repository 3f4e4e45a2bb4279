"""Stage 2: the user's question → planned queries → pages from every source → merged, ranked documents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec

from contracts import Document
from contracts.progress import (
    EventData,
    FullTextFetched,
    SearchDone,
    SearchPlanned,
    SourceFailed,
    SourcePage,
    SourceWarning,
    stage_end,
    stage_progress,
)
from pipeline.errors import PermanentError, SourceError
from pipeline.sources.base import FullTextSource, Page, Source
from pipeline.sources.http import SourceHttp
from pipeline.sources.merge import DocumentPool, has_text, rank
from pipeline.stages.context import StageContext
from pipeline.text import plan_queries

#: ``report(message, data, fraction_done)``: a progress event from inside the search
Report = Callable[[str, EventData, float], None]


class SearchResult(msgspec.Struct, frozen=True, kw_only=True):
    """The documents kept, and what happened on the way."""

    documents: list[Document]
    found: dict[str, int]
    duplicates: int
    without_text: int
    failures: dict[str, str]


async def search(
    question: str,
    queries: Sequence[str],
    sources: Sequence[Source],
    target: int,
    *,
    http: SourceHttp,
    report: Report = lambda message, data, done: None,
) -> SearchResult:
    """Ask every source, one planned query after another, page by page, until ``target`` documents with
    text are in hand (or every source is out of answers); then rank and keep ``target`` of them.

    A source that fails is reported and left out; when every source fails, ``SourceError`` lists why.
    """
    pool = DocumentPool()
    found = dict.fromkeys((s.name for s in sources), 0)
    failures: dict[str, str] = {}
    warned: set[str] = set()
    for query in queries:
        streams = {s.name: s.pages(query, target, http) for s in sources if s.name not in failures}
        while streams and pool.usable < target:
            names = list(streams)
            answers = await asyncio.gather(*(_next(streams[n]) for n in names), return_exceptions=True)
            for name, answer in zip(names, answers, strict=True):
                if isinstance(answer, SourceError):
                    failures[name] = str(answer)
                    del streams[name]
                    others = [s.name for s in sources if s.name not in failures]
                    rest = f"; continuing with {', '.join(others)}" if others else ""
                    report(
                        f"Source {name} failed: {answer}{rest}",
                        SourceFailed(source=name, error=str(answer)),
                        pool.usable / target,
                    )
                    continue
                if isinstance(answer, BaseException):
                    raise answer
                if not answer.more:
                    del streams[name]
                for warning in answer.warnings:
                    if warning not in warned:
                        warned.add(warning)
                        report(f"{name}: {warning}", SourceWarning(source=name, warning=warning), pool.usable / target)
                for document in answer.documents:
                    pool.add(document)
                found[name] += len(answer.documents)
                report(
                    f"{name}: {len(answer.documents)} documents for {query!r} ({pool.usable}/{target} with text)",
                    SourcePage(source=name, query=query, documents=len(answer.documents), usable=pool.usable),
                    pool.usable / target,
                )
        if pool.usable >= target:
            break
    if failures and len(failures) == len(sources):
        raise SourceError("every source failed: " + "; ".join(failures.values()))
    with_text = [d for d in pool.documents if has_text(d)]
    kept = await _add_full_text(rank(with_text, question, target), sources, http, report)
    return SearchResult(
        documents=kept,
        found=found,
        duplicates=pool.duplicates,
        without_text=len(pool.documents) - len(with_text),
        failures=failures,
    )


async def _next(pages: AsyncIterator[Page]) -> Page:
    """The next page; an empty last page once the source has no more."""
    return await anext(pages, Page(documents=[]))


async def _add_full_text(
    documents: list[Document], sources: Sequence[Source], http: SourceHttp, report: Report
) -> list[Document]:
    """Fetch full text, where a source offers it, for the documents kept."""
    fetchers = [s for s in sources if isinstance(s, FullTextSource)]
    jobs = [(i, f) for i, d in enumerate(documents) for f in fetchers if any(p.source == f.name for p in d.provenance)]
    if not jobs:
        return documents
    texts = await asyncio.gather(*(f.full_text(documents[i], http) for i, f in jobs), return_exceptions=True)
    documents = list(documents)
    failed = 0
    for (i, _), text in zip(jobs, texts, strict=True):
        if isinstance(text, SourceError):
            failed += 1
        elif isinstance(text, BaseException):
            raise text
        elif text:
            documents[i] = msgspec.structs.replace(documents[i], full_text=text)
    added = sum(1 for d in documents if d.full_text)
    note = f" ({failed} could not be fetched)" if failed else ""
    report(
        f"Full text for {added} of {len(documents)} documents{note}",
        FullTextFetched(full_text=added, failed=failed),
        1.0,
    )
    return documents


def process(ctx: StageContext, task_id: str) -> None:
    """Plan queries, search, store the documents, hand off to extraction."""
    request = ctx.job(task_id).request
    names = request.sources or list(ctx.settings.default_sources())
    unknown = [n for n in names if n not in ctx.sources]
    if unknown or not names:
        raise PermanentError(f"no usable source among {names} (available: {', '.join(ctx.sources)})")
    target = min(request.rows * ctx.settings.docs_per_row, ctx.settings.max_documents)
    queries = plan_queries(request.user_query)
    ctx.report(
        task_id,
        progress=stage_progress("search", 0),
        message=f"Searching {', '.join(names)} for up to {target} documents with {len(queries)} queries",
        data=SearchPlanned(sources=",".join(names), queries=" | ".join(queries), target=target),
    )

    def report(message: str, data: EventData, done: float) -> None:
        ctx.report(task_id, progress=stage_progress("search", done), message=message, data=data)

    async def run() -> SearchResult:
        chosen = [ctx.sources[n] for n in names]
        return await search(request.user_query, queries, chosen, target, http=ctx.source_http(), report=report)

    result = ctx.run_async(run())
    found = sum(result.found.values())
    ctx.hand_off(
        task_id,
        "extraction",
        progress=stage_end("search"),
        message=(
            f"Kept {len(result.documents)} documents ({found} found, {result.duplicates} duplicates merged, "
            f"{result.without_text} without abstract or full text)"
        ),
        outputs={"documents": result.documents},
        data=SearchDone(
            documents=len(result.documents),
            found=found,
            duplicates=result.duplicates,
            without_text=result.without_text,
            sources=",".join(names),
            found_by_source=result.found,
            failures=result.failures,
        ),
    )
