"""Everything litminer keeps in Redis, and the only code that talks to Redis.

``Store`` opens the connections and groups the parts: job records and outputs (``jobs``), events
(``events``), the stage queues (``queues``), worker heartbeats (``workers``), extraction runs
(``extraction``) and webhook delivery attempts (``webhooks``); it queues a job's webhook and its archive copy
when the job ends. Sources keep their cache and rate limits in ``SourceState`` (async, per event loop) and the
API reads events with ``EventFeed`` (async). Key names are all in ``Keys``.
"""

from __future__ import annotations

import logging

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contracts import JobRecord
from pipeline.errors import StoreUnavailable
from pipeline.settings import Settings
from pipeline.store import connections
from pipeline.store.events import EventBus, EventFeed, publisher_client
from pipeline.store.extraction import ExtractionState
from pipeline.store.jobs import REVIEW, Inputs, JobStore
from pipeline.store.keys import Keys
from pipeline.store.outages import REDIS_ERRORS, REFUSING, UNREACHABLE, passing
from pipeline.store.queues import ARCHIVE_ACTOR, ARCHIVE_QUEUE, BATCH_ACTOR, WEBHOOK_ACTOR, WEBHOOK_QUEUE, Queues
from pipeline.store.webhooks import WebhookLog, callback_url
from pipeline.store.workers import LIVE_S, WorkerRegistry

log = logging.getLogger(__name__)

__all__ = [
    "ARCHIVE_ACTOR",
    "ARCHIVE_QUEUE",
    "BATCH_ACTOR",
    "LIVE_S",
    "REDIS_ERRORS",
    "REFUSING",
    "REVIEW",
    "UNREACHABLE",
    "WEBHOOK_ACTOR",
    "WEBHOOK_QUEUE",
    "EventBus",
    "EventFeed",
    "ExtractionState",
    "Inputs",
    "JobStore",
    "Keys",
    "Queues",
    "Store",
    "WebhookLog",
    "WorkerRegistry",
    "answers",
    "callback_url",
    "connect_async",
    "passing",
    "require_redis",
]


def answers(redis_url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``redis_url`` (used to wait for one that is starting)."""
    return _ping(Settings(redis_url=redis_url), timeout_s) is None


def require_redis(settings: Settings, *, timeout_s: float = 3.0, advice: str = "") -> None:
    """Raise ``StoreUnavailable`` with one line saying what was tried and what to do, unless the configured Redis
    (the Sentinels' master, with ``REDIS_SENTINELS``) answers PING: what ``litminer api``, ``worker`` and
    ``rerun`` check before they start.

    ``advice`` replaces the default advice (set ``REDIS_URL`` or ``REDIS_SENTINELS``, or run the commands that
    start their own Redis).
    """
    error = _ping(settings, timeout_s)
    if error is None:
        return
    if settings.redis_sentinels:
        advice = advice or "check REDIS_SENTINELS, REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD"
        raise StoreUnavailable(f"no Redis answers as {connections.where(settings)} ({error}): {advice}")
    advice = advice or (
        "set REDIS_URL to a running Redis (or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, or REDIS_SENTINELS), or run "
        "`litminer demo` or `litminer generate --embedded`, which start their own"
    )
    raise StoreUnavailable(f"no Redis answers at {connections.where(settings)} ({error}): {advice}")


def _ping(settings: Settings, timeout_s: float) -> str | None:
    """None when the configured Redis answers PING, else why not (never with a password)."""
    once = Retry(NoBackoff(), 0)  # one try: the caller says how long it waits
    client = connections.sync_client(settings, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=once)
    try:
        client.ping()
    except redis.RedisError as exc:
        return connections.hide_password(str(exc)) or type(exc).__name__
    finally:
        connections.close(client)
    return None


def connect_async(settings: Settings) -> aioredis.Redis:
    """An asyncio client of the configured Redis, for libraries that keep their own keys in it (the API's rate
    limiter); close it with ``aclose``."""
    return connections.async_client(settings, socket_connect_timeout=5)


class Store:
    """One process's Redis connections and the parts of the store built on them; ``close`` when done."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.client = connections.sync_client(
            settings, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self.publisher = publisher_client(settings)
        self.events = EventBus(
            self.client, self.publisher, self.keys, ttl_s=settings.result_ttl_s, maxlen=settings.event_stream_maxlen
        )
        self.jobs = JobStore(self.client, self.keys, self.events, ttl_s=settings.result_ttl_s, on_end=self._job_ended)
        self.queues = Queues(self.client, self.keys, settings)
        self.webhooks = WebhookLog(self.client, self.keys, ttl_s=settings.result_ttl_s)
        self.workers = WorkerRegistry(self.client, self.keys)
        self.extraction = ExtractionState(self.client, self.keys, ttl_s=settings.result_ttl_s)

    def _job_ended(self, job: JobRecord, seq: int) -> None:
        """Send what follows a job's end (event ``seq``): its webhook, and its copy to the archive."""
        self._queue_webhook(job, seq)
        self.queue_archive(job.task_id, stage=job.stage)

    def queue_archive(self, task_id: str, *, stage: str = "done") -> None:
        """Have a worker copy the job, as Redis then holds it, to the archive (when there is one): after its end
        and after every review. Never raises: the job's change is already stored, and archiving never fails it."""
        if not self.settings.database_url:
            return
        try:
            self.queues.send(self.queues.message(ARCHIVE_ACTOR, task_id))
        except REDIS_ERRORS as exc:
            log.error("archive copy not queued: %s", exc, extra={"task_id": task_id, "stage": stage})

    def _queue_webhook(self, job: JobRecord, seq: int) -> None:
        """Send the webhook of a job that has just ended (event ``seq``), when it has a callback URL.

        Never raises: the job's end is already stored, and a webhook never fails its job.
        """
        if callback_url(job, self.settings) is None:
            return
        try:
            self.queues.send(self.queues.message(WEBHOOK_ACTOR, job.task_id, seq, 1))
        except REDIS_ERRORS as exc:
            log.error("webhook not queued: %s", exc, extra={"task_id": job.task_id, "stage": job.stage})

    def replicated(self) -> None:
        """With Sentinel, return once a replica holds every write made so far (``ReplicaWait``), so that what the
        caller is about to be told (a cancel, a review) survives a failover; without, at once."""
        self.queues.replica_wait.wait(self.client)

    def close(self) -> None:
        connections.close(self.client)
        connections.close(self.publisher)
