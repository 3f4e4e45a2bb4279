"""One-round-trip job changes (compare-and-set on the remembered record) and consumers woken by enqueues."""

from __future__ import annotations

import threading
import time

import msgspec
import redis

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


def test_an_enqueue_leaves_one_wake_up_token_for_idle_consumers(make_jobs) -> None:
    jobs = make_jobs()
    wake = jobs.store.keys.wake("schema_preparation")
    for _ in range(3):
        jobs.submit(REQUEST)
    # no consumer waits: one token stays (not three), so a later idle consumer does one fetch, not three
    assert jobs.store.client.lrange(wake, 0, -1) == [b"1"]
    assert 0 < jobs.store.client.pttl(wake) <= 60_000


def test_an_idle_consumer_is_woken_by_an_enqueue_not_by_its_timeout(make_jobs) -> None:
    jobs = make_jobs()
    consumer = jobs.store.queues.broker.consume("schema_preparation", prefetch=1, timeout=60_000)
    woken = threading.Event()

    def wait() -> None:
        assert next(consumer) is None  # an empty fetch, then a wait on the wake-up list (up to 60 s)
        woken.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    watcher = redis.Redis.from_url(jobs.settings.redis_url)
    for _ in range(500):  # until the consumer blocks in BLPOP
        if any(client["cmd"] == "blpop" for client in watcher.client_list()):
            break
        time.sleep(0.01)
    watcher.close()

    job = jobs.submit(REQUEST)
    assert woken.wait(10), "the consumer slept through the enqueue"
    message = next(consumer)
    assert message is not None and message.args[0] == job.task_id
    consumer.ack(message)
    consumer.close()
