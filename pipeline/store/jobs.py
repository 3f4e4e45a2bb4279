"""The job store: job records, their indexes and stage outputs in Redis, every key with the result TTL."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar, cast

import msgspec
import redis

from contracts import STAGE_ORDER, TERMINAL_STATUSES, EventStatus, JobRecord, JobStatus, ReviewEntry, Stage
from contracts.progress import EventData
from pipeline.errors import ClientIdTaken, PermanentError
from pipeline.store.events import TRANSITION, EventBus
from pipeline.store.keys import Keys
from pipeline.store.queues import Handover

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_decode_job = msgspec.json.Decoder(JobRecord).decode
_decode_review = msgspec.json.Decoder(ReviewEntry).decode

# Job status → the event status that announces it.
_EVENT_STATUS: dict[JobStatus, EventStatus] = {
    "queued": "started",
    "processing": "processing",
    "retrying": "retrying",
    "completed": "completed",
    "error": "error",
    "cancelled": "cancelled",
}

# Lists output keys of a job (KEYS[1], the set; ARGV[1] the TTL, ARGV[2…] the keys). Only a new list gets the
# TTL: an existing one keeps its own, no more than any member's, which tells a job change when to renew them.
_LIST_OUTPUTS = """
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
"""

# Claims a client id for an owner, or renews the owner's claim; 0 when another owner holds it.
_CLAIM_CLIENT = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


#: the output holding a dataset's review trail (a Redis list of entries, oldest first; copied by a reprocess)
REVIEW = "review"

#: the output holding the message ids of an extraction run's batches (a cancel aborts them too)
BATCH_MESSAGES = "batch_messages"

#: how much earlier than its job's creation time a client stream entry's id may be (ms): the clock skew allowed
#: between the host that created the job and Redis
_CLOCK_SKEW_MS = 60_000

#: how many job records a process remembers (the last version it read or wrote of each; a few MB at most):
#: far more than the jobs a worker runs at once
_REMEMBERED = 1_000


class Redelivered(Exception):
    """The message whose delivery ``JobStore.transition`` was to count was delivered before: its earlier
    deliveries died with their worker. Nothing was changed."""

    def __init__(self, deliveries: int) -> None:
        super().__init__(f"delivered {deliveries} times")
        self.deliveries = deliveries


class JobStore:
    """Loads and updates job records; every accepted change is announced on the event bus.

    A change and its event take one round trip: the change is computed on the version of the record this
    process last saw, and written only if Redis still holds that version (else computed again on the one
    it holds). So a late worker never overwrites a cancel, and a job's events follow its changes in order.

    Every change that ends a job (completed, error, cancelled: by a worker, the API or the CLI) goes through
    ``transition``, which then calls ``on_end`` with the new record and its terminal event's seq.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        events: EventBus,
        *,
        ttl_s: int,
        on_end: Callable[[JobRecord, int], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.events = events
        self.ttl_s = ttl_s
        self.on_end = on_end
        self._claim_client = client.register_script(_CLAIM_CLIENT)
        self._transition = client.register_script(TRANSITION)
        self._list_outputs = client.register_script(_LIST_OUTPUTS)
        self._seen: dict[str, bytes] = {}  # task id → the record as this process last read or wrote it

    def _remember(self, task_id: str, raw: bytes | None) -> None:
        if raw is None:
            self._seen.pop(task_id, None)
            return
        if len(self._seen) >= _REMEMBERED:
            self._seen.clear()
        self._seen[task_id] = raw

    def claim_client(self, client_id: str, owner: str) -> None:
        """Claim ``client_id`` for ``owner``, or renew its claim, for the result TTL (nothing to do without owner).

        Raises ``ClientIdTaken`` when another owner claimed it first.
        """
        if owner and not self._claim_client(keys=[self.keys.client_owner(client_id)], args=[owner, self.ttl_s]):
            raise ClientIdTaken(client_id)

    def create(
        self,
        job: JobRecord,
        *,
        message: str = "Job queued",
        send: Callable[[redis.client.Pipeline, bytes], None] | None = None,
    ) -> bytes:
        """Store a new job, list it among its client's, owner's and everyone's recent jobs, publish its first event
        and ``send`` its first message (given the record as stored), all or nothing, in one round trip; the record
        as stored."""
        expired = job.created_at - self.ttl_s
        indexes = [self.keys.jobs, self.keys.client_jobs(job.client_id)]
        if job.owner:
            indexes.append(self.keys.owner_jobs(job.owner))
        raw = _encode(job)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.job(job.task_id), raw, ex=self.ttl_s)
            for index in indexes:
                pipe.zadd(index, {job.task_id: job.created_at})
                pipe.zremrangebyscore(index, "-inf", expired)
                pipe.expire(index, self.ttl_s)
            pipe.zadd(self.keys.active_jobs, {job.task_id: job.created_at})
            self.events.publish(job, "started", stage="queued", message=message, pipe=pipe)
            if send is not None:
                send(pipe, raw)
            pipe.execute()
        self._remember(job.task_id, raw)
        return raw

    def discard(self, job: JobRecord) -> None:
        """Remove a job ``create`` stored from its record and indexes (its events, already published, expire)."""
        self._remove(job, [])

    def erase(self, job: JobRecord) -> None:
        """Remove every trace of a job from Redis: its record, outputs (every key listed among them: each
        extraction run's too), events (its stream, and its entries in its client's stream), deliveries, webhook
        attempts, and its place in every index.

        A message still running for it finds no record and stops; what it writes after this expires with the TTL.
        """
        task_id = job.task_id
        outputs = cast("set[bytes]", self.client.smembers(self.keys.output_keys(task_id)))
        keys = [key.decode() for key in outputs]
        keys += [
            self.keys.output_keys(task_id),
            self.keys.seq(task_id),
            self.keys.task_stream(task_id),
            self.keys.deliveries(task_id),
            self.keys.webhooks(task_id),
        ]
        self._remove(job, keys)
        self._erase_client_events(job)

    def _remove(self, job: JobRecord, keys: Sequence[str]) -> None:
        """Delete the job's record and ``keys``, and take the job off every index (one round trip)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.job(job.task_id), *keys)
            for index in (self.keys.jobs, self.keys.client_jobs(job.client_id), self.keys.active_jobs):
                pipe.zrem(index, job.task_id)
            if job.owner:
                pipe.zrem(self.keys.owner_jobs(job.owner), job.task_id)
            pipe.execute()
        self._remember(job.task_id, None)

    def _erase_client_events(self, job: JobRecord) -> None:
        """Delete the job's events from its client's stream (read a page at a time: it is capped, not indexed).

        Its entries have ids of the time they were added (ms): the scan starts at the job's creation, less a
        minute for the clocks of the hosts that created it and Redis to differ.
        """
        stream, mark = self.keys.client_stream(job.client_id), f'"task_id":"{job.task_id}"'.encode()
        start = str(max(0, int(job.created_at * 1000) - _CLOCK_SKEW_MS))
        while True:
            page = cast("list[tuple[bytes, dict[bytes, bytes]]]", self.client.xrange(stream, start, "+", count=1000))
            ours = [entry_id for entry_id, fields in page if mark in fields.get(b"event", b"")]
            if ours:
                self.client.xdel(stream, *ours)
            if len(page) < 1000:
                return
            start = "(" + page[-1][0].decode()

    def load(self, task_id: str, *, owner: str = "", recent: bool = False) -> JobRecord | None:
        """The job record, or None when unknown, expired, or (``owner`` given) another API key's.

        ``recent``: the version this process last read or wrote will do, when it has one (a stage reading
        its job's request, right after its start was recorded); its next change checks it anyway.
        """
        raw = self._seen.get(task_id) if recent else None
        if raw is None:
            raw = cast("bytes | None", self.client.get(self.keys.job(task_id)))
            self._remember(task_id, raw)
        job = None if raw is None else _decode_job(raw)
        return job if job is not None and owned_by(job, owner) else None

    def unchanged_since(self, before: float) -> list[tuple[bytes, JobRecord]]:
        """Unfinished jobs whose last change is older than ``before`` (epoch s), each as stored and decoded.

        Jobs that vanished (expired, deleted) are taken off the active list here.
        """
        task_ids = cast("list[bytes]", self.client.zrangebyscore(self.keys.active_jobs, "-inf", before))
        if not task_ids:
            return []
        raws = cast("list[bytes | None]", self.client.mget([self.keys.job(t.decode()) for t in task_ids]))
        gone = [task_id for task_id, raw in zip(task_ids, raws, strict=True) if raw is None]
        if gone:
            self.client.zrem(self.keys.active_jobs, *gone)
        jobs = ((raw, _decode_job(raw)) for raw in raws if raw is not None)
        return [(raw, job) for raw, job in jobs if job.status not in TERMINAL_STATUSES]

    def reaps(self, task_id: str) -> int:
        """How often the reaper sent the job's stage again."""
        return int(cast("bytes | None", self.client.hget(self.keys.deliveries(task_id), "reaped")) or 0)

    def count_reap(self, task_id: str) -> None:
        """Count one more time the reaper sent the job's stage again."""
        key = self.keys.deliveries(task_id)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, "reaped", 1)
            pipe.expire(key, self.ttl_s)
            pipe.execute()

    def recent(self, *, limit: int, client_id: str | None = None, owner: str = "") -> list[JobRecord]:
        """The newest jobs first: of one client, else of ``owner`` when given, else of everyone.

        Expired jobs, and (``owner`` given) other API keys' jobs, are left out.
        """
        if client_id is not None:
            index = self.keys.client_jobs(client_id)
        else:
            index = self.keys.owner_jobs(owner) if owner else self.keys.jobs
        task_ids = cast("list[bytes]", self.client.zrevrange(index, 0, limit - 1))
        if not task_ids:
            return []
        raws = self.client.mget([self.keys.job(t.decode()) for t in task_ids])
        jobs = (_decode_job(raw) for raw in raws if raw is not None)
        return [job for job in jobs if owned_by(job, owner)]

    def transition(
        self,
        task_id: str,
        *,
        status: JobStatus | None = None,
        stage: Stage | None = None,
        progress: int | None = None,
        message: str | None = None,
        error: str | None = None,
        message_id: str | None = None,
        result_url: str | None = None,
        tokens: int | None = None,
        data: EventData | None = None,
        outputs: Mapping[str, object] | None = None,
        reopen: bool = False,
        only_from: bytes | None = None,
        seen: bytes | None = None,
        accept: Callable[[JobRecord], bool] | None = None,
        delivery: str | None = None,
        handover: Handover | None = None,
        events: Sequence[tuple[str, EventData]] = (),
    ) -> JobRecord | None:
        """Apply a change, store the stage ``outputs`` that come with it, and publish its event.

        Returns the new record, or None when the job is unknown or already finished: a finished job
        changes only when ``reopen`` is set (reprocessing), so a late worker never overwrites a cancel
        (and its outputs are not stored). With ``only_from`` (a record as stored), the change is made only
        if the job still is that record; else None.

        ``seen``: the record as the caller last knew it (a message carries it), to compute the change on
        instead of the one this process remembers; ``accept``: None (nothing changed) unless the job as
        stored passes it; ``delivery``: a message delivery to count with the change, which raises
        ``Redelivered`` (changing nothing) when it was delivered before; ``handover``: queue work done with
        the change (the next stage's message sent, the current one acknowledged); ``events`` (each a message and
        its data): announced before the change's own, each labelled with the job as changed.
        """
        fields = {
            "status": status,
            "stage": stage,
            "progress": progress,
            "message": message,
            "error": error,
            "message_id": message_id,
            "result_url": result_url,
            "tokens": tokens,
        }
        output_keys = [self.keys.output(task_id, name) for name in outputs or {}]
        output_values = [_encode(value) for value in (outputs or {}).values()]
        raw = only_from or seen or self._seen.get(task_id)
        checked = raw is None  # a remembered version may be stale: only the compare-and-set checks it
        if raw is None:
            raw = cast("bytes | None", self.client.get(self.keys.job(task_id)))
        while raw is not None:
            job = _decode_job(raw)
            if job.status in TERMINAL_STATUSES and not reopen:
                if only_from is not None:
                    return None
                if checked:
                    self._remember(task_id, raw)
                    return None
                raw, checked = cast("bytes | None", self.client.get(self.keys.job(task_id))), True
                continue
            if accept is not None and not accept(job):
                if not checked:  # a remembered or carried version may be stale: judge the stored one
                    raw, checked = cast("bytes | None", self.client.get(self.keys.job(task_id))), True
                    continue
                self._remember(task_id, raw)
                return None
            job = _changed(job, fields)
            new = _encode(job)
            announced = _EVENT_STATUS[job.status]
            _, keys, args = self.events.prepare(job, announced, data=data)
            brought = [self.events.prepare(job, announced, message=m, data=d)[2][:2] for m, d in events]
            active = b"0" if job.status in TERMINAL_STATUSES else b"1"
            queue_keys = handover.keys if handover is not None else (self.keys.job(task_id),) * 5
            sent = handover.send(new) if handover is not None and handover.send is not None else b""
            reply = self._transition(
                keys=[
                    *keys,
                    self.keys.job(task_id),
                    self.keys.active_jobs,
                    self.keys.output_keys(task_id),
                    self.keys.deliveries(task_id),
                    *queue_keys,
                    *output_keys,
                ],
                args=[
                    *args,
                    raw,
                    new,
                    active,
                    job.updated_at,
                    task_id,
                    delivery or "",
                    handover.send_id if handover is not None else "",
                    sent,
                    handover.ack_id if handover is not None else "",
                    len(brought),
                    *(part for head_tail in brought for part in head_tail),
                    *output_values,
                ],
            )
            if isinstance(reply, list):  # the delivery was not its first: nothing changed
                self._remember(task_id, raw)
                raise Redelivered(int(reply[0]))
            if isinstance(reply, int) or reply == new:  # done (``new``: a retried call had already done it)
                self._remember(task_id, new)
                if job.status in TERMINAL_STATUSES and self.on_end is not None:
                    # A retried call's seq was lost with its first reply: the job's last seq is the end's.
                    seq = reply if isinstance(reply, int) else cast("bytes", self.client.get(self.keys.seq(task_id)))
                    self.on_end(job, int(seq))
                return job
            if only_from is not None:
                return None
            raw, checked = cast("bytes | None", reply), True
        self._remember(task_id, None)
        return None

    def put_output(self, task_id: str, name: str, value: object) -> None:
        """Store (overwrite) one stage output of a job."""
        key = self.keys.output(task_id, name)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(key, _encode(value), ex=self.ttl_s)
            self._listed(pipe, task_id, [key])
            pipe.execute()

    def list_outputs(self, task_id: str, keys: Sequence[str]) -> None:
        """List ``keys`` among the job's outputs before they are written (by others than this store: an extraction
        run's), so that the job's changes renew their TTL and ``erase`` removes them."""
        self._listed(self.client, task_id, keys)

    def _listed(self, pipe: redis.Redis, task_id: str, keys: Sequence[str]) -> None:
        """List ``keys`` among the job's outputs (on ``pipe``), so that the job's changes renew their TTL."""
        if keys:
            self._list_outputs(keys=[self.keys.output_keys(task_id)], args=[self.ttl_s, *keys], client=pipe)

    def get_output(self, task_id: str, name: str, kind: type[T]) -> T | None:
        """One stage output of a job, decoded as ``kind``; None when missing."""
        return self.inputs(task_id, name).optional(name, kind)

    def add_review(self, task_id: str, entry: ReviewEntry) -> None:
        """Append one decision to the job's review trail (a list: concurrent reviews never overwrite each other)."""
        key = self.keys.output(task_id, REVIEW)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, _encode(entry))
            pipe.expire(key, self.ttl_s)
            self._listed(pipe, task_id, [key])
            pipe.execute()

    def review_trail(self, task_id: str) -> list[ReviewEntry]:
        """The job's review trail, oldest decision first."""
        raws = cast("list[bytes]", self.client.lrange(self.keys.output(task_id, REVIEW), 0, -1))
        return [_decode_review(raw) for raw in raws]

    def running_messages(self, job: JobRecord) -> list[str]:
        """The ids of the messages that may be running for ``job``: its stage's, and its extraction batches'."""
        running = [job.message_id] if job.message_id else []
        if job.stage == "extraction":
            running += self.get_output(job.task_id, BATCH_MESSAGES, list[str]) or []
        return running

    def inputs(self, task_id: str, *names: str) -> Inputs:
        """Several stage outputs of a job, read in one round trip."""
        raws = cast("list[bytes | None]", self.client.mget([self.keys.output(task_id, name) for name in names]))
        return Inputs(task_id, dict(zip(names, raws, strict=True)))

    def missing_outputs(self, task_id: str, names: Sequence[str]) -> list[str]:
        """Which of the outputs ``names`` the job does not have (never made, or expired)."""
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self.keys.output(task_id, name))
            found = pipe.execute()
        return [name for name, exists in zip(names, found, strict=True) if not exists]

    def copy_outputs(self, source: str, target: str, names: Sequence[str]) -> list[str]:
        """Copy job ``source``'s outputs ``names`` to job ``target`` inside Redis (one transaction, with the TTL);
        returns the names ``source`` no longer has."""
        with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.copy(self.keys.output(source, name), self.keys.output(target, name), replace=True)
                pipe.expire(self.keys.output(target, name), self.ttl_s)
            self._listed(pipe, target, [self.keys.output(target, name) for name in names])
            copied = pipe.execute()[: 2 * len(names) : 2]  # each copy's reply, then the listing's
        return [name for name, ok in zip(names, copied, strict=True) if not ok]


class Inputs:
    """Stage outputs of one job, as read together; decoded on demand."""

    def __init__(self, task_id: str, raws: dict[str, bytes | None]) -> None:
        self.task_id = task_id
        self.raws = raws

    def get(self, name: str, kind: type[T]) -> T:
        """One output; a missing one is permanent (re-run the stage that produces it)."""
        value = self.optional(name, kind)
        if value is None:
            raise PermanentError(f"job {self.task_id} has no {name}; re-run the stage that produces it")
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        """One output, or None when missing."""
        raw = self.raws[name]
        return None if raw is None else msgspec.json.decode(raw, type=kind)


def owned_by(job: JobRecord, owner: str) -> bool:
    """Whether the API key with owner id ``owner`` may see ``job`` ("" sees every job: the API has no keys)."""
    return not owner or job.owner == owner


def _changed(job: JobRecord, fields: Mapping[str, object]) -> JobRecord:
    """``job`` with the given (not None) fields changed, its update time, and its stage timings."""
    now = time.time()
    changes: dict[str, object] = {"updated_at": now}
    if job.status in TERMINAL_STATUSES:  # reopened: the old outcome no longer holds
        changes |= {"error": None, "result_url": None}
    changes |= {name: value for name, value in fields.items() if value is not None}
    stage = fields["stage"]
    if isinstance(stage, str) and stage != job.stage:
        changes |= _timings(job, cast("Stage", stage), now)
    return msgspec.structs.replace(job, **changes)


def _timings(job: JobRecord, stage: Stage, now: float) -> dict[str, object]:
    """Entering ``stage``: the stage left gets its duration; ``stage`` and later ones (a re-run) are forgotten."""
    durations = {name: s for name, s in job.durations_s.items() if STAGE_ORDER.get(name, 0) < STAGE_ORDER[stage]}
    if job.stage_entered_at is not None and STAGE_ORDER[job.stage] < STAGE_ORDER[stage] and job.stage != "queued":
        durations[job.stage] = round(now - job.stage_entered_at, 3)
    return {"stage_entered_at": now, "durations_s": durations}
