"""Operations: readiness from worker heartbeats, task lists, the ops view, metrics and job-tagged logs."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import GenerateRequest
from pipeline.jobs import JobService
from pipeline.worker.status import WorkerStatus
from services.api.requests import parse_generate_request
from services.embedded_redis import free_port
from services.logs import configure_logging
from tests.conftest import follow

SEED = {
    "user_query": "water treatment technologies used in specialty crop production",
    "rows": 5,
    "model_name": "TreatmentTechnologies",
    "field_definitions": [
        {"name": "technology_id", "type": "str", "description": "Unique identifier", "required": True},
        {"name": "technology_name", "type": "str", "description": "Name of the technology", "required": True},
    ],
}


def _submit(api_url: str, client_id: str) -> str:
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=SEED | {"client_id": client_id})
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_ready_needs_a_live_worker_heartbeat(settings, run_worker, api_url):
    waiting = httpx.get(f"{api_url}/ready")
    assert waiting.status_code == 503
    assert "worker heartbeat" in waiting.json()["detail"]

    worker = run_worker(threads=3)
    ready = httpx.get(f"{api_url}/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "workers": 1}
    workers = httpx.get(f"{api_url}/api/v1/ops").json()["workers"]
    assert len(workers) == 1 and workers[0]["threads"] == 3 and workers[0]["age_s"] < 30

    worker.stop()  # a clean shutdown removes the heartbeat at once
    assert httpx.get(f"{api_url}/ready").status_code == 503
    assert httpx.get(f"{api_url}/api/v1/ops").json()["workers"] == []


def test_a_silent_worker_stops_counting_as_live(make_jobs, settings, api_url):
    jobs: JobService = make_jobs()
    status = WorkerStatus(jobs.store.workers, {}, interval_s=5, metrics_port=0)
    status.beat()
    assert httpx.get(f"{api_url}/ready").status_code == 200
    # The same heartbeat, 31 s old: as if the process had been killed without cleaning up.
    jobs.store.client.zadd(jobs.store.keys.workers, {status.worker_id: time.time() - 31})
    assert httpx.get(f"{api_url}/ready").status_code == 503


def test_task_lists_per_client_and_for_everyone(make_jobs, settings, run_worker, api_url):
    jobs: JobService = make_jobs()
    first = _submit(api_url, "client-a")
    second = _submit(api_url, "client-a")
    other = _submit(api_url, "client-b")

    mine = httpx.get(f"{api_url}/api/v1/tasks", params={"client_id": "client-a"}).json()["tasks"]
    assert [t["task_id"] for t in mine] == [second, first]  # newest first
    assert mine[0]["query"] == SEED["user_query"] and mine[0]["rows"] == 5 and mine[0]["status"] == "queued"
    everyone = httpx.get(f"{api_url}/api/v1/tasks", params={"limit": 2}).json()["tasks"]
    assert [t["task_id"] for t in everyone] == [other, second]
    assert httpx.get(f"{api_url}/api/v1/tasks", params={"client_id": "nobody"}).json() == {"tasks": []}
    refused = httpx.get(f"{api_url}/api/v1/tasks", params={"limit": 0})
    assert refused.status_code == 400 and "limit" in refused.text

    # Nothing runs yet: the first stage's queue holds all three jobs.
    ops = httpx.get(f"{api_url}/api/v1/ops").json()
    assert ops["redis_ok"] is True
    depth = {q["name"]: q for q in ops["queues"]}
    assert depth["schema_preparation"]["ready"] == 3 and depth["search"]["ready"] == 0

    worker = run_worker()
    for task_id in (first, second, other):
        follow(jobs, task_id)
    worker.join()  # the completed event goes out before the last message is acknowledged
    worker.runtime.status.beat()  # the next heartbeat, without waiting LITMINER_WORKER_HEARTBEAT_S
    ops = httpx.get(f"{api_url}/api/v1/ops").json()
    assert {q["name"]: q["ready"] for q in ops["queues"]} == dict.fromkeys(
        ("schema_preparation", "search", "extraction", "assembly", "webhooks"), 0
    )
    listed = {j["task_id"]: j for j in ops["jobs"]}
    assert {listed[t]["status"] for t in (first, second, other)} == {"completed"}
    assert all(listed[t]["duration_s"] > 0 for t in (first, second, other))
    (seen,) = ops["workers"]
    assert seen["processed"] >= 3 * 5 and seen["failed"] == 0 and seen["in_flight"] == 0  # 5 actors, batches more


def test_tokens_of_an_llm_job_show_in_the_task_list(llm_settings, make_jobs, run_worker, serve_api):
    api_url = serve_api(llm_settings)
    jobs: JobService = make_jobs(settings_=llm_settings)
    run_worker(settings_=llm_settings)
    task_id = _submit(api_url, "client-llm")
    follow(jobs, task_id)
    task = httpx.get(f"{api_url}/api/v1/tasks", params={"client_id": "client-llm"}).json()["tasks"][0]
    assert task["status"] == "completed" and task["tokens"] > 0


def test_api_metrics_count_requests_by_route(make_jobs, settings, api_url):
    make_jobs()
    for _ in range(3):
        assert httpx.get(f"{api_url}/tasks/{uuid.uuid4()}").status_code == 404
    before = _samples(httpx.get(f"{api_url}/metrics").text)
    assert httpx.get(f"{api_url}/tasks/{uuid.uuid4()}").status_code == 404
    after = _samples(httpx.get(f"{api_url}/metrics").text)

    route = (("app_name", "litminer"), ("method", "GET"), ("path", "/tasks/{task_id}"), ("status_code", "404"))
    assert after[("litminer_http_requests_total", route)] == before[("litminer_http_requests_total", route)] + 1
    assert ("litminer_http_request_duration_seconds_count", route) in after
    assert ("litminer_open_connections", (("protocol", "sse"),)) in after


def test_worker_metrics_on_their_own_port(make_jobs, settings, run_worker):
    port = free_port()
    jobs: JobService = make_jobs()
    worker = run_worker(settings_=msgspec.structs.replace(settings, worker_metrics_port=port))
    job = jobs.submit(_request())
    events = follow(jobs, job.task_id)
    worker.join()
    batches = next(e.data["batches"] for e in events if "batches" in e.data)

    samples = _samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    processed = {dict(labels)["actor"]: v for (name, labels), v in samples.items() if name.endswith("processed_total")}
    assert processed == {
        "schema_preparation": 1,
        "search": 1,
        "extraction": 1,
        "extraction_batch": batches,
        "assembly": 1,
    }
    durations = {dict(labels)["stage"] for (name, labels), _ in samples.items() if name.endswith("seconds_count")}
    assert durations == {"schema_preparation", "search", "extraction", "assembly"}
    assert samples[("litminer_worker_in_flight", ())] == 0


def _request() -> GenerateRequest:
    return parse_generate_request(SEED)


@pytest.fixture
def json_log():
    """The root logger writing JSON lines into a buffer, as ``LITMINER_LOG_FORMAT=json`` sets it up."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", "json")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)


def test_json_log_lines_carry_task_id_and_stage(online_settings, make_jobs, run_worker, json_log):
    settings = msgspec.structs.replace(online_settings, sources=("europepmc",))
    jobs: JobService = make_jobs(settings_=settings)
    run_worker(settings_=settings)
    job = jobs.submit(msgspec.structs.replace(_request(), sources=["europepmc"]))
    follow(jobs, job.task_id)

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    requests = [line for line in lines if line["logger"] == "pipeline.sources.http"]
    assert requests, "the search stage logged no request"
    # These calls pass no extra: task and stage come from the message being processed.
    assert {(line["task_id"], line["stage"]) for line in requests} == {(job.task_id, "search")}
    assert all(line["level"] and line["time"].endswith("Z") for line in lines)
