"""Dataset generation requests."""

from __future__ import annotations

import json

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from contracts import JobRecord, TaskAccepted
from pipeline.errors import JobConflict, JobNotFound
from pipeline.export import MEDIA_TYPES, ExportFormat, export
from pipeline.runtime import Pipeline
from pipeline.schema import InvalidRequest, parse_generate_request


async def read_body(request: Request[object, object, State]) -> dict[str, object]:
    """The generate request's fields from a JSON or a form-urlencoded body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest("body", f"invalid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise InvalidRequest("body", "must be a JSON object")
        return body
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {key: form.get(key) for key in form}
    raise InvalidRequest("content-type", "send application/json or application/x-www-form-urlencoded")


class DatasetController(Controller):
    """Start dataset generation jobs."""

    path = "/api/v1/datasets"

    @post("/generate", status_code=202, operation_id="generateDataset")
    async def generate(
        self, request: Request[object, object, State], pipeline: NamedDependency[Pipeline]
    ) -> TaskAccepted:
        """Validate the request, queue the job and say where to follow it."""
        generate = parse_generate_request(await read_body(request), max_rows=pipeline.settings.max_rows)
        return accepted(await anyio.to_thread.run_sync(pipeline.submit, generate))

    @get("/{task_id:str}", operation_id="getDataset", sync_to_thread=True)
    def dataset(
        self, task_id: FromPath[str], pipeline: NamedDependency[Pipeline], format: FromQuery[ExportFormat] = "json"
    ) -> Response[bytes]:
        """The finished dataset as JSON, CSV or JSON Lines (404 for unknown tasks, 409 until completed)."""
        job = pipeline.store.load(task_id)
        if job is None:
            raise JobNotFound(task_id)
        dataset = pipeline.dataset(task_id) if job.status == "completed" else None
        if dataset is None:
            raise JobConflict(
                f"job {task_id} is {job.status} (stage {job.stage}); the dataset exists once it completes"
            )
        filename = f"{dataset.model_name}-{task_id}.{format}"
        return Response(
            export(dataset, format),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def accepted(job: JobRecord) -> TaskAccepted:
    """Where to follow a newly queued job."""
    return TaskAccepted(
        task_id=job.task_id,
        client_id=job.client_id,
        status=job.status,
        websocket_url=f"/ws/{job.client_id}",
        sse_url=f"/sse/{job.client_id}",
        status_url=f"/tasks/{job.task_id}",
        parent_task_id=job.parent_task_id,
    )
