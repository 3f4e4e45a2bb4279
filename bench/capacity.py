"""The capacity model's inputs (docs/scaling.md): what a job costs a worker and Redis, and what an LLM call costs.

1. **Pipeline jobs** (bench.pipeline's in-memory source and extractor: no I/O outside Redis), drained by one worker
   process × 8 threads: worker CPU, Redis CPU and Redis commands (``INFO commandstats``) per job and per event.
2. **An LLM-bound job**: 64 documents, the stand-in Chat Completions server answering every call after 200 ms,
   one worker process at LLM concurrency 8: worker CPU and Redis commands per LLM call, from the first
   extraction event to the first assembly event.
3. **Redis's ceiling** for the mix of (1): one core ÷ Redis CPU per job (Redis runs commands on one thread), and
   ``redis-benchmark``'s figures for plain commands on the same server, for reference.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import subprocess
import tempfile
import time
import uuid

import httpx
import msgspec
import redis

from bench.extract import FIELDS, MODEL, QUERY, follow, reader, wait_for_workers
from bench.inmemory import request
from bench.pipeline import api_process, bench_settings, drain, scratch_folder
from bench.proc import cpu_s
from contracts import TERMINAL_STATUSES, GenerateRequest, decode_event
from pipeline.jobs import JobService
from pipeline.settings import Settings
from services.embedded_redis import EmbeddedRedis
from services.worker import run_worker_process
from tests.fixtures.llm import FakeLLM

LATENCY_S = 0.2
TIMEOUT_S = 180.0
BENCHMARK_COMMANDS = "set,get,lpush,hset"


def _commands(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Calls and microseconds of Redis time per command since the last ``CONFIG RESETSTAT``, less ``XREAD``: the
    benchmark's own reading of events (no worker sends it; the API reads pub/sub and ``XRANGE``)."""
    stats: dict[str, dict[str, float]] = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): (int(s["calls"]), int(s["usec"])) for name, s in stats.items()}
    calls.pop("xread", None)
    return calls


def _kept_bytes(client: redis.Redis) -> int:
    """Bytes the server's keys hold (``MEMORY USAGE`` of every key, all its elements counted)."""
    return sum(int(client.memory_usage(key, samples=0) or 0) for key in client.scan_iter(count=1000))


def _top(commands: dict[str, tuple[int, int]], per: float) -> dict[str, dict[str, float]]:
    """The commands taking most Redis time: calls and µs per ``per`` (jobs, calls)."""
    ranked = sorted(commands.items(), key=lambda item: -item[1][1])[:6]
    return {name: {"calls": round(calls / per, 2), "us": round(usec / per, 1)} for name, (calls, usec) in ranked}


def pipeline_costs(jobs: int) -> dict[str, object]:
    """Drain ``jobs`` one-row jobs with 1 worker process × 8 threads; CPU and commands per job and per event."""
    with EmbeddedRedis() as server, scratch_folder() as folder:
        assert server.process is not None
        client = redis.Redis.from_url(server.url)
        client.config_resetstat()
        redis_cpu = cpu_s(server.process.pid)
        measured = drain(server, 1, jobs, folder)
        redis_cpu, memory = cpu_s(server.process.pid) - redis_cpu, _kept_bytes(client)
        commands = _commands(client)
        client.close()
    jobs_per_s = measured["jobs_per_s"]
    cores = measured["cpu_cores"]
    events = measured["events_per_job"]
    assert isinstance(jobs_per_s, float) and isinstance(cores, dict) and isinstance(events, float)
    calls = sum(c for c, _ in commands.values())
    usec = sum(u for _, u in commands.values())
    return {
        "jobs": jobs,
        "jobs_per_s": jobs_per_s,
        "events_per_job": events,
        "worker_cpu_ms_per_job": round(1000 * cores["workers"] / jobs_per_s, 2),
        "redis_cpu_ms_per_job": round(1000 * redis_cpu / jobs, 3),
        "redis_command_us_per_job": round(usec / jobs, 1),
        "redis_commands_per_job": round(calls / jobs, 1),
        "redis_commands_per_event": round(calls / jobs / events, 2),
        "round_trips_per_job": measured["round_trips_per_job"],
        "redis_memory_kb_per_job": round(memory / jobs / 1024, 1),
        "top_commands_per_job": _top(commands, jobs),
    }


def api_costs(jobs: int) -> dict[str, float]:
    """API CPU per ``POST /api/v1/datasets/generate`` (no worker runs: the submit alone), one client at a time."""
    with EmbeddedRedis() as server, api_process(bench_settings(server.url)) as (url, pid), httpx.Client() as http:
        body = msgspec.json.encode(request(str(uuid.uuid4())))
        headers = {"content-type": "application/json"}
        for _ in range(20):  # warm up: connections, caches
            http.post(f"{url}/api/v1/datasets/generate", content=body, headers=headers).raise_for_status()
        before = cpu_s(pid)
        for _ in range(jobs):
            http.post(f"{url}/api/v1/datasets/generate", content=body, headers=headers).raise_for_status()
        return {"submits": jobs, "api_cpu_ms_per_submit": round(1000 * (cpu_s(pid) - before) / jobs, 2)}


def llm_costs(rows: int) -> dict[str, object]:
    """One job of ``rows`` × 4 documents against the stand-in LLM; worker CPU and Redis work per LLM call."""
    with (
        EmbeddedRedis() as server,
        FakeLLM() as llm,
        tempfile.TemporaryDirectory(prefix="litminer-bench-") as folder,
    ):
        assert server.process is not None
        llm.latency_s = LATENCY_S
        llm.responder = reader
        settings = Settings(
            redis_url=server.url,
            key_prefix=f"bench-capacity-{uuid.uuid4().hex[:8]}:",
            sources=("local",),
            index_dir=folder,
            openai_base_url=llm.url,
            openai_api_key="bench",
            llm_model=MODEL,
            llm_concurrency=8,
        )
        service = JobService(settings)
        child = multiprocessing.get_context("spawn").Process(target=run_worker_process, args=(settings, 8, "WARNING"))
        child.start()
        client = redis.Redis.from_url(server.url)
        try:
            wait_for_workers(service, 1)
            job = service.submit(GenerateRequest(user_query=QUERY, rows=rows, field_definitions=FIELDS))
            (worker_start, redis_start), (worker_end, redis_end), commands = _sample_extraction(
                service, job.task_id, child.pid or 0, server.process.pid, client
            )
            follow(service, job.task_id)  # to its end: the memory kept is the finished job's
        finally:
            child.terminate()
            child.join(30)
            service.close()
        memory = _kept_bytes(client)
        client.close()
    llm_calls = len(llm.calls)
    usec = sum(u for _, u in commands.values())
    return {
        "documents": rows * settings.docs_per_row,
        "llm_calls": llm_calls,
        "llm_latency_s": LATENCY_S,
        "worker_cpu_ms_per_call": round(1000 * (worker_end - worker_start) / llm_calls, 2),
        "redis_cpu_ms_per_call": round(1000 * (redis_end - redis_start) / llm_calls, 3),
        "redis_commands_per_call": round(sum(c for c, _ in commands.values()) / llm_calls, 1),
        "redis_command_us_per_call": round(usec / llm_calls, 1),
        "redis_memory_kb_per_job": round(memory / 1024, 1),
    }


#: CPU seconds so far of the worker and of Redis
Sample = tuple[float, float]


def _sample_extraction(
    service: JobService, task_id: str, worker: int, redis_pid: int, client: redis.Redis
) -> tuple[Sample, Sample, dict[str, tuple[int, int]]]:
    """CPU seconds of the worker and Redis at the job's first extraction event and at its first assembly event,
    and Redis's commands in between."""
    start: Sample | None = None
    after, deadline = 0, time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for raw in service.store.events.history(task_id, after=after, block_ms=50):
            event = decode_event(raw)
            after = event.seq
            if event.stage == "extraction" and start is None:
                client.config_resetstat()
                start = (cpu_s(worker), cpu_s(redis_pid))
            if event.stage == "assembly" and start is not None:
                return start, (cpu_s(worker), cpu_s(redis_pid)), _commands(client)
            if event.status in TERMINAL_STATUSES:
                raise RuntimeError(f"job ended {event.status} before assembly: {event.message}")
    raise RuntimeError(f"job {task_id} did not reach assembly in {TIMEOUT_S:.0f} s")


def redis_benchmark(requests: int) -> dict[str, float] | None:
    """Requests/s of plain commands from ``redis-benchmark`` (50 clients, no pipelining) on a fresh server, or
    None where it is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    with EmbeddedRedis() as server:
        command = [binary, "-p", str(server.port), "-q", "-n", str(requests), "-c", "50", "-t", BENCHMARK_COMMANDS]
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    rates: dict[str, float] = {}
    for line in output.replace("\r", "\n").splitlines():
        name, _, rest = line.partition(": ")
        if "requests per second" in rest:
            rates[name.strip().lower()] = float(rest.split()[0])
    return rates


def run(quick: bool) -> dict[str, object]:
    for name in ("", "dramatiq", "pipeline", "services"):
        logging.getLogger(name).setLevel(logging.WARNING)
    pipeline = pipeline_costs(150 if quick else 1000)
    api = api_costs(100 if quick else 1000)
    llm = llm_costs(4 if quick else 16)
    plain = redis_benchmark(20_000 if quick else 200_000)
    redis_ms = pipeline["redis_cpu_ms_per_job"]
    assert isinstance(redis_ms, float)
    ceiling = round(1000 / redis_ms)
    print("\n## capacity: what one job and one LLM call cost\n")
    print("| measure | pipeline job (1 row, 4 documents, no I/O) | per LLM call (200 ms stand-in) |")
    print("|---|---|---|")
    print(f"| worker CPU ms | {pipeline['worker_cpu_ms_per_job']} | {llm['worker_cpu_ms_per_call']} |")
    print(f"| Redis CPU ms (process) | {pipeline['redis_cpu_ms_per_job']} | {llm['redis_cpu_ms_per_call']} |")
    print(f"| Redis command time µs | {pipeline['redis_command_us_per_job']} | {llm['redis_command_us_per_call']} |")
    print(f"| Redis commands | {pipeline['redis_commands_per_job']} | {llm['redis_commands_per_call']} |")
    print(
        f"| Redis memory KB kept per job | {pipeline['redis_memory_kb_per_job']} | {llm['redis_memory_kb_per_job']} |"
    )
    print(
        f"\nEvents per job {pipeline['events_per_job']}, Redis commands per event "
        f"{pipeline['redis_commands_per_event']}, round trips per job {pipeline['round_trips_per_job']}."
    )
    print(f"API CPU per submit over HTTP: {api['api_cpu_ms_per_submit']} ms.")
    print(f"Redis ceiling for this mix: 1 core ÷ {redis_ms} ms = **{ceiling} jobs/s**.")
    print("\nCommands taking most Redis time per job:", msgspec.json.encode(pipeline["top_commands_per_job"]).decode())
    if plain is not None:
        print(f"redis-benchmark, 50 clients, no pipelining (requests/s): {plain}")
    return {
        "pipeline": pipeline,
        "api": api,
        "llm": llm,
        "redis_ceiling_jobs_per_s": ceiling,
        "redis_benchmark": plain,
        "quick": quick,
    }
