"""The job store: job records and stage outputs in Redis, every key with the result TTL."""

from __future__ import annotations

import time
from typing import TypeVar, cast

import msgspec
import redis

from contracts import STAGE_ORDER, TERMINAL_STATUSES, EventStatus, EventValue, JobRecord, JobStatus, Stage
from pipeline.events import EventBus
from pipeline.keys import Keys

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_decode_job = msgspec.json.Decoder(JobRecord).decode

# Job status → the event status that announces it.
_EVENT_STATUS: dict[JobStatus, EventStatus] = {
    "queued": "started",
    "processing": "processing",
    "retrying": "retrying",
    "completed": "completed",
    "error": "error",
    "cancelled": "cancelled",
}

# Claims a client id for an owner, or renews the owner's claim; 0 when another owner holds it.
_CLAIM_CLIENT = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class ClientIdTaken(Exception):
    """Another API key claimed this client id first (with keys, a client id belongs to the first key using it)."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client_id: {client_id!r} belongs to another API key; choose another client id")
        self.field = "client_id"


class JobStore:
    """Loads and updates job records; every accepted change is announced on the event bus."""

    def __init__(self, client: redis.Redis, keys: Keys, events: EventBus, *, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.events = events
        self.ttl_s = ttl_s
        self._claim_client = client.register_script(_CLAIM_CLIENT)

    def claim_client(self, client_id: str, owner: str) -> None:
        """Claim ``client_id`` for ``owner``, or renew its claim, for the result TTL (nothing to do without owner).

        Raises ``ClientIdTaken`` when another owner claimed it first.
        """
        if owner and not self._claim_client(keys=[self.keys.client_owner(client_id)], args=[owner, self.ttl_s]):
            raise ClientIdTaken(client_id)

    def create(self, job: JobRecord, *, message: str = "Job queued") -> None:
        """Store a new job, list it among its client's, owner's and everyone's recent jobs, publish its first event."""
        expired = job.created_at - self.ttl_s
        indexes = [self.keys.jobs, self.keys.client_jobs(job.client_id)]
        if job.owner:
            indexes.append(self.keys.owner_jobs(job.owner))
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.job(job.task_id), _encode(job), ex=self.ttl_s)
            for index in indexes:
                pipe.zadd(index, {job.task_id: job.created_at})
                pipe.zremrangebyscore(index, "-inf", expired)
                pipe.expire(index, self.ttl_s)
            pipe.execute()
        self.events.publish(job, "started", stage="queued", message=message)

    def load(self, task_id: str, *, owner: str = "") -> JobRecord | None:
        """The job record, or None when unknown, expired, or (``owner`` given) another API key's."""
        raw = self.client.get(self.keys.job(task_id))
        job = None if raw is None else _decode_job(raw)
        return job if job is not None and owned_by(job, owner) else None

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
        data: dict[str, EventValue] | None = None,
        reopen: bool = False,
    ) -> JobRecord | None:
        """Apply a change and publish its event.

        Returns the new record, or None when the job is unknown or already finished: a finished job
        changes only when ``reopen`` is set (reprocessing), so a late worker never overwrites a cancel.
        """
        key = self.keys.job(task_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        return None
                    job = _decode_job(raw)
                    if job.status in TERMINAL_STATUSES and not reopen:
                        return None
                    now = time.time()
                    changes: dict[str, object] = {"updated_at": now}
                    if job.status in TERMINAL_STATUSES:  # reopened: the old outcome no longer holds
                        changes |= {"error": None, "result_url": None}
                    for name, value in (
                        ("status", status),
                        ("stage", stage),
                        ("progress", progress),
                        ("message", message),
                        ("error", error),
                        ("message_id", message_id),
                        ("result_url", result_url),
                        ("tokens", tokens),
                    ):
                        if value is not None:
                            changes[name] = value
                    if stage is not None and stage != job.stage:
                        changes |= _timings(job, stage, now)
                    job = msgspec.structs.replace(job, **changes)
                    pipe.multi()
                    pipe.set(key, _encode(job), keepttl=True)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self.events.publish(job, _EVENT_STATUS[job.status], data=data)
        return job

    def put_output(self, task_id: str, name: str, value: object) -> None:
        """Store (overwrite) one stage output of a job."""
        self.client.set(self.keys.output(task_id, name), _encode(value), ex=self.ttl_s)

    def get_output(self, task_id: str, name: str, kind: type[T]) -> T | None:
        """One stage output of a job, decoded as ``kind``; None when missing."""
        raw = self.client.get(self.keys.output(task_id, name))
        return None if raw is None else msgspec.json.decode(raw, type=kind)


def owned_by(job: JobRecord, owner: str) -> bool:
    """Whether the API key with owner id ``owner`` may see ``job`` ("" sees every job: the API has no keys)."""
    return not owner or job.owner == owner


def _timings(job: JobRecord, stage: Stage, now: float) -> dict[str, object]:
    """Entering ``stage``: the stage left gets its duration; ``stage`` and later ones (a re-run) are forgotten."""
    durations = {name: s for name, s in job.durations_s.items() if STAGE_ORDER.get(name, 0) < STAGE_ORDER[stage]}
    if job.stage_entered_at is not None and STAGE_ORDER[job.stage] < STAGE_ORDER[stage] and job.stage != "queued":
        durations[job.stage] = round(now - job.stage_entered_at, 3)
    return {"stage_entered_at": now, "durations_s": durations}
