"""Every Redis client litminer opens: to ``REDIS_URL``'s host, or to the master the Sentinels name.

With ``REDIS_SENTINELS`` set, each client's pool asks the Sentinels for the master's address whenever it
connects, so after a failover a client follows the new master at its next connection: redis-py drops a
connection that fails or that answers ``READONLY`` (the old master, now a replica). ``REDIS_URL`` still gives
what the master and the replicas share: password (and user), database and TLS (``rediss://`` and its
``ssl_*`` options); its host and port are not used. The Sentinels are reached the same way (TLS with
``rediss://``), with their own password, ``REDIS_SENTINEL_PASSWORD``, if they have one.

``ReplicaWait`` makes what a client is told survive a failover: Redis replicates asynchronously, so the master
may die with writes no replica has. It waits (``WAIT 1``) until a replica holds them.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.settings import Settings
from pipeline.store.keys import Keys

log = logging.getLogger(__name__)

#: the password in a Redis URL, hidden in messages and logs
_PASSWORD = re.compile(r"(\w://[^:/@\s]*:)[^@\s/]+@")


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    return _PASSWORD.sub(r"\1***@", url)


def where(settings: Settings) -> str:
    """Where the settings point, for logs and messages (never a password)."""
    if not settings.redis_sentinels:
        return hide_password(settings.redis_url)
    sentinels = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
    return f"the master {settings.redis_sentinel_master!r} of the Sentinels {sentinels}"


def sync_client(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the configured Redis (through the Sentinels when set); ``options`` are redis-py's connection
    options (timeouts, ``retry``, ``health_check_interval``, ``client_name``). Close it with ``close``."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **options)
    sentinel_options = _sentinel_options(settings, options) | {"retry": Retry(NoBackoff(), 0)}
    sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        settings.redis_sentinels, sentinel_kwargs=sentinel_options
    )
    client = sentinels.master_for(settings.redis_sentinel_master, **_master_options(settings), **options)  # type: ignore[no-untyped-call]
    return cast(redis.Redis, client)


def async_client(
    settings: Settings, *, pool_size: int = 0, pool_timeout_s: float = 0.0, **options: Any
) -> aioredis.Redis:
    """An asyncio client of the configured Redis (through the Sentinels when set); close it with ``aclose``.

    With ``pool_size``, at most that many connections are open at once and a command waits up to
    ``pool_timeout_s`` for a free one (rather than failing at once).
    """
    if pool_size:
        options |= {"max_connections": pool_size, "timeout": pool_timeout_s}
    if not settings.redis_sentinels:
        if not pool_size:
            return aioredis.Redis.from_url(settings.redis_url, **options)
        pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, **options)
        return aioredis.Redis(connection_pool=pool)
    sentinel_options = _sentinel_options(settings, options) | {"retry": AsyncRetry(NoBackoff(), 0)}
    sentinels = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
        settings.redis_sentinels, sentinel_kwargs=sentinel_options
    )
    pool_class = _BlockingSentinelPool if pool_size else aiosentinel.SentinelConnectionPool
    client = sentinels.master_for(
        settings.redis_sentinel_master, connection_pool_class=pool_class, **_master_options(settings), **options
    )
    return cast(aioredis.Redis, client)


def close(client: redis.Redis) -> None:
    """Close ``client``, its pool, and its connections to the Sentinels if it has any."""
    client.close()
    pool = client.connection_pool
    pool.disconnect()
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


async def aclose(client: aioredis.Redis) -> None:
    """Close an asyncio ``client``, its pool, and its connections to the Sentinels if it has any."""
    await client.aclose()
    pool = client.connection_pool
    await pool.disconnect()
    if isinstance(pool, aiosentinel.SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection when all are in use (redis-py has none)."""


def _master_options(settings: Settings) -> dict[str, Any]:
    """What ``REDIS_URL`` says about the master and replicas, less its host: password, user, database, TLS."""
    options: dict[str, Any] = redis.connection.parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    for unused in ("host", "port", "path", "connection_class"):
        options.pop(unused, None)
    if settings.redis_url.startswith("rediss://"):
        options["ssl"] = True  # the Sentinel pool picks its TLS connection class from this
    return options


def _sentinel_options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """Connection options for the Sentinels: the client's timeouts, TLS as the master's, their own password.

    (Callers add no retries: a Sentinel that does not answer is skipped for the next one at once.)
    """
    sentinel: dict[str, Any] = {key: value for key, value in options.items() if key.startswith("socket_")}
    master = _master_options(settings)
    sentinel |= {key: value for key, value in master.items() if key == "ssl" or key.startswith("ssl_")}
    if settings.redis_sentinel_password:
        sentinel["password"] = settings.redis_sentinel_password
    return sentinel


#: after a WAIT that no replica answered in time, how long writes are not waited for (so a replica that is down
#: delays one write in this long, not every write)
_DEGRADED_S = 10.0


class ReplicaWait:
    """Waits until a replica holds every write the master took so far, so that a failover cannot take it back.

    Redis's ``WAIT`` counts the writes of the connection it runs on; a pool hands out any connection, so each
    wait first writes a counter (``stats:replica_waits``) on its own connection: replication is one ordered
    stream, so a replica holding that write holds every earlier one, from any client. Only with Sentinel (and
    ``LITMINER_REPLICA_WAIT_MS`` above 0). When no replica answers within the limit the write goes on
    unconfirmed, with a warning, and the next ``_DEGRADED_S`` are not waited for.
    """

    def __init__(self, settings: Settings) -> None:
        self.timeout_ms = settings.replica_wait_ms if settings.redis_sentinels else 0
        self.counter_key = Keys(settings.key_prefix).replica_waits
        self._skip_until = 0.0

    @property
    def active(self) -> bool:
        """Whether waits wait (Sentinel on, a limit set, and no replica recently missed it)."""
        return self.timeout_ms > 0 and time.monotonic() >= self._skip_until

    def wait(self, client: redis.Redis) -> None:
        """Return once a replica holds what the master took before this call (or the limit passed)."""
        if not self.active:
            return
        with client.pipeline(transaction=False) as pipe:
            pipe.incr(self.counter_key)
            pipe.wait(1, self.timeout_ms)
            replicas = pipe.execute()[1]
        self._judge(int(replicas))

    async def wait_async(self, client: aioredis.Redis) -> None:
        """``wait`` on an asyncio client."""
        if not self.active:
            return
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(self.counter_key)
            pipe.wait(1, self.timeout_ms)
            replicas = (await pipe.execute())[1]
        self._judge(int(replicas))

    def _judge(self, replicas: int) -> None:
        if replicas < 1:
            self._skip_until = time.monotonic() + _DEGRADED_S
            log.warning(
                "no Redis replica acknowledged writes within %d ms: a failover now could lose them; not waiting "
                "for replicas for %.0f s",
                self.timeout_ms,
                _DEGRADED_S,
            )
