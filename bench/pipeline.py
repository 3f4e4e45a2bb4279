"""The whole pipeline under load: four actors, job store, events, middleware, with a zero-latency source and extractor.

Throughput: N jobs submitted while no worker runs, then 1 worker process × 8 threads (and 2 × 8) drain
them; jobs/s is N over the time from the first event a worker published to the last ``completed``
(both event timestamps). Latency: one job at a time through the API (``POST /api/v1/datasets/generate``) to
the ``completed`` event at an SSE client (``/sse/{client_id}``), back to back and after a 0.5 s idle gap.
Round trips: every Redis command or pipeline a process sends, counted in its redis-py connection.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import msgspec
import redis
from httpx_sse import connect_sse

from bench.inmemory import NAME, MemoryExtractor, MemorySource, request
from bench.proc import cpu_s, percentile, rss_mb
from contracts import decode_event
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store import JobStore
from services.embedded_redis import EmbeddedRedis, free_port

THREADS = 8
IDLE_GAP_S = 0.5
TIMEOUT_S = 120.0  # a phase that has not finished by then fails the benchmark

P = ParamSpec("P")
T = TypeVar("T")


# -- Redis round trips, counted where redis-py sends them ------------------------------------------------


class RoundTrips(msgspec.Struct):
    """Round trips to Redis of one process: in all, and on the publish path (job updates with their events)."""

    total: int = 0
    publish: int = 0


_sent = itertools.count()
_published = itertools.count()
_publishing = threading.local()


def count_round_trips() -> Callable[[], RoundTrips]:
    """Count every command (or pipeline) this process sends from now on; returns a reader of the counts.

    A pipeline is one ``send_packed_command`` call, so this counts round trips, not commands. Sends made
    inside ``JobStore.create`` and ``JobStore.transition`` (a job change and its event) count as publish path.
    """
    if not _installed:
        _install()
    start_sent, start_published = _peek(_sent), _peek(_published)
    return lambda: RoundTrips(
        total=_peek(_sent) - start_sent + _peek(_published) - start_published,
        publish=_peek(_published) - start_published,
    )


_installed: list[bool] = []


def _install() -> None:
    _installed.append(True)
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, command: Any, check_health: bool = True) -> None:
        next(_published if getattr(_publishing, "on", False) else _sent)
        send(self, command, check_health)  # type: ignore[no-untyped-call]

    redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    for name in ("create", "transition"):
        setattr(JobStore, name, _on_publish_path(getattr(JobStore, name)))


def _peek(counter: itertools.count[int]) -> int:
    return int(repr(counter)[6:-1])  # count(n): the next value, without taking it


def _on_publish_path(method: Callable[P, T]) -> Callable[P, T]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        _publishing.on = True
        try:
            return method(*args, **kwargs)
        finally:
            _publishing.on = False

    return wrapper


# -- processes ------------------------------------------------------------------------------------------


def _plugins() -> dict[str, Any]:
    # A request names its extractor from a fixed set: the in-memory one stands in for "heuristic".
    return {"sources": {NAME: MemorySource()}, "extractors": {"heuristic": MemoryExtractor()}}


#: what the API and the submitting process know of the workers' plugins: their names
_PLUGIN_NAMES: dict[str, Any] = {"sources": [NAME], "extractors": ["heuristic"]}


def _worker_main(settings: Settings, threads: int, counts_path: str) -> None:
    """A worker process as ``litminer worker`` runs it, on the in-memory plugins; writes its round trips at exit."""
    from services.worker import run_worker_process  # noqa: PLC0415

    read = count_round_trips()
    run_worker_process(settings, threads, "WARNING", **_plugins())
    Path(counts_path).write_bytes(msgspec.json.encode(read()))


def _api_main(settings: Settings, port: int) -> None:
    """The API as ``litminer api`` serves it, on the in-memory plugins."""
    from services.api.app import create_app  # noqa: PLC0415
    from services.api.server import serve  # noqa: PLC0415
    from services.logs import configure_logging  # noqa: PLC0415

    configure_logging("WARNING")
    serve(create_app(settings, **_PLUGIN_NAMES), settings, host="127.0.0.1", port=port)


class Workers:
    """``processes`` worker processes of THREADS threads; their round trips once stopped."""

    def __init__(self, settings: Settings, processes: int, folder: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.paths = [folder / f"worker-{uuid.uuid4().hex[:8]}.json" for _ in range(processes)]
        self.processes: list[SpawnProcess] = [
            context.Process(target=_worker_main, args=(settings, THREADS, str(path)), daemon=True)
            for path in self.paths
        ]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def stop(self) -> RoundTrips:
        for process in self.processes:
            process.terminate()  # SIGTERM: a graceful stop
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        counts = [msgspec.json.decode(p.read_bytes(), type=RoundTrips) for p in self.paths if p.exists()]
        return RoundTrips(total=sum(c.total for c in counts), publish=sum(c.publish for c in counts))


@contextmanager
def api_process(settings: Settings) -> Iterator[tuple[str, int]]:
    """The API in its own process; yields its URL and pid."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=_api_main, args=(settings, port), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not process.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        assert process.pid is not None
        yield url, process.pid
    finally:
        process.terminate()
        process.join(15)


def bench_settings(redis_url: str) -> Settings:
    """Settings of one measurement: its own key prefix (queues, jobs, events), the in-memory plugins, no rate limit."""
    return Settings(
        redis_url=redis_url,
        key_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
        sources=(NAME,),
        extractor="heuristic",
        rate_limit_per_minute=0,
        heartbeat_s=1,  # an SSE stream the benchmark closed ends at the next heartbeat, so the API stops at once
    )


# -- throughput -----------------------------------------------------------------------------------------


def drain(server: EmbeddedRedis, processes: int, jobs: int, folder: Path) -> dict[str, object]:
    """Submit ``jobs`` jobs, then let ``processes`` × THREADS drain them; jobs/s, round trips and worker RSS."""
    settings = bench_settings(server.url)
    service = JobService(settings, **_PLUGIN_NAMES)
    read = count_round_trips()
    client_id = str(uuid.uuid4())
    published_before = int(service.store.client.get(service.store.keys.events_published) or 0)
    for _ in range(jobs):
        service.submit(request(client_id))
    submitted = read()
    workers = Workers(settings, processes, folder)
    workers.start()
    assert server.process is not None
    pids = {"redis": server.process.pid, "bench": os.getpid()}
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    first, last, done, peak, workers_cpu = _follow_completions(service, client_id, jobs, workers.pids)
    cpu = {name: cpu_s(pid) - cpu_before[name] for name, pid in pids.items()} | {"workers": workers_cpu}
    counts = workers.stop()
    published = int(service.store.client.get(service.store.keys.events_published) or 0) - published_before
    service.close()
    if done < jobs:
        raise RuntimeError(f"only {done} of {jobs} jobs completed in {TIMEOUT_S:.0f} s")
    elapsed = last - first
    return {
        "worker_processes": processes,
        "threads": THREADS,
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(jobs / elapsed, 1),
        "events_per_job": round(published / jobs, 1),
        "round_trips_per_job": round((counts.total + submitted.total) / jobs, 1),
        "publish_round_trips_per_event": round((counts.publish + submitted.publish) / published, 2),
        "worker_peak_rss_mb": peak,
        "jobs_per_worker_cpu_s": round(jobs / workers_cpu, 1),
        "cpu_cores": {name: round(seconds / elapsed, 2) for name, seconds in cpu.items()},
    }


def _follow_completions(
    service: JobService, client_id: str, jobs: int, pids: list[int]
) -> tuple[float, float, int, float, float]:
    """Read the client's event stream until ``jobs`` jobs completed: (first worker event time, last completion
    time, completions, the workers' peak RSS in MB, their CPU seconds from the first event to the last)."""
    stream = service.store.keys.client_stream(client_id)
    cursor, first, last, done, peak, cpu_first = "0-0", 0.0, 0.0, 0, 0.0, 0.0
    deadline = time.monotonic() + TIMEOUT_S
    while done < jobs and time.monotonic() < deadline:
        reply: Any = service.store.client.xread({stream: cursor}, count=2000, block=200)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                cursor = entry_id
                raw: bytes = fields[b"event"]
                if not first and b'"status":"processing"' in raw:
                    first = decode_event(raw).timestamp
                    cpu_first = sum(cpu_s(pid) for pid in pids)
                elif b'"status":"error"' in raw:
                    raise RuntimeError(f"a job failed: {decode_event(raw).message}")
                elif b'"status":"completed"' in raw:
                    last = max(last, decode_event(raw).timestamp)
                    done += 1
        peak = max([peak, *(rss_mb(pid) for pid in pids)])
    return first, last, done, round(peak, 1), sum(cpu_s(pid) for pid in pids) - cpu_first


# -- latency --------------------------------------------------------------------------------------------


def latencies(api: str, jobs: int, gap_s: float) -> list[float]:
    """Submit one job at a time through the API; ms from before the POST to its ``completed`` event at an SSE client."""
    client_id = str(uuid.uuid4())
    completed: queue.Queue[tuple[str, float]] = queue.Queue()
    listening = threading.Event()
    stop = threading.Event()

    sse_http = httpx.Client(timeout=httpx.Timeout(5, read=None))
    streams: list[httpx.Response] = []

    def listen() -> None:
        try:
            with connect_sse(sse_http, "GET", f"{api}/sse/{client_id}") as source:
                streams.append(source.response)
                listening.set()
                for sse in source.iter_sse():
                    if '"status":"completed"' in sse.data:
                        completed.put((msgspec.json.decode(sse.data)["task_id"], time.perf_counter()))
        except httpx.HTTPError:
            if not stop.is_set():
                raise

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    if not listening.wait(10):
        raise RuntimeError("the SSE client did not connect")
    body = msgspec.json.encode(request(client_id))
    measured: list[float] = []
    with httpx.Client(base_url=api, headers={"Content-Type": "application/json"}, timeout=10) as http:
        for i in range(jobs + 1):  # the first job warms up connections and caches: not counted
            if gap_s:
                time.sleep(gap_s)
            started = time.perf_counter()
            response = http.post("/api/v1/datasets/generate", content=body)
            response.raise_for_status()
            task_id = response.json()["task_id"]
            while True:
                done_id, at = completed.get(timeout=30)
                if done_id == task_id:
                    break
            if i:
                measured.append((at - started) * 1000)
    stop.set()
    for stream in streams:  # ends the stream before the API stops (a stream still open delays its shutdown)
        stream.close()
    listener.join(5)
    sse_http.close()
    return measured


def latency_summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5), 1),
        "p99_ms": round(percentile(values, 0.99), 1),
        "max_ms": round(max(values), 1),
    }


def measure_latency(redis_url: str, jobs: int, idle_jobs: int, folder: Path) -> dict[str, object]:
    """Back-to-back and after-idle latency with 1 worker process × THREADS behind a real API process."""
    settings = bench_settings(redis_url)
    workers = Workers(settings, 1, folder)
    workers.start()
    try:
        with api_process(settings) as (api, api_pid):
            back_to_back = latencies(api, jobs, 0.0)
            after_idle = latencies(api, idle_jobs, IDLE_GAP_S)
            api_peak = rss_mb(api_pid, "VmHWM")
            worker_peak = max(rss_mb(pid, "VmHWM") for pid in workers.pids)
    finally:
        workers.stop()
    return {
        "jobs": jobs,
        "idle_jobs": idle_jobs,
        "back_to_back": latency_summary(back_to_back),
        "after_idle": latency_summary(after_idle),
        "api_peak_rss_mb": round(api_peak, 1),
        "worker_peak_rss_mb": round(worker_peak, 1),
    }


def run(quick: bool) -> dict[str, object]:
    for name in ("", "dramatiq", "pipeline", "services"):
        logging.getLogger(name).setLevel(logging.WARNING)
    jobs = 150 if quick else 2000
    sequential, idle = (20, 4) if quick else (200, 100)
    with EmbeddedRedis() as server, scratch_folder() as folder:
        throughput = {f"{p}x{THREADS}": drain(server, p, jobs, folder) for p in (1, 2)}
        latency = measure_latency(server.url, sequential, idle, folder)
    print(f"\n## pipeline: {jobs} jobs (1 row, 4 documents each), in-memory source and extractor\n")
    print("| workers | jobs/s | events/job | Redis round trips/job | publish round trips/event | worker peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for label, m in throughput.items():
        row = [m["jobs_per_s"], m["events_per_job"], m["round_trips_per_job"], m["publish_round_trips_per_event"]]
        print(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {m['worker_peak_rss_mb']} |")
    b2b, gap = latency["back_to_back"], latency["after_idle"]
    assert isinstance(b2b, dict) and isinstance(gap, dict)
    print("\n| latency, submit → `completed` at an SSE client (1 × 8) | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    print(f"| back to back ({sequential} jobs) | {b2b['p50_ms']} | {b2b['p99_ms']} | {b2b['max_ms']} |")
    print(f"| after {IDLE_GAP_S} s idle ({idle} jobs) | {gap['p50_ms']} | {gap['p99_ms']} | {gap['max_ms']} |")
    print("\nTargets: ≥ 150 jobs/s with 2 × 8; ≤ 40 ms p50 / ≤ 120 ms p99 back to back; ≤ 100 ms p50 after idle;")
    print("≤ 1.5 publish round trips per event.")
    return {"throughput": throughput, "latency": latency, "quick": quick}


@contextmanager
def scratch_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="litminer-bench-") as folder:
        yield Path(folder)
