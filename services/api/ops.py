"""Recent tasks (per client or all) and the operations view: queues and live workers."""

from __future__ import annotations

from typing import Annotated

import redis
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, Parameter

from contracts import STAGES, JobRecord
from contracts.ops import OpsView, QueueDepth, TaskList, TaskSummary
from pipeline.runtime import Pipeline
from pipeline.schema import check_client_id
from pipeline.workers import live_workers

Limit = Annotated[int, Parameter(ge=1, le=500, description="how many tasks, newest first")]


def summary(job: JobRecord) -> TaskSummary:
    """A job as a task list shows it."""
    return TaskSummary(
        task_id=job.task_id,
        client_id=job.client_id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        message=job.message,
        query=job.request.user_query,
        model_name=job.request.model_name,
        rows=job.request.rows,
        created_at=job.created_at,
        updated_at=job.updated_at,
        duration_s=round(job.updated_at - job.created_at, 3),
        tokens=job.tokens,
        error=job.error,
        parent_task_id=job.parent_task_id,
    )


def queue_depths(pipeline: Pipeline) -> list[QueueDepth]:
    """Messages waiting in each stage queue, in its delay queue, and dead-lettered (one round trip)."""
    namespace = pipeline.keys.dramatiq_namespace
    with pipeline.client.pipeline(transaction=False) as pipe:
        for queue in STAGES:
            pipe.llen(f"{namespace}:{queue}")
            pipe.hlen(f"{namespace}:{queue}.DQ.msgs")
            pipe.zcard(f"{namespace}:{queue}.XQ")
        counts = pipe.execute()
    return [
        QueueDepth(name=queue, ready=counts[3 * i], delayed=counts[3 * i + 1], dead=counts[3 * i + 2])
        for i, queue in enumerate(STAGES)
    ]


class OpsController(Controller):
    """What clients and operators list."""

    path = "/api/v1"

    @get("/tasks", operation_id="listTasks", sync_to_thread=True)
    def tasks(
        self,
        pipeline: NamedDependency[Pipeline],
        owner: NamedDependency[str],
        client_id: FromQuery[str | None] = None,
        limit: Limit = 20,
    ) -> TaskList:
        """Recent tasks, newest first: one client's (``client_id``) or everyone's (with API keys: the caller's)."""
        if client_id is not None:
            check_client_id(client_id)
            pipeline.store.claim_client(client_id, owner)
        jobs = pipeline.store.recent(limit=limit, client_id=client_id, owner=owner)
        return TaskList(tasks=[summary(job) for job in jobs])

    @get("/ops", operation_id="operations", sync_to_thread=True)
    def ops(self, pipeline: NamedDependency[Pipeline], owner: NamedDependency[str], limit: Limit = 100) -> OpsView:
        """Recent jobs (with API keys: the caller's), queue depths per stage queue, live workers (heartbeat < 30 s)."""
        try:
            jobs = pipeline.store.recent(limit=limit, owner=owner)
            return OpsView(
                jobs=[summary(job) for job in jobs],
                queues=queue_depths(pipeline),
                workers=live_workers(pipeline.client, pipeline.keys),
                redis_ok=True,
            )
        except redis.RedisError:
            return OpsView(jobs=[], queues=[], workers=[], redis_ok=False)
