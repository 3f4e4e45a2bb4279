"""Fair sharing of extraction between owners, on a real Redis with real workers.

The store's round-robin, window and cap first (no worker), then whole jobs: a small job is not queued behind
a big one, the cap per owner holds, a job waiting for its turn is not reaped, a cancel drops what waits, and a
batch whose worker was killed keeps its slot only until it is redelivered and finished.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

from contracts import Document, PreparedSchema
from pipeline.extractors.base import Extraction
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store import BATCH_ACTOR, Queues
from pipeline.store.fair import FAIR_QUEUE
from pipeline.store.jobs import BATCH_MESSAGES
from pipeline.worker.reaper import Reaper
from tests.conftest import RunningWorker, follow, wait_for
from tests.fixtures.requests import seed_request

BIG = "water treatment technologies used in specialty crop production"
SMALL = "drip irrigation scheduling for orchards"
ROOT = Path(__file__).resolve().parents[2]


class GatedExtractor(HeuristicExtractor):
    """The heuristic extractor that records the order documents are extracted in (by question) and how many of
    each question's are extracted at once; documents of the question ``gated`` wait until ``gate`` is set."""

    def __init__(self, gated: str = "", pause_s: float = 0.0) -> None:
        self.gated = gated
        self.pause_s = pause_s
        self.gate = threading.Event()
        self.done: list[str] = []
        self.waiting = 0
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        with self.lock:
            self.in_flight[query] += 1
            self.most[query] = max(self.most[query], self.in_flight[query])
        try:
            if query == self.gated:
                with self.lock:
                    self.waiting += 1
                while not self.gate.is_set():  # noqa: ASYNC110 (a threading.Event, set by the test's thread)
                    await asyncio.sleep(0.01)  # an abort cancels the batch's coroutine here
            await asyncio.sleep(self.pause_s)
            with self.lock:
                self.done.append(query)
            return await super().extract(query, schema, document)
        finally:
            with self.lock:
                self.in_flight[query] -= 1


def _fair_settings(settings: Settings, **changes: object) -> Settings:
    """Batches of two documents; every document found is read (the screening's threshold is not tested here)."""
    return msgspec.structs.replace(settings, extract_batch_size=2, screening_threshold=0.0, **changes)


def _batches(jobs: JobService, task_id: str) -> list[str]:
    return jobs.store.jobs.get_output(task_id, BATCH_MESSAGES, list[str]) or []


def _held(jobs: JobService, task_id: str) -> bool:
    """Whether the job's batches are planned and all wait for their turn."""
    batches = _batches(jobs, task_id)
    return bool(batches) and set(batches) <= jobs.store.queues.fair.held()


def _documents(jobs: JobService, task_id: str) -> int:
    run = jobs.store.jobs.get_output(task_id, "extraction_run", dict[str, object])
    assert run is not None
    documents = run["documents"]
    assert isinstance(documents, int)
    return documents


# -- the store: round-robin, window, cap ----------------------------------------------------------------------


def _queues(make_jobs: Callable[..., JobService], settings: Settings, **changes: object) -> Queues:
    return make_jobs(settings_=msgspec.structs.replace(settings, **changes)).store.queues


def _hold(queues: Queues, owner: str, count: int) -> list[str]:
    messages = [queues.message(BATCH_ACTOR, f"job-{owner}", "run", index) for index in range(count)]
    queues.send_batches(owner, messages)
    return [m.message_id for m in messages]


def _released(queues: Queues) -> list[str]:
    """The ids of the messages on the extraction queue, oldest first."""
    raws: list[bytes] = queues.client.lrange(queues.keys.queue(FAIR_QUEUE), 0, -1)  # type: ignore[assignment]
    return [raw.decode() for raw in raws]


def test_owners_take_turns_within_the_window(make_jobs: Callable[..., JobService], settings: Settings) -> None:
    queues = _queues(make_jobs, settings, fair_window=1)
    a = _hold(queues, "owner-a", 4)
    b = _hold(queues, "owner-b", 2)
    assert _released(queues) == a[:1]  # the window is full: owner-b waits
    assert queues.fair.held() == set(a[1:] + b)
    assert queues.client.llen(queues.keys.fair_waiting) == 5  # the backlog an autoscaler reads
    assert queues.live_messages() >= set(a + b)  # waiting messages carry their jobs too

    for released in [a[0], b[0], a[1], b[1], a[2]]:
        queues.fair.finished(released)
    assert _released(queues) == [a[0], b[0], a[1], b[1], a[2], a[3]]
    assert queues.fair.running() == {a[3]: "owner-a"}  # the others were finished
    # released exactly as Dramatiq enqueues: each in the queue's messages hash under its id, woken consumers
    stored = queues.client.hget(queues.keys.messages(FAIR_QUEUE), a[3])
    assert stored is not None and msgspec.json.decode(stored)["options"] == {"redis_message_id": a[3]}
    assert queues.client.lrange(queues.keys.wake(FAIR_QUEUE), 0, -1) == [b"1"]
    extraction = next(depth for depth in queues.depths() if depth.name == FAIR_QUEUE)
    assert extraction.ready == 6 and queues.fair.waiting() == 0
    assert not queues.client.exists(queues.keys.fair_waiting)


def test_an_owner_at_its_cap_is_passed_over(make_jobs: Callable[..., JobService], settings: Settings) -> None:
    queues = _queues(make_jobs, settings, fair_window=4, owner_max_batches=2)
    a = _hold(queues, "owner-a", 5)
    assert _released(queues) == a[:2]
    b = _hold(queues, "owner-b", 5)
    assert _released(queues) == a[:2] + b[:2]
    queues.fair.finished(a[0])
    assert _released(queues)[-1] == a[2]
    queues.fair.finished(a[1])  # owner-b's turn, but it is at its cap
    assert _released(queues)[-2:] == [a[2], a[3]]
    assert Counter(queues.fair.running().values()) == {"owner-a": 2, "owner-b": 2}


def test_a_slot_whose_message_vanished_is_freed(make_jobs: Callable[..., JobService], settings: Settings) -> None:
    queues = _queues(make_jobs, settings, fair_window=1)
    a = _hold(queues, "owner-a", 2)
    assert queues.fair.release() == 0  # the first one runs
    queues.client.hdel(queues.keys.messages(FAIR_QUEUE), a[0])  # lost without its worker's hook (a Redis restart)
    assert queues.fair.release() == 1
    assert queues.fair.running() == {a[1]: "owner-a"}


def test_an_abort_drops_waiting_messages(make_jobs: Callable[..., JobService], settings: Settings) -> None:
    queues = _queues(make_jobs, settings, fair_window=1)
    a = _hold(queues, "owner-a", 3)
    b = _hold(queues, "owner-b", 1)
    queues.abort(a)
    assert queues.fair.held() == set(b)
    assert queues.client.llen(queues.keys.fair_waiting) == 1
    queues.fair.finished(a[0])
    assert _released(queues) == [a[0], b[0]]
    queues.fair.finished(b[0])
    assert queues.client.llen(queues.keys.fair_owners) == 0  # nothing waits: no owner has a turn


# -- whole jobs -----------------------------------------------------------------------------------------------


def test_a_small_job_is_not_queued_behind_a_big_one(
    make_jobs: Callable[..., JobService], run_worker: Callable[..., RunningWorker], settings: Settings
) -> None:
    fair = _fair_settings(settings, fair_window=2)
    extractor = GatedExtractor(gated=BIG)
    jobs = make_jobs(settings_=fair)
    run_worker(settings_=fair, extractors={"heuristic": extractor}, threads=4)
    try:
        big = jobs.submit(seed_request(user_query=BIG, rows=6, client_id="owner-a"))
        wait_for(lambda: extractor.waiting == 4, timeout=30, what="two batches of the big job at the gate")
        small = jobs.submit(seed_request(user_query=SMALL, rows=1, client_id="owner-b"))
        wait_for(lambda: _held(jobs, small.task_id), timeout=30, what="the small job's batches waiting")
        assert jobs.store.queues.fair.held() >= set(_batches(jobs, big.task_id)[2:])
    finally:
        extractor.gate.set()
    assert follow(jobs, small.task_id)[-1].status == "completed"
    assert follow(jobs, big.task_id, timeout=60)[-1].status == "completed"

    order = extractor.done
    big_documents, small_documents = _documents(jobs, big.task_id), _documents(jobs, small.task_id)
    assert big_documents >= 16 and Counter(order) == {BIG: big_documents, SMALL: small_documents}
    last_small = max(i for i, query in enumerate(order) if query == SMALL)
    # first come, first served would put every big batch first; here the small job's turn comes at once
    assert order[last_small:].count(BIG) >= big_documents / 2, order


def test_the_cap_per_owner_holds(
    make_jobs: Callable[..., JobService], run_worker: Callable[..., RunningWorker], settings: Settings
) -> None:
    capped = _fair_settings(settings, fair_window=8, owner_max_batches=1)
    extractor = GatedExtractor(pause_s=0.05)
    jobs = make_jobs(settings_=capped)
    run_worker(settings_=capped, extractors={"heuristic": extractor}, threads=4)
    big = jobs.submit(seed_request(user_query=BIG, rows=4, client_id="owner-a"))
    small = jobs.submit(seed_request(user_query=SMALL, rows=1, client_id="owner-b"))
    assert follow(jobs, big.task_id, timeout=60)[-1].status == "completed"
    assert follow(jobs, small.task_id)[-1].status == "completed"
    assert _documents(jobs, big.task_id) >= 8 and _documents(jobs, small.task_id) >= 2
    assert extractor.most == {BIG: 2, SMALL: 2}  # one batch of two documents at a time, each
    assert jobs.store.queues.fair.running() == {}


def test_a_waiting_job_is_not_reaped_and_a_cancel_drops_what_waits(
    make_jobs: Callable[..., JobService], run_worker: Callable[..., RunningWorker], settings: Settings
) -> None:
    fair = _fair_settings(settings, fair_window=1)
    extractor = GatedExtractor(gated=BIG)
    jobs = make_jobs(settings_=fair)
    run_worker(settings_=fair, extractors={"heuristic": extractor}, threads=4)
    try:
        big = jobs.submit(seed_request(user_query=BIG, rows=4, client_id="owner-a"))
        wait_for(lambda: extractor.waiting == 2, timeout=30, what="a batch of the big job at the gate")
        small = jobs.submit(seed_request(user_query=SMALL, rows=1, client_id="owner-b"))
        wait_for(lambda: _held(jobs, small.task_id), timeout=30, what="the small job's batches waiting")
        # its batches are held inside the extraction actor, whose own message carries the job until acknowledged
        job = jobs.store.jobs.load(small.task_id)
        assert job is not None and job.message_id is not None
        stage_message, stage_messages = job.message_id, jobs.store.keys.messages("extraction")
        wait_for(
            lambda: not jobs.store.queues.client.hexists(stage_messages, stage_message),
            timeout=30,
            what="the small job's extraction message acknowledged",
        )

        # nothing of the small job is queued or running, yet it is carried on: its batches wait for their turn
        assert Reaper(jobs.store, after_s=0).reap(jobs.store.queues.broker) == []

        jobs.cancel(big.task_id)
        assert not set(_batches(jobs, big.task_id)) & jobs.store.queues.fair.held()
        # the gate stays shut: the big job's running batch is aborted, and nothing of it comes back
        assert follow(jobs, small.task_id)[-1].status == "completed"
        wait_for(lambda: jobs.store.queues.fair.running() == {}, what="every slot free")
        assert jobs.store.queues.fair.held() == set()
    finally:
        extractor.gate.set()
    assert SMALL in extractor.done and BIG not in extractor.done


def test_a_killed_workers_batch_keeps_its_slot_until_it_is_redelivered(
    make_jobs: Callable[..., JobService],
    run_worker: Callable[..., RunningWorker],
    settings: Settings,
    tmp_path: Path,
) -> None:
    fair = _fair_settings(settings, fair_window=1, broker_heartbeat_timeout_ms=1000, extractor="heuristic")
    env = {
        **os.environ,
        "REDIS_URL": fair.redis_url,
        "LITMINER_KEY_PREFIX": fair.key_prefix,
        "LITMINER_INDEX_DIR": fair.index_dir,
        "LITMINER_SOURCES": "local",
        "LITMINER_EXTRACTOR": "heuristic",
        "LITMINER_EXTRACT_BATCH": "2",
        "LITMINER_SCREENING_THRESHOLD": "0",
        "LITMINER_FAIR_WINDOW": "1",
        "LITMINER_BROKER_HEARTBEAT_TIMEOUT_MS": "1000",
        "LITMINER_TEST_FAULT": "slow",
        "LITMINER_TEST_SLOW_S": "30",
    }
    jobs = make_jobs(settings_=fair)
    with (tmp_path / "worker.log").open("wb") as log:
        doomed = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.faulty_worker", "2"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        job = jobs.submit(seed_request(rows=2, client_id="owner-a"))
        wait_for(lambda: bool(jobs.store.queues.fair.running()), timeout=60, what="a batch running")
        [running] = jobs.store.queues.fair.running()
        wait_for(
            lambda: any(b"batch 1 started" in raw for raw in jobs.store.events.history(job.task_id)),
            timeout=30,
            what="the batch started",
        )
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    held = jobs.store.queues.fair.held()
    assert held and jobs.store.queues.fair.release() == 0  # the dead worker's batch still holds the one slot
    assert jobs.store.queues.fair.running() == {running: "owner-a"}

    run_worker(settings_=fair)  # its reaper gives the dead worker's message back to the queue
    events = follow(jobs, job.task_id, timeout=60)
    assert events[-1].status == "completed"
    assert any("redelivered: a worker died" in e.message for e in events)
    assert jobs.store.queues.fair.running() == {} and jobs.store.queues.fair.held() == set()
    assert len(_batches(jobs, job.task_id)) == len(held) + 1
