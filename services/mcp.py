"""``litminer mcp``: a Model Context Protocol server over stdio, so an AI agent can mine cited datasets.

The server talks to a running litminer API (``LITMINER_API_URL``, with ``LITMINER_API_KEY``) through
``AsyncApiClient`` and offers four tools: ``generate_dataset``, ``get_status``, ``get_dataset`` and ``cancel_task``.
Their inputs and outputs are typed, so the agent gets JSON Schemas and structured results. Answers are kept short
for an agent's context: ``get_dataset`` gives each row's values, confidence and citations (paper title, DOI,
quote) and the URL of the full dataset. stdout carries the protocol; logs go to stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal, NotRequired

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12 on

from contracts import (
    GENERATED_SOURCE,
    Confidence,
    Dataset,
    DatasetRow,
    FieldType,
    FieldValue,
    JobStatus,
    Stage,
    TaskStatus,
)
from contracts.screening import CriterionKind
from services.client import ApiError, AsyncApiClient

#: a quote longer than this is cut (the full one is in the downloadable dataset)
_QUOTE_CHARS = 300

_INSTRUCTIONS = """\
litminer mines a dataset from the scholarly literature: you give a research question and the columns you \
want; it searches papers, extracts one value per column and row, and backs every value with a verbatim quote.
1. generate_dataset(question, fields, rows) starts a job and returns its task_id (a job takes seconds to minutes).
2. get_status(task_id, wait_s=30) until status is completed, error or cancelled.
3. get_dataset(task_id) returns the rows with their confidence and citations (title, DOI, quote).
cancel_task(task_id) stops a job that is no longer needed."""


class ColumnSpec(TypedDict):
    """One column of the dataset."""

    name: Annotated[str, Field(description="column name, an identifier such as technology_name")]
    type: NotRequired[Annotated[FieldType, Field(description="value type (default str)")]]
    description: NotRequired[Annotated[str, Field(description="what the column holds, in words")]]
    required: NotRequired[Annotated[bool, Field(description="rows without this value are dropped (default true)")]]


class CriterionSpec(TypedDict):
    """A screening criterion every paper is checked against."""

    text: Annotated[str, Field(description='in your words: "randomised controlled trials"')]
    kind: NotRequired[Annotated[CriterionKind, Field(description="include (default) or exclude")]]


class JobState(TypedDict):
    """Where a job is."""

    task_id: str
    status: JobStatus
    stage: Stage
    progress: Annotated[int, Field(description="percent done, 0-100")]
    message: str
    error: str | None
    rows: Annotated[int | None, Field(description="rows in the dataset, once completed")]


class CitationView(TypedDict):
    """The passage of a paper behind one value."""

    field: str
    title: str
    doi: str | None
    quote: str


class RowView(TypedDict):
    """One row: its values, how sure litminer is of it, and the passages behind its values."""

    row_id: str
    values: dict[str, FieldValue]
    confidence: Confidence
    citations: list[CitationView]


class DatasetView(TypedDict):
    """A finished dataset, compact: the rows (format json) or the CSV text (format csv)."""

    task_id: str
    model_name: str
    question: str
    columns: list[str]
    rows: list[RowView]
    csv: Annotated[str | None, Field(description="the dataset as CSV, when format was csv")]
    shortfall: Annotated[str | None, Field(description="why there are fewer rows than asked, if there are")]
    download_url: Annotated[str, Field(description="the full dataset (quote context, pages, paper metadata)")]


def create_server(client: AsyncApiClient) -> MCPServer:
    """The MCP server and its tools, each one request (or two) to the API through ``client``."""
    server: MCPServer = MCPServer("litminer", instructions=_INSTRUCTIONS)
    reading = ToolAnnotations(read_only_hint=True)

    @server.tool()
    async def generate_dataset(
        question: Annotated[str, Field(description="the research question")],
        fields: Annotated[list[ColumnSpec], Field(description="the columns of the dataset", min_length=1)],
        *,
        rows: Annotated[int, Field(description="rows wanted", ge=1)] = 10,
        sources: Annotated[
            list[str] | None,
            Field(description="openalex, europepmc, crossref, arxiv, semanticscholar, local (default: the API's)"),
        ] = None,
        criteria: Annotated[list[CriterionSpec] | None, Field(description="inclusion/exclusion criteria")] = None,
        model_name: Annotated[str, Field(description="the dataset's name, an identifier")] = "Dataset",
    ) -> JobState:
        """Start mining a dataset from the literature; returns the job's task_id. Follow it with get_status."""
        with _refusals():
            accepted = await client.generate(
                user_query=question,
                field_definitions=fields,
                rows=rows,
                sources=sources,
                criteria=criteria or [],
                model_name=model_name,
            )
            return _job_state(await client.status(accepted.task_id))

    @server.tool(annotations=reading)
    async def get_status(
        task_id: str,
        wait_s: Annotated[
            float, Field(description="wait up to this many seconds for the job to end before answering", ge=0, le=60)
        ] = 0,
    ) -> JobState:
        """A job's status (queued, processing, retrying, completed, error, cancelled), stage, progress and message."""
        with _refusals():
            if wait_s:
                with anyio.move_on_after(wait_s):
                    async for _ in client.follow_task(task_id):
                        pass
            return _job_state(await client.status(task_id))

    @server.tool(annotations=reading)
    async def get_dataset(task_id: str, format: Literal["json", "csv"] = "json") -> DatasetView:
        """A completed job's dataset: rows with values, confidence and citations (json), or the CSV text (csv)."""
        with _refusals():
            dataset = await client.dataset(task_id)
            csv = (await client.dataset(task_id, "csv")).decode() if format == "csv" else None
        return _dataset_view(dataset, csv, client.download_url(task_id, format))

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
    async def cancel_task(task_id: str) -> JobState:
        """Cancel a queued or running job (an error if it already finished)."""
        with _refusals():
            return _job_state(await client.cancel(task_id))

    return server


def serve(api_url: str | None = None, api_key: str | None = None) -> None:
    """Serve MCP on stdin/stdout until the client closes it, against the API at ``api_url`` (or
    ``LITMINER_API_URL``) with ``api_key`` (or ``LITMINER_API_KEY``)."""

    async def run() -> None:
        async with AsyncApiClient(api_url, api_key) as client:
            await create_server(client).run_stdio_async()

    anyio.run(run)


@contextmanager
def _refusals() -> Iterator[None]:
    """An ``ApiError`` as a tool error, whose message the agent reads (a 400's names the field)."""
    try:
        yield
    except ApiError as exc:
        raise ToolError(str(exc)) from None


def _job_state(status: TaskStatus) -> JobState:
    return JobState(
        task_id=status.task_id,
        status=status.status,
        stage=status.stage,
        progress=status.progress,
        message=status.message,
        error=status.error,
        rows=None if status.result is None else len(status.result.rows),
    )


def _dataset_view(dataset: Dataset, csv: str | None, download_url: str) -> DatasetView:
    return DatasetView(
        task_id=dataset.task_id,
        model_name=dataset.model_name,
        question=dataset.query,
        columns=[field.name for field in dataset.schema],
        rows=[] if csv is not None else [_row_view(row) for row in dataset.rows],
        csv=csv,
        shortfall=dataset.stats.shortfall,
        download_url=download_url,
    )


def _row_view(row: DatasetRow) -> RowView:
    citations = [
        CitationView(
            field=citation.field,
            title=citation.metadata.title,
            doi=citation.metadata.doi,
            quote=_cut(citation.text_span),
        )
        for citation in row.citations
        if citation.source_id != GENERATED_SOURCE  # litminer made that value itself: no paper says it
    ]
    return RowView(row_id=row.row_id, values=row.row, confidence=row.confidence, citations=citations)


def _cut(text: str) -> str:
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"
