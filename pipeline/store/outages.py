"""Which Redis errors are an outage that ends by itself (worth waiting out), and which are not."""

from __future__ import annotations

import re

import redis
from dramatiq.errors import BrokerConnectionError

#: what Redis raises while it cannot be reached (a restart, a failover): worth waiting out
UNREACHABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)
#: anything Redis raises
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, BrokerConnectionError)
#: what Redis answers while it refuses writes for a while: out of memory (``maxmemory`` with ``noeviction``),
#: read-only (a replica, after a failover) or MISCONF (a background save failed): worth waiting out too
REFUSING: tuple[type[Exception], ...] = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)


#: the same refusals met inside a Lua script, which Redis reports as "Error running script … -OOM …"
_REFUSED = re.compile(r"(?:^|[\s-])(?:OOM|READONLY|MISCONF) ")


def passing(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis outage that ends by itself (unreachable, or refusing writes), not a bug."""
    if isinstance(exc, UNREACHABLE + REFUSING):
        return True
    return isinstance(exc, redis.ResponseError) and _REFUSED.search(str(exc)) is not None
