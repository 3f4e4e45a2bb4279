"""Task status and cancellation (``/tasks/…``), reprocessing, and deleting a task everywhere."""

from __future__ import annotations

import anyio.to_thread
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts import TaskAccepted, TaskStatus
from pipeline.archive import DurableJobService
from pipeline.jobs import JobService
from pipeline.schema import check_task_id
from services.api.auth import STARTS_JOBS
from services.api.datasets import accepted
from services.api.openapi import DELETE_RESPONSES, REPROCESS_BODY, REPROCESS_RESPONSES
from services.api.requests import parse_reprocess_request, read_body


class TaskController(Controller):
    """Follow and cancel jobs (another API key's jobs are unknown: 404)."""

    path = "/tasks"

    @get("/{task_id:str}", operation_id="getTask", sync_to_thread=True)
    def status(
        self, task_id: FromPath[str], jobs: NamedDependency[JobService], owner: NamedDependency[str]
    ) -> TaskStatus:
        """Job status; with ``result`` once completed and ``error`` once failed."""
        return jobs.status(task_id, owner)

    @get("/{task_id:str}/revoke", operation_id="revokeTask", sync_to_thread=True)
    def revoke(
        self, task_id: FromPath[str], jobs: NamedDependency[JobService], owner: NamedDependency[str]
    ) -> TaskStatus:
        """Cancel a queued job or abort a running one (409 when it already finished)."""
        jobs.cancel(task_id, owner)
        return jobs.status(task_id, owner)

    @post("/{task_id:str}/revoke", operation_id="revokeTaskPost", status_code=200, sync_to_thread=True)
    def revoke_post(
        self, task_id: FromPath[str], jobs: NamedDependency[JobService], owner: NamedDependency[str]
    ) -> TaskStatus:
        """Same as ``GET /tasks/{task_id}/revoke``."""
        jobs.cancel(task_id, owner)
        return jobs.status(task_id, owner)


class ReprocessController(Controller):
    """Run a finished job again from one stage as a new job; delete a job."""

    path = "/api/v1/tasks"

    @post(
        "/{task_id:str}/reprocess",
        status_code=202,
        operation_id="reprocessTask",
        opt={STARTS_JOBS: True},
        dependencies=REPROCESS_BODY,
        responses=REPROCESS_RESPONSES,
    )
    async def reprocess(
        self,
        task_id: FromPath[str],
        request: Request[object, object, State],
        jobs: NamedDependency[JobService],
        owner: NamedDependency[str],
    ) -> TaskAccepted:
        """A new job (``parent_task_id`` = this one) from ``from_stage`` on, reusing the earlier stages' outputs.

        Body: ``{"from_stage": "search" | "extraction" | "assembly"}`` plus optional ``field_definitions``,
        ``rows``, ``extractor``, ``sources`` and ``client_id``. 400 when an override needs an earlier stage
        (new columns need extraction), 404 for unknown tasks, 409 while the parent runs or when its outputs
        are gone.
        """
        check_task_id(task_id)  # before reading the body: a bad id is the first thing to say
        change = parse_reprocess_request(await read_body(request))
        return accepted(await anyio.to_thread.run_sync(lambda: jobs.reprocess(task_id, change, owner=owner)))

    @delete("/{task_id:str}", operation_id="deleteTask", sync_to_thread=True, responses=DELETE_RESPONSES)
    def delete(
        self, task_id: FromPath[str], jobs: NamedDependency[DurableJobService], owner: NamedDependency[str]
    ) -> None:
        """Remove the task and its dataset everywhere: Redis (record, outputs, events, lists) and the archive.

        Only its owner may (another API key's task is unknown: 404). A queued or running task is cancelled first.
        204 on success; every read of the task is then a 404.
        """
        jobs.delete(task_id, owner)
