"""The event bus: one Event per job state change, on a pub/sub channel and two Redis streams."""

from __future__ import annotations

import logging
import time

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contracts import Event, EventStatus, EventValue, JobRecord, Stage, encode_event
from pipeline.keys import Keys

log = logging.getLogger(__name__)

# Numbering, storing and publishing happen in one script so the streams hold events in seq order
# even when the API (cancel) and a worker publish for the same task at the same moment.
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
#: version the change was computed on (ARGV[6]) to the new one (ARGV[7]), the stage outputs that go with the
#: change (KEYS[6…] = ARGV[8…], with the TTL), then the publish above. Returns the event's seq; the current
#: record when it was not the expected one (compute the change again); nil when the job is gone.
TRANSITION = (
    """
local current = redis.call('GET', KEYS[5])
if not current then return false end
if current ~= ARGV[6] then return current end
redis.call('SET', KEYS[5], ARGV[7], 'KEEPTTL')
for i = 6, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ARGV[4])
end
"""
    + _PUBLISH
)

_SEQ_MARK = b',"seq":0,'


#: attempts and pause between them; with publisher_client's 2 s timeouts a publish gives up within ~7 s
_ATTEMPTS = 3
_PAUSE_S = 0.1


def publisher_client(redis_url: str) -> redis.Redis:
    """A client for publishing: short timeouts and no hidden retries (``EventBus.publish`` retries)."""
    return redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


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
        data: dict[str, EventValue] | None = None,
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
            data=data or {},
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
        data: dict[str, EventValue] | None = None,
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
        """Raw events of one task with seq greater than ``after``, optionally waiting for new ones."""
        key = self.keys.task_stream(task_id)
        if block_ms is None:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = self.client.xrange(key, min=f"({after}-0")  # type: ignore[assignment]
        else:
            reply: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None
            reply = self.client.xread({key: f"{after}-0"}, block=block_ms)  # type: ignore[assignment]
            entries = [entry for _, batch in reply or [] for entry in batch]
        return [fields[b"event"] for _, fields in entries]
