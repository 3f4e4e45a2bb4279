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
        # WorkerStatus before JobEvents: it must see every message JobEvents may skip.
        status,
        # JobEvents before StageRetries: "after" hooks run in reverse, so it sees the retry decision.
        JobEvents(store, stages, parts=parts, max_crashes=settings.max_crashes),
        retries,
        # Abortable last: a message is abortable only while its actor runs. Its "after" hook (run first) stops
        # that, so an abort arriving late never raises inside the other hooks' Redis writes.
        abortable,
    ]
    # A worker killed mid-message never acknowledges it: once its broker heartbeat is older than the timeout,
    # queue maintenance (run by a share of every broker's commands) moves its messages back onto the queue.
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        namespace=keys.dramatiq_namespace,
        middleware=middleware,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        maintenance_chance=settings.broker_maintenance_chance,
    )
    return broker, abortable, status
