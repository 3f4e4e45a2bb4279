"""The reaper on a real Redis: a job whose message is gone is sent on again, twice, then ended."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from contracts import STAGES, FieldDefinition, GenerateRequest, JobRecord, decode_event
from pipeline.jobs import JobService
from pipeline.worker.reaper import MAX_REAPS, Reaper

REQUEST = GenerateRequest(
    user_query="water treatment technologies used in specialty crop production",
    rows=2,
    field_definitions=[FieldDefinition(name="technology_name", type="str", description="Name of the technology")],
)


def _lose_messages(jobs: JobService) -> None:
    """Drop every queued stage message, as when a worker's outcome could not be stored before its ack."""
    keys = jobs.store.keys
    jobs.store.client.delete(*(key for stage in STAGES for key in (keys.queue(stage), keys.messages(stage))))


def _job(jobs: JobService, task_id: str) -> JobRecord:
    job = jobs.store.jobs.load(task_id)
    assert job is not None
    return job


def test_a_job_whose_message_is_lost_is_sent_on_again_then_ended(make_jobs: Callable[..., JobService]) -> None:
    jobs = make_jobs()
    job = jobs.submit(REQUEST)  # no worker runs: its first message waits in its queue
    other = jobs.submit(REQUEST)
    jobs.cancel(other.task_id)
    reaper = Reaper(jobs.store, after_s=0)
    broker = jobs.store.queues.broker
    assert reaper.reap(broker) == []  # its message is queued: it is carried on

    message_ids = {job.message_id}
    for _ in range(MAX_REAPS):
        _lose_messages(jobs)
        assert reaper.reap(broker) == [job.task_id]
        sent = _job(jobs, job.task_id)
        assert sent.status == "queued" and sent.message_id not in message_ids
        assert sent.message_id in jobs.store.queues.live_messages()  # a new message carries it now
        assert "Stage schema_preparation sent again" in sent.message
        message_ids.add(sent.message_id)
    _lose_messages(jobs)
    assert reaper.reap(broker) == [job.task_id]

    ended = _job(jobs, job.task_id)
    assert ended.status == "error"
    assert ended.error is not None and f"lost {MAX_REAPS + 1} times" in ended.error
    last = decode_event(jobs.store.events.history(job.task_id)[-1])
    assert last.status == "error" and "litminer rerun" in last.message
    assert reaper.reap(broker) == []  # finished jobs, like the cancelled one, are left alone
    assert jobs.store.client.zscore(jobs.store.keys.active_jobs, job.task_id) is None


def test_a_job_changed_while_the_reaper_looks_is_left_alone(make_jobs: Callable[..., JobService]) -> None:
    jobs = make_jobs()
    job = jobs.submit(REQUEST)
    _lose_messages(jobs)
    reaper = Reaper(jobs.store, after_s=0)
    [(raw, seen)] = jobs.store.jobs.unchanged_since(float("inf"))
    jobs.store.jobs.transition(job.task_id, status="processing", message="a worker took it after all")

    assert not reaper._recover(jobs.store.queues.broker, raw, seen)  # the race, made certain
    assert _job(jobs, job.task_id).message == "a worker took it after all"
    assert jobs.store.jobs.reaps(job.task_id) == 0


def test_a_job_whose_first_message_cannot_be_sent_is_forgotten(make_jobs: Callable[..., JobService]) -> None:
    jobs = make_jobs()
    # Redis refuses the enqueue (here: the queue's key holds a string); the caller gets the error, no task id
    jobs.store.client.set(jobs.store.keys.queue("schema_preparation"), b"not a list")

    with pytest.raises(redis.ResponseError):
        jobs.submit(REQUEST)

    assert jobs.store.client.zcard(jobs.store.keys.active_jobs) == 0  # nothing for the reaper to run later
    assert jobs.recent(limit=10).tasks == []
