"""Stage 3: documents → grounded candidate rows, in batches that any number of workers share.

``process`` plans the run (``plan`` is pure) and sends one batch message per batch of documents. Each
``process_batch`` extracts its documents concurrently, checks every quote (``pipeline.grounding``) and stores
its rows; the batch that completes the set (decided atomically by the store) gathers them and hands the job to
assembly: exactly once, even when messages are redelivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections import Counter

import msgspec

from contracts import CandidateRow, Document, ExtractionStats, GenerateRequest, JobRecord, PreparedSchema
from contracts.progress import (
    TITLE_CHARS,
    BudgetReached,
    DocumentExtracted,
    ExtractionDone,
    ExtractionPlanned,
    RowFound,
    stage_end,
    stage_progress,
)
from contracts.screening import PaperVerdict
from pipeline import estimate as estimating
from pipeline.checks import ground_and_check
from pipeline.errors import JobCancelled, PermanentError
from pipeline.extractors.base import Extraction, Extractor, ExtractorInfo, Screening, Verdict
from pipeline.grounding import GroundingCounts, SourceText
from pipeline.screening import JUDGED_IRRELEVANT, NO_DECISION, NO_QUOTE, topic
from pipeline.settings import Settings
from pipeline.stages.context import StageContext
from pipeline.store.extraction import LlmUsage, batch_output
from pipeline.text import plural

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_extraction = msgspec.json.Decoder(Extraction).decode
_decode_screening = msgspec.json.Decoder(Screening).decode
_COUNTS = [f.name for f in msgspec.structs.fields(ExtractionStats) if f.type is int]


class ExtractionRun(msgspec.Struct, kw_only=True, frozen=True):
    """One run of the stage: its id (a re-run gets a new one), its documents and batches."""

    run_id: str
    documents: int
    batches: int


class BatchResult(msgspec.Struct, kw_only=True, frozen=True):
    """The grounded rows of one batch, the extractor's screening verdicts, and what making them took."""

    rows: list[CandidateRow]
    stats: ExtractionStats
    verdicts: dict[str, PaperVerdict] = {}


def plan(documents: list[Document], batch_size: int) -> tuple[ExtractionRun, dict[str, object]]:
    """A new run over ``documents`` in batches of ``batch_size``, and the outputs to store for it (the run,
    and each batch's documents, so a batch reads only its own)."""
    run = ExtractionRun(run_id=uuid.uuid4().hex, documents=len(documents), batches=-(-len(documents) // batch_size))
    outputs: dict[str, object] = {"extraction_run": run}
    for index in range(run.batches):
        outputs[batch_output(run.run_id, index, "documents")] = documents[index * batch_size : (index + 1) * batch_size]
    return run, outputs


def choose_extractor(ctx: StageContext, requested: str | None) -> Extractor:
    """The extractor a job asked for, or the configured default (``auto`` → the LLM when one is configured)."""
    name = requested or ctx.settings.extractor
    if name == "auto":
        name = "openai" if "openai" in ctx.extractors else "heuristic"
    return ctx.extractors[name]


def token_budget(request: GenerateRequest, settings: Settings) -> int:
    """The tokens a job may spend (0: no limit): its own ``max_tokens``, never above the operator's
    ``LITMINER_MAX_TOKENS_PER_JOB``."""
    budgets = [b for b in (request.max_tokens, settings.max_tokens_per_job) if b]
    return min(budgets, default=0)


def describe(info: ExtractorInfo) -> str:
    """The extractor as events name it: "openai (gpt-4o-mini at https://api.openai.com/v1)" or "heuristic"."""
    return f"{info.name} ({info.model} at {info.base_url})" if info.model else info.name


def process(ctx: StageContext, task_id: str) -> None:
    """Plan the batches and send them (or hand off at once when there is nothing to read); for an estimate, count
    what they would spend instead and complete the job with that."""
    job = ctx.job(task_id)
    if job.estimate:
        _estimate(ctx, job)
        return
    inputs = ctx.inputs(task_id, "documents", "schema")
    documents = inputs.get("documents", list[Document])
    extractor = choose_extractor(ctx, job.request.extractor)
    info = extractor.info()
    run, outputs = plan(documents, ctx.settings.extract_batch_size)
    batches = plural(run.batches, "batch", "batches")
    message = f"Extracting {plural(len(documents), 'document')} in {batches} with {describe(info)}"
    data = ExtractionPlanned(
        extractor=info.name,
        provider=info.provider,
        base_url=info.base_url,
        model=info.model,
        documents=len(documents),
        batches=run.batches,
    )
    progress = stage_progress("extraction", 0)
    if run.batches == 1 and not extractor.cached:
        # an extractor that calls no model reads a batch in milliseconds: here and now, without a batch message,
        # shared counters or a turn (one that does waits for its owner's turn like any batch: fair sharing)
        ctx.report(task_id, progress=progress, message=message, data=data, outputs={"extraction_run": run})
        schema = inputs.get("schema", PreparedSchema)
        batch = _Batch(
            ctx, task_id=task_id, run=run, request=job.request, schema=schema, extractor=extractor, alone=True
        )
        finish(ctx, task_id, run, info, results=[ctx.run_async(batch.extract(documents))], schema=schema)
        return
    if run.batches:
        ctx.start_batches(
            task_id, run.run_id, run.batches, progress=progress, message=message, data=data, outputs=outputs
        )
        return
    ctx.report(task_id, progress=progress, message=message, data=data, outputs=outputs)
    finish(ctx, task_id, run, info)


def _estimate(ctx: StageContext, job: JobRecord) -> None:
    """Count the calls and tokens extraction would spend on the job's documents (no LLM call is made) and complete
    the job with them."""
    request = job.request
    inputs = ctx.inputs(job.task_id, "documents", "schema")
    documents = inputs.get("documents", list[Document])
    schema = inputs.get("schema", PreparedSchema)
    extractor = choose_extractor(ctx, request.extractor)
    info = extractor.info()
    llm = extractor.cached and info.model is not None  # an extractor that costs calls (the heuristic one costs none)
    calls = estimating.plan_calls(request.user_query, request.criteria, schema, documents, ctx.settings) if llm else []
    estimate = estimating.estimate(
        task_id=job.task_id,
        info=info,
        documents=documents,
        batches=-(-len(documents) // ctx.settings.extract_batch_size),
        calls=calls,
        usage=ctx.extraction.usage(info.model) if llm and info.model else LlmUsage(),
        settings=ctx.settings,
        budget=token_budget(request, ctx.settings),
    )
    ctx.complete_estimate(job.task_id, estimate, message=estimating.summary(estimate))


def process_batch(ctx: StageContext, task_id: str, run_id: str, index: int, message_id: str) -> None:
    """Extract, ground and store one batch's rows; the batch that completes the run hands off to assembly."""
    job = ctx.job(task_id)
    documents_name = batch_output(run_id, index, "documents")
    inputs = ctx.inputs(task_id, "extraction_run", "schema", documents_name)
    run = inputs.get("extraction_run", ExtractionRun)
    if run.run_id != run_id:  # the stage was re-run since this message was sent
        log.info("dropping a batch of a superseded run", extra={"task_id": task_id, "stage": "extraction"})
        return
    schema = inputs.get("schema", PreparedSchema)
    documents = inputs.get(documents_name, list[Document])
    extractor = choose_extractor(ctx, job.request.extractor)
    batch = _Batch(ctx, task_id=task_id, run=run, request=job.request, schema=schema, extractor=extractor)
    result = ctx.run_async(batch.extract(documents))
    last = ctx.extraction.finish_batch(
        task_id,
        run_id,
        index=index,
        batches=run.batches,
        message_id=message_id,
        result=_encode(result),
    )
    if last:
        finish(ctx, task_id, run, extractor.info())


def finish(
    ctx: StageContext,
    task_id: str,
    run: ExtractionRun,
    info: ExtractorInfo,
    *,
    results: list[BatchResult] | None = None,
    schema: PreparedSchema | None = None,
) -> None:
    """Gather every batch's rows and statistics (stored, unless the ``results`` are in hand), store them, hand
    the job to assembly."""
    rows: list[CandidateRow] = []
    verdicts: dict[str, PaperVerdict] = {}
    stats = ExtractionStats(
        extractor=info.name, provider=info.provider, base_url=info.base_url, model=info.model, batches=run.batches
    )
    if results is None or schema is None:
        names = [batch_output(run.run_id, index, "rows") for index in range(run.batches)]
        inputs = ctx.inputs(task_id, *names, "schema")
        results = [inputs.get(name, BatchResult) for name in names]
        schema = inputs.get("schema", PreparedSchema)
    for result in results:
        rows += result.rows
        verdicts |= result.verdicts
        stats = add_stats(stats, result.stats)
    if info.model and stats.completion_tokens and not stats.documents_cached:  # what cost estimates learn from
        extraction_calls = stats.llm_calls - stats.screening_calls
        guessed = estimating.guessed_completion(
            schema,
            extraction_calls=extraction_calls,
            screening_calls=stats.screening_calls,
            documents_per_screening=run.documents / max(run.batches, 1),
        )
        ctx.extraction.record_usage(
            info.model, calls=stats.llm_calls, completion_tokens=stats.completion_tokens, guessed_tokens=guessed
        )
    tokens = stats.prompt_tokens + stats.completion_tokens
    checked = sum(stats.dropped_by_check.values())
    screened_out = (
        f", {stats.documents_screened_out} documents screened out by the model" if stats.documents_screened_out else ""
    )
    ctx.hand_off(
        task_id,
        "assembly",
        progress=stage_end("extraction"),
        message=(
            f"Extracted {plural(len(rows), 'candidate row')} from {plural(run.documents, 'document')}: "
            f"{plural(stats.values_verified, 'value')} "
            f"verified, {stats.values_repaired} repaired, {stats.values_rejected} rejected; {checked} dropped by "
            f"the row checks{screened_out}; {tokens} tokens"
        ),
        data=ExtractionDone(
            candidate_rows=len(rows),
            extractor=info.name,
            values_verified=stats.values_verified,
            values_repaired=stats.values_repaired,
            values_rejected=stats.values_rejected,
            dropped_by_check=checked,
            screened_out=stats.documents_screened_out,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
        ),
        outputs={"candidates": rows, "extraction_stats": stats, "verdicts": verdicts},
    )


def add_stats(total: ExtractionStats, part: ExtractionStats) -> ExtractionStats:
    """Counts summed; the budget flag and response format carried over."""
    summed = {name: getattr(total, name) + getattr(part, name) for name in _COUNTS}
    return msgspec.structs.replace(
        total,
        budget_exhausted=total.budget_exhausted or part.budget_exhausted,
        response_format=part.response_format or total.response_format,
        dropped_by_check=dict(Counter(total.dropped_by_check) + Counter(part.dropped_by_check)),
        **summed,
    )


class _Batch:
    """Extracts a batch's documents concurrently on the pipeline's event loop."""

    def __init__(
        self,
        ctx: StageContext,
        *,
        task_id: str,
        run: ExtractionRun,
        request: GenerateRequest,
        schema: PreparedSchema,
        extractor: Extractor,
        alone: bool = False,
    ) -> None:
        self.ctx = ctx
        # the run's only batch counts its documents and tokens itself; others share counters in the store
        self.alone = alone
        self.done = self.spent = 0
        self.task_id = task_id
        self.run = run
        self.query = request.user_query
        self.criteria = request.criteria
        self.subject = topic(request.user_query, request.criteria)
        self.unreported_tokens = 0  # the screening call's, counted with the batch's first document
        self.schema = schema
        self.extractor = extractor
        self.budget = token_budget(request, ctx.settings)
        self.budget_reported = False
        # the batch's documents report one at a time: their events then follow the count in seq order, and
        # no report is computed on a job record another document's report has just changed (a second try)
        self.reporting = threading.Lock()
        info = extractor.info()
        self.cache_prefix = _encode([info.identity, extractor.version, self.query, schema])

    async def extract(self, documents: list[Document]) -> BatchResult:
        """Rows and statistics of the batch; the first hard failure cancels the documents still running."""
        kept, verdicts, stats = await self.screen(documents)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.document(d)) for d in kept]
        except BaseExceptionGroup as failed:
            raise _first(failed) from None
        rows: list[CandidateRow] = []
        stats = add_stats(stats, ExtractionStats(documents=len(documents)))
        for task in tasks:
            found, part = task.result()
            rows += found
            stats = add_stats(stats, part)
        return BatchResult(rows=rows, stats=stats, verdicts=verdicts)

    async def screen(
        self, documents: list[Document]
    ) -> tuple[list[Document], dict[str, PaperVerdict], ExtractionStats]:
        """The documents the extractor's screening includes (all, when it does not screen), every verdict, the cost.

        A document is included only with a quote that is really in its title or abstract; the others are counted
        done at once.
        """
        if not documents or (self.budget and await asyncio.to_thread(self._tokens_used) >= self.budget):
            return documents, {}, ExtractionStats()
        screening = await self._screening(documents)
        self.unreported_tokens = screening.prompt_tokens + screening.completion_tokens
        stats = ExtractionStats(
            screening_calls=screening.calls,
            llm_calls=screening.calls,
            prompt_tokens=screening.prompt_tokens,
            completion_tokens=screening.completion_tokens,
        )
        if not screening.judged:
            if screening.failure:
                log.warning(
                    "screening failed, reading every document: %s",
                    screening.failure,
                    extra={"task_id": self.task_id, "stage": "extraction"},
                )
            return documents, {}, stats
        by_id = {v.id: v for v in screening.verdicts}
        threshold = self.ctx.settings.grounding_threshold
        verdicts = {d.id: _verdict(d, by_id.get(d.id), threshold) for d in documents}
        kept = [d for d in documents if verdicts[d.id].included]
        for document in documents:
            if not verdicts[document.id].included:
                await asyncio.to_thread(self._progress, 0, 0)
        stats = add_stats(stats, ExtractionStats(documents_screened_out=len(documents) - len(kept)))
        return kept, verdicts, stats

    async def document(self, document: Document) -> tuple[list[CandidateRow], ExtractionStats]:
        """One document: from the cache or the extractor, then the grounding check."""
        if self.budget and await asyncio.to_thread(self._tokens_used) >= self.budget:
            await asyncio.to_thread(self._budget_reached)
            return [], ExtractionStats(documents_skipped=1, budget_exhausted=True)
        digest = self._digest(document)
        cached = await asyncio.to_thread(self.ctx.extraction.cached, digest) if self.extractor.cached else None
        if cached is not None:
            extraction, spent = _decode_extraction(cached), 0
        else:
            extraction = await self.extractor.extract(self.query, self.schema, document)
            spent = extraction.prompt_tokens + extraction.completion_tokens
            if extraction.failure is None and self.extractor.cached:
                await asyncio.to_thread(self.ctx.extraction.cache, digest, _encode(extraction))
        calls = ExtractionStats(
            llm_calls=extraction.calls,
            prompt_tokens=extraction.prompt_tokens if cached is None else 0,
            completion_tokens=extraction.completion_tokens if cached is None else 0,
            response_format=extraction.response_format,
            rate_limited=extraction.rate_limited if cached is None else 0,
        )
        if extraction.failure is not None:
            await asyncio.to_thread(self._progress, 0, spent, skipped=(document, extraction.failure))
            return [], add_stats(calls, ExtractionStats(documents_failed=1))
        rows, stats = await asyncio.to_thread(self._ground_and_report, document, extraction, spent)
        return rows, add_stats(calls, add_stats(stats, ExtractionStats(documents_cached=int(cached is not None))))

    def _ground_and_report(
        self, document: Document, extraction: Extraction, spent: int
    ) -> tuple[list[CandidateRow], ExtractionStats]:
        """Check the document's rows and report them (off the event loop, in one hop: both block)."""
        threshold = self.ctx.settings.grounding_threshold
        rows, counts, dropped = ground_and_check(
            self.subject, self.schema, document, extraction.rows, threshold=threshold
        )
        rows = [msgspec.structs.replace(row, candidate=f"{document.id}#{n}") for n, row in enumerate(rows)]
        self._progress(len(rows), spent, found=(document, rows))
        return rows, msgspec.structs.replace(_grounding_stats(counts), dropped_by_check=dict(dropped))

    async def _screening(self, documents: list[Document]) -> Screening:
        """The extractor's screening of ``documents``, from the cache when the same batch was screened before
        (then it cost nothing this time)."""
        if not self.extractor.cached:
            return await self.extractor.screen(self.query, self.criteria, documents)
        texts = _encode(["screening", self.criteria, [(d.id, d.title, d.abstract) for d in documents]])
        digest = hashlib.sha256(self.cache_prefix + b"\0" + texts).hexdigest()
        cached = await asyncio.to_thread(self.ctx.extraction.cached, digest)
        if cached is not None:
            return msgspec.structs.replace(_decode_screening(cached), calls=0, prompt_tokens=0, completion_tokens=0)
        screening = await self.extractor.screen(self.query, self.criteria, documents)
        if screening.judged:
            await asyncio.to_thread(self.ctx.extraction.cache, digest, _encode(screening))
        return screening

    def _digest(self, document: Document) -> str:
        text = _encode([document.title, document.abstract, document.full_text])
        return hashlib.sha256(self.cache_prefix + b"\0" + text).hexdigest()

    def _tokens_used(self) -> int:
        return self.spent if self.alone else self.ctx.extraction.tokens_used(self.task_id, self.run.run_id)

    def _count(self, spent: int) -> tuple[int, int]:
        """One more document done, having spent ``spent`` tokens: the run's documents done and tokens so far."""
        if not self.alone:
            return self.ctx.extraction.count_document(self.task_id, self.run.run_id, spent)
        self.done, self.spent = self.done + 1, self.spent + spent
        return self.done, self.spent

    def _progress(
        self,
        rows: int,
        spent: int,
        *,
        skipped: tuple[Document, str] | None = None,
        found: tuple[Document, list[CandidateRow]] | None = None,
    ) -> None:
        """Count the document done and its tokens (in the run's shared counters unless the batch is alone: one
        round trip); report both, after the rows ``found`` in it (one round trip for them all)."""
        with self.reporting:
            self._count_and_report(rows, spent, skipped, found)

    def _count_and_report(
        self,
        rows: int,
        spent: int,
        skipped: tuple[Document, str] | None,
        found: tuple[Document, list[CandidateRow]] | None,
    ) -> None:
        spent, self.unreported_tokens = spent + self.unreported_tokens, 0
        done, tokens = self._count(spent)
        message = f"Extracted {done}/{self.run.documents} documents"
        warning = document = None
        if skipped is not None:
            skipped_document, warning = skipped
            message += f"; skipped {skipped_document.title[:80]!r}: {warning}"
            document = skipped_document.id
        self.ctx.report(
            self.task_id,
            progress=stage_progress("extraction", done / max(self.run.documents, 1)),
            message=message,
            tokens=tokens,
            data=DocumentExtracted(
                documents_done=done,
                documents=self.run.documents,
                rows=rows,
                tokens=tokens,
                warning=warning,
                document=document,
            ),
            before=[_row_found(self.schema, found[0], row) for row in found[1]] if found is not None else (),
        )

    def _budget_reached(self) -> None:
        if not self.budget_reported:
            self.budget_reported = True
            self.ctx.report(
                self.task_id,
                message=f"Token budget of {self.budget} reached: the remaining documents are skipped",
                data=BudgetReached(budget=self.budget),
            )


def _row_found(schema: PreparedSchema, document: Document, row: CandidateRow) -> tuple[str, RowFound]:
    """The ``row_found`` event of a grounded row: every field's value in schema order, and a line saying it."""
    values = {f.name: row.values.get(f.name) for f in schema.fields}
    stated = [f"{name}={_short(value)}" for name, value in values.items() if value is not None]
    message = f"Row found in {document.title[:80]!r}: {', '.join(stated[:4])}"
    data = RowFound(candidate=row.candidate, document=document.id, title=document.title[:TITLE_CHARS], values=values)
    return message, data


def _short(value: object) -> str:
    text = value if isinstance(value, str) else _encode(value).decode()
    return text if len(text) <= 40 else text[:39] + "…"


def _verdict(document: Document, verdict: Verdict | None, threshold: float) -> PaperVerdict:
    """The model's verdict on ``document`` as the papers list records it: an inclusion needs a real quote."""
    if verdict is None:
        return PaperVerdict(included=False, reason="the model gave no decision on it", exclusion=NO_DECISION)
    if not verdict.include:
        return PaperVerdict(included=False, reason=verdict.reason, exclusion=JUDGED_IRRELEVANT)
    found = SourceText(msgspec.structs.replace(document, full_text=None)).find(verdict.quote or "", threshold)
    if found is None:
        reason = f"{verdict.reason} (the model included it, but its quote is not in the title or abstract)"
        return PaperVerdict(included=False, reason=reason, exclusion=NO_QUOTE)
    return PaperVerdict(included=True, reason=verdict.reason, quote=found.passage)


def _grounding_stats(counts: GroundingCounts) -> ExtractionStats:
    return ExtractionStats(
        documents_extracted=1,
        values_verified=counts.verified,
        values_repaired=counts.repaired,
        values_rejected=counts.rejected,
        values_unconvertible=counts.unconvertible,
        rows_dropped=counts.rows_dropped,
    )


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for a failed batch: a cancellation or refusal before a transient failure."""
    errors = _leaves(group)
    for kind in (JobCancelled, PermanentError):
        found = next((e for e in errors if isinstance(e, kind)), None)
        if found is not None:
            return found
    return errors[0]


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
