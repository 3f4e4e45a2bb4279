"""Stage 3: documents → grounded candidate rows, in batches that any number of workers share.

The ``extract`` actor plans the run and enqueues one ``extract_batch`` message per batch of documents.
Each batch extracts its documents concurrently, checks every quote (``pipeline.grounding``) and stores
its rows; the batch that completes the set (an atomic check in Redis) gathers them and hands the job
to assembly: exactly once, even when messages are redelivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from typing import TYPE_CHECKING

import msgspec

from contracts import CandidateRow, Document, EventValue, ExtractionStats, PreparedSchema
from pipeline.errors import JobCancelled, PermanentError
from pipeline.extractors.base import Extraction, Extractor, ExtractorInfo
from pipeline.grounding import GroundingCounts, ground
from pipeline.middleware import STAGE_START

if TYPE_CHECKING:
    from pipeline.runtime import Pipeline

log = logging.getLogger(__name__)

_START, _END = STAGE_START["extraction"], STAGE_START["assembly"]
_encode = msgspec.json.Encoder().encode
_decode_extraction = msgspec.json.Decoder(Extraction).decode
_COUNTS = [f.name for f in msgspec.structs.fields(ExtractionStats) if f.type is int]

# Stores batch ARGV[1]'s rows (ARGV[5] in KEYS[3]) and marks it done; returns 1 to the one message that completes
# the set (ARGV[2] batches) and owns the hand-off, also when that very message (ARGV[3]) is redelivered; 0 to every
# other.
_FINISH_BATCH = """
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then return 0 end
local owner = redis.call('GET', KEYS[2])
if not owner then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
  return 1
end
if owner == ARGV[3] then return 1 end
return 0
"""


class ExtractionRun(msgspec.Struct, kw_only=True, frozen=True):
    """One run of the stage: its batches, and their messages (so a cancel can abort them)."""

    run_id: str
    documents: int
    batches: int
    message_ids: list[str] = []


class BatchResult(msgspec.Struct, kw_only=True, frozen=True):
    """The grounded rows of one batch and what making them took."""

    rows: list[CandidateRow]
    stats: ExtractionStats


def choose_extractor(pipeline: Pipeline, requested: str | None) -> Extractor:
    """The extractor a job asked for, or the configured default (``auto`` → the LLM when one is configured)."""
    name = requested or pipeline.settings.extractor
    if name == "auto":
        name = "openai" if "openai" in pipeline.extractors else "heuristic"
    return pipeline.extractors[name]


def describe(info: ExtractorInfo) -> str:
    """The extractor as events name it: "openai (gpt-4o-mini at https://api.openai.com/v1)" or "heuristic"."""
    return f"{info.name} ({info.model} at {info.base_url})" if info.model else info.name


def process(pipeline: Pipeline, task_id: str) -> None:
    """Actor body: plan the batches and enqueue them (or hand off at once when there is nothing to read)."""
    job = pipeline.job(task_id)
    documents = pipeline.input(task_id, "documents", list[Document])
    info = choose_extractor(pipeline, job.request.extractor).info()
    size = pipeline.settings.extract_batch_size
    run_id = uuid.uuid4().hex
    queued = [pipeline.batch_actor.message(task_id, run_id, index) for index in range(-(-len(documents) // size))]
    run = ExtractionRun(
        run_id=run_id,
        documents=len(documents),
        batches=len(queued),
        message_ids=[m.message_id for m in queued],
    )
    outputs: dict[str, object] = {"extraction_run": run}
    for index in range(run.batches):  # each batch reads only its own documents
        outputs[_batch_output(run.run_id, index, "documents")] = documents[index * size : (index + 1) * size]
    pipeline.report(
        task_id,
        progress=_START,
        message=f"Extracting {len(documents)} documents in {len(queued)} batches with {describe(info)}",
        data={
            "extractor": info.name,
            "provider": info.provider,
            "base_url": info.base_url,
            "model": info.model,
            "documents": len(documents),
            "batches": len(queued),
        },
        outputs=outputs,
    )
    if not queued:
        finish(pipeline, task_id, run, info)
    for message in queued:
        pipeline.broker.enqueue(message)


def process_batch(pipeline: Pipeline, task_id: str, run_id: str, index: int, message_id: str) -> None:
    """Actor body of one batch: extract, ground and store its rows; the last batch hands off to assembly."""
    job = pipeline.job(task_id)
    documents_name = _batch_output(run_id, index, "documents")
    inputs = pipeline.inputs(task_id, "extraction_run", "schema", documents_name)
    run = inputs.get("extraction_run", ExtractionRun)
    if run.run_id != run_id:  # the stage was re-run since this message was sent
        log.info("dropping a batch of a superseded run", extra={"task_id": task_id, "stage": "extraction"})
        return
    schema = inputs.get("schema", PreparedSchema)
    documents = inputs.get(documents_name, list[Document])
    extractor = choose_extractor(pipeline, job.request.extractor)
    batch = _Batch(pipeline, task_id=task_id, run=run, query=job.request.user_query, schema=schema, extractor=extractor)
    result = pipeline.run_async(batch.extract(documents))
    keys = pipeline.keys
    owner = pipeline.client.register_script(_FINISH_BATCH)(
        keys=[
            keys.extraction(task_id, run_id, "done"),
            keys.extraction(task_id, run_id, "owner"),
            keys.output(task_id, _batch_output(run_id, index, "rows")),
        ],
        args=[index, run.batches, message_id, pipeline.settings.result_ttl_s, _encode(result)],
    )
    if owner == 1:
        finish(pipeline, task_id, run, extractor.info())


def finish(pipeline: Pipeline, task_id: str, run: ExtractionRun, info: ExtractorInfo) -> None:
    """Gather every batch's rows and statistics, store them, hand the job to assembly."""
    rows: list[CandidateRow] = []
    stats = ExtractionStats(
        extractor=info.name, provider=info.provider, base_url=info.base_url, model=info.model, batches=run.batches
    )
    names = [_batch_output(run.run_id, index, "rows") for index in range(run.batches)]
    inputs = pipeline.inputs(task_id, *names)
    for name in names:
        result = inputs.get(name, BatchResult)
        rows += result.rows
        stats = add_stats(stats, result.stats)
    tokens = stats.prompt_tokens + stats.completion_tokens
    pipeline.hand_off(
        task_id,
        "assembly",
        progress=_END,
        message=(
            f"Extracted {len(rows)} candidate rows from {run.documents} documents: {stats.values_verified} values "
            f"verified, {stats.values_repaired} repaired, {stats.values_rejected} rejected; {tokens} tokens"
        ),
        data={
            "candidate_rows": len(rows),
            "extractor": info.name,
            "values_verified": stats.values_verified,
            "values_repaired": stats.values_repaired,
            "values_rejected": stats.values_rejected,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
        },
        outputs={"candidates": rows, "extraction_stats": stats},
    )


def add_stats(total: ExtractionStats, part: ExtractionStats) -> ExtractionStats:
    """Counts summed; the budget flag and response format carried over."""
    summed = {name: getattr(total, name) + getattr(part, name) for name in _COUNTS}
    return msgspec.structs.replace(
        total,
        budget_exhausted=total.budget_exhausted or part.budget_exhausted,
        response_format=part.response_format or total.response_format,
        **summed,
    )


def _batch_output(run_id: str, index: int, what: str) -> str:
    return f"extraction:{run_id}:{index}:{what}"


class _Batch:
    """Extracts a batch's documents concurrently on the pipeline's event loop."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        task_id: str,
        run: ExtractionRun,
        query: str,
        schema: PreparedSchema,
        extractor: Extractor,
    ) -> None:
        self.pipeline = pipeline
        self.task_id = task_id
        self.run = run
        self.query = query
        self.schema = schema
        self.extractor = extractor
        self.budget = pipeline.settings.max_tokens_per_job
        self.budget_reported = False
        # the batch's documents report one at a time: their events then follow the count in seq order, and
        # no report is computed on a job record another document's report has just changed (a second try)
        self.reporting = threading.Lock()
        info = extractor.info()
        self.cache_prefix = _encode([info.identity, extractor.version, query, schema])

    async def extract(self, documents: list[Document]) -> BatchResult:
        """Rows and statistics of the batch; the first hard failure cancels the documents still running."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.document(d)) for d in documents]
        except BaseExceptionGroup as failed:
            raise _first(failed) from None
        rows: list[CandidateRow] = []
        stats = ExtractionStats(documents=len(documents))
        for task in tasks:
            found, part = task.result()
            rows += found
            stats = add_stats(stats, part)
        return BatchResult(rows=rows, stats=stats)

    async def document(self, document: Document) -> tuple[list[CandidateRow], ExtractionStats]:
        """One document: from the cache or the extractor, then the grounding check."""
        if self.budget and await asyncio.to_thread(self._tokens_used) >= self.budget:
            await asyncio.to_thread(self._budget_reached)
            return [], ExtractionStats(documents_skipped=1, budget_exhausted=True)
        key = self.pipeline.keys.extraction_cache(self._digest(document))
        cached = await asyncio.to_thread(self.pipeline.client.get, key) if self.extractor.cached else None
        if cached is not None:
            extraction, spent = _decode_extraction(cached), 0
        else:
            extraction = await self.extractor.extract(self.query, self.schema, document)
            spent = extraction.prompt_tokens + extraction.completion_tokens
            if extraction.failure is None and self.extractor.cached:
                await asyncio.to_thread(
                    self.pipeline.client.set, key, _encode(extraction), ex=self.pipeline.settings.result_ttl_s
                )
        calls = ExtractionStats(
            llm_calls=extraction.calls,
            prompt_tokens=extraction.prompt_tokens if cached is None else 0,
            completion_tokens=extraction.completion_tokens if cached is None else 0,
            response_format=extraction.response_format,
        )
        if extraction.failure is not None:
            await asyncio.to_thread(self._progress, 0, spent, skipped=(document, extraction.failure))
            return [], add_stats(calls, ExtractionStats(documents_failed=1))
        threshold = self.pipeline.settings.grounding_threshold
        rows, counts = await asyncio.to_thread(ground, self.schema, document, extraction.rows, threshold=threshold)
        await asyncio.to_thread(self._progress, len(rows), spent)
        return rows, add_stats(calls, _grounding_stats(counts, cached=cached is not None))

    def _digest(self, document: Document) -> str:
        text = _encode([document.title, document.abstract, document.full_text])
        return hashlib.sha256(self.cache_prefix + b"\0" + text).hexdigest()

    def _key(self, name: str) -> str:
        return self.pipeline.keys.extraction(self.task_id, self.run.run_id, name)

    def _tokens_used(self) -> int:
        return int(self.pipeline.client.get(self._key("tokens")) or 0)

    def _progress(self, rows: int, spent: int, *, skipped: tuple[Document, str] | None = None) -> None:
        """Count the document done and its tokens in the run's shared counters (one round trip); report both."""
        with self.reporting:
            self._count_and_report(rows, spent, skipped)

    def _count_and_report(self, rows: int, spent: int, skipped: tuple[Document, str] | None) -> None:
        ttl = self.pipeline.settings.result_ttl_s
        with self.pipeline.client.pipeline() as pipe:
            pipe.incr(self._key("documents_done"))
            pipe.incrby(self._key("tokens"), spent)
            pipe.expire(self._key("documents_done"), ttl)
            pipe.expire(self._key("tokens"), ttl)
            done, tokens, *_ = pipe.execute()
        total = max(self.run.documents, 1)
        message = f"Extracted {done}/{self.run.documents} documents"
        data: dict[str, EventValue] = {"documents_done": done, "documents": self.run.documents, "rows": rows}
        if skipped is not None:
            document, why = skipped
            message += f"; skipped {document.title[:80]!r}: {why}"
            data |= {"warning": why, "document": document.id}
        self.pipeline.report(
            self.task_id,
            progress=_START + (_END - _START) * min(done, total) // total,
            message=message,
            tokens=tokens,
            data=data | {"tokens": tokens},
        )

    def _budget_reached(self) -> None:
        if not self.budget_reported:
            self.budget_reported = True
            self.pipeline.report(
                self.task_id,
                message=f"Token budget of {self.budget} reached: the remaining documents are skipped",
                data={"warning": "token budget reached", "budget": self.budget},
            )


def _grounding_stats(counts: GroundingCounts, *, cached: bool) -> ExtractionStats:
    return ExtractionStats(
        documents_extracted=1,
        documents_cached=int(cached),
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
