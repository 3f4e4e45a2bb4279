"""The broker a worker runs: Dramatiq's Redis broker (from the store) with litminer's middleware, in order."""

from __future__ import annotations

from dramatiq.middleware import CurrentMessage, Middleware, TimeLimit
from dramatiq_abort import Abort

from contracts import Stage
from pipeline.errors import JobCancelled, PermanentError
from pipeline.settings import Settings
from pipeline.store import Store
from pipeline.store.queues import JobAbortable, WakingRedisBroker
from pipeline.worker.middleware import FairRelease, JobEvents, StageRetries
from pipeline.worker.reaper import Reaper
from pipeline.worker.status import WorkerStatus


def build_broker(
    settings: Settings, store: Store, stages: dict[str, Stage], *, parts: set[str]
) -> tuple[WakingRedisBroker, WorkerStatus, JobAbortable]:
    """A broker whose middleware retries with exact backoff, aborts, reports job status and heartbeats.

    ``stages`` maps actor names to their stage; ``parts`` names the actors that run one batch of a stage.
    """
    abortable = JobAbortable(backend=store.queues.abort_backend)
    status = WorkerStatus(
        store.workers, stages, interval_s=settings.worker_heartbeat_s, metrics_port=settings.worker_metrics_port
    )
    retries = StageRetries(
        max_retries=settings.max_retries,
        min_backoff_ms=settings.retry_min_backoff_ms,
        max_backoff_ms=settings.retry_max_backoff_ms,
        jitter=settings.retry_jitter,
        permanent=(Abort, JobCancelled, PermanentError),
    )
    # Only what litminer uses: every middleware's hooks run around every message (Dramatiq's defaults add
    # AgeLimit, ShutdownNotifications, Callbacks and Pipelines, which no actor here asks for).
    middleware: list[Middleware] = [
        TimeLimit(time_limit=settings.stage_time_limit_ms),
        CurrentMessage(),
        # WorkerStatus before JobEvents: it must see every message JobEvents may skip.
        status,
        Reaper(store, after_s=settings.reap_after_s),
        # FairRelease before JobEvents: its "after" hook runs once the batch's outcome is recorded.
        FairRelease(store.queues.fair),
        # JobEvents before StageRetries: "after" hooks run in reverse, so it sees the retry decision.
        JobEvents(store.jobs, stages, parts=parts, max_crashes=settings.max_crashes),
        retries,
        # Abortable last: a message is abortable only while its actor runs. Its "after" hook (run first) stops
        # that, so an abort arriving late never raises inside the other hooks' Redis writes.
        abortable,
    ]
    return store.queues.new_broker(middleware, patient=True), status, abortable
