"""Which Redis errors are an outage that ends by itself (worth waiting out), and which are not."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import redis
from dramatiq.errors import BrokerConnectionError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long a worker keeps trying a write it must not lose (an outcome, a retry, a message) before giving up
REDIS_OUTAGE_S = 300.0

#: what Redis raises while it cannot be reached (a restart, a failover): worth waiting out
UNREACHABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)
#: anything Redis raises
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, BrokerConnectionError)
#: what Redis answers while it refuses writes for a while: out of memory (``maxmemory`` with ``noeviction``),
#: read-only (a replica, after a failover), MASTERDOWN (a replica cut off from its master, during a failover);
#: and, matched by their text below, MISCONF (a background save failed) and NOREPLICAS (fewer replicas in sync
#: than ``min-replicas-to-write``): worth waiting out too
REFUSING: tuple[type[Exception], ...] = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
)


#: the same refusals (and NOREPLICAS, MASTERDOWN) as Redis words them, also inside a Lua script, which Redis
#: reports as "Error running script … -OOM …"
_REFUSED = re.compile(r"(?:^|[\s-])(?:OOM|READONLY|MISCONF|NOREPLICAS|MASTERDOWN) ")


def passing(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis outage that ends by itself (unreachable, or refusing writes), not a bug."""
    if isinstance(exc, UNREACHABLE + REFUSING):
        return True
    return isinstance(exc, redis.ResponseError) and _REFUSED.search(str(exc)) is not None


def describe(exc: BaseException) -> str:
    """A Redis outage in words, for an event a user reads (``passing`` errors; others as their message)."""
    text = str(exc)
    if not passing(exc):
        return text or type(exc).__name__
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or " OOM " in f" {text.replace('-', ' ')} ":
        return "Redis refused writes: it is out of memory (maxmemory)"
    if isinstance(exc, redis.exceptions.ReadOnlyError) or "READONLY" in text:
        return "Redis refused writes: it is a read-only replica (a failover?)"
    if "MISCONF" in text:
        return "Redis refused writes: it cannot save its data to disk (MISCONF)"
    if "NOREPLICAS" in text:
        return "Redis refused writes: too few replicas are in sync (min-replicas-to-write)"
    if isinstance(exc, redis.exceptions.MasterDownError) or "MASTERDOWN" in text:
        return "Redis refused: a replica has lost its master (a failover?)"
    return f"Redis is unreachable ({text or type(exc).__name__})"


def until_redis_answers(action: Callable[[], T], what: str, context: Mapping[str, str]) -> T:
    """``action()``, tried again every second while Redis is unreachable or refuses writes (out of memory,
    read-only, MISCONF), for up to ``REDIS_OUTAGE_S``.

    What a message's outcome writes (its retry, the job's status, the next stage's message) must not be lost
    to a Redis outage: Dramatiq acknowledges the message once Redis is back, so a retry skipped now would never
    happen. Past the deadline the error is raised; the reaper (``pipeline.worker.reaper``) then finds the job.
    """
    deadline = time.monotonic() + REDIS_OUTAGE_S
    while True:
        try:
            return action()
        except Exception as exc:
            if not passing(exc) or time.monotonic() > deadline:
                raise
            log.warning("%s: Redis unavailable (%s); trying again in 1 s", what, exc, extra=dict(context))
            time.sleep(1)
