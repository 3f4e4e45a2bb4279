"""What a worker process runs: the stage actors, and the StageContext they are given.

This is the only module that imports the stage modules. Each actor is named after its stage and consumes the
queue of the same name (extraction batches: the ``extraction_batch`` actor on the ``extraction`` queue). The
``deliver_webhook`` actor POSTs webhooks (``pipeline.webhooks``) from the ``webhooks`` queue; with an archive, the
``archive_job`` actor copies ended jobs to PostgreSQL (``pipeline.archive``) from the ``archive`` queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TypeVar

import dramatiq
from dramatiq.asyncio import EventLoopThread
from dramatiq.middleware import CurrentMessage

from contracts import STAGES, Dataset, Estimate, JobRecord, Stage
from contracts.progress import EstimateReady, EventData, JobCompleted
from pipeline import webhooks
from pipeline.archive import declare_archive_actor
from pipeline.errors import JobCancelled
from pipeline.extractors import default_extractors
from pipeline.extractors.base import Extractor
from pipeline.settings import Settings, check_installed
from pipeline.sources.base import Source
from pipeline.sources.http import SourceHttp
from pipeline.sources.registry import available_sources
from pipeline.stages import assembly, extraction, schema_preparation, search
from pipeline.stages.context import StageContext
from pipeline.store import BATCH_ACTOR, WEBHOOK_ACTOR, WEBHOOK_QUEUE, ExtractionState, Inputs, Store
from pipeline.store.jobs import BATCH_MESSAGES
from pipeline.store.queues import Handover
from pipeline.worker.broker import build_broker

log = logging.getLogger(__name__)

T = TypeVar("T")

#: each stage's body
_BODIES: dict[Stage, Callable[[StageContext, str], None]] = {
    "schema_preparation": schema_preparation.process,
    "search": search.process,
    "extraction": extraction.process,
    "assembly": assembly.process,
}


class WorkerRuntime:
    """The stage actors on a broker of their own, and everything a stage may use (a ``StageContext``).

    ``sources`` and ``extractors`` replace the installed ones (tests and benchmarks pass stand-ins).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sources: Mapping[str, Source] | None = None,
        extractors: Mapping[str, Extractor] | None = None,
    ) -> None:
        self._settings = settings
        self._sources = dict(sources) if sources is not None else available_sources(settings)
        self._extractors = dict(extractors) if extractors is not None else default_extractors(settings)
        check_installed(settings, sources=self._sources, extractors=self._extractors)
        self.store = Store(settings)
        stage_of: dict[str, Stage] = {stage: stage for stage in STAGES}
        self.broker, self.status, self.abortable = build_broker(
            settings, self.store, stage_of | {BATCH_ACTOR: "extraction"}, parts={BATCH_ACTOR}
        )
        for stage, body in _BODIES.items():
            self._declare(stage, body)
        self._declare_batch()
        self._declare_webhook()
        self.archive = declare_archive_actor(self.broker, self.store, settings)  # None without LITMINER_DATABASE_URL
        self._loop: EventLoopThread | None = None
        self._loop_lock = threading.Lock()
        self._source_http: SourceHttp | None = None

    def _declare(self, stage: Stage, body: Callable[[StageContext, str], None]) -> None:
        def run_stage(task_id: str) -> None:
            body(self, task_id)

        run_stage.__name__ = stage
        declare = dramatiq.actor(
            broker=self.broker, actor_name=stage, queue_name=stage, time_limit=self._settings.stage_time_limit_ms
        )
        declare(run_stage)

    def _declare_webhook(self) -> None:
        def deliver_webhook(task_id: str, seq: int, attempt: int) -> None:
            webhooks.deliver(self, task_id, seq, attempt)

        # The attempt's own timeout ends it first; the time limit only backs it up.
        limit_ms = int(self._settings.webhook_timeout_s * 1000) + 30_000
        declare = dramatiq.actor(
            broker=self.broker, actor_name=WEBHOOK_ACTOR, queue_name=WEBHOOK_QUEUE, time_limit=limit_ms
        )
        declare(deliver_webhook)

    def _declare_batch(self) -> None:
        def extraction_batch(task_id: str, run_id: str, index: int) -> None:
            message = CurrentMessage.get_current_message()
            extraction.process_batch(self, task_id, run_id, index, message.message_id if message else "")

        declare = dramatiq.actor(
            broker=self.broker,
            actor_name=BATCH_ACTOR,
            queue_name="extraction",
            time_limit=self._settings.stage_time_limit_ms,
        )
        declare(extraction_batch)

    # -- StageContext ---------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def sources(self) -> Mapping[str, Source]:
        return self._sources

    @property
    def extractors(self) -> Mapping[str, Extractor]:
        return self._extractors

    @property
    def extraction(self) -> ExtractionState:
        return self.store.extraction

    def job(self, task_id: str) -> JobRecord:
        job = self.store.jobs.load(task_id, recent=True)  # JobEvents has just read and updated it
        if job is None:
            raise JobCancelled(f"job {task_id} no longer exists")
        return job

    def inputs(self, task_id: str, *names: str) -> Inputs:
        return self.store.jobs.inputs(task_id, *names)

    def report(
        self,
        task_id: str,
        *,
        message: str,
        progress: int | None = None,
        tokens: int | None = None,
        data: EventData | None = None,
        outputs: Mapping[str, object] | None = None,
        before: Sequence[tuple[str, EventData]] = (),
    ) -> None:
        job = self.store.jobs.transition(
            task_id,
            status="processing",
            progress=progress,
            message=message,
            tokens=tokens,
            data=data,
            outputs=outputs,
            events=before,
        )
        if job is None:
            raise JobCancelled(task_id)

    def hand_off(
        self,
        task_id: str,
        next_stage: Stage,
        *,
        progress: int,
        message: str,
        outputs: Mapping[str, object],
        data: EventData | None = None,
    ) -> None:
        # One round trip: the outputs stored, the next stage's message recorded and sent, this one acknowledged.
        queued = self.store.queues.message(next_stage, task_id)
        handover = self.store.queues.handover(self.broker, send=queued, ack=CurrentMessage.get_current_message())
        job = self.store.jobs.transition(
            task_id,
            progress=progress,
            message=message,
            message_id=queued.message_id,
            data=data,
            outputs=outputs,
            handover=handover,
        )
        if job is None:
            raise JobCancelled(task_id)
        self._acknowledged(handover)
        log.info("%s; next: %s", message, next_stage, extra={"task_id": task_id, "stage": job.stage})

    def _acknowledged(self, handover: Handover) -> None:
        """Tell the consumer that a job change acknowledged the current message (it then need not)."""
        if handover.ack_id:
            self.broker.acknowledged.add(handover.ack_id)

    def start_batches(
        self,
        task_id: str,
        run_id: str,
        count: int,
        *,
        progress: int,
        message: str,
        outputs: Mapping[str, object],
        data: EventData | None = None,
    ) -> None:
        # The batches wait for their owner's turn (``Queues.send_batches``): another owner's small job is not
        # queued behind all of them. Recorded first, so a cancel in between finds them; and every key the run
        # will write is listed among the job's outputs before, so its TTL is renewed and a delete finds it.
        queued = [self.store.queues.message(BATCH_ACTOR, task_id, run_id, index) for index in range(count)]
        batch_messages = [m.message_id for m in queued]
        job = self.job(task_id)
        self.store.jobs.list_outputs(task_id, self.extraction.run_keys(task_id, run_id, count))
        self.report(
            task_id, progress=progress, message=message, data=data, outputs={**outputs, BATCH_MESSAGES: batch_messages}
        )
        self.store.queues.send_batches(job.owner or job.client_id, queued, self.broker)

    def complete(self, task_id: str, dataset: Dataset, *, message: str) -> None:
        data = JobCompleted(
            rows=len(dataset.rows), requested_rows=dataset.stats.requested_rows, shortfall=dataset.stats.shortfall
        )
        self._end(task_id, "dataset", dataset, f"/api/v1/datasets/{task_id}", message=message, data=data)

    def complete_estimate(self, task_id: str, estimate: Estimate, *, message: str) -> None:
        data = EstimateReady(
            documents=estimate.documents,
            calls=estimate.calls,
            prompt_tokens=estimate.prompt_tokens,
            completion_tokens=estimate.completion_tokens,
            completion_basis=estimate.completion_basis,
            budget=estimate.budget,
            over_budget=estimate.over_budget,
            documents_within_budget=estimate.documents_within_budget,
            cost_usd=estimate.cost_usd,
        )
        self._end(task_id, "estimate", estimate, f"/api/v1/tasks/{task_id}/estimate", message=message, data=data)

    def _end(self, task_id: str, output: str, value: object, url: str, *, message: str, data: EventData) -> None:
        """Store the job's result (``output``: its ``value``) and mark it completed, acknowledging the message."""
        handover = self.store.queues.handover(self.broker, ack=CurrentMessage.get_current_message())
        done = self.store.jobs.transition(
            task_id,
            handover=handover,
            outputs={output: value},
            status="completed",
            stage="done",
            progress=100,
            message=message,
            result_url=url,
            data=data,
        )
        if done is not None:
            self._acknowledged(handover)
        log.info(message, extra={"task_id": task_id, "stage": "assembly" if output == "dataset" else "extraction"})

    def run_async(self, coroutine: Coroutine[object, object, T]) -> T:
        """Run ``coroutine`` on this process's event loop and wait for it.

        One loop per process, shared by every worker thread, so the LLM concurrency limit and the HTTP
        connection pool hold process-wide. Dramatiq's loop thread polls for interrupts, so an abort or time
        limit still lands in the waiting thread and cancels the coroutine.
        """
        with self._loop_lock:
            if self._loop is None:
                self._loop = EventLoopThread(log)
                self._loop.daemon = True
                self._loop.start(timeout=5)
        result: T = self._loop.run_coroutine(coroutine)
        return result

    def source_http(self) -> SourceHttp:
        """One per process, kept open: creating one costs a TLS context (about 10 ms of CPU), and open
        connections to a source's API are reused by later searches."""
        if self._source_http is None:
            self._source_http = SourceHttp.create(self._settings)
        return self._source_http

    def close(self) -> None:
        """Release the LLM connections, the event loop and Redis connections."""
        if self._loop is not None:
            for extractor in self._extractors.values():
                self._loop.run_coroutine(extractor.close())
            if self._source_http is not None:
                self._loop.run_coroutine(self._source_http.close())
                self._source_http = None
            self._loop.stop()  # type: ignore[no-untyped-call]
            self._loop = None
        self.abortable.closing = True  # its watcher's BLPOP is about to lose its connection
        self.broker.close()
        self.store.close()
        if self.archive is not None:
            self.archive.close()
