"""Builds the Dramatiq Redis broker with litminer's middleware."""

from __future__ import annotations

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq_abort import Abort, Abortable
from dramatiq_abort.backends import RedisBackend

from contracts import Stage
from pipeline.errors import JobCancelled, PermanentError
from pipeline.keys import Keys
from pipeline.middleware import JobEvents, StageRetries
from pipeline.settings import Settings
from pipeline.store import JobStore
from pipeline.workers import WorkerStatus


def build_broker(
    settings: Settings, client: redis.Redis, store: JobStore, stages: dict[str, Stage], *, parts: set[str]
) -> tuple[RedisBroker, Abortable, WorkerStatus]:
    """A Redis broker whose middleware retries with exact backoff, aborts, reports job status and heartbeats."""
    keys = Keys(settings.key_prefix)
    abortable = Abortable(backend=RedisBackend(client=client, namespace=keys.abort_namespace))
    retries = StageRetries(
        max_retries=settings.max_retries,
        min_backoff_ms=settings.retry_min_backoff_ms,
        max_backoff_ms=settings.retry_max_backoff_ms,
        jitter=settings.retry_jitter,
        permanent=(Abort, JobCancelled, PermanentError),
    )
    status = WorkerStatus(
        client,
        keys,
        stages,
        interval_s=settings.worker_heartbeat_s,
        metrics_port=settings.worker_metrics_port,
    )
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=settings.stage_time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        abortable,
        # WorkerStatus before JobEvents: it must see every message JobEvents may skip.
        status,
        # JobEvents before StageRetries: "after" hooks run in reverse, so it sees the retry decision.
        JobEvents(store, stages, parts=parts),
        retries,
    ]
    broker = RedisBroker(client=client, namespace=keys.dramatiq_namespace, middleware=middleware)  # type: ignore[no-untyped-call]
    return broker, abortable, status
