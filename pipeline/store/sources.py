"""What online sources share in Redis, across every worker: cached answers, request slots and leases.

Async: sources run on a worker's event loop.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from pipeline.settings import Settings
from pipeline.store import connections
from pipeline.store.keys import Keys

# Reserve the next request slot of a source: returns how many ms to wait before sending.
# ARGV: interval between requests (ms), earliest start from now (ms; a Retry-After).
_RESERVE = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = math.max(now + tonumber(ARGV[2]), tonumber(redis.call('GET', KEYS[1]) or '0'))
local after = slot + tonumber(ARGV[1])
redis.call('SET', KEYS[1], after, 'PX', after - now + 1000)
return slot - now
"""

# Take one of a source's concurrent-request leases; expired leases (a crashed worker's) are freed.
# ARGV: limit, lease id, lease length (ms). Returns 1 when taken.
_LEASE = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""


class SourceState:
    """Response cache and rate limits of online sources; open one per event loop and ``close`` it there."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, cache_ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.cache_ttl_s = cache_ttl_s
        self._reserve = redis.register_script(_RESERVE)
        self._lease = redis.register_script(_LEASE)

    @classmethod
    def connect(cls, settings: Settings) -> SourceState:
        client = connections.async_client(settings, socket_timeout=10, socket_connect_timeout=5)
        return cls(client, Keys(settings.key_prefix), cache_ttl_s=settings.search_cache_ttl_s)

    async def cached(self, source: str, digest: str) -> bytes | None:
        """The cached answer of ``source`` to the request ``digest`` names, if any."""
        cached = await self.redis.get(self.keys.search_cache(source, digest))
        return cached if isinstance(cached, bytes) else None

    async def cache(self, source: str, digest: str, body: bytes) -> None:
        await self.redis.set(self.keys.search_cache(source, digest), body, ex=self.cache_ttl_s)

    async def take_lease(self, source: str, lease: str, *, limit: int, lease_ms: int) -> bool:
        """Take one of ``limit`` concurrent-request leases of ``source`` for up to ``lease_ms``."""
        return bool(await self._lease(keys=[self.keys.source_leases(source)], args=[limit, lease, lease_ms]))

    async def release_lease(self, source: str, lease: str) -> None:
        await self.redis.zrem(self.keys.source_leases(source), lease)

    async def reserve(self, source: str, *, interval_ms: int, not_before_ms: int) -> int:
        """Reserve ``source``'s next request slot, ``interval_ms`` after the last one (and no sooner than
        ``not_before_ms`` from now); returns how many ms to wait for it."""
        wait: int = await self._reserve(keys=[self.keys.source_rate(source)], args=[interval_ms, not_before_ms])
        return wait

    async def close(self) -> None:
        await connections.aclose(self.redis)
