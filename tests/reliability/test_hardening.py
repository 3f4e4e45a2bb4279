"""Faults from an adversarial run (issue 23): a hung stage, Redis refusing writes, a worker killed after its
hand-off, a worker process that dies under ``--processes``. Real worker processes and a Redis of their own.

Each test prints one ``fault:`` line with what it measured (``pytest -s`` shows them).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from tests.reliability.conftest import Cluster

pytestmark = pytest.mark.slow


def test_hung_stage_is_stopped_at_its_time_limit_retried_then_failed(cluster: Cluster) -> None:
    cluster.env |= {"LITMINER_STAGE_TIME_LIMIT_MS": "2000", "LITMINER_MAX_RETRIES": "1"}
    worker = cluster.worker(threads=2, fault="hang")
    task_id = cluster.submit(rows=1)

    job = cluster.wait_terminal([task_id], timeout=60)[task_id]

    assert job.status == "error", job
    assert job.error is not None and "time limit of 2 s" in job.error
    retried = [e for e in cluster.events(task_id) if e.status == "retrying"]
    assert len(retried) == 1 and "time limit" in retried[0].message
    assert worker.poll() is None  # the worker lives on, its threads free again
    print(f"fault: hung extraction, 2 s limit, 1 retry: stopped twice, then error: {job.error}")


def _refuse_writes_oom(client: redis.Redis) -> Callable[[], object]:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # below what is used: every write is refused with OOM
    return lambda: client.config_set("maxmemory", "0")


def _refuse_writes_readonly(client: redis.Redis) -> Callable[[], object]:
    # As a master demoted by a failover: a replica of a master that does not answer keeps its data, read-only.
    client.replicaof("127.0.0.1", 1)
    return lambda: client.replicaof("NO", "ONE")


@pytest.mark.parametrize("refuse", [_refuse_writes_oom, _refuse_writes_readonly], ids=["oom", "readonly"])
def test_redis_refusing_writes_leaves_no_accepted_job_unfinished(
    cluster: Cluster, refuse: Callable[[redis.Redis], Callable[[], object]]
) -> None:
    cluster.env["LITMINER_TEST_SLOW_S"] = "0.3"
    cluster.worker(threads=4)
    cluster.worker(threads=4)
    task_ids = [cluster.submit(f"water treatment technologies {i}", rows=3) for i in range(12)]
    cluster.wait_for(task_ids[0], "Extraction batch", timeout=30)
    admin = redis.Redis.from_url(cluster.redis.url)
    allow = refuse(admin)
    time.sleep(6)  # stages end meanwhile: their outcomes, retries, hand-offs and acks are all refused
    allow()
    freed = time.monotonic()

    jobs = cluster.wait_terminal(task_ids, timeout=60)

    statuses = Counter(job.status for job in jobs.values())
    assert statuses == {"completed": len(task_ids)}, {t: (j.status, j.error) for t, j in jobs.items()}
    said = [e.message for t in task_ids for e in cluster.events(t) if "Redis refused writes" in e.message]
    assert said, "no event says why stages failed"  # e.g. "Stage extraction failed (Redis refused writes: …)"
    for task_id in task_ids:
        dataset = cluster.jobs.dataset(task_id)
        keys = [str(row.row["technology_name"]) for row in dataset.rows]
        assert len(keys) == len(set(keys))
    print(
        f"fault: Redis refused writes ({refuse.__name__[14:]}) for 6 s with {len(task_ids)} jobs running: "
        f"all completed, the last {time.monotonic() - freed:.1f} s after writes were allowed again"
    )


def test_worker_killed_after_its_hand_off_does_not_run_the_stage_again(cluster: Cluster) -> None:
    dying = cluster.worker(threads=1, fault="die_after_hand_off")
    task_id = cluster.submit(rows=2)
    assert dying.wait(timeout=30) == 9  # it handed the job on to extraction, then died before its ack
    killed = time.monotonic()
    cluster.worker(threads=2)

    job = cluster.wait_terminal([task_id], timeout=60)[task_id]
    completed_s = time.monotonic() - killed
    deadline = time.monotonic() + 30
    while cluster.jobs.store.queues.live_messages():  # the dead worker's search message: redelivered, dropped
        assert time.monotonic() < deadline, "the dead worker's message was never redelivered"
        time.sleep(0.2)

    assert job.status == "completed", job
    events = cluster.events(task_id)
    searches = [e for e in events if e.message.startswith("Stage search started")]
    assert len(searches) == 1, [e.message for e in events]
    stages = [e.stage for e in events]
    assert "search" not in stages[stages.index("extraction") :]  # never back to search
    print(
        f"fault: worker died after search's hand-off: job completed {completed_s:.1f} s after, search ran once "
        f"(its redelivered message dropped {time.monotonic() - killed:.1f} s after the kill)"
    )


def test_worker_processes_replace_a_child_that_dies(cluster: Cluster) -> None:
    parent = cluster.spawn_cli("worker", "--processes", "2", "--threads", "1")
    children = _live_children(cluster, parent, 2)
    victim = sorted(children)[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)

    replaced = _live_children(cluster, parent, 2, without=victim)

    assert victim not in replaced and len(replaced) == 2
    task_id = cluster.submit(rows=1)
    assert cluster.wait_terminal([task_id], timeout=60)[task_id].status == "completed"
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 0
    print(f"fault: worker child {victim} killed: replaced by {sorted(replaced - children)}")


def _live_children(cluster: Cluster, parent: subprocess.Popen[bytes], count: int, *, without: int = 0) -> set[int]:
    """The pids of ``count`` worker processes of ``parent`` with a live heartbeat (``without`` one)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert parent.poll() is None, "the worker parent exited"
        pids = {info.pid for info in cluster.jobs.store.workers.live() if _parent_of(info.pid) == parent.pid}
        pids.discard(without)
        if len(pids) >= count:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"no {count} live worker processes of {parent.pid} within 60 s")


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("PPid:"))
    except FileNotFoundError:
        return 0
