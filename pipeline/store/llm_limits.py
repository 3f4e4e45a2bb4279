"""What the workers share in Redis about each LLM provider: its rate window, its limits, and a 429's pause.

Every process's calls to one provider (a base URL and model) go through one sliding window of a minute: a
call is granted only while the calls granted in the last minute number fewer than the provider's requests per
minute and their tokens, with this call's, stay within its tokens per minute. A sliding window never lets more
through in any minute than the limit, whether the provider counts in a fixed window, a sliding one, or a bucket
that refills over the minute. Async: extractors run on a worker's event loop.
"""

from __future__ import annotations

import hashlib

import msgspec
import redis.asyncio as aioredis

from pipeline.settings import Settings
from pipeline.store import connections
from pipeline.store.keys import Keys

# Grant a call (ARGV[1], counting ARGV[2] tokens) if the window of ARGV[3] ms has room and no 429 pauses the
# provider; otherwise return how long to wait. Limits: the learned ones (KEYS[3]), else ARGV[4] (requests) and
# ARGV[5] (tokens); 0 is no limit; a grant keeps learned limits ARGV[6] ms more. Calls that left the window are
# forgotten first, with their tokens.
# Returns {ms to wait (0: granted), requests limit, tokens limit, calls in the window, tokens in the window}.
_ACQUIRE = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local rpm = tonumber(redis.call('HGET', KEYS[3], 'rpm') or ARGV[4])
local tpm = tonumber(redis.call('HGET', KEYS[3], 'tpm') or ARGV[5])
local spent = tonumber(redis.call('HGET', KEYS[2], 'total') or '0')
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
for _, id in ipairs(gone) do
  spent = spent - tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count == 0 then spent = 0 end
local need = tonumber(ARGV[2])
if tpm > 0 and need > tpm then need = tpm end
local wait = math.max(tonumber(redis.call('GET', KEYS[4]) or '0') - now, 0)
if rpm > 0 and count >= rpm then
  local frees = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  wait = math.max(wait, tonumber(frees[2]) + window - now)
end
if tpm > 0 and spent + need > tpm then
  local calls = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  local left = spent
  for i = 1, #calls, 2 do
    left = left - tonumber(redis.call('HGET', KEYS[2], calls[i]) or '0')
    if left + need <= tpm then
      wait = math.max(wait, tonumber(calls[i + 1]) + window - now)
      break
    end
  end
end
if wait > 0 then
  if #gone > 0 then redis.call('HSET', KEYS[2], 'total', spent) end
  return {wait, rpm, tpm, count, spent}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], need, 'total', spent + need)
redis.call('PEXPIRE', KEYS[1], window * 2)
redis.call('PEXPIRE', KEYS[2], window * 2)
redis.call('PEXPIRE', KEYS[3], ARGV[6])  -- learned limits in use are kept (nothing when none were learned)
return {0, rpm, tpm, count + 1, spent + need}
"""

# Count a granted call (ARGV[1]) for ARGV[2] tokens instead of its estimate, while it is in the window.
_SETTLE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'total', tonumber(ARGV[2]) - tonumber(old))
return 1
"""

# No call to the provider for ARGV[1] ms from now (or longer, if an earlier pause lasts longer).
_BLOCK = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local later = now + tonumber(ARGV[1])
if later > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], later, 'PX', ARGV[1])
end
return 1
"""

#: how long learned limits are kept after the last call granted under them
_LIMITS_TTL_S = 24 * 3600


def provider_id(base_url: str, model: str) -> str:
    """A provider's name in Redis keys: its base URL and model, hashed (each model has limits of its own)."""
    return hashlib.sha256(f"{base_url}|{model}".encode()).hexdigest()[:16]


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's window as one request for a grant found it; ``wait_ms`` is 0 when the call was granted."""

    wait_ms: int
    rpm: int
    tpm: int
    calls: int
    tokens: int


class LLMLimits:
    """Rate windows, limits and pauses of LLM providers, shared by every worker; open one per event loop.

    ``window_ms`` is how long a provider counts calls over: a minute for RPM and TPM (tests use shorter ones);
    ``rpm`` and ``tpm`` are the limits until a provider's headers say (0: none).
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, window_ms: int, rpm: int, tpm: int) -> None:
        self.redis = redis
        self.keys = keys
        self.window_ms = window_ms
        # a call reaches the provider a little after its grant (a new connection's handshake, a busy loop), so it
        # is counted a little longer than the window: the provider never still counts a call whose slot is given on
        self.span_ms = window_ms + max(250, window_ms // 50)
        self.rpm = rpm
        self.tpm = tpm
        self._acquire = redis.register_script(_ACQUIRE)
        self._settle = redis.register_script(_SETTLE)
        self._block = redis.register_script(_BLOCK)

    @classmethod
    def connect(cls, settings: Settings, *, window_ms: int = 60_000) -> LLMLimits:
        client = connections.async_client(settings, socket_timeout=10, socket_connect_timeout=5)
        return cls(client, Keys(settings.key_prefix), window_ms=window_ms, rpm=settings.llm_rpm, tpm=settings.llm_tpm)

    async def acquire(self, provider: str, grant: str, tokens: int) -> Window:
        """Grant call ``grant``, counting ``tokens``, if the window has room; else say how long to wait."""
        keys = [
            self.keys.llm_calls(provider),
            self.keys.llm_tokens(provider),
            self.keys.llm_limits(provider),
            self.keys.llm_blocked(provider),
        ]
        wait, rpm, tpm, calls, spent = await self._acquire(
            keys=keys, args=[grant, max(tokens, 1), self.span_ms, self.rpm, self.tpm, _LIMITS_TTL_S * 1000]
        )
        return Window(wait_ms=int(wait), rpm=int(rpm), tpm=int(tpm), calls=int(calls), tokens=int(spent))

    async def settle(self, provider: str, grant: str, tokens: int) -> None:
        """Count a granted call for the tokens it really spent (the provider's ``usage``)."""
        await self._settle(keys=[self.keys.llm_tokens(provider)], args=[grant, max(tokens, 0)])

    async def learn(self, provider: str, *, rpm: int | None, tpm: int | None) -> None:
        """Record the limits a provider's headers state, for every worker."""
        key = self.keys.llm_limits(provider)
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, value in (("rpm", rpm), ("tpm", tpm)):
                if value is not None:
                    pipe.hset(key, name, value)
            pipe.expire(key, _LIMITS_TTL_S)
            await pipe.execute()

    async def block(self, provider: str, ms: int) -> None:
        """Pause every worker's calls to ``provider`` for ``ms`` (a 429's Retry-After)."""
        if ms > 0:
            await self._block(keys=[self.keys.llm_blocked(provider)], args=[ms])

    async def close(self) -> None:
        await connections.aclose(self.redis)
