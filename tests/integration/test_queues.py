"""The stage queues on a real Redis: idle consumers are woken by enqueues, not by their timeout."""

from __future__ import annotations

import threading
import time

import redis

from contracts import STAGES, FieldDefinition, GenerateRequest
from pipeline.store.jobs import JobStore
from tests.conftest import follow

REQUEST = GenerateRequest(
    user_query="water treatment technologies used in specialty crop production",
    rows=2,
    field_definitions=[FieldDefinition(name="technology_name", type="str", description="Name of the technology")],
    client_id="store-client",
)


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


def test_hand_offs_send_the_next_message_and_leave_none_in_flight(make_jobs, run_worker) -> None:
    jobs = make_jobs()
    worker = run_worker(threads=2)
    done = [follow(jobs, jobs.submit(REQUEST).task_id)[-1] for _ in range(3)]

    assert [event.status for event in done] == ["completed"] * 3
    client, keys = jobs.store.client, jobs.store.keys
    # each stage's message went where Dramatiq's consumers find it, and is acknowledged: by the job change that
    # handed its job on (``Handover``), the consumer's own ack then a no-op, or by the consumer
    in_flight = client.keys(keys.acks("*", "*"))
    assert sum(client.scard(key) for key in in_flight) == 0
    assert all(client.hlen(keys.messages(stage)) == 0 for stage in STAGES)
    assert worker.runtime.broker.acknowledged == set()


def test_a_stale_remembered_record_never_skips_a_stage(make_jobs) -> None:
    jobs = make_jobs()
    job = jobs.submit(REQUEST)
    stale = jobs.store.jobs  # remembers the record it created, naming the first message
    other = JobStore(jobs.store.client, jobs.store.keys, jobs.store.events, ttl_s=60)  # another process
    other.transition(job.task_id, message="re-run", message_id="resent")  # a rerun's or the reaper's message

    started = stale.transition(job.task_id, status="processing", accept=lambda j: j.message_id == "resent")

    assert started is not None and started.status == "processing" and started.message_id == "resent"
