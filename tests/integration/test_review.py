"""Reviewing a dataset over real HTTP: cells approved, rejected and edited, rows excluded, the audit trail, the
original extraction, reprocessing with and without the review, and who may review."""

from __future__ import annotations

import csv
import io

import httpx
import msgspec
import pytest

from contracts import Dataset
from pipeline.settings import Settings
from services.api.auth import owner_id
from tests.conftest import follow

QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    {"name": "technology_id", "type": "str", "description": "Unique identifier", "required": True},
    {"name": "technology_name", "type": "str", "description": "Name of the technology", "required": True},
    {"name": "cost", "type": "float", "description": "Cost per cubic metre", "required": False},
]


def generate(jobs, url: str, headers: dict[str, str] | None = None) -> str:
    body = {"user_query": QUERY, "rows": 4, "model_name": "Treatments", "field_definitions": FIELDS}
    reply = httpx.post(f"{url}/api/v1/datasets/generate", json=body, headers=headers)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    assert follow(jobs, task_id)[-1].status == "completed"
    return task_id


def dataset(url: str, task_id: str, headers: dict[str, str] | None = None, **params: str) -> Dataset:
    reply = httpx.get(f"{url}/api/v1/datasets/{task_id}", params=params, headers=headers)
    assert reply.status_code == 200, reply.text
    return msgspec.json.decode(reply.content, type=Dataset)


def review(
    url: str, task_id: str, row_id: str, headers: dict[str, str] | None = None, **body: object
) -> httpx.Response:
    return httpx.patch(f"{url}/api/v1/datasets/{task_id}/rows/{row_id}", json=body, headers=headers)


@pytest.fixture
def finished(make_jobs, run_worker, api_url: str) -> tuple[object, str, str]:
    jobs = make_jobs()
    run_worker()
    return jobs, api_url, generate(jobs, api_url)


def test_rows_have_stable_unique_ids(finished) -> None:
    _, url, task_id = finished
    rows = dataset(url, task_id).rows
    assert len(rows) >= 2
    ids = [row.row_id for row in rows]
    assert dataset(url, task_id).stats.queries  # the search queries the job ran, for the page to show
    assert all(ids) and len(set(ids)) == len(ids)
    assert ids == [row.row_id for row in dataset(url, task_id).rows]  # the same on every read


def test_a_reviewed_cell_shows_in_every_export_and_the_original_stays(finished) -> None:
    _, url, task_id = finished
    first, second = dataset(url, task_id).rows[:2]
    old_name = first.row["technology_name"]

    edited = review(
        url,
        task_id,
        first.row_id,
        action="edit",
        field="technology_name",
        value="Better name",
        reason="the paper calls it so",
        reviewer="Ada",
    )
    assert edited.status_code == 200, edited.text
    row = edited.json()
    assert row["row"]["technology_name"] == "Better name"
    assert row["review"]["cells"]["technology_name"] == {"status": "edited", "original": old_name}

    assert review(url, task_id, first.row_id, action="approve", field="technology_id").status_code == 200
    assert review(url, task_id, second.row_id, action="reject", field="technology_name").status_code == 200
    assert review(url, task_id, second.row_id, action="exclude", reason="off topic").status_code == 200

    reviewed = dataset(url, task_id)
    by_id = {r.row_id: r for r in reviewed.rows}
    assert by_id[first.row_id].row["technology_name"] == "Better name"
    first_review, second_review = by_id[first.row_id].review, by_id[second.row_id].review
    assert first_review is not None and first_review.cells["technology_id"].status == "approved"
    assert by_id[second.row_id].row["technology_name"] is None
    assert second_review is not None and second_review.excluded
    trail = reviewed.review
    assert [(e.row_id, e.field, e.action) for e in trail] == [
        (first.row_id, "technology_name", "edit"),
        (first.row_id, "technology_id", "approve"),
        (second.row_id, "technology_name", "reject"),
        (second.row_id, None, "exclude"),
    ]
    assert (trail[0].old, trail[0].new, trail[0].reviewer, trail[0].reason) == (
        old_name,
        "Better name",
        "Ada",
        "the paper calls it so",
    )
    assert trail[1].reviewer == "anonymous"  # no API keys, no name given
    assert (trail[3].old, trail[3].new) == ("included", "excluded")

    table = list(csv.DictReader(io.StringIO(httpx.get(f"{url}/api/v1/datasets/{task_id}?format=csv").text)))
    names = [r["technology_name"] for r in table]
    assert "Better name" in names and old_name not in names
    assert len(table) == len(reviewed.rows) - 1  # the excluded row is left out

    original = dataset(url, task_id, original="true")
    assert original.review == [] and all(r.review is None for r in original.rows)
    assert {r.row_id: r.row["technology_name"] for r in original.rows}[first.row_id] == old_name

    status = httpx.get(f"{url}/tasks/{task_id}").json()
    assert status["result"]["rows"][0]["review"] is not None or status["result"]["rows"][1]["review"] is not None

    restored = review(url, task_id, second.row_id, action="restore").json()
    assert restored["review"]["excluded"] is False
    # the answer is the row as a read gives it: the rejected cell still knows its extracted value
    assert restored["review"]["cells"]["technology_name"] == {
        "status": "rejected",
        "original": second.row["technology_name"],
    }
    assert restored == msgspec.to_builtins(next(r for r in dataset(url, task_id).rows if r.row_id == second.row_id))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "edit", "field": "cost", "value": "cheap"}, "value"),
        ({"action": "edit", "field": "cost"}, "value"),
        ({"action": "edit", "field": "colour", "value": "red"}, "field"),
        ({"action": "approve"}, "field"),
        ({"action": "exclude", "field": "cost"}, "field"),
        ({"action": "reject", "field": "cost", "value": 3}, "value"),
        ({"action": "delete", "field": "cost"}, "action"),
        ({"field": "cost"}, "action"),
        ({"action": "approve", "field": "cost", "by": "me"}, "by"),
        ({"action": "approve", "field": "cost", "reviewer": " "}, "reviewer"),
    ],
)
def test_a_bad_decision_is_a_400_naming_the_field_and_changes_nothing(finished, body, field) -> None:
    _, url, task_id = finished
    row_id = dataset(url, task_id).rows[0].row_id
    reply = review(url, task_id, row_id, **body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field
    assert dataset(url, task_id).review == []


def test_an_edit_is_converted_to_the_field_type(finished) -> None:
    _, url, task_id = finished
    row_id = dataset(url, task_id).rows[0].row_id
    reply = review(url, task_id, row_id, action="edit", field="cost", value="2.5")
    assert reply.status_code == 200, reply.text
    assert reply.json()["row"]["cost"] == 2.5


def test_unknown_rows_and_unfinished_jobs(finished) -> None:
    _, url, task_id = finished
    assert review(url, task_id, "no-such-row", action="exclude").status_code == 404
    assert review(url, "0" * 8 + "-0000-4000-8000-" + "0" * 12, "x", action="exclude").status_code == 404
    assert review(url, "not-a-task", "x", action="exclude").json()["field"] == "task_id"


def test_a_job_without_a_dataset_cannot_be_reviewed(api_url: str) -> None:
    body = {"user_query": QUERY, "rows": 2, "field_definitions": FIELDS}
    queued = httpx.post(f"{api_url}/api/v1/datasets/generate", json=body).json()["task_id"]  # no worker: it waits
    reply = review(api_url, queued, "x", action="exclude")
    assert reply.status_code == 409 and "queued" in reply.json()["detail"]


def test_a_reprocess_keeps_the_review_unless_told_not_to(finished) -> None:
    jobs, url, task_id = finished
    rows = dataset(url, task_id).rows
    assert (
        review(url, task_id, rows[0].row_id, action="edit", field="technology_name", value="Kept edit").status_code
        == 200
    )
    assert review(url, task_id, rows[1].row_id, action="exclude").status_code == 200

    def reprocess(**extra: object) -> Dataset:
        reply = httpx.post(f"{url}/api/v1/tasks/{task_id}/reprocess", json={"from_stage": "assembly", **extra})
        assert reply.status_code == 202, reply.text
        child = reply.json()["task_id"]
        assert follow(jobs, child)[-1].status == "completed"
        return dataset(url, child)

    kept = reprocess()
    by_id = {r.row_id: r for r in kept.rows}
    assert by_id[rows[0].row_id].row["technology_name"] == "Kept edit"
    excluded = by_id[rows[1].row_id].review
    assert excluded is not None and excluded.excluded
    assert len(kept.review) == 2

    fresh = reprocess(keep_review=False)
    assert fresh.review == [] and all(r.review is None for r in fresh.rows)
    assert {r.row_id: r.row["technology_name"] for r in fresh.rows}[rows[0].row_id] == rows[0].row["technology_name"]


def test_only_the_owner_reviews_and_the_trail_names_the_key(
    settings: Settings, make_jobs, run_worker, serve_api
) -> None:
    keyed = msgspec.structs.replace(settings, api_keys=("key-one", "key-two"))
    jobs = make_jobs(settings_=keyed)
    run_worker(settings_=keyed)
    url = serve_api(keyed)
    one, two = {"Authorization": "Bearer key-one"}, {"Authorization": "Bearer key-two"}
    task_id = generate(jobs, url, headers=one)
    row_id = dataset(url, task_id, headers=one).rows[0].row_id
    assert review(url, task_id, row_id, action="exclude").status_code == 401
    assert review(url, task_id, row_id, headers=two, action="exclude").status_code == 404
    assert review(url, task_id, row_id, headers=one, action="exclude").status_code == 200
    trail = dataset(url, task_id, headers=one).review
    assert [e.reviewer for e in trail] == [owner_id("key-one")]
