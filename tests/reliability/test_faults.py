"""Faults litminer must survive, with real worker and API processes and a Redis that gets restarted.

Each test prints one ``fault:`` line with what it measured (``pytest -s`` shows them); docs/reliability.md
quotes them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import httpx
import pytest

from contracts import Event
from services.client import ApiClient
from tests.reliability.conftest import Cluster

pytestmark = pytest.mark.slow


def _row_keys(cluster: Cluster, task_id: str) -> list[str]:
    dataset = cluster.jobs.dataset(task_id)
    assert dataset is not None
    return [str(row.row["technology_name"]) for row in dataset.rows]


def test_killed_worker_mid_extraction_job_completes_on_a_new_worker(cluster: Cluster) -> None:
    cluster.env["LITMINER_TEST_SLOW_S"] = "2"
    first = cluster.worker(threads=4)
    task_id = cluster.submit(rows=5)
    cluster.wait_for(task_id, "Extraction batch", timeout=30)
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    cluster.worker(threads=4)
    cluster.wait_for(task_id, "redelivered: a worker died", timeout=60)
    redelivered_s = time.monotonic() - killed
    job = cluster.wait_terminal([task_id], timeout=60)[task_id]
    completed_s = time.monotonic() - killed

    assert job.status == "completed", job
    restarted = [e for e in cluster.events(task_id) if "redelivered" in e.message]
    assert restarted and all(e.stage == "extraction" and e.data["crashes"] == 1 for e in restarted)
    keys = _row_keys(cluster, task_id)
    assert len(keys) == len(set(keys))
    undisturbed = cluster.submit(rows=5)
    assert cluster.wait_terminal([undisturbed], timeout=60)[undisturbed].status == "completed"
    assert sorted(keys) == sorted(_row_keys(cluster, undisturbed))  # same rows as a run without the kill
    print(
        f"fault: worker SIGKILL mid-extraction: {len(restarted)} batches redelivered after {redelivered_s:.1f} s, "
        f"job completed {completed_s:.1f} s after the kill with {len(keys)} rows, 0 duplicated"
    )


def test_redis_restart_loses_no_job(cluster: Cluster) -> None:
    cluster.worker(threads=2)
    task_ids = [cluster.submit(f"water treatment technologies {i}") for i in range(6)]
    cluster.wait_for(task_ids[0], "Extraction batch", timeout=30)
    cluster.redis.stop()
    time.sleep(2)
    cluster.redis.start()
    restarted = time.monotonic()
    jobs = cluster.wait_terminal(task_ids, timeout=90)
    statuses = Counter(job.status for job in jobs.values())
    assert statuses == {"completed": 6}, {t: (j.status, j.error) for t, j in jobs.items()}
    for task_id in task_ids:
        seqs = [e.seq for e in cluster.events(task_id)]
        assert seqs == list(range(1, len(seqs) + 1))  # the event history survived too, without gaps
    print(
        f"fault: Redis restarted (2 s down) with 6 jobs queued or running: 6/6 completed, 0 lost, "
        f"last one {time.monotonic() - restarted:.1f} s after Redis came back"
    )


def test_api_restart_sse_client_resumes_without_gap_or_duplicate(cluster: Cluster) -> None:
    cluster.env["LITMINER_TEST_SLOW_S"] = "2"
    cluster.worker(threads=1)
    api = cluster.api()
    task_id = cluster.submit(rows=5)
    received: list[Event] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            with ApiClient(cluster.api_url) as client:
                received.extend(client.follow_task(task_id))
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=follow)
    reader.start()
    deadline = time.monotonic() + 30
    while len(received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(received) >= 3, received
    api.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    api.wait(timeout=20)
    stop_s = time.monotonic() - stopping
    before_restart = len(received)
    cluster.api()
    reader.join(timeout=60)

    assert not errors and not reader.is_alive()
    seqs = [e.seq for e in received]
    assert len(seqs) > before_restart  # it went on following live after the restart
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    assert received[-1].status == "completed"
    assert [e.seq for e in cluster.events(task_id)] == seqs  # everything the task published
    print(
        f"fault: API restarted while an SSE client followed (stopped in {stop_s:.1f} s): "
        f"{before_restart} events before, {len(seqs) - before_restart} after, "
        f"seq 1..{seqs[-1]} with no gap and no duplicate"
    )


def test_two_hundred_jobs_each_complete_exactly_once(cluster: Cluster) -> None:
    for _ in range(2):
        cluster.worker(threads=8, fault="")
    start = time.monotonic()
    task_ids = [cluster.submit(f"water treatment technologies {i}") for i in range(200)]
    jobs = cluster.wait_terminal(task_ids, timeout=240)
    elapsed = time.monotonic() - start

    assert Counter(job.status for job in jobs.values()) == {"completed": 200}
    for task_id in task_ids:
        events = cluster.events(task_id)
        assert [e.status for e in events].count("completed") == 1
        started = Counter(e.stage for e in events if e.message.startswith("Stage ") and "started" in e.message)
        assert started == {"schema_preparation": 1, "search": 1, "extraction": 1, "assembly": 1}, events
    print(f"fault: 200 jobs at once on 2 worker processes: 200/200 completed exactly once in {elapsed:.1f} s")


def test_cancel_under_load_stops_everything_quickly(cluster: Cluster) -> None:
    cluster.env["LITMINER_TEST_SLOW_S"] = "5"  # 100 batches of 5 s on 8 threads: a minute of work
    for _ in range(2):
        cluster.worker(threads=4)
    cluster.api()
    # One question for all: screening finds nothing for "water treatment technologies 13" (no paper states
    # "13"), and such a job would complete at once, before its revoke.
    task_ids = [cluster.submit("water treatment technologies", rows=5) for _ in range(20)]
    with httpx.Client(base_url=cluster.api_url) as http:
        deadline = time.monotonic() + 60
        while sum(w["in_flight"] for w in http.get("/api/v1/ops").json()["workers"]) < 8:  # every thread busy
            assert time.monotonic() < deadline
            time.sleep(0.1)

    revoked = time.monotonic()
    with httpx.Client(base_url=cluster.api_url) as http:
        running = sum(cluster.job(t).status == "processing" for t in task_ids)
        for task_id in task_ids:
            reply = http.post(f"/tasks/{task_id}/revoke")
            assert reply.status_code == 200 and reply.json()["status"] == "cancelled", reply.text
        idle_s = None
        while time.monotonic() - revoked < 5:
            ops = http.get("/api/v1/ops").json()
            extraction = next(q for q in ops["queues"] if q["name"] == "extraction")
            workers = ops["workers"]
            if len(workers) == 2 and not extraction["ready"] and not any(w["in_flight"] for w in workers):
                idle_s = time.monotonic() - revoked
                break
            time.sleep(0.1)
    assert idle_s is not None, f"still busy 5 s after the revokes: {ops['queues']} {ops['workers']}"

    time.sleep(1.5)  # anything a worker would still do after the abort has happened by now
    for task_id in task_ids:
        events = cluster.events(task_id)
        assert events[-1].status == "cancelled" and [e.status for e in events].count("cancelled") == 1
        assert not any(e.status == "retrying" or e.stage == "assembly" for e in events)
    delayed = cluster.jobs.store.client.hlen(f"{cluster.settings.key_prefix}dramatiq:extraction.DQ.msgs")
    assert delayed == 0  # no aborted stage was scheduled for a retry
    print(
        f"fault: 20 jobs revoked ({running} processing, all 8 threads busy): 20/20 cancelled, "
        f"workers idle and queue empty {idle_s:.1f} s after the revokes, 0 later stages, 0 retries"
    )


def test_poison_message_ends_the_job_instead_of_killing_workers_forever(cluster: Cluster) -> None:
    worker = cluster.worker(threads=2, fault="crash")
    task_id = cluster.submit(rows=1)  # one extraction batch
    deaths = 0
    deadline = time.monotonic() + 90
    while cluster.job(task_id).status not in {"completed", "error", "cancelled"}:
        assert time.monotonic() < deadline, cluster.events(task_id)
        if worker.poll() is not None:  # a supervisor would restart it: so do we
            assert worker.returncode == 3
            deaths += 1
            worker = cluster.worker(threads=2, fault="crash")
        time.sleep(0.1)

    job = cluster.job(task_id)
    limit = cluster.settings.max_crashes
    assert job.status == "error"
    assert job.error == f"worker died {limit} times in stage extraction"
    assert deaths == limit
    dead = cluster.jobs.store.client.zcard(f"{cluster.settings.key_prefix}dramatiq:extraction.XQ")
    assert dead == 1  # the poison message is dead-lettered for inspection
    time.sleep(1)
    assert worker.poll() is None  # and the last worker lives on
    print(f"fault: poison message: worker died {deaths} times, then the job ended as error; worker alive")
