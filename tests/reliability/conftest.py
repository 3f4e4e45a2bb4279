"""Fault tests run litminer as real processes against a Redis of their own, which they can restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from contracts import TERMINAL_STATUSES, Event, FieldDefinition, GenerateRequest, JobRecord, decode_event
from pipeline.jobs import JobService
from pipeline.settings import Settings
from services.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]

#: short timeouts so faults are noticed in seconds (production defaults are in pipeline/settings.py)
FAST_FAULTS = {
    "LITMINER_SOURCES": "local",
    "LITMINER_RETRY_MIN_BACKOFF_MS": "200",
    "LITMINER_RETRY_MAX_BACKOFF_MS": "800",
    "LITMINER_BROKER_HEARTBEAT_TIMEOUT_MS": "2000",
    "LITMINER_BROKER_MAINTENANCE_CHANCE": "100000",
    "LITMINER_WORKER_HEARTBEAT_S": "1",
    "LITMINER_RATE_LIMIT": "0",
    "LITMINER_TEST_SLOW_S": "0.5",
    "LITMINER_EXTRACTOR": "heuristic",
}


class Cluster:
    """A Redis (AOF on) plus worker and API processes started on demand, all stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "redis").mkdir()
        self.redis = EmbeddedRedis(appendonly=True, directory=directory / "redis").start()
        self.env = {
            **os.environ,
            **FAST_FAULTS,
            "REDIS_URL": self.redis.url,
            "LITMINER_KEY_PREFIX": f"fault-{uuid.uuid4().hex[:8]}:",
            "LITMINER_INDEX_DIR": str(directory / "index"),
            "LITMINER_LOG_FORMAT": "text",
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.settings = Settings.from_env(self.env)
        self.jobs = JobService(self.settings)
        self.api_port = free_port()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _spawn(self, name: str, command: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}-{len(self.processes)}.log").open("ab")
        process = subprocess.Popen(command, cwd=ROOT, env=self.env | env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def worker(self, threads: int = 4, fault: str = "slow", **env: str) -> subprocess.Popen[bytes]:
        """A worker process with a fault of tests.fixtures.faulty_worker: its extractor is ``slow`` (0.5 s per
        document), ``crash``es it or ``hang``s, or it dies after search hands a job on (``die_after_hand_off``)."""
        command = [sys.executable, "-m", "tests.fixtures.faulty_worker", str(threads)]
        return self._spawn("worker", command, LITMINER_TEST_FAULT=fault, **env)

    def spawn_cli(self, *args: str) -> subprocess.Popen[bytes]:
        """``litminer ARGS…`` on this cluster."""
        return self._spawn(args[0], [sys.executable, "-m", "services.cli", *args])

    def api(self) -> subprocess.Popen[bytes]:
        """``litminer api`` on this cluster's port, once it answers ``/health``."""
        process = self._spawn("api", [sys.executable, "-m", "services.cli", "api", "--port", str(self.api_port)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the API exited with {process.returncode}"
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return process
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the API did not answer /health within 30 s")

    def submit(self, query: str = "water treatment technologies", *, rows: int = 2) -> str:
        request = GenerateRequest(
            user_query=query,
            rows=rows,
            model_name="Treatment",
            field_definitions=[
                FieldDefinition(name="technology_name", type="str", description="Name of the technology")
            ],
        )
        return self.jobs.submit(request).task_id

    def job(self, task_id: str) -> JobRecord:
        job = self.jobs.store.jobs.load(task_id)
        assert job is not None
        return job

    def events(self, task_id: str) -> list[Event]:
        return [decode_event(raw) for raw in self.jobs.store.events.history(task_id, after=0)]

    def wait_for(self, task_id: str, predicate: str, timeout: float = 30.0) -> float:
        """Seconds until an event of the task has ``predicate`` in its message."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if any(predicate in e.message for e in self.events(task_id)):
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"no event saying {predicate!r} within {timeout} s: {self.events(task_id)}")

    def wait_terminal(self, task_ids: list[str], timeout: float = 60.0) -> dict[str, JobRecord]:
        """The final records of the tasks, once all are terminal (Redis errors meanwhile are waited out)."""
        deadline = time.monotonic() + timeout
        done: dict[str, JobRecord] = {}
        while time.monotonic() < deadline:
            try:
                for task_id in task_ids:
                    if task_id not in done and (job := self.job(task_id)).status in TERMINAL_STATUSES:
                        done[task_id] = job
            except redis.RedisError:
                pass
            if len(done) == len(task_ids):
                return done
            time.sleep(0.1)
        stuck = {t: self.job(t).status for t in task_ids if t not in done}
        raise AssertionError(f"{len(stuck)} of {len(task_ids)} jobs not finished in {timeout} s: {stuck}")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.jobs.close()
        self.redis.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        made.close()
