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
from contracts.screening import Decision, Flow, Paper
from pipeline.errors import PermanentError, SourceError
from pipeline.screening import THRESHOLD, Topic, flow, screen, split_descriptor, topic
from pipeline.settings import Settings
from pipeline.sources.base import Page, Source
from pipeline.sources.fulltext import NO_COPY, Fetcher
from pipeline.sources.http import SourceHttp
from pipeline.sources.merge import DocumentPool, fusion, has_text
from pipeline.stages.context import StageContext
from pipeline.text import plan_queries, plural

#: ``report(message, data, fraction_done)``: a progress event from inside the search
Report = Callable[[str, EventData, float], None]


class SearchResult(msgspec.Struct, frozen=True, kw_only=True):
    """The documents kept, every document considered with its screening verdict, and what happened on the way."""

    documents: list[Document]
    papers: list[Paper]
    found: dict[str, int]
    duplicates: int
    without_text: int
    failures: dict[str, str]

    @property
    def flow(self) -> Flow:
        """The documents' way so far, PRISMA-style (assembly adds what the model screened out and what is cited)."""
        return flow(self.papers, found=sum(self.found.values()), duplicates=self.duplicates)


async def search(
    subject: Topic,
    queries: Sequence[str],
    sources: Sequence[Source],
    target: int,
    *,
    http: SourceHttp,
    pool_size: int | None = None,
    threshold: float = THRESHOLD,
    fetcher: Fetcher | None = None,
    report: Report = lambda message, data, done: None,
) -> SearchResult:
    """Ask every source, one planned query after another, page by page, until ``pool_size`` documents with
    text are in hand (or every source is out of answers); screen them all against ``subject`` and keep the
    best ``target`` of those that pass.

    A source that fails is reported and left out; when every source fails, ``SourceError`` lists why.
    """
    target_pool = max(pool_size or target, target)
    pool = DocumentPool()
    found = dict.fromkeys((s.name for s in sources), 0)
    failures: dict[str, str] = {}
    warned: set[str] = set()
    for query in queries:
        streams = {s.name: s.pages(query, target_pool, http) for s in sources if s.name not in failures}
        while streams and pool.usable < target_pool:
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
                        pool.usable / target_pool,
                    )
                    continue
                if isinstance(answer, BaseException):
                    raise answer
                if not answer.more:
                    del streams[name]
                for warning in answer.warnings:
                    if warning not in warned:
                        warned.add(warning)
                        done = pool.usable / target_pool
                        report(f"{name}: {warning}", SourceWarning(source=name, warning=warning), done)
                for document in answer.documents:
                    pool.add(document)
                found[name] += len(answer.documents)
                report(
                    f"{name}: {len(answer.documents)} documents for {query!r} ({pool.usable}/{target_pool} with text)",
                    SourcePage(source=name, query=query, documents=len(answer.documents), usable=pool.usable),
                    pool.usable / target_pool,
                )
        if pool.usable >= target_pool:
            break
    if failures and len(failures) == len(sources):
        raise SourceError("every source failed: " + "; ".join(failures.values()))
    kept, papers = select(pool.documents, subject, target, threshold)
    kept = await _add_full_text(
        kept, sources, fetcher or Fetcher(http, max_bytes=Settings().full_text_max_bytes), report
    )
    with_text = {d.id for d in kept if d.full_text}
    papers = [msgspec.structs.replace(p, full_text=True) if p.id in with_text else p for p in papers]
    return SearchResult(
        documents=kept,
        papers=papers,
        found=found,
        duplicates=pool.duplicates,
        without_text=sum(not has_text(d) for d in pool.documents),
        failures=failures,
    )


def select(
    documents: Sequence[Document], subject: Topic, target: int, threshold: float = THRESHOLD
) -> tuple[list[Document], list[Paper]]:
    """Screen ``documents``; the best ``target`` of those that pass, ranked, and every document's verdict.

    Documents that pass are ordered by their screening rank score, blended evenly with the sources' own ranks
    (reciprocal-rank fusion); those beyond ``target`` are "not reached".
    """
    judgements = screen(documents, subject, threshold)
    passed = [i for i, j in enumerate(judgements) if j.included]
    fused = fusion([documents[i] for i in passed])
    top = max((judgements[i].rank_score for i in passed), default=0.0) or 1.0
    blended = {i: 0.5 * judgements[i].rank_score / top + 0.5 * f for i, f in zip(passed, fused, strict=True)}
    order = sorted(passed, key=lambda i: -blended[i])
    kept_at = {i: position for position, i in enumerate(order[:target], start=1)}
    kept = [
        msgspec.structs.replace(documents[i], rank=position, score=judgements[i].score)
        for i, position in kept_at.items()
    ]
    papers = []
    for i in sorted(range(len(documents)), key=lambda i: (i not in kept_at, kept_at.get(i, 0), -judgements[i].score)):
        document, judgement = documents[i], judgements[i]
        decision: Decision = "excluded"
        reason = judgement.reason
        if judgement.included:
            decision = "included" if i in kept_at else "not_reached"
            if decision == "not_reached":
                reason += f"; ranked below the {target} documents read"
        papers.append(
            Paper(
                id=document.id,
                title=document.title,
                year=document.year,
                doi=document.doi,
                url=document.url,
                source=document.source,
                score=judgement.score,
                decision=decision,
                reason=reason,
                exclusion=judgement.exclusion,
                quote=judgement.quote,
                retracted=document.retracted,
            )
        )
    return kept, papers


async def _next(pages: AsyncIterator[Page]) -> Page:
    """The next page; an empty last page once the source has no more."""
    return await anext(pages, Page(documents=[]))


async def _add_full_text(
    documents: list[Document], sources: Sequence[Source], fetcher: Fetcher, report: Report
) -> list[Document]:
    """The kept documents with the full text of an open-access copy where one can be read, and an event saying
    for how many, and why not for the others."""
    if not documents:
        return documents
    result = await fetcher.add(documents, sources)
    reasons = "; ".join(f"{count} {reason}" for reason, count in sorted(result.reasons.items(), key=lambda r: -r[1]))
    note = f" ({reasons})" if reasons else ""
    failed = sum(count for reason, count in result.reasons.items() if reason != NO_COPY)
    report(
        f"Full text for {result.with_text} of {len(documents)} documents{note}",
        FullTextFetched(full_text=result.with_text, documents=len(documents), failed=failed, reasons=reasons),
        1.0,
    )
    return result.documents


def process(ctx: StageContext, task_id: str) -> None:
    """Plan queries, search, screen, store the documents to read and every verdict, hand off to extraction."""
    request = ctx.job(task_id).request
    names = request.sources or list(ctx.settings.default_sources())
    unknown = [n for n in names if n not in ctx.sources]
    if unknown or not names:
        raise PermanentError(f"no usable source among {names} (available: {', '.join(ctx.sources)})")
    target = min(request.rows * ctx.settings.docs_per_row, ctx.settings.max_documents)
    pool_size = target * ctx.settings.screening_pool
    subject = topic(request.user_query, request.criteria)
    queries = plan(request.user_query, subject)
    ctx.report(
        task_id,
        progress=stage_progress("search", 0),
        message=(
            f"Searching {', '.join(names)} for up to {pool_size} documents to screen with "
            f"{plural(len(queries), 'query', 'queries')}"
        ),
        data=SearchPlanned(sources=",".join(names), queries=" | ".join(queries), target=target),
    )

    def report(message: str, data: EventData, done: float) -> None:
        ctx.report(task_id, progress=stage_progress("search", done), message=message, data=data)

    async def run() -> SearchResult:
        chosen = [ctx.sources[n] for n in names]
        http = ctx.source_http()
        return await search(
            subject,
            queries,
            chosen,
            target,
            http=http,
            pool_size=pool_size,
            threshold=ctx.settings.screening_threshold,
            fetcher=Fetcher(
                http, max_bytes=ctx.settings.full_text_max_bytes, allowed_hosts=ctx.settings.full_text_hosts
            ),
            report=report,
        )

    result = ctx.run_async(run())
    flow = msgspec.structs.replace(result.flow, queries=list(queries))
    ctx.hand_off(
        task_id,
        "extraction",
        progress=stage_end("search"),
        message=_summary(result, flow, request.user_query, names),
        outputs={"documents": result.documents, "papers": result.papers, "flow": flow},
        data=SearchDone(
            documents=len(result.documents),
            found=flow.found,
            duplicates=result.duplicates,
            without_text=result.without_text,
            sources=",".join(names),
            screened=flow.screened,
            excluded=flow.excluded,
            not_reached=flow.not_reached,
            found_by_source=result.found,
            failures=result.failures,
            excluded_by=flow.excluded_by,
        ),
    )


def plan(question: str, subject: Topic) -> list[str]:
    """The queries to send: the subject's (without a design descriptor), and first, when the descriptor asks
    for trials, the narrowest of them with the trial words (trials are what such a review reads)."""
    queries = plan_queries(split_descriptor(question)[0])
    if subject.wants_trials and queries:
        queries = [f"{queries[0]} randomized controlled trial", *queries]
    return queries


def _summary(result: SearchResult, flow: Flow, question: str, sources: list[str]) -> str:
    """The search's last message: what was found, screened out and kept."""
    if not result.documents:
        return (
            f"None of the {flow.screened} documents found in {', '.join(sources)} addresses {question!r} "
            f"({flow.found} found, {flow.duplicates_removed} duplicates merged)"
        )
    excluded = ", ".join(f"{count} {kind}" for kind, count in flow.excluded_by.items())
    return (
        f"Kept {plural(len(result.documents), 'document')} to read: {flow.found} found, "
        f"{flow.duplicates_removed} duplicates merged, {flow.screened} screened, "
        f"{flow.excluded} excluded ({excluded or 'none'}), "
        f"{flow.not_reached} passed but not reached"
    )
