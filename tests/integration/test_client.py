"""`ApiClient` and `AsyncApiClient` against a real API, worker and Redis: every call, decoded into contracts."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid

import pytest

from contracts import (
    Dataset,
    Document,
    Event,
    FieldDefinition,
    GenerateRequest,
    PreparedSchema,
    ReprocessRequest,
    ReviewChange,
    TaskStatus,
)
from pipeline.extractors.base import Extraction
from pipeline.extractors.heuristic import HeuristicExtractor
from services.client import ApiClient, ApiError, AsyncApiClient, GenerateFields
from services.demo import SEED_FIELDS, SEED_QUERY
from services.embedded_redis import free_port
from tests.conftest import follow
from tests.fixtures.proxy import CuttingProxy

FIELDS = [FieldDefinition(name=str(f["name"]), description=str(f["description"])) for f in SEED_FIELDS]


class HoldingExtractor(HeuristicExtractor):
    """Holds every document until the job is cancelled (an abort cancels the batch's coroutine)."""

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        await asyncio.sleep(30)
        return Extraction()


@pytest.fixture
def stack(make_jobs, run_worker, api_url):
    """A job service and a worker, and the API on the same settings."""
    jobs = make_jobs()
    run_worker()
    return jobs, api_url


def assert_cited(dataset: Dataset, rows: int) -> None:
    assert len(dataset.rows) == rows
    for row in dataset.rows:
        assert row.row_id and row.row["technology_name"]
        quoted = [c for c in row.citations if c.field == "technology_name"]
        assert quoted and all(c.text_span and c.metadata.title for c in quoted)


def test_sync_client_generates_follows_waits_downloads_and_reprocesses(stack):
    jobs, url = stack
    with ApiClient(url) as client:
        accepted = client.generate(user_query=SEED_QUERY, field_definitions=FIELDS, rows=3, model_name="Treatments")
        assert accepted.status == "queued" and accepted.sse_url == f"/sse/{accepted.client_id}"

        events = list(client.follow_task(accepted.task_id))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].status == "completed" and events[-1].stage == "done"
        assert events == follow(jobs, accepted.task_id)  # what the job's Redis stream holds
        assert list(client.follow_task(accepted.task_id, last_event_id=3)) == events[3:]

        status = client.wait(accepted.task_id)
        assert isinstance(status, TaskStatus) and status.status == "completed" and status.result is not None
        dataset = client.dataset(accepted.task_id)
        assert dataset.model_name == "Treatments" and dataset.rows == status.result.rows
        assert_cited(dataset, 3)
        table = list(csv.DictReader(io.StringIO(client.dataset(accepted.task_id, "csv").decode())))
        assert [row["technology_name"] for row in table] == [row.row["technology_name"] for row in dataset.rows]
        assert client.download_url(accepted.task_id, "csv") == f"{url}/api/v1/datasets/{accepted.task_id}?format=csv"

        again = client.reprocess(accepted.task_id, ReprocessRequest(from_stage="assembly", rows=2))
        assert again.parent_task_id == accepted.task_id and again.task_id != accepted.task_id
        redone = client.wait(again.task_id)
        assert redone.status == "completed" and redone.parent_task_id == accepted.task_id
        assert redone.result is not None and redone.result.stats.reused_stages
        assert_cited(redone.result, 2)


def test_async_client_generates_follows_waits_downloads_and_reprocesses(stack):
    jobs, url = stack

    async def run() -> None:
        async with AsyncApiClient(url) as client:
            request = GenerateRequest(user_query=SEED_QUERY, field_definitions=FIELDS, rows=3, client_id="async-c1")
            accepted = await client.generate(request)
            assert accepted.client_id == "async-c1"
            events = [event async for event in client.follow_task(accepted.task_id)]
            assert events == follow(jobs, accepted.task_id) and events[-1].status == "completed"
            assert [e async for e in client.follow_task(accepted.task_id, last_event_id=2)] == events[2:]

            status = await client.wait(accepted.task_id)
            assert status.status == "completed" and status == await client.status(accepted.task_id)
            dataset = await client.dataset(accepted.task_id)
            assert_cited(dataset, 3)
            lines = (await client.dataset(accepted.task_id, "jsonl")).decode().splitlines()
            assert [json.loads(line)["row"] for line in lines] == [row.row for row in dataset.rows]

            again = await client.reprocess(accepted.task_id, {"from_stage": "assembly", "rows": 1})
            redone = await client.wait(again.task_id)
            assert redone.status == "completed" and redone.result is not None
            assert_cited(redone.result, 1)

    asyncio.run(run())


def test_async_client_resumes_a_dropped_event_stream_without_loss_or_repeat(stack):
    jobs, url = stack
    with ApiClient(url) as client:
        task_id = client.generate(user_query=SEED_QUERY, field_definitions=FIELDS, rows=2).task_id
    history = follow(jobs, task_id)
    proxy = CuttingProxy(url)

    async def run() -> list[Event]:
        async with AsyncApiClient(proxy.url) as client:
            return [event async for event in client.follow_task(task_id)]

    try:
        events = asyncio.run(run())
    finally:
        proxy.close()
    assert events == history
    assert len(proxy.requests) == 2 and b"last-event-id: 2\r\n" in proxy.requests[1].lower()


def test_both_clients_cancel_a_running_job(run_worker, api_url):
    run_worker(extractors={"heuristic": HoldingExtractor()})

    with ApiClient(api_url) as client:
        task_id = client.generate(user_query=SEED_QUERY, field_definitions=FIELDS, rows=2).task_id
        stages = []
        for event in client.follow_task(task_id):  # until extraction holds the job
            stages.append(event.stage)
            if event.stage == "extraction":
                break
        cancelled = client.cancel(task_id)
        assert cancelled.status == "cancelled" and cancelled.stage == "extraction"
        final = client.wait(task_id)
        assert final.status == "cancelled" and final.result is None
        assert [e.status for e in client.follow_task(task_id)][-1] == "cancelled"

    async def run() -> None:
        async with AsyncApiClient(api_url) as client:
            task_id = (await client.generate(user_query=SEED_QUERY, field_definitions=FIELDS, rows=2)).task_id
            async for event in client.follow_task(task_id):
                if event.stage == "extraction":
                    break
            assert (await client.cancel(task_id)).status == "cancelled"
            assert (await client.wait(task_id)).status == "cancelled"
            with pytest.raises(ApiError) as not_yet:
                await client.dataset(task_id)
            assert not_yet.value.status == 409

    asyncio.run(run())


def test_review_edits_a_cell_and_excludes_a_row_with_both_clients(stack):
    _, url = stack
    with ApiClient(url) as client:
        task_id = client.generate(user_query=SEED_QUERY, field_definitions=FIELDS, rows=3).task_id
        dataset = client.wait(task_id).result
        assert dataset is not None
        first, second = dataset.rows[0], dataset.rows[1]
        edit = ReviewChange(action="edit", field="technology_name", value="Renamed", reason="typo", reviewer="ana")
        edited = client.review(task_id, first.row_id, edit)
        assert edited.row_id == first.row_id and edited.row["technology_name"] == "Renamed"
        assert edited.review is not None and edited.review.cells["technology_name"].status == "edited"
        assert edited.review.cells["technology_name"].original == first.row["technology_name"]
        assert client.dataset(task_id).rows[0].row["technology_name"] == "Renamed"
        assert client.dataset(task_id, original=True).rows[0].row == first.row
        assert b"Renamed" not in client.dataset(task_id, "csv", original=True)
        with pytest.raises(ApiError) as unknown_row:
            client.review(task_id, "no-such-row", ReviewChange(action="exclude"))
        assert unknown_row.value.status == 404

    async def run() -> Dataset:
        async with AsyncApiClient(url) as client:
            excluded = await client.review(task_id, second.row_id, ReviewChange(action="exclude", reason="off topic"))
            assert excluded.review is not None and excluded.review.excluded
            with pytest.raises(ApiError) as bad:
                await client.review(task_id, first.row_id, ReviewChange(action="edit", field="no_such_field", value=1))
            assert bad.value.status == 400 and bad.value.field
            references = await client.export(task_id, "references", "csl-json")
            assert {item["title"] for item in json.loads(references)} <= {
                c.metadata.title for row in dataset.rows for c in row.citations
            }
            with pytest.raises(ApiError) as bad_format:
                await client.export(task_id, "citations", "xlsx")
            assert bad_format.value.status == 400
            return await client.dataset(task_id)

    reviewed = asyncio.run(run())
    with ApiClient(url) as client:
        quotes = list(csv.DictReader(io.StringIO(client.export(task_id, "citations", "csv").decode())))
        assert quotes and all(line["quote"] for line in quotes)
        assert second.row_id not in {line["row_id"] for line in quotes}  # the excluded row is left out
    assert [(e.row_id, e.action, e.reviewer) for e in reviewed.review] == [
        (first.row_id, "edit", "ana"),
        (second.row_id, "exclude", "anonymous"),
    ]


def test_refusals_become_api_errors_naming_the_status_and_field(api_url):
    duplicate = [{"name": "a"}, {"name": "a"}]
    unknown = str(uuid.uuid4())
    with ApiClient(api_url) as client:
        with pytest.raises(ApiError) as bad:
            client.generate(user_query="q", field_definitions=duplicate)
        assert bad.value.status == 400 and bad.value.field == "field_definitions[1].name"
        assert "duplicate" in bad.value.message
        with pytest.raises(ApiError) as missing:
            client.status(unknown)
        assert missing.value.status == 404 and f"no task with id {unknown}" in str(missing.value)
        with pytest.raises(ApiError) as not_an_id:
            list(client.follow_task("not-a-task-id"))
        assert not_an_id.value.status == 400 and not_an_id.value.field == "task_id"
        queued = client.generate(user_query=SEED_QUERY, field_definitions=FIELDS, rows=2)  # no worker: stays queued
        with pytest.raises(ApiError) as too_early:
            client.dataset(queued.task_id)
        assert too_early.value.status == 409 and "is queued" in too_early.value.message
        with pytest.raises(TypeError):
            client.generate(GenerateRequest(user_query="q", field_definitions=FIELDS), rows=2)

    async def run() -> None:
        async with AsyncApiClient(api_url) as client:
            with pytest.raises(ApiError) as bad:
                await client.generate({"user_query": "q", "field_definitions": FIELDS, "rows": 0})
            assert bad.value.status == 400 and bad.value.field == "rows"
            with pytest.raises(ApiError) as missing:
                await client.cancel(unknown)
            assert missing.value.status == 404
            with pytest.raises(ApiError) as missing_stream:
                [e async for e in client.follow_task(unknown)]
            assert missing_stream.value.status == 404
        async with AsyncApiClient(f"http://127.0.0.1:{free_port()}") as nowhere:
            with pytest.raises(ApiError) as unreachable:
                await nowhere.status(unknown)
            assert unreachable.value.status == 0 and "cannot reach the litminer API" in unreachable.value.message

    asyncio.run(run())


def test_generate_keyword_arguments_are_the_fields_of_a_generate_request():
    assert set(GenerateFields.__annotations__) == set(GenerateRequest.__struct_fields__)
