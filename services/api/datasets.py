"""Dataset generation requests."""

from __future__ import annotations

import json
from urllib.parse import quote

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import FromPath, FromQuery

from contracts import JobRecord, TaskAccepted
from pipeline.errors import JobConflict
from pipeline.export import MEDIA_TYPES, ExportFormat, export
from pipeline.runtime import Pipeline
from pipeline.schema import InvalidRequest, parse_generate_request
from services.api.auth import STARTS_JOBS, owned_job


async def read_body(request: Request[object, object, State]) -> dict[str, object]:
    """The generate request's fields from a JSON or a form-urlencoded body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError) as exc:  # also integers of over 4300 digits, and nesting past the stack
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise InvalidRequest("body", f"invalid JSON ({reason})") from None
        if not isinstance(body, dict):
            raise InvalidRequest("body", "must be a JSON object")
        return body
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        try:
            form = await request.form()
        except ClientException as exc:  # a malformed multipart body, refused by Litestar's parser (too large: 413)
            if exc.status_code != 400:
                raise
            raise InvalidRequest("body", exc.detail) from None
        return {key: form.get(key) for key in form}
    raise InvalidRequest("content-type", "send application/json or application/x-www-form-urlencoded")


class DatasetController(Controller):
    """Start dataset generation jobs."""

    path = "/api/v1/datasets"

    @post("/generate", status_code=202, operation_id="generateDataset", opt={STARTS_JOBS: True})
    async def generate(
        self, request: Request[object, object, State], pipeline: NamedDependency[Pipeline], owner: NamedDependency[str]
    ) -> TaskAccepted:
        """Validate the request, queue the job and say where to follow it."""
        generate = parse_generate_request(await read_body(request), max_rows=pipeline.settings.max_rows)
        return accepted(await anyio.to_thread.run_sync(lambda: pipeline.submit(generate, owner=owner)))

    @get("/{task_id:str}", operation_id="getDataset", sync_to_thread=True)
    def dataset(
        self,
        task_id: FromPath[str],
        pipeline: NamedDependency[Pipeline],
        owner: NamedDependency[str],
        format: FromQuery[ExportFormat] = "json",
    ) -> Response[bytes]:
        """The finished dataset as JSON, CSV or JSON Lines (404 for unknown tasks, 409 until completed)."""
        job = owned_job(pipeline, task_id, owner)
        dataset = pipeline.dataset(task_id) if job.status == "completed" else None
        if dataset is None:
            raise JobConflict(
                f"job {task_id} is {job.status} (stage {job.stage}); the dataset exists once it completes"
            )
        filename = f"{dataset.model_name}-{task_id}.{format}"
        return Response(
            export(dataset, format),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": content_disposition(filename)},
        )


def content_disposition(filename: str) -> str:
    """An attachment header for any file name (model names are identifiers: ``Δεδομένα`` is one).

    Header values are Latin-1, so a name beyond ASCII also goes as RFC 6266 ``filename*`` (UTF-8, percent-encoded)
    after an ASCII ``filename`` for old clients.
    """
    if filename.isascii():
        return f'attachment; filename="{filename}"'
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


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
