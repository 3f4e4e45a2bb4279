"""The job record kept in Redis and the API's views of it."""

from __future__ import annotations

from typing import Literal

from contracts.base import Record
from contracts.dataset import Dataset
from contracts.requests import GenerateRequest

JobStatus = Literal["queued", "processing", "retrying", "completed", "error", "cancelled"]
Stage = Literal["queued", "schema_preparation", "search", "extraction", "assembly", "done"]

TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "error", "cancelled"})
STAGES: tuple[Stage, ...] = ("schema_preparation", "search", "extraction", "assembly")
#: order of every stage value, "queued" first and "done" last
STAGE_ORDER: dict[str, int] = {"queued": 0, **{stage: i + 1 for i, stage in enumerate(STAGES)}, "done": len(STAGES) + 1}


class JobRecord(Record, frozen=True, kw_only=True):
    """State of one dataset generation job."""

    task_id: str
    client_id: str
    request: GenerateRequest
    status: JobStatus = "queued"
    stage: Stage = "queued"
    progress: int = 0
    total: int = 100
    message: str = ""
    created_at: float
    updated_at: float
    error: str | None = None
    message_id: str | None = None
    result_url: str | None = None
    #: when the current stage was entered, and how long each finished stage took (a re-run stage and the
    #: stages after it are forgotten until they finish again)
    stage_entered_at: float | None = None
    durations_s: dict[str, float] = {}
    #: reprocessing: the job whose stored outputs this one reuses, and the first stage it runs itself
    parent_task_id: str | None = None
    from_stage: Stage | None = None
    #: LLM tokens spent by the current extraction run so far
    tokens: int = 0
    #: who created it: a short, non-reversible id of the API key ("" when the API needs no key); never the key
    owner: str = ""
    #: an estimate: extraction counts the calls and tokens it would spend instead of making them, and the job
    #: completes with an ``Estimate`` instead of a dataset
    estimate: bool = False


class TaskAccepted(Record, frozen=True, kw_only=True):
    """Reply to a generate request: where to follow the job."""

    task_id: str
    client_id: str
    status: JobStatus
    websocket_url: str
    sse_url: str
    status_url: str
    parent_task_id: str | None = None


class TaskStatus(Record, frozen=True, kw_only=True):
    """Reply to ``GET /tasks/{task_id}``."""

    task_id: str
    client_id: str
    status: JobStatus
    stage: Stage
    progress: int
    total: int
    message: str
    created_at: float
    updated_at: float
    error: str | None = None
    parent_task_id: str | None = None
    from_stage: Stage | None = None
    result: Dataset | None = None
