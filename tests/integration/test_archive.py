"""Durable datasets: real jobs through the API and a worker, archived to a real PostgreSQL, read back byte for byte
once expired in Redis, and deleted everywhere by their owner."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

import httpx
import msgspec
import psycopg
import pytest
import redis

from contracts import Dataset
from pipeline.archive import Archive, copy_of, migrate, migrations
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store import ARCHIVE_QUEUE
from tests.conftest import RunningWorker, follow, wait_for
from tests.fixtures.requests import seed_request

KEY, OTHER = "archive-owner-key", "archive-other-key"
OWNER, STRANGER = {"X-API-Key": KEY}, {"X-API-Key": OTHER}
BODY = {
    "user_query": "water treatment technologies used in specialty crop production",
    "rows": 4,
    "model_name": "Treatments",
    "field_definitions": [
        {"name": "technology_id", "type": "str", "description": "Unique identifier", "required": True},
        {"name": "technology_name", "type": "str", "description": "Name of the technology", "required": True},
    ],
}
#: every read of a finished task, by name: the status and each download in each format
READS = {
    "status": "/tasks/{id}",
    "json": "/api/v1/datasets/{id}?format=json",
    "json-original": "/api/v1/datasets/{id}?format=json&original=true",
    "csv": "/api/v1/datasets/{id}?format=csv",
    "jsonl": "/api/v1/datasets/{id}?format=jsonl",
    "papers-json": "/api/v1/datasets/{id}/papers?format=json",
    "papers-csv": "/api/v1/datasets/{id}/papers?format=csv",
    "citations-csv": "/api/v1/datasets/{id}/citations?format=csv",
    "citations-jsonl": "/api/v1/datasets/{id}/citations?format=jsonl",
    "bibtex": "/api/v1/datasets/{id}/references?format=bibtex",
    "ris": "/api/v1/datasets/{id}/references?format=ris",
    "csl-json": "/api/v1/datasets/{id}/references?format=csl-json",
}
TABLES = ("archived_jobs", "archived_datasets", "archived_documents", "archived_reviews")


@pytest.fixture
def archive_settings(settings: Settings, database_url: str) -> Settings:
    """The test's settings with the test's own PostgreSQL schema as the archive, and two API keys."""
    return msgspec.structs.replace(settings, database_url=database_url, api_keys=(KEY, OTHER))


def _reads(url: str, task_id: str) -> dict[str, tuple[int, bytes, str, str]]:
    """Every read of the task as the owner gets it: status code, body, media type and file name."""
    replies = {name: httpx.get(url + path.format(id=task_id), headers=OWNER) for name, path in READS.items()}
    return {
        name: (r.status_code, r.content, r.headers.get("content-type", ""), r.headers.get("content-disposition", ""))
        for name, r in replies.items()
    }


def _listed(url: str, headers: dict[str, str]) -> dict[str, dict[str, object]]:
    reply = httpx.get(f"{url}/api/v1/tasks", headers=headers)
    assert reply.status_code == 200, reply.text
    return {task["task_id"]: task for task in reply.json()["tasks"]}


def _archived_rows(database_url: str, task_id: str) -> dict[str, int]:
    """How many rows each archive table holds for the task, read straight from PostgreSQL."""
    with psycopg.connect(database_url) as conn:
        counts = {}
        for table in TABLES:
            found = conn.execute(f"SELECT count(*) FROM {table} WHERE task_id = %s".encode(), [task_id]).fetchone()
            assert found is not None
            counts[table] = int(found[0])
        return counts


def _redis_keys(settings: Settings, task_id: str) -> list[bytes]:
    """Every Redis key of the test's prefix whose name holds the task id."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return list(client.scan_iter(match=f"{settings.key_prefix}*{task_id}*", count=1000))
    finally:
        client.close()


def _drain(worker: RunningWorker) -> None:
    """Wait until every archive message (retries included) has been processed."""
    worker.runtime.broker.join(ARCHIVE_QUEUE, timeout=30_000)


def _generate(url: str, jobs: JobService) -> str:
    reply = httpx.post(f"{url}/api/v1/datasets/generate", json=BODY, headers=OWNER)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    assert follow(jobs, task_id)[-1].status == "completed"
    return task_id


def test_an_expired_dataset_reads_the_same_from_the_archive_until_its_owner_deletes_it(
    archive_settings: Settings,
    database_url: str,
    serve_api: Callable[[Settings], str],
    make_jobs: Callable[..., JobService],
    run_worker: Callable[..., RunningWorker],
) -> None:
    url = serve_api(archive_settings)
    jobs = make_jobs(settings_=archive_settings)
    worker = run_worker(settings_=archive_settings)
    task_id = _generate(url, jobs)

    first = msgspec.json.decode(httpx.get(f"{url}/api/v1/datasets/{task_id}", headers=OWNER).content, type=Dataset)
    row_id = first.rows[0].row_id
    edit = {"action": "edit", "field": "technology_name", "value": "Reviewed name", "reviewer": "Ada"}
    reviewed = httpx.patch(f"{url}/api/v1/datasets/{task_id}/rows/{row_id}", json=edit, headers=OWNER)
    assert reviewed.status_code == 200, reviewed.text
    _drain(worker)
    wait_for(lambda: _archived_rows(database_url, task_id)["archived_reviews"] == 1, what="the review archived")
    archived = _archived_rows(database_url, task_id)
    assert archived["archived_jobs"] == archived["archived_datasets"] == 1
    assert archived["archived_documents"] == len(jobs.store.jobs.inputs(task_id, "documents").get("documents", list))

    before = _reads(url, task_id)
    assert {code for code, *_ in before.values()} == {200}
    listed_before = _listed(url, OWNER)[task_id]

    # Expired in Redis: its keys go, as their TTL would take them (the lists keep its id until trimmed).
    keys = _redis_keys(archive_settings, task_id)
    assert len(keys) > 5
    client = redis.Redis.from_url(archive_settings.redis_url)
    client.delete(*keys)
    client.close()
    assert jobs.store.jobs.load(task_id) is None

    after = _reads(url, task_id)
    for name in READS:
        assert after[name] == before[name], name  # the same bytes, media type and file name
    served = msgspec.json.decode(after["json"][1], type=Dataset)
    assert served.rows[0].row["technology_name"] == "Reviewed name" and len(served.review) == 1
    assert _listed(url, OWNER)[task_id] == listed_before
    assert task_id not in _listed(url, STRANGER)

    # A review of the archived dataset goes to the archive.
    again = {"action": "exclude", "reason": "duplicate"}
    excluded = httpx.patch(f"{url}/api/v1/datasets/{task_id}/rows/{row_id}", json=again, headers=OWNER)
    assert excluded.status_code == 200 and excluded.json()["review"]["excluded"] is True, excluded.text
    assert _archived_rows(database_url, task_id)["archived_reviews"] == 2
    assert httpx.get(f"{url}/tasks/{task_id}", headers=OWNER).json()["result"]["rows"][0]["review"]["excluded"]

    # Another key sees nothing and deletes nothing.
    assert httpx.get(f"{url}/tasks/{task_id}", headers=STRANGER).status_code == 404
    assert httpx.delete(f"{url}/api/v1/tasks/{task_id}", headers=STRANGER).status_code == 404
    assert _archived_rows(database_url, task_id)["archived_jobs"] == 1

    deleted = httpx.delete(f"{url}/api/v1/tasks/{task_id}", headers=OWNER)
    assert deleted.status_code == 204 and deleted.content == b"", deleted.text
    assert _archived_rows(database_url, task_id) == dict.fromkeys(TABLES, 0)
    assert _redis_keys(archive_settings, task_id) == []
    assert {code for code, *_ in _reads(url, task_id).values()} == {404}
    assert task_id not in _listed(url, OWNER)
    assert httpx.delete(f"{url}/api/v1/tasks/{task_id}", headers=OWNER).status_code == 404


def test_delete_removes_a_job_from_redis_and_the_archive_and_a_queued_one_never_runs(
    archive_settings: Settings,
    database_url: str,
    serve_api: Callable[[Settings], str],
    make_jobs: Callable[..., JobService],
    run_worker: Callable[..., RunningWorker],
) -> None:
    url = serve_api(archive_settings)
    jobs = make_jobs(settings_=archive_settings)
    queued = httpx.post(f"{url}/api/v1/datasets/generate", json=BODY, headers=OWNER).json()["task_id"]
    assert httpx.delete(f"{url}/api/v1/tasks/{queued}", headers=OWNER).status_code == 204  # cancelled, then gone
    assert _redis_keys(archive_settings, queued) == []

    worker = run_worker(settings_=archive_settings)
    task_id = _generate(url, jobs)
    # (the completed event goes out before the archive message is sent: wait for the copy itself)
    wait_for(lambda: _archived_rows(database_url, task_id)["archived_jobs"] == 1, what="the job archived")
    client_stream = jobs.store.keys.client_stream(jobs.store.jobs.load(task_id).client_id)  # type: ignore[union-attr]

    def client_events() -> int:
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", jobs.store.client.xrange(client_stream))
        return sum(task_id.encode() in fields[b"event"] for _, fields in entries)

    assert client_events() > 3
    assert httpx.delete(f"{url}/api/v1/tasks/{task_id}", headers=OWNER).status_code == 204
    assert _redis_keys(archive_settings, task_id) == []
    assert client_events() == 0
    assert _archived_rows(database_url, task_id) == dict.fromkeys(TABLES, 0)
    worker.join()
    _drain(worker)  # the queued job's message was skipped, and nothing brought either job back
    assert _redis_keys(archive_settings, task_id) == []
    # Only the skipped message's delivery count (JobEvents counts a delivery before it reads the job), with the TTL.
    assert [key.rpartition(b":")[2] for key in _redis_keys(archive_settings, queued)] in ([], [b"deliveries"])
    assert all(
        0 < jobs.store.client.ttl(key) <= archive_settings.result_ttl_s for key in _redis_keys(archive_settings, queued)
    )
    assert _archived_rows(database_url, queued)["archived_jobs"] == 0
    assert _archived_rows(database_url, task_id)["archived_jobs"] == 0
    assert httpx.get(f"{url}/tasks/{queued}", headers=OWNER).status_code == 404


def _runs(settings: Settings, task_id: str) -> set[bytes]:
    """The extraction runs that have keys of the task in Redis (by run id)."""
    keys = [key for key in _redis_keys(settings, task_id) if b":extraction:" in key]
    return {key.split(b":extraction:")[1].split(b":")[0] for key in keys}


def test_delete_removes_every_extraction_run_of_a_job_run_again(
    archive_settings: Settings,
    database_url: str,
    serve_api: Callable[[Settings], str],
    make_jobs: Callable[..., JobService],
    run_worker: Callable[..., RunningWorker],
) -> None:
    url = serve_api(archive_settings)
    jobs = make_jobs(settings_=archive_settings)
    worker = run_worker(settings_=archive_settings)
    task_id = _generate(url, jobs)
    first = _runs(archive_settings, task_id)
    seen = follow(jobs, task_id)[-1].seq
    jobs.rerun(task_id, "extraction")
    assert follow(jobs, task_id, after=seen)[-1].status == "completed"
    runs = _runs(archive_settings, task_id)
    assert len(first) == 1 and len(runs) == 2 and first < runs  # both runs' counters and batch rows are there

    assert httpx.delete(f"{url}/api/v1/tasks/{task_id}", headers=OWNER).status_code == 204
    assert _redis_keys(archive_settings, task_id) == []
    worker.join()
    _drain(worker)  # nothing brought any of it back
    assert _redis_keys(archive_settings, task_id) == []
    assert _archived_rows(database_url, task_id) == dict.fromkeys(TABLES, 0)


def test_a_copy_taken_before_a_delete_is_not_archived_after_it(
    archive_settings: Settings,
    database_url: str,
    serve_api: Callable[[Settings], str],
    make_jobs: Callable[..., JobService],
    run_worker: Callable[..., RunningWorker],
) -> None:
    url = serve_api(archive_settings)
    jobs = make_jobs(settings_=archive_settings)
    run_worker(settings_=archive_settings)
    task_id = _generate(url, jobs)
    wait_for(lambda: _archived_rows(database_url, task_id)["archived_jobs"] == 1, what="the job archived")
    copy = copy_of(jobs.store, task_id)  # e.g. an archive message's, caught between its read and its write
    assert copy is not None and copy.dataset is not None and copy.documents

    archive = Archive(database_url)
    try:
        assert archive.save(copy) is True  # before the delete, the copy is stored
        assert httpx.delete(f"{url}/api/v1/tasks/{task_id}", headers=OWNER).status_code == 204
        assert _archived_rows(database_url, task_id) == dict.fromkeys(TABLES, 0)
        assert archive.save(copy) is False  # after it, the tombstone turns it away
    finally:
        archive.close()
    assert _archived_rows(database_url, task_id) == dict.fromkeys(TABLES, 0)
    assert httpx.get(f"{url}/tasks/{task_id}", headers=OWNER).status_code == 404


def test_a_job_completes_when_the_archive_is_down_and_its_copy_is_retried(
    settings: Settings,
    make_jobs: Callable[..., JobService],
    run_worker: Callable[..., RunningWorker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = msgspec.structs.replace(
        settings, database_url="postgresql://litminer@127.0.0.1:1/archive?connect_timeout=1", archive_max_retries=1
    )
    jobs = make_jobs(settings_=nowhere)
    run_worker(settings_=nowhere)
    caplog.set_level(logging.INFO, logger="pipeline.archive")
    job = jobs.submit(seed_request())
    assert follow(jobs, job.task_id)[-1].status == "completed"
    assert jobs.status(job.task_id).result is not None  # the job and its dataset are there, from Redis

    def dead() -> int:
        (depth,) = [depth for depth in jobs.store.queues.depths() if depth.name == ARCHIVE_QUEUE]
        return depth.dead

    wait_for(lambda: dead() == 1, timeout=30, what="the archive message dead-lettered after its retry")
    failures = [
        r for r in caplog.records if r.name == "pipeline.archive.copy" and getattr(r, "task_id", "") == job.task_id
    ]
    assert [r.levelname for r in failures] == ["WARNING", "ERROR"], [r.getMessage() for r in failures]
    assert "attempt 1 of 2" in failures[0].getMessage() and "after 2 attempts" in failures[1].getMessage()


def test_migrations_run_twice_apply_once(database_url: str) -> None:
    names = [migration.name for migration in migrations()]
    assert names and names[0] == "0001_archive.sql"
    with psycopg.connect(database_url) as conn:
        assert migrate(conn) == names
        assert migrate(conn) == []
        versions = conn.execute("SELECT version FROM archive_schema_version ORDER BY version").fetchall()
    assert [version for (version,) in versions] == [migration.version for migration in migrations()]
