"""Builds the Dramatiq Redis broker with litminer's middleware."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.middleware import CurrentMessage, TimeLimit
from dramatiq_abort import Abort, Abortable
from dramatiq_abort.backends import RedisBackend

from contracts import Stage
from pipeline.errors import JobCancelled, PermanentError
from pipeline.keys import Keys
from pipeline.middleware import JobEvents, StageRetries
from pipeline.settings import Settings
from pipeline.store import JobStore
from pipeline.workers import WorkerStatus

# Run before Dramatiq's own dispatch script: an enqueue (or a requeue at shutdown) leaves a wake-up token for the
# queue's idle consumers, which wait on it with BLPOP instead of polling. A script runs atomically, so a consumer
# woken by the token finds the message. A token goes straight to a consumer already waiting; one is kept for
# the next to wait (its fetch takes every message queued meanwhile), so a busy queue leaves no pile of
# tokens that would each cost an idle consumer an empty fetch.
_WAKE = """
if ARGV[1] == "enqueue" or ARGV[1] == "requeue" then
  local wake = KEYS[1] .. ":__wake__." .. ARGV[3]
  redis.call("lpush", wake, "1")
  redis.call("ltrim", wake, 0, 0)
  redis.call("pexpire", wake, 60000)
end
"""


class WakingRedisBroker(RedisBroker):
    """Dramatiq's Redis broker whose idle consumers are woken by new messages instead of polling.

    Dramatiq's consumer sleeps between empty fetches, up to the worker timeout: a message enqueued meanwhile
    waits for the sleep to end, at every stage of a job. Here an empty fetch is followed by a BLPOP on the
    queue's wake-up list (up to the worker timeout), and a full consumer waits for one of its messages to
    be acknowledged instead of sleeping.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        dispatch = self.scripts["dispatch"].script
        assert isinstance(dispatch, bytes)  # Dramatiq reads its scripts as bytes
        self.scripts["dispatch"] = self.client.register_script(_WAKE.encode() + dispatch)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:__wake__.{queue_name}"


class _WakingConsumer(_RedisConsumer):
    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        # timeout 0: Dramatiq's own consumer never sleeps between fetches; __next__ below waits instead
        super().__init__(broker, queue_name, prefetch, timeout=0)  # type: ignore[no-untyped-call]
        self.wait_s = timeout / 1000
        self.wake_key = broker.wake_key(queue_name)
        self.freed = threading.Event()

    def ack(self, message: dramatiq.MessageProxy) -> None:
        try:
            super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self.freed.set()

    def nack(self, message: dramatiq.MessageProxy) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self.freed.set()

    def __next__(self) -> dramatiq.MessageProxy | None:
        self.freed.clear()  # before looking: an acknowledgement from now on ends the wait below
        full = not self.message_cache and self.outstanding_message_count >= self.prefetch
        message: dramatiq.MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        if message is not None:
            return message
        if full:
            self.freed.wait(self.wait_s)
        else:
            try:
                self.broker.client.blpop([self.wake_key], timeout=self.wait_s)
            except redis.ConnectionError as exc:
                raise dramatiq.ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        return None


class JobAbortable(Abortable):  # type: ignore[misc]
    """dramatiq-abort's middleware without its poll for a cancel before every message (a round trip each).

    A queued message of a cancelled job needs no such signal here: ``Pipeline.cancel`` marks the job cancelled
    before it aborts anything, and JobEvents skips every message of a finished job.
    """

    closing = False

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message[Any]) -> None:
        if self.is_abortable(broker.get_actor(message.actor_name), message):
            self.manager.add_abortable(message.message_id)

    def _get_abort_requests(self) -> None:  # (the watcher thread's loop body in dramatiq-abort 1.2)
        try:
            super()._get_abort_requests()
        except redis.ConnectionError:
            if not self.closing:
                raise
            time.sleep(1)  # its connection was closed under it at shutdown: nothing to report


def build_broker(
    settings: Settings, client: redis.Redis, store: JobStore, stages: dict[str, Stage], *, parts: set[str]
) -> tuple[RedisBroker, Abortable, WorkerStatus]:
    """A Redis broker whose middleware retries with exact backoff, aborts, reports job status and heartbeats."""
    keys = Keys(settings.key_prefix)
    abortable = JobAbortable(backend=RedisBackend(client=client, namespace=keys.abort_namespace))
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
    # Only what litminer uses: every middleware's hooks run around every message (Dramatiq's defaults add
    # AgeLimit, ShutdownNotifications, Callbacks and Pipelines, which no actor here asks for).
    middleware = [
        TimeLimit(time_limit=settings.stage_time_limit_ms),
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
    broker = WakingRedisBroker(
        client=client,
        namespace=keys.dramatiq_namespace,
        middleware=middleware,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        maintenance_chance=settings.broker_maintenance_chance,
    )
    return broker, abortable, status
