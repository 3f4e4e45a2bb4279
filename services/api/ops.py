"""Recent tasks (per client or all) and the operations view: queues and live workers."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, Parameter

from contracts.ops import OpsView, TaskList
from pipeline.jobs import JobService

Limit = Annotated[int, Parameter(ge=1, le=500, description="how many tasks, newest first")]


class OpsController(Controller):
    """What clients and operators list."""

    path = "/api/v1"

    @get("/tasks", operation_id="listTasks", sync_to_thread=True)
    def tasks(
        self,
        jobs: NamedDependency[JobService],
        owner: NamedDependency[str],
        client_id: FromQuery[str | None] = None,
        limit: Limit = 20,
    ) -> TaskList:
        """Recent tasks, newest first: one client's (``client_id``) or everyone's (with API keys: the caller's)."""
        return jobs.recent(limit=limit, client_id=client_id, owner=owner)

    @get("/ops", operation_id="operations", sync_to_thread=True)
    def ops(self, jobs: NamedDependency[JobService], owner: NamedDependency[str], limit: Limit = 100) -> OpsView:
        """Recent jobs (with API keys: the caller's), queue depths per stage queue, live workers (heartbeat < 30 s)."""
        return jobs.ops(limit=limit, owner=owner)
