"""Everything litminer keeps in Redis, and the only code that talks to Redis.

``Store`` opens the connections and groups the parts: job records and outputs (``jobs``), events
(``events``), the stage queues (``queues``), worker heartbeats (``workers``) and extraction runs
(``extraction``). Sources keep their cache and rate limits in ``SourceState`` (async, per event loop) and the
API reads events with ``EventFeed`` (async). Key names are all in ``Keys``.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from dramatiq.errors import BrokerConnectionError

from pipeline.settings import Settings
from pipeline.store.events import EventBus, EventFeed, publisher_client
from pipeline.store.extraction import ExtractionState
from pipeline.store.jobs import REVIEW, Inputs, JobStore
from pipeline.store.keys import Keys
from pipeline.store.queues import BATCH_ACTOR, Queues
from pipeline.store.workers import LIVE_S, WorkerRegistry

#: what Redis raises while it cannot be reached (a restart, a failover): worth waiting out
UNREACHABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)
#: anything Redis raises
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, BrokerConnectionError)

__all__ = [
    "BATCH_ACTOR",
    "LIVE_S",
    "REDIS_ERRORS",
    "REVIEW",
    "UNREACHABLE",
    "EventBus",
    "EventFeed",
    "ExtractionState",
    "Inputs",
    "JobStore",
    "Keys",
    "Queues",
    "Store",
    "WorkerRegistry",
    "answers",
    "connect_async",
]


def answers(redis_url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``redis_url`` (used to wait for one that is starting)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def connect_async(settings: Settings) -> aioredis.Redis:
    """An asyncio client of the configured Redis, for libraries that keep their own keys in it (the API's rate
    limiter); close it with ``aclose``."""
    return aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)


class Store:
    """One process's Redis connections and the parts of the store built on them; ``close`` when done."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self.publisher = publisher_client(settings.redis_url)
        self.events = EventBus(
            self.client, self.publisher, self.keys, ttl_s=settings.result_ttl_s, maxlen=settings.event_stream_maxlen
        )
        self.jobs = JobStore(self.client, self.keys, self.events, ttl_s=settings.result_ttl_s)
        self.queues = Queues(self.client, self.keys, settings)
        self.workers = WorkerRegistry(self.client, self.keys)
        self.extraction = ExtractionState(self.client, self.keys, ttl_s=settings.result_ttl_s)

    def close(self) -> None:
        self.client.close()
        self.publisher.close()
