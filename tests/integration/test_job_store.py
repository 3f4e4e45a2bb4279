"""The job store on a real Redis: one-round-trip job changes (compare-and-set on the remembered record)."""

from __future__ import annotations

import time

import msgspec

from contracts import FieldDefinition, GenerateRequest
from pipeline.jobs import JobService

REQUEST = GenerateRequest(
    user_query="water treatment technologies used in specialty crop production",
    rows=2,
    field_definitions=[FieldDefinition(name="technology_name", type="str", description="Name of the technology")],
    client_id="store-client",
)


def events_of(jobs: JobService, task_id: str) -> list[tuple[int, str, str]]:
    raws = jobs.store.events.history(task_id)
    return [(e["seq"], e["status"], e["message"]) for e in map(msgspec.json.decode, raws)]


def test_a_change_from_a_stale_remembered_record_is_computed_again(make_jobs) -> None:
    worker_side, api_side = make_jobs(), make_jobs()
    job = worker_side.submit(REQUEST)  # worker_side now remembers the queued record
    assert worker_side.store.jobs.transition(job.task_id, status="processing", message="working") is not None
    api_side.cancel(job.task_id)  # another process changes the record

    # worker_side computes on its remembered (processing) version; the script sees it is stale
    assert worker_side.store.jobs.transition(job.task_id, status="processing", message="late progress") is None
    stored = api_side.store.jobs.load(job.task_id)
    assert stored is not None and stored.status == "cancelled"
    statuses = [status for _, status, _ in events_of(api_side, job.task_id)]
    assert statuses == ["started", "processing", "cancelled"]  # no event for the refused change


def test_a_reopened_job_is_seen_through_a_stale_finished_record(make_jobs) -> None:
    first, second = make_jobs(), make_jobs()
    job = first.submit(REQUEST)
    first.cancel(job.task_id)  # first remembers the job as cancelled
    second.store.jobs.transition(job.task_id, status="queued", message="re-run", reopen=True)

    changed = first.store.jobs.transition(job.task_id, status="processing", message="picked up")
    assert changed is not None and changed.status == "processing"
    assert [status for _, status, _ in events_of(first, job.task_id)][-1] == "processing"


def test_outputs_are_stored_only_with_an_accepted_change(make_jobs) -> None:
    jobs = make_jobs()
    running, cancelled = jobs.submit(REQUEST), jobs.submit(REQUEST)
    jobs.cancel(cancelled.task_id)

    for job in (running, cancelled):
        jobs.store.jobs.transition(job.task_id, message="stage done", outputs={"schema": {"fields": []}})
    assert jobs.store.client.get(jobs.store.keys.output(running.task_id, "schema")) == b'{"fields":[]}'
    assert jobs.store.client.ttl(jobs.store.keys.output(running.task_id, "schema")) > 0
    assert jobs.store.client.get(jobs.store.keys.output(cancelled.task_id, "schema")) is None


def test_event_seqs_follow_the_changes_made_from_two_processes(make_jobs) -> None:
    a, b = make_jobs(), make_jobs()
    job = a.submit(REQUEST)
    for i in range(10):
        (a if i % 2 else b).store.jobs.transition(job.task_id, status="processing", progress=i, message=f"step {i}")
    events = events_of(a, job.task_id)
    assert [seq for seq, _, _ in events] == list(range(1, 12))
    assert [message for _, _, message in events[1:]] == [f"step {i}" for i in range(10)]
    stored = a.store.jobs.load(job.task_id)
    assert stored is not None and stored.progress == 9


def test_a_job_and_its_outputs_live_the_ttl_from_its_last_change(make_jobs, settings) -> None:
    jobs = make_jobs(settings_=msgspec.structs.replace(settings, result_ttl_s=2))
    job = jobs.submit(REQUEST)
    jobs.store.jobs.transition(job.task_id, message="schema ready", outputs={"schema": {"fields": []}})
    jobs.store.jobs.put_output(job.task_id, "documents", [])
    outputs = [jobs.store.keys.output(job.task_id, name) for name in ("schema", "documents")]
    keys = [jobs.store.keys.job(job.task_id), *outputs]
    time.sleep(1.2)  # past half the TTL

    jobs.store.jobs.transition(job.task_id, message="still searching")

    assert [jobs.store.client.pttl(key) > 1500 for key in keys] == [True, True, True]  # renewed, not 800 ms left
