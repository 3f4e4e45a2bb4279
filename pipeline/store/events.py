"""The event bus: one Event per job state change, on a pub/sub channel and two Redis streams.

``EventBus`` publishes (workers, and the API for cancels); ``EventFeed`` reads, asynchronously, for the API's
live fan-out: the channel of every job, and the streams to replay from.

With Sentinel, ``EventFeed`` hands out no event before a replica holds it (``ReplicaWait``): an event a client
saw is never taken back by a failover, whose new master would then number a different event with its seq.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import cast

import msgspec
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from contracts import Event, EventStatus, JobRecord, Stage, encode_event
from contracts.progress import EventData
from pipeline.errors import StoreUnavailable
from pipeline.settings import Settings
from pipeline.store import connections
from pipeline.store.connections import ReplicaWait
from pipeline.store.keys import Keys

log = logging.getLogger(__name__)

# Numbering, storing and publishing happen in one script so the streams hold events in seq order
# even when the API (cancel) and a worker publish for the same job at the same moment.
# KEYS: seq, task stream, client stream, published counter; ARGV: payload head, tail, maxlen, ttl, channel.
_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local payload = ARGV[1] .. seq .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'event', payload)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'event', payload)
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], payload)
redis.call('INCR', KEYS[4])
return seq
"""

#: A job change and its event in one round trip: a compare-and-set of the whole record (KEYS[5]) from the
#: version the change was computed on (ARGV[6]) to the new one (ARGV[7]), the job kept in (ARGV[8] = "1") or
#: taken out of the active jobs (KEYS[6], scored by the change's time ARGV[9]; ARGV[10] is the task id), the
#: stage outputs that go with the change (KEYS[14…] = ARGV[16 + 2n…]), then the events the change brings (n =
#: ARGV[15] of them, before its own: each a payload head and tail, ARGV[16…15 + 2n]), then the publish
#: above. The record lives ``ttl`` (ARGV[4]) from this change on, so a job is never forgotten while it changes.
#: The outputs it has (their keys are listed in the set KEYS[7], whose own TTL is never more than any
#: member's) are renewed to ``ttl`` when the job ends or when less than half of it is left: a job changing
#: every second does not renew them every second.
#:
#: The queue work that goes with a change rides along (each part skipped when its id is ""):
#: - ARGV[11], a delivery of a message to count in the hash KEYS[8]: its first delivery goes on; a later one
#:   (its worker died) changes nothing and returns ``{count}``, for the caller to decide;
#: - ARGV[12], the next stage's message (Dramatiq's id, ARGV[13] its body) to enqueue as Dramatiq's broker does
#:   (the queue list KEYS[9], its messages hash KEYS[10]), waking an idle consumer (KEYS[11], see ``_WAKE``);
#: - ARGV[14], the message being processed, acknowledged as Dramatiq's broker does (out of the worker's ack set
#:   KEYS[12] and the messages hash KEYS[13]): the stage is done once its job has moved on.
#:
#: Returns the event's seq; the current record when it was not the expected one (compute the change again);
#: nil when the job is gone.
TRANSITION = (
    """
local current = redis.call('GET', KEYS[5])
if not current then return false end
if current ~= ARGV[6] then return current end
if ARGV[11] ~= '' then
  local deliveries = redis.call('HINCRBY', KEYS[8], ARGV[11], 1)
  redis.call('EXPIRE', KEYS[8], ARGV[4])
  if deliveries > 1 then return {deliveries} end
end
redis.call('SET', KEYS[5], ARGV[7], 'EX', ARGV[4])
if ARGV[8] == '1' then
  redis.call('ZADD', KEYS[6], ARGV[9], ARGV[10])
else
  redis.call('ZREM', KEYS[6], ARGV[10])
end
local brought = tonumber(ARGV[15])
for i = 14, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 2 + 2 * brought], 'EX', ARGV[4])
  redis.call('SADD', KEYS[7], KEYS[i])
end
if ARGV[8] == '0' or redis.call('PTTL', KEYS[7]) < ARGV[4] * 500 then  -- ms: under half the TTL
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[7])) do
    redis.call('EXPIRE', key, ARGV[4])
  end
  redis.call('EXPIRE', KEYS[7], ARGV[4])
end
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[10], ARGV[12], ARGV[13])
  redis.call('RPUSH', KEYS[9], ARGV[12])
  redis.call('LPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 0)
  redis.call('PEXPIRE', KEYS[11], 60000)
end
if ARGV[14] ~= '' and redis.call('SREM', KEYS[12], ARGV[14]) > 0 then
  redis.call('HDEL', KEYS[13], ARGV[14])
end
for i = 16, 15 + 2 * brought, 2 do
  local seq = redis.call('INCR', KEYS[1])
  local payload = ARGV[i] .. seq .. ARGV[i + 1]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'event', payload)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'event', payload)
  redis.call('PUBLISH', ARGV[5], payload)
  redis.call('INCR', KEYS[4])
end
"""
    + _PUBLISH
)

_SEQ_MARK = b',"seq":0,'

#: attempts and pause between them; with publisher_client's 2 s timeouts a publish gives up within ~7 s
_ATTEMPTS = 3
_PAUSE_S = 0.1


def publisher_client(settings: Settings) -> redis.Redis:
    """A client for publishing: short timeouts and no hidden retries (``EventBus.publish`` retries)."""
    return connections.sync_client(settings, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


class EventBus:
    """Publishes job events; readers replay them from the streams or follow the channel.

    ``publisher`` should have short socket timeouts: a stage waits for its events at most a few
    seconds, and never fails because one could not be published. ``client`` serves (blocking) reads.
    """

    def __init__(self, client: redis.Redis, publisher: redis.Redis, keys: Keys, *, ttl_s: int, maxlen: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self.maxlen = maxlen
        self._script = publisher.register_script(_PUBLISH)

    def prepare(
        self,
        job: JobRecord,
        status: EventStatus,
        *,
        stage: Stage | None = None,
        message: str = "",
        data: EventData | None = None,
    ) -> tuple[Event, list[str], list[bytes | int | str]]:
        """The event announcing ``job``'s state, and the keys and arguments of the publish script for it."""
        event = Event(
            task_id=job.task_id,
            client_id=job.client_id,
            seq=0,
            status=status,
            stage=stage or job.stage,
            message=message or job.message,
            progress=job.progress,
            total=job.total,
            timestamp=time.time(),
            data=data.as_data() if data is not None else {},
        )
        head, _, tail = encode_event(event).partition(_SEQ_MARK)
        keys = [
            self.keys.seq(job.task_id),
            self.keys.task_stream(job.task_id),
            self.keys.client_stream(job.client_id),
            self.keys.events_published,
        ]
        args: list[bytes | int | str] = [
            head + b',"seq":',
            b"," + tail,
            self.maxlen,
            self.ttl_s,
            self.keys.channel(job.task_id),
        ]
        return event, keys, args

    def publish(
        self,
        job: JobRecord,
        status: EventStatus,
        *,
        stage: Stage | None = None,
        message: str = "",
        data: EventData | None = None,
        pipe: redis.client.Pipeline | None = None,
    ) -> Event | None:
        """Publish one event for ``job``; returns it, or None when Redis could not take it.

        With ``pipe``, the publish is only queued on that pipeline (its seq is unknown until it runs).
        """
        event, keys, args = self.prepare(job, status, stage=stage, message=message, data=data)
        if pipe is not None:
            self._script(keys=keys, args=args, client=pipe)
            return event
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                seq = int(self._script(keys=keys, args=args))
            except redis.RedisError as exc:
                log.warning(
                    "event publish failed (attempt %d/%d): %s",
                    attempt,
                    _ATTEMPTS,
                    exc,
                    extra={"task_id": job.task_id, "stage": event.stage},
                )
                if attempt < _ATTEMPTS:
                    time.sleep(_PAUSE_S * attempt)
                continue
            return msgspec.structs.replace(event, seq=seq)
        # A stage never fails because nobody could be told about it.
        log.error("event dropped after retries", extra={"task_id": job.task_id, "stage": event.stage})
        return None

    def history(self, task_id: str, *, after: int = 0, block_ms: int | None = None) -> list[bytes]:
        """Raw events of one job with seq greater than ``after``, optionally waiting for new ones."""
        key = self.keys.task_stream(task_id)
        if block_ms is None:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = self.client.xrange(key, min=f"({after}-0")  # type: ignore[assignment]
        else:
            reply: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None
            reply = self.client.xread({key: f"{after}-0"}, block=block_ms)  # type: ignore[assignment]
            entries = [entry for _, batch in reply or [] for entry in batch]
        return [fields[b"event"] for _, fields in entries]


#: what XRANGE and XREVRANGE return: (entry id, fields)
_Entries = list[tuple[bytes, dict[bytes, bytes]]]
#: one stream entry: its id and the event's exact bytes
StreamEntry = tuple[str, bytes]
#: Redis connections for catch-up reads, shared by all subscribers of the process
_READ_CONNECTIONS = 32


class EventFeed:
    """Reads events for the API process: one pattern subscription to every job's channel, and the streams.

    Catch-up reads share a pool that waits for a free connection (up to ``send_timeout_s``) rather than fail
    when a thousand clients connect at once.
    """

    def __init__(self, settings: Settings) -> None:
        self.keys = Keys(settings.key_prefix)
        self.subscription_name = f"{settings.key_prefix}events-subscriber"  # as shown by CLIENT LIST
        self.redis = connections.async_client(
            settings, pool_size=_READ_CONNECTIONS, pool_timeout_s=settings.send_timeout_s, socket_connect_timeout=5
        )
        # Errors must reach the subscriber's loop (which resubscribes and resyncs), not be retried silently.
        self._subscriber_redis = connections.async_client(
            settings,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=AsyncRetry(NoBackoff(), 0),
            client_name=self.subscription_name,
        )
        self.replica_wait = ReplicaWait(settings)

    @asynccontextmanager
    async def subscription(self) -> AsyncIterator[Subscription]:
        """Subscribed to every job's channel until the block ends; ``StoreUnavailable`` when Redis is lost."""
        pubsub = self._subscriber_redis.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.psubscribe(self.keys.channel_pattern)
            except (redis.RedisError, OSError) as exc:
                raise StoreUnavailable(str(exc)) from exc
            yield Subscription(pubsub, self._replicated if self.replica_wait.timeout_ms else None)
        finally:
            with suppress(redis.RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def job_events(self, task_id: str, *, after: int, until: int | None = None) -> list[StreamEntry]:
        """A job's events with seq in (``after``, ``until``]."""
        last = "+" if until is None else f"{until}-0"
        return await self._range(self.keys.task_stream(task_id), first=f"({after}-0", last=last)

    async def client_events(self, client_id: str, *, after: str, count: int) -> list[StreamEntry]:
        """Up to ``count`` of a client's events after the stream entry ``after``, oldest first."""
        return await self._range(self.keys.client_stream(client_id), first=f"({after}", count=count)

    async def client_events_before(self, client_id: str, *, before: str | None, count: int) -> list[StreamEntry]:
        """Up to ``count`` of a client's events before the stream entry ``before`` (None: the end), newest first."""
        last = "+" if before is None else f"({before}"
        key = self.keys.client_stream(client_id)
        entries = cast(_Entries, await self.redis.xrevrange(key, max=last, count=count))
        if entries:
            await self._replicated()
        return [(entry_id.decode(), fields[b"event"]) for entry_id, fields in entries]

    async def published(self) -> int:
        """Events published so far, by every process."""
        return int(await self.redis.get(self.keys.events_published) or 0)

    async def job_exists(self, task_id: str) -> bool:
        """Whether the job's record is still in Redis (it expires after ``LITMINER_RESULT_TTL``, or is deleted)."""
        try:
            return bool(await self.redis.exists(self.keys.job(task_id)))
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _range(self, key: str, *, first: str, last: str = "+", count: int | None = None) -> list[StreamEntry]:
        entries = cast(_Entries, await self.redis.xrange(key, min=first, max=last, count=count))
        if entries:
            await self._replicated()
        return [(entry_id.decode(), fields[b"event"]) for entry_id, fields in entries]

    async def _replicated(self) -> None:
        """Return once a replica holds every event read so far (with Sentinel; else at once)."""
        await self.replica_wait.wait_async(self.redis)

    async def close(self) -> None:
        await connections.aclose(self._subscriber_redis)
        await connections.aclose(self.redis)


#: events taken off the subscription at most before one wait for a replica
_BATCH = 500


class Subscription:
    """The live side of an ``EventFeed``: events as they are published.

    With ``replicated`` (Sentinel), events are handed out only once it has returned after their arrival: the
    events waiting on the connection are taken together, and one wait covers them all.
    """

    def __init__(self, pubsub: aioredis.client.PubSub, replicated: Callable[[], Awaitable[None]] | None) -> None:
        self.pubsub = pubsub
        self.replicated = replicated
        self._ready: deque[bytes] = deque()

    async def next(self, timeout_s: float) -> bytes | None:
        """The next event published, or None when none came within ``timeout_s``."""
        if self._ready:
            return self._ready.popleft()
        try:
            event = await self._take(timeout_s)
            if event is None or self.replicated is None:
                return event
            self._ready.append(event)
            while len(self._ready) < _BATCH and (event := await self._take(0)) is not None:
                self._ready.append(event)
            await self.replicated()
        except (redis.RedisError, OSError) as exc:
            self._ready.clear()  # not known to be replicated: the resync after a new subscription sends them
            raise StoreUnavailable(str(exc)) from exc
        return self._ready.popleft()

    async def _take(self, timeout_s: float) -> bytes | None:
        message = await self.pubsub.get_message(timeout=timeout_s)
        if message is not None and message["type"] == "pmessage":
            data: bytes = message["data"]
            return data
        return None
