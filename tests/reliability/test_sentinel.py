"""Redis Sentinel failover: the master is killed mid-extraction under an API and two workers configured with
``REDIS_SENTINELS``; every job completes on the promoted replica and an SSE client resumes without a gap.

The set is real: one master, one replica and three Sentinels, all ``redis-server`` (``--sentinel`` with a
config file), on loopback ports. ``pytest -s`` prints one ``fault:`` line with the counts; docs/reliability.md
quotes it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import pytest
import redis

from contracts import Event, FieldDefinition, GenerateRequest
from pipeline.errors import StoreUnavailable
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store import EventFeed
from pipeline.store.connections import ReplicaWait
from pipeline.store.events import Subscription
from services.client import ApiClient
from services.embedded_redis import free_port, redis_server_binary
from tests.reliability.conftest import FAST_FAULTS, Cluster

pytestmark = pytest.mark.slow

MASTER = "mymaster"
JOBS = 20


def _ask(port: int, question: Callable[[redis.Redis], object]) -> dict[str, Any]:
    """The answer (a mapping) of the server or Sentinel at ``port`` to ``question``."""
    with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
        return cast("dict[str, Any]", question(client))


def _named_master(port: int) -> int:
    """The master's port, as the Sentinel at ``port`` names it."""
    with redis.Redis(port=port, socket_timeout=1) as sentinel:
        address = sentinel.sentinel_get_master_addr_by_name(MASTER)
    if not isinstance(address, tuple):
        raise redis.RedisError(f"the Sentinel at {port} names no master")
    return int(address[1])


class SentinelSet:
    """One master, one replica and three Sentinels on loopback ports, every file in ``directory``.

    Sentinels notice a dead master after 1 s (``down-after-milliseconds``) and promote the replica; a
    new master is named about 2.3 s after a kill here.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.binary = str(redis_server_binary())
        self.servers: dict[int, subprocess.Popen[bytes]] = {}  # port → redis-server (master and replica)
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> SentinelSet:
        master, replica = free_port(), free_port()
        self._server(master)
        self._server(replica, "--replicaof", "127.0.0.1", str(master))
        for _ in range(3):
            port = free_port()
            config = self.directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 3000\n"
            )
            self.sentinels[port] = self._spawn(f"sentinel-{port}", str(config), "--sentinel")
        self._wait_until_ready(master, replica)
        return self

    def _server(self, port: int, *args: str) -> None:
        self.servers[port] = self._spawn(
            f"redis-{port}",
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "no", *args),
        )

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("ab")
        return subprocess.Popen([self.binary, *args], stdout=log, stderr=subprocess.STDOUT)

    def _wait_until_ready(self, master: int, replica: int, timeout_s: float = 30.0) -> None:
        """Until the replica is in sync and every Sentinel knows the replica and the two other Sentinels
        (without that, no failover can happen)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                synced = _ask(replica, lambda server: server.info("replication")).get("master_link_status") == "up"
                states = [_ask(port, lambda sentinel: sentinel.sentinel_master(MASTER)) for port in self.sentinels]
                if synced and all(s["num-slaves"] == 1 and s["num-other-sentinels"] == 2 for s in states):
                    assert self.master_port() == master
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the Sentinel set was not ready within {timeout_s} s (logs in {self.directory})")

    @property
    def addresses(self) -> str:
        """``REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinels)

    def master_port(self) -> int:
        """The master's port, as the first Sentinel that answers names it."""
        for port in self.sentinels:
            try:
                return _named_master(port)
            except redis.RedisError:
                continue
        raise AssertionError("no Sentinel answers")

    def replica(self) -> subprocess.Popen[bytes]:
        """The redis-server that is not the master."""
        master = self.master_port()
        return next(process for port, process in self.servers.items() if port != master)

    def kill_master(self) -> int:
        """SIGKILL the master; returns its port."""
        port = self.master_port()
        self.servers[port].send_signal(signal.SIGKILL)
        self.servers[port].wait()
        return port

    def wait_for_new_master(self, old: int, timeout_s: float = 60.0) -> float:
        """Seconds until every Sentinel names a master other than ``old``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            try:
                named = {_named_master(port) for port in self.sentinels}
                if len(named) == 1 and named.pop() != old:
                    return time.monotonic() - start
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"no failover within {timeout_s} s (logs in {self.directory})")

    def stop(self) -> None:
        for process in [*self.sentinels.values(), *self.servers.values()]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.sentinels.values(), *self.servers.values()]:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class SentinelCluster(Cluster):
    """``Cluster``'s processes and helpers on a Sentinel set: every process finds the master through the
    Sentinels (``REDIS_URL`` names a port where nothing listens, so only they can say where Redis is)."""

    def __init__(self, directory: Path) -> None:  # no super().__init__(): it starts a Redis of its own
        self.directory = directory
        self.sentinels = SentinelSet(directory).start()
        self.redis = self.sentinels  # type: ignore[assignment]  # Cluster.close only calls its stop()
        self.env = {
            **os.environ,
            **FAST_FAULTS,
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "REDIS_SENTINELS": self.sentinels.addresses,
            "REDIS_SENTINEL_MASTER": MASTER,
            "LITMINER_KEY_PREFIX": f"sentinel-{uuid.uuid4().hex[:8]}:",
            "LITMINER_INDEX_DIR": str(directory / "index"),
            "LITMINER_LOG_FORMAT": "text",
            "LITMINER_TEST_SLOW_S": "2",  # each extraction batch takes 2 s: the kill lands mid-extraction
            "LITMINER_REAP_AFTER_S": "5",
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.settings = Settings.from_env(self.env)
        self.jobs = JobService(self.settings)
        self.api_port = free_port()


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    made = SentinelCluster(tmp_path)
    try:
        yield made
    finally:
        made.close()


def _generate(http: httpx.Client) -> str:
    field = {"name": "technology_name", "type": "str", "description": "Name of the technology"}
    body = {"user_query": "water treatment technologies", "rows": 2, "model_name": "Treatment"}
    reply = http.post("/api/v1/datasets/generate", json=body | {"field_definitions": [field]})
    assert reply.status_code == 202, reply.text
    return str(reply.json()["task_id"])


def _rows(cluster: Cluster, task_id: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Each row's key value and its citations (field, paper, quote)."""
    dataset = cluster.jobs.dataset(task_id)
    assert dataset is not None
    return [
        (str(row.row["technology_name"]), [(c.field, c.source_id, c.text_span) for c in row.citations])
        for row in dataset.rows
    ]


class Follower(threading.Thread):
    """An SSE client following one task until told to let go, then again with ``Last-Event-ID``."""

    def __init__(self, api_url: str, task_id: str) -> None:
        super().__init__(daemon=True)
        self.api_url = api_url
        self.task_id = task_id
        self.before: list[Event] = []  # received on the first connection
        self.after: list[Event] = []  # received after reconnecting with Last-Event-ID
        self.let_go = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with ApiClient(self.api_url) as client:
                for event in client.follow_task(self.task_id):
                    self.before.append(event)
                    if self.let_go.is_set() or event.status == "completed":
                        break
                if self.before[-1].status != "completed":
                    self.after.extend(client.follow_task(self.task_id, last_event_id=self.before[-1].seq))
        except BaseException as exc:
            self.errors.append(exc)


def test_sentinel_failover_mid_extraction_loses_no_job_row_or_event(sentinel_cluster: SentinelCluster) -> None:
    cluster = sentinel_cluster
    sentinels = cluster.sentinels
    for _ in range(2):
        cluster.worker(threads=4)
    cluster.api()
    with httpx.Client(base_url=cluster.api_url, timeout=30) as http:
        task_ids = [_generate(http) for _ in range(JOBS)]
    follower = Follower(cluster.api_url, task_ids[0])
    follower.start()
    cluster.wait_for(task_ids[0], "Extraction batch", timeout=60)
    time.sleep(1)  # batches of several jobs are running

    extracting = sum(cluster.job(t).stage == "extraction" for t in task_ids)
    old_master = sentinels.kill_master()
    killed = time.monotonic()
    seen_at_kill = len(follower.before)
    failover_s = sentinels.wait_for_new_master(old_master)
    follower.let_go.set()
    jobs = cluster.wait_terminal(task_ids, timeout=240)
    completed_s = time.monotonic() - killed
    follower.join(timeout=60)

    # Every job completed, and every status is readable through the API (none lost with the old master).
    assert Counter(job.status for job in jobs.values()) == {"completed": JOBS}, {t: j.error for t, j in jobs.items()}
    with httpx.Client(base_url=cluster.api_url, timeout=30) as http:
        statuses = [http.get(f"/tasks/{task_id}") for task_id in task_ids]
        assert all(reply.status_code == 200 and reply.json()["status"] == "completed" for reply in statuses)
        undisturbed = _generate(http)
    assert cluster.wait_terminal([undisturbed], timeout=60)[undisturbed].status == "completed"
    # No row doubled: each dataset has the rows (and citations) of the same job run without a failover.
    expected = sorted(_rows(cluster, undisturbed))
    assert expected
    for task_id in task_ids:
        rows = _rows(cluster, task_id)
        assert len({key for key, _ in rows}) == len(rows), rows
        assert all(len(set(cited)) == len(cited) for _, cited in rows), rows
        assert sorted(rows) == expected, task_id

    # Every job's history is seq 1..n; the follower got all of its task's, none twice, none taken back.
    history = {task_id: cluster.events(task_id) for task_id in task_ids}
    for task_id, events in history.items():
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), task_id
    assert not follower.errors and not follower.is_alive()
    received = follower.before + follower.after
    assert follower.after, "the follower did not reconnect after the failover"
    assert [e.seq for e in received] == [e.seq for e in history[task_ids[0]]]  # 1..end, no gap, no repeat
    assert received == history[task_ids[0]]  # what it got before the failover is what the new master holds
    assert received[-1].status == "completed"

    events = [event for events in history.values() for event in events]
    reaped = sum("sent again" in e.message for e in events)
    retried = sum(e.status == "retrying" for e in events)
    redelivered = sum("redelivered" in e.message for e in events)
    print(
        f"fault: Sentinel failover (master SIGKILLed with {extracting} of {JOBS} jobs extracting): new master in "
        f"{failover_s:.1f} s; {JOBS}/{JOBS} completed, 0 lost, 0 rows doubled, the last {completed_s:.1f} s after "
        f"the kill; {reaped} stages reaped, {retried} retried, {redelivered} redelivered; SSE client: "
        f"{seen_at_kill} events before the kill, {len(follower.before)} before it reconnected, "
        f"{len(follower.after)} after, seq 1..{received[-1].seq} with no gap and no repeat"
    )


def _settings(sentinels: SentinelSet, **env: str) -> Settings:
    return Settings.from_env(
        {
            "REDIS_SENTINELS": sentinels.addresses,
            "LITMINER_SOURCES": "local",
            "LITMINER_KEY_PREFIX": f"sentinel-{uuid.uuid4().hex[:8]}:",
        }
        | env
    )


def _submit(jobs: JobService) -> str:
    field = FieldDefinition(name="technology_name", description="Name of the technology")
    return jobs.submit(GenerateRequest(user_query="water treatment technologies", field_definitions=[field])).task_id


async def _per_event_us(feed: EventFeed, jobs: JobService, task_id: str, count: int) -> float:
    """µs per event for ``count`` events published and read off ``feed``'s subscription."""
    job = jobs.store.jobs.load(task_id)
    assert job is not None
    async with feed.subscription() as subscription:
        start = time.perf_counter()
        publish = lambda: [jobs.store.events.publish(job, "processing") for _ in range(count)]  # noqa: E731
        publishing = asyncio.get_running_loop().run_in_executor(None, publish)
        received = 0
        while received < count:  # None: a subscription confirmation, or nothing within the timeout
            received += await subscription.next(10) is not None
            assert time.perf_counter() - start < 60
        await publishing
        return (time.perf_counter() - start) / count * 1e6


async def _next_event(subscription: Subscription) -> bytes:
    """The next event off ``subscription`` (skipping its confirmation), within 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        event = await subscription.next(1)
        if event is not None:
            return event
    raise AssertionError("no event within 30 s")


def _submit_us(jobs: JobService, count: int) -> float:
    """µs per submit (job record, first event, first message) for ``count`` submits."""
    start = time.perf_counter()
    for _ in range(count):
        _submit(jobs)
    return (time.perf_counter() - start) / count * 1e6


def test_a_client_is_told_nothing_that_a_failover_could_take_back(tmp_path: Path) -> None:
    """With Sentinel, a 202, a cancel and every event handed to the API's fan-out wait until a replica holds them;
    an event whose master dies first is never handed out (the resync after the new subscription reads the new
    master)."""
    sentinels = SentinelSet(tmp_path).start()
    settings = _settings(sentinels, LITMINER_REPLICA_WAIT_MS="20000")
    unwaited = msgspec.structs.replace(settings, replica_wait_ms=0)
    jobs, plain_jobs = JobService(settings), JobService(unwaited)
    try:
        # What waiting costs on a healthy set (loopback, one replica); printed, not asserted.
        task_id = _submit(jobs)
        submit_us = (_submit_us(plain_jobs, 200), _submit_us(jobs, 200))
        replica_wait, start = ReplicaWait(settings), time.perf_counter()
        for _ in range(200):
            replica_wait.wait(jobs.store.client)
        wait_us = (time.perf_counter() - start) / 200 * 1e6

        replica = sentinels.replica()
        replica.send_signal(signal.SIGSTOP)  # the replica acknowledges nothing
        submitted: list[str] = []
        submitting = threading.Thread(target=lambda: submitted.append(_submit(jobs)))
        submitting.start()
        submitting.join(timeout=1)
        assert submitting.is_alive() and not submitted  # no 202 while no replica holds the job
        replica.send_signal(signal.SIGCONT)
        submitting.join(timeout=20)
        assert submitted
        job = jobs.store.jobs.load(submitted[0])
        assert job is not None

        replica.send_signal(signal.SIGSTOP)
        cancelled: list[str] = []
        cancelling = threading.Thread(target=lambda: cancelled.append(jobs.cancel(_submit(plain_jobs)).status))
        cancelling.start()
        cancelling.join(timeout=1)
        assert cancelling.is_alive() and not cancelled  # nor is a cancel answered before a replica holds it
        replica.send_signal(signal.SIGCONT)
        cancelling.join(timeout=20)
        assert cancelled == ["cancelled"]

        async def follow() -> tuple[float, float]:
            feed, plain_feed = EventFeed(settings), EventFeed(unwaited)
            try:
                event_us = (
                    await _per_event_us(plain_feed, jobs, task_id, 2000),
                    await _per_event_us(feed, jobs, task_id, 2000),
                )
                async with feed.subscription() as subscription:
                    replica.send_signal(signal.SIGSTOP)
                    await asyncio.to_thread(jobs.store.events.publish, job, "processing", message="held")
                    held = asyncio.create_task(_next_event(subscription))
                    await asyncio.sleep(1)
                    assert not held.done()  # published on the master, not handed out: no replica has it yet
                    replica.send_signal(signal.SIGCONT)
                    assert b'"held"' in await asyncio.wait_for(held, 20)

                    replica.send_signal(signal.SIGSTOP)
                    await asyncio.to_thread(jobs.store.events.publish, job, "processing", message="unconfirmed")
                    unconfirmed = asyncio.create_task(_next_event(subscription))
                    await asyncio.sleep(0.5)
                    sentinels.kill_master()
                    with pytest.raises(StoreUnavailable):  # never handed out
                        await asyncio.wait_for(unconfirmed, 20)
                    replica.send_signal(signal.SIGCONT)
                return event_us
            finally:
                await feed.close()
                await plain_feed.close()

        event_us = asyncio.run(follow())
    finally:
        jobs.close()
        plain_jobs.close()
        sentinels.stop()
    print(
        f"fault: waiting for a replica (WAIT 1) takes {wait_us:.0f} µs; "
        f"submit {submit_us[0]:.0f} µs without, {submit_us[1]:.0f} µs with; "
        f"event through the API's subscription {event_us[0]:.0f} µs without, {event_us[1]:.0f} µs with; a 202, a "
        f"cancel and an event held while the replica was stopped, the unconfirmed event never handed out when the "
        f"master died"
    )
