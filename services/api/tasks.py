"""Task status and cancellation (the seed's paths)."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts import TaskStatus
from pipeline.errors import JobNotFound
from pipeline.runtime import Pipeline


def _status(pipeline: Pipeline, task_id: str) -> TaskStatus:
    job = pipeline.store.load(task_id)
    if job is None:
        raise JobNotFound(task_id)
    return TaskStatus(
        task_id=job.task_id,
        client_id=job.client_id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        total=job.total,
        message=job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
        error=job.error,
        result=pipeline.dataset(task_id) if job.status == "completed" else None,
    )


class TaskController(Controller):
    """Follow and cancel jobs."""

    path = "/tasks"

    @get("/{task_id:str}", operation_id="getTask", sync_to_thread=True)
    def status(self, task_id: FromPath[str], pipeline: NamedDependency[Pipeline]) -> TaskStatus:
        """Job status; with ``result`` once completed and ``error`` once failed."""
        return _status(pipeline, task_id)

    @get("/{task_id:str}/revoke", operation_id="revokeTask", sync_to_thread=True)
    def revoke(self, task_id: FromPath[str], pipeline: NamedDependency[Pipeline]) -> TaskStatus:
        """Cancel a queued job or abort a running one (409 when it already finished)."""
        pipeline.cancel(task_id)
        return _status(pipeline, task_id)

    @post("/{task_id:str}/revoke", operation_id="revokeTaskPost", status_code=200, sync_to_thread=True)
    def revoke_post(self, task_id: FromPath[str], pipeline: NamedDependency[Pipeline]) -> TaskStatus:
        """Same as ``GET /tasks/{task_id}/revoke``."""
        pipeline.cancel(task_id)
        return _status(pipeline, task_id)
