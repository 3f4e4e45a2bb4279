"""Dataset generation requests and dataset downloads."""

from __future__ import annotations

from urllib.parse import quote

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from contracts import JobRecord, TaskAccepted
from pipeline.export import (
    MEDIA_TYPES,
    CitationFormat,
    ExportFormat,
    PaperFormat,
    export,
    export_citations,
    export_papers,
)
from pipeline.jobs import JobService
from pipeline.references import EXTENSIONS, ReferenceFormat, export_references
from pipeline.references import MEDIA_TYPES as REFERENCE_MEDIA_TYPES
from services.api.auth import STARTS_JOBS
from services.api.openapi import GENERATE_BODY, GENERATE_RESPONSES
from services.api.requests import parse_generate_request, read_body


class DatasetController(Controller):
    """Start dataset generation jobs; download their datasets."""

    path = "/api/v1/datasets"

    @post(
        "/generate",
        status_code=202,
        operation_id="generateDataset",
        opt={STARTS_JOBS: True},
        dependencies=GENERATE_BODY,
        responses=GENERATE_RESPONSES,
    )
    async def generate(
        self, request: Request[object, object, State], jobs: NamedDependency[JobService], owner: NamedDependency[str]
    ) -> TaskAccepted:
        """Check the request, queue the job and say where to follow it."""
        generate = parse_generate_request(await read_body(request))
        return accepted(await anyio.to_thread.run_sync(lambda: jobs.submit(generate, owner=owner)))

    @get("/{task_id:str}", operation_id="getDataset", sync_to_thread=True)
    def dataset(
        self,
        task_id: FromPath[str],
        jobs: NamedDependency[JobService],
        owner: NamedDependency[str],
        format: FromQuery[ExportFormat] = "json",
        original: FromQuery[bool] = False,
    ) -> Response[bytes]:
        """The finished dataset as JSON, CSV or JSON Lines (404 for unknown tasks, 409 until completed).

        Reviewed values unless ``original``; the CSV leaves out excluded rows, JSON and JSON Lines keep them.
        """
        dataset = jobs.dataset(task_id, owner, original=original)
        name = f"{dataset.model_name}-{task_id}.{format}"
        return attachment(export(dataset, format), MEDIA_TYPES[format], name)

    @get("/{task_id:str}/papers", operation_id="getDatasetPapers", sync_to_thread=True)
    def papers(
        self,
        task_id: FromPath[str],
        jobs: NamedDependency[JobService],
        owner: NamedDependency[str],
        format: FromQuery[PaperFormat] = "json",
        original: FromQuery[bool] = False,
    ) -> Response[bytes]:
        """Every paper the job considered, with its screening decision, reason and citing rows (JSON or CSV)."""
        dataset = jobs.dataset(task_id, owner, original=original)
        name = f"{dataset.model_name}-{task_id}-papers.{format}"
        return attachment(export_papers(dataset, format), MEDIA_TYPES[format], name)

    @get("/{task_id:str}/citations", operation_id="getDatasetCitations", sync_to_thread=True)
    def citations(
        self,
        task_id: FromPath[str],
        jobs: NamedDependency[JobService],
        owner: NamedDependency[str],
        format: FromQuery[CitationFormat] = "csv",
        original: FromQuery[bool] = False,
    ) -> Response[bytes]:
        """One line per citation of a value: row, field, value, review status, quote, page, section and paper."""
        dataset = jobs.dataset(task_id, owner, original=original)
        name = f"{dataset.model_name}-{task_id}-citations.{format}"
        return attachment(export_citations(dataset, format), MEDIA_TYPES[format], name)

    @get("/{task_id:str}/references", operation_id="getDatasetReferences", sync_to_thread=True)
    def references(
        self,
        task_id: FromPath[str],
        jobs: NamedDependency[JobService],
        owner: NamedDependency[str],
        format: FromQuery[ReferenceFormat] = "bibtex",
        original: FromQuery[bool] = False,
    ) -> Response[bytes]:
        """The cited papers as BibTeX, RIS or CSL-JSON, one reference per paper (excluded rows do not count)."""
        dataset = jobs.dataset(task_id, owner, original=original)
        suffix = "-references" if format == "csl-json" else ""  # the dataset's own JSON is {model}-{task}.json
        name = f"{dataset.model_name}-{task_id}{suffix}.{EXTENSIONS[format]}"
        return attachment(export_references(dataset, format), REFERENCE_MEDIA_TYPES[format], name)


def attachment(body: bytes, media_type: str, filename: str) -> Response[bytes]:
    """A download: its media type, and the file name to save it under."""
    return Response(body, media_type=media_type, headers={"Content-Disposition": content_disposition(filename)})


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
