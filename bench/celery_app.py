"""Celery 5 baseline for the pipeline benchmark: the seed design's four-task chain doing litminer's work.

The seed ran each job as Celery tasks on a Redis broker (schema preparation → search → extraction → assembly);
every task published progress events to Redis pub/sub and kept a job status record (its ``WebSocketTask``).
Here the tasks do that around litminer's own stage functions on the in-memory source and extractor
(``bench.inmemory``), so the benchmark compares the task machinery, not the work.

Each task hands off to the next by sending it (one broker message per stage, like litminer's hand-off),
passing its outputs as JSON strings and the job's last event ``seq``. Per job: the same 17 events as litminer's,
each a ``SET`` of the status record and a ``PUBLISH`` in one round trip.

The worker reads ``LITMINER_BENCH_REDIS_URL`` and ``LITMINER_BENCH_PREFIX``; ``start_worker`` sets them.
``drain`` and ``latencies`` submit jobs and time them by their "completed" events (``bench.baseline`` runs them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import redis
from celery import Celery  # type: ignore[import-untyped]
from celery.signals import task_failure  # type: ignore[import-untyped]
from redis.client import PubSub

from bench.inmemory import DOCUMENTS, MemoryExtractor, request
from bench.proc import tree_cpu_s
from contracts import (
    CandidateRow,
    Document,
    Event,
    EventStatus,
    ExtractionStats,
    GenerateRequest,
    PreparedSchema,
    Stage,
    decode_event,
    encode_event,
)
from pipeline.grounding import GroundingCounts, ground
from pipeline.screening import topic
from pipeline.settings import Settings
from pipeline.stages import assembly, schema_preparation
from pipeline.stages.search import select
from pipeline.store.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("LITMINER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("LITMINER_BENCH_PREFIX", "bench:celery:")
TTL_S = 3600
_QUEUE = "celery"  # Celery's default queue: every task here goes to it
SETTINGS = Settings()


def make_app(redis_url: str) -> Celery:
    """A Celery app on ``redis_url``: the worker's (module-level ``app``) or a driver's, which submits by name."""
    app = Celery("bench.celery_app", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,  # no result backend: events and the dataset go to Redis directly, as in the seed
        task_serializer="json",
        accept_content=["json"],
        # Celery's "Optimizing" guide: for many short tasks where throughput and round-trip latency matter the
        # multiplier should be large ("say 64, or 128"); 1 is for long tasks. Early acks (the default) and the
        # prefork pool's fair scheduling (the 5.x default) still hand a task only to an idle child process.
        worker_prefetch_multiplier=64,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_app(REDIS_URL)
_redis = redis.Redis.from_url(REDIS_URL)  # connects lazily, in each prefork child
_keys = Keys(PREFIX)


class _Reporter:
    """One task's events for one job, numbered on from the last ``seq`` the job published."""

    current: _Reporter | None = None  # of the task running in this process (a prefork child runs one at a time)

    def __init__(self, task_id: str, stage: Stage, seq: int) -> None:
        self.task_id, self.stage, self.seq = task_id, stage, seq
        _Reporter.current = self

    def __call__(self, progress: int, message: str, *, status: EventStatus = "processing") -> None:
        """Set the job's status record and publish the event, in one round trip."""
        self.seq += 1
        stage: Stage = "done" if status == "completed" else self.stage
        now = time.time()
        event = Event(
            task_id=self.task_id,
            client_id="bench",
            seq=self.seq,
            status=status,
            stage=stage,
            message=message,
            progress=progress,
            timestamp=now,
        )
        record = {"status": status, "stage": stage, "progress": progress, "message": message, "updated_at": now}
        with _redis.pipeline(transaction=False) as pipe:
            pipe.set(_keys.job(self.task_id), msgspec.json.encode(record), ex=TTL_S)
            pipe.publish(_keys.channel(self.task_id), encode_event(event))
            pipe.execute()


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _request_json() -> str:
    """The benchmark's request, with no extractor named: ``GenerateRequest`` only admits built-in ones, and these
    tasks always use ``MemoryExtractor``."""
    return _json(msgspec.structs.replace(request(), extractor=None))


class _Extracted(msgspec.Struct, frozen=True):
    """What extraction hands to assembly."""

    documents: list[Document]
    candidates: list[CandidateRow]
    stats: ExtractionStats


def _hand_off(stage: str, *args: str | int) -> None:
    app.send_task(f"bench.{stage}", args=args)


def prepare_schema(task_id: str, request_json: str) -> None:
    report = _Reporter(task_id, "schema_preparation", 0)
    report(0, "Preparing the schema")
    schema = schema_preparation.run(msgspec.json.decode(request_json, type=GenerateRequest))
    report(10, f"Schema {schema.model_name} prepared")
    _hand_off("search", task_id, request_json, _json(schema), report.seq)


def search(task_id: str, request_json: str, schema_json: str, seq: int) -> None:
    report = _Reporter(task_id, "search", seq)
    report(10, "Stage search started")
    job = msgspec.json.decode(request_json, type=GenerateRequest)
    target = job.rows * SETTINGS.docs_per_row
    report(10, f"Searching memory for up to {target} documents")
    documents, _ = select(DOCUMENTS[:target], topic(job.user_query), target)
    report(20, f"memory: {len(documents)} documents")
    report(35, f"Kept {len(documents)} documents")
    _hand_off("extract", task_id, request_json, schema_json, _json(documents), report.seq)


def extract(task_id: str, request_json: str, schema_json: str, documents_json: str, seq: int) -> None:
    report = _Reporter(task_id, "extraction", seq)
    report(35, "Stage extraction started")
    query = msgspec.json.decode(request_json, type=GenerateRequest).user_query
    schema = msgspec.json.decode(schema_json, type=PreparedSchema)
    documents = msgspec.json.decode(documents_json, type=list[Document])
    report(35, f"Extracting {len(documents)} documents in 1 batch")
    report(35, "Extraction batch 1 started")
    extractor, candidates, counts = MemoryExtractor(), list[CandidateRow](), GroundingCounts()
    with asyncio.Runner() as runner:  # the extractor is async (and instant): one event loop for the task
        for done, document in enumerate(documents, 1):
            extraction = runner.run(extractor.extract(query, schema, document))
            rows, found = ground(schema, document, extraction.rows, threshold=SETTINGS.grounding_threshold)
            candidates += rows
            counts.add(found)
            report(35 + 55 * done // len(documents), f"Extracted {done}/{len(documents)} documents")
    stats = ExtractionStats(
        extractor=extractor.name,
        documents=len(documents),
        documents_extracted=len(documents),
        values_verified=counts.verified,
        values_repaired=counts.repaired,
        values_rejected=counts.rejected,
        values_unconvertible=counts.unconvertible,
        rows_dropped=counts.rows_dropped,
    )
    report(90, f"Extracted {len(candidates)} candidate rows")
    extracted = _json(_Extracted(documents, candidates, stats))
    _hand_off("assemble", task_id, request_json, schema_json, extracted, report.seq)


def assemble(task_id: str, request_json: str, schema_json: str, extracted_json: str, seq: int) -> None:
    report = _Reporter(task_id, "assembly", seq)
    report(90, "Assembling the dataset")
    extracted = msgspec.json.decode(extracted_json, type=_Extracted)
    dataset = assembly.run(
        task_id,
        msgspec.json.decode(request_json, type=GenerateRequest),
        msgspec.json.decode(schema_json, type=PreparedSchema),
        extracted.candidates,
        documents=len(extracted.documents),
        sources=sorted({d.source for d in extracted.documents}),
        extraction=extracted.stats,
        threshold=SETTINGS.merge_threshold,
    )
    _redis.set(_keys.output(task_id, "dataset"), msgspec.json.encode(dataset), ex=TTL_S)
    report(100, f"Dataset ready: {len(dataset.rows)} rows", status="completed")


def _failed(sender: object, args: tuple[object, ...], exception: BaseException, **_: object) -> None:
    """Like the seed's ``on_failure``: the job's "error" event, so the driver stops waiting."""
    reporter = _Reporter.current
    if reporter is not None and args and reporter.task_id == args[0]:
        reporter(0, f"{getattr(sender, 'name', '?')} failed: {exception!r}", status="error")


for _stage in (prepare_schema, search, extract, assemble):  # registered, not decorated: the functions stay typed
    app.task(name=f"bench.{_stage.__name__}")(_stage)
task_failure.connect(_failed)


# Driver: runs in the benchmark process.


def start_worker(redis_url: str, prefix: str, *, concurrency: int = 8) -> subprocess.Popen[bytes]:
    """A prefork Celery worker on ``redis_url``, once it answers a ping (within 30 s, else RuntimeError)."""
    env = os.environ | {"LITMINER_BENCH_REDIS_URL": redis_url, "LITMINER_BENCH_PREFIX": prefix}
    command = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "--pool", "prefork"]
    command += ["--concurrency", str(concurrency), "--loglevel", "WARNING"]
    # its own process group: stop_worker can kill the pool's children too if the main process hangs
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    driver = make_app(redis_url)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {proc.returncode}")
            if driver.control.ping(timeout=0.5):
                return proc
        raise RuntimeError("celery worker did not answer a ping within 30 s")
    except BaseException:
        stop_worker(proc)
        raise
    finally:
        driver.close()


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM); after 15 s, kill the worker's whole process group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def _session(redis_url: str, prefix: str) -> Iterator[tuple[Celery, redis.Redis, PubSub]]:
    """A driver app and a confirmed pattern subscription to every job's event channel."""
    driver, client = make_app(redis_url), redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    try:
        pubsub.psubscribe(Keys(prefix).channel("*"))
        while (message := pubsub.get_message(timeout=5.0)) is None or message["type"] != "psubscribe":
            if message is None:
                raise RuntimeError("no confirmation of the event subscription within 5 s")
        yield driver, client, pubsub
    finally:
        pubsub.close()
        client.close()
        driver.close()


def _submit(driver: Celery, client: redis.Redis, prefix: str, request_json: str) -> str:
    """Queue a job: its status record and "started" event (one round trip, as litminer's), then its first task."""
    task_id = str(uuid.uuid4())
    keys, now = Keys(prefix), time.time()
    event = Event(
        task_id=task_id,
        client_id="bench",
        seq=1,
        status="started",
        stage="queued",
        message="Job queued",
        progress=0,
        timestamp=now,
    )
    record = {"status": "queued", "stage": "queued", "progress": 0, "message": "Job queued", "updated_at": now}
    with client.pipeline(transaction=False) as pipe:
        pipe.set(keys.job(task_id), msgspec.json.encode(record), ex=TTL_S)
        pipe.publish(keys.channel(task_id), encode_event(event))
        pipe.execute()
    driver.send_task("bench.prepare_schema", args=[task_id, request_json])
    return task_id


def _next_event(pubsub: PubSub, deadline: float) -> Event:
    """The next event; RuntimeError on an "error" event, TimeoutError at ``deadline`` (``perf_counter``)."""
    while (left := deadline - time.perf_counter()) > 0:
        message = pubsub.get_message(timeout=left)
        if message is not None and message["type"] == "pmessage":
            event = decode_event(message["data"])
            if event.status == "error":
                raise RuntimeError(f"job {event.task_id}: {event.message}")
            return event
    raise TimeoutError("no event before the deadline")


def _completed(pubsub: PubSub, deadline: float) -> str:
    """The task id of the next "completed" event."""
    while (event := _next_event(pubsub, deadline)).status != "completed":
        pass
    return event.task_id


def drain(
    redis_url: str, prefix: str, jobs: int, *, concurrency: int = 8, timeout_s: float = 120
) -> tuple[float, float, subprocess.Popen[bytes]]:
    """Queue ``jobs`` jobs while the worker does not consume, then let it; seconds from its first event to the
    last "completed" (event timestamps, as litminer's pipeline benchmark measures), the CPU seconds its processes
    (the main one and the pool's) used from then on, and the worker, still running."""
    request_json = _request_json()
    worker = start_worker(redis_url, prefix, concurrency=concurrency)
    try:
        with _session(redis_url, prefix) as (driver, client, pubsub):
            # the worker's boot is not measured: it stops consuming while the jobs are queued
            driver.control.cancel_consumer(_QUEUE, reply=True)
            for _ in range(jobs):
                _submit(driver, client, prefix, request_json)
            while pubsub.get_message(timeout=0.01) is not None:  # the "started" events
                pass
            cpu_before = tree_cpu_s(worker.pid)
            driver.control.add_consumer(_QUEUE, reply=True)
            first, last, done = 0.0, 0.0, 0
            deadline = time.perf_counter() + timeout_s
            while done < jobs:
                event = _next_event(pubsub, deadline)
                first = first or event.timestamp
                if event.status == "completed":
                    last, done = max(last, event.timestamp), done + 1
            cpu = tree_cpu_s(worker.pid) - cpu_before
    except BaseException:
        stop_worker(worker)
        raise
    return last - first, cpu, worker


def latencies(redis_url: str, prefix: str, jobs: int, *, gap_s: float = 0.0, timeout_s: float = 30) -> list[float]:
    """Milliseconds from submit to the "completed" event, one job at a time, ``gap_s`` idle between jobs."""
    request_json = _request_json()
    found: list[float] = []
    with _session(redis_url, prefix) as (driver, client, pubsub):
        for _ in range(jobs):
            start = time.perf_counter()
            task_id = _submit(driver, client, prefix, request_json)
            while _completed(pubsub, start + timeout_s) != task_id:
                pass
            found.append((time.perf_counter() - start) * 1000)
            time.sleep(gap_s)
    return found
