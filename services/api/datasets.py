"""Dataset generation requests."""

from __future__ import annotations

import json

import anyio.to_thread
from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency

from contracts import TaskAccepted
from pipeline.runtime import Pipeline
from pipeline.schema import InvalidRequest, parse_generate_request


async def read_generate_body(request: Request[object, object, State]) -> dict[str, object]:
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
        generate = parse_generate_request(await read_generate_body(request), max_rows=pipeline.settings.max_rows)
        job = await anyio.to_thread.run_sync(pipeline.submit, generate)
        return TaskAccepted(
            task_id=job.task_id,
            client_id=job.client_id,
            status=job.status,
            websocket_url=f"/ws/{job.client_id}",
            sse_url=f"/sse/{job.client_id}",
            status_url=f"/tasks/{job.task_id}",
        )
