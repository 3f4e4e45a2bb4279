"""What the task list and the operations view show: recent jobs, queues, live workers and webhook attempts."""

from __future__ import annotations

from typing import Literal

import msgspec

from contracts.base import Record
from contracts.jobs import JobStatus, Stage
from contracts.webhooks import WebhookAttempt


class TaskSummary(Record, frozen=True, kw_only=True):
    """One job in a list: its state, its question and what it has cost so far."""

    task_id: str
    client_id: str
    status: JobStatus
    stage: Stage
    progress: int
    message: str
    query: str
    model_name: str
    rows: int
    created_at: float
    updated_at: float
    #: seconds from creation to the last update
    duration_s: float
    #: LLM tokens spent by the job's extraction (0 for the heuristic extractor)
    tokens: int = 0
    error: str | None = None
    parent_task_id: str | None = None


class TaskList(Record, frozen=True, kw_only=True):
    """Reply to ``GET /api/v1/tasks``: newest first."""

    tasks: list[TaskSummary]


class QueueDepth(Record, frozen=True, kw_only=True):
    """Messages of one queue (a stage's, or webhooks): ready, in the delay queue (retries), dead-lettered."""

    name: str
    ready: int
    delayed: int
    dead: int


class WorkerInfo(Record, frozen=True, kw_only=True):
    """A worker process, as its last heartbeat described it."""

    worker_id: str
    hostname: str
    pid: int
    threads: int
    started_at: float
    last_seen: float
    #: seconds since the last heartbeat, as the API saw it
    age_s: float
    in_flight: int
    processed: int
    failed: int


class OpsView(Record, frozen=True, kw_only=True):
    """Reply to ``GET /api/v1/ops``: what an operator watches."""

    jobs: list[TaskSummary]
    queues: list[QueueDepth]
    workers: list[WorkerInfo]
    redis_ok: bool
    #: the newest webhook delivery attempts of the jobs listed, newest first
    webhooks: list[WebhookAttempt] = []


class Readiness(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Reply to ``GET /ready``: "ready" with the live workers, or "unavailable" saying what is missing."""

    status: Literal["ready", "unavailable"]
    workers: int
    detail: str | None = None
