"""LLM extraction throughput: 64 documents, a stand-in LLM answering each call in 200 ms.

One job per configuration: 1 worker process (8 threads) at LLM concurrency 1, 8 and 16, then 2 worker
processes at concurrency 8 each. Each configuration has its own key prefix, so its own queues and an
empty extraction cache. The stand-in (``tests.fixtures.llm.FakeLLM``) is a faithful reader: the title
as the name, the abstract's first sentence as the description, both quoted from the document.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec

from contracts import TERMINAL_STATUSES, Event, FieldDefinition, GenerateRequest, decode_event
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.text import sentences
from pipeline.worker.runtime import WorkerRuntime
from services.embedded_redis import EmbeddedRedis
from services.worker import run_worker_process, start_worker
from tests.fixtures.llm import Call, FakeLLM, Reply, rows_reply

LATENCY_S = 0.2
THREADS = 8
TIMEOUT_S = 120.0  # a configuration that has not finished by then fails the benchmark
MODEL = "bench-model"
QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    FieldDefinition(name="technology_name", type="str", description="Name of the technology or practice"),
    FieldDefinition(name="description", type="str", description="What it does", required=False),
]
#: (label, LLM concurrency per process, worker processes; 0 = a worker in this process)
CONFIGURATIONS = [
    ("concurrency 1", 1, 0),
    ("concurrency 8", 8, 0),
    ("concurrency 16", 16, 0),
    ("2 worker processes × concurrency 8", 8, 2),
]


def reader(call: Call) -> Reply:
    """A faithful model: the title as the name, the abstract's first sentence as the description, both quoted."""
    lines = call.document.splitlines()
    title = lines[0].removeprefix("Title: ")
    abstract = next((line.removeprefix("Abstract: ") for line in lines if line.startswith("Abstract: ")), "")
    first = (sentences(abstract) or [title])[0]
    values: dict[str, object] = {"technology_name": title, "description": first}
    return rows_reply((values, {"technology_name": title, "description": first}))


def follow(service: JobService, task_id: str) -> list[Event]:
    """The job's events until its terminal one, read from its stream; raises after TIMEOUT_S."""
    events: list[Event] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for raw in service.store.events.history(task_id, after=events[-1].seq if events else 0, block_ms=200):
            events.append(decode_event(raw))
            if events[-1].status in TERMINAL_STATUSES:
                return events
    raise RuntimeError(f"job {task_id} did not finish in {TIMEOUT_S:.0f} s; last event: {events[-1:]}")


def wait_for_workers(service: JobService, count: int) -> None:
    """Wait until ``count`` worker processes poll their queues (Dramatiq's heartbeat set)."""
    heartbeats = f"{service.store.keys.dramatiq_namespace}:__heartbeats__"
    deadline = time.monotonic() + 60
    while service.store.client.zcard(heartbeats) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} worker processes did not start in 60 s")
        time.sleep(0.05)


@contextmanager
def worker_processes(service: JobService, count: int, target: Callable[..., None], *args: object) -> Iterator[None]:
    """``count`` spawned processes running ``target(*args)`` (a worker), once they poll their queues; stopped
    (SIGTERM: a graceful stop) at the end."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        wait_for_workers(service, count)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(30)


def _measure(base: Settings, llm: FakeLLM, rows: int, concurrency: int, processes: int) -> dict[str, object]:
    """Run one job on a fresh key prefix; its timings, calls and tokens."""
    prefix = f"bench-extract-{uuid.uuid4().hex[:8]}:"
    settings = msgspec.structs.replace(base, key_prefix=prefix, llm_concurrency=concurrency)
    service = JobService(settings)
    context = multiprocessing.get_context("spawn")
    children = [
        # a model name per process, so the calls each process made can be counted
        context.Process(
            target=run_worker_process,
            args=(msgspec.structs.replace(settings, llm_model=f"{MODEL}-{i + 1}"), THREADS, "WARNING"),
        )
        for i in range(processes)
    ]
    runtime = None if children else WorkerRuntime(settings)
    worker = None if runtime is None else start_worker(runtime, threads=THREADS)
    calls_before = len(llm.calls)
    try:
        for child in children:
            child.start()
        wait_for_workers(service, len(children))
        started = time.monotonic()
        job = service.submit(GenerateRequest(user_query=QUERY, rows=rows, field_definitions=FIELDS))
        events = follow(service, job.task_id)
        wall_s = time.monotonic() - started
        dataset = service.dataset(job.task_id) if events[-1].status == "completed" else None
    finally:
        if worker is not None:
            worker.stop()
            time.sleep(1.1)  # the abort watcher's BLPOP (1 s) returns before close() shuts its connection
        for child in children:
            child.terminate()
        for child in children:
            child.join(30)
        if runtime is not None:
            runtime.close()
        service.close()
    if events[-1].status != "completed" or dataset is None or dataset.stats.extraction is None:
        raise RuntimeError(f"job ended {events[-1].status}: {events[-1].message}")
    stats = dataset.stats.extraction
    if stats.documents != rows * settings.docs_per_row:
        raise RuntimeError(f"extraction read {stats.documents} documents, not {rows * settings.docs_per_row}")
    extraction_start = next(e.timestamp for e in events if e.stage == "extraction")
    extraction_end = next(e.timestamp for e in events if e.stage == "assembly")
    calls = llm.calls[calls_before:]
    tokens = stats.prompt_tokens + stats.completion_tokens
    candidates = dataset.stats.candidate_rows
    result: dict[str, object] = {
        "llm_concurrency": concurrency,
        "worker_processes": max(processes, 1),
        "documents": stats.documents,
        "batches": stats.batches,
        "llm_calls": len(calls),
        "wall_s": round(wall_s, 2),
        "extraction_s": round(extraction_end - extraction_start, 2),
        "tokens": tokens,
        "candidate_rows": candidates,
        "rows": len(dataset.rows),
        "tokens_per_row": round(tokens / candidates, 1) if candidates else None,
    }
    if children:
        result["llm_calls_per_process"] = dict(sorted(Counter(str(c.body["model"]) for c in calls).items()))
    return result


def run(quick: bool) -> dict[str, object]:
    for name in ("", "dramatiq", "pipeline", "services"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rows = 4 if quick else 16
    results: dict[str, dict[str, object]] = {}
    with EmbeddedRedis() as server, FakeLLM() as llm, tempfile.TemporaryDirectory(prefix="litminer-bench-") as folder:
        llm.latency_s = LATENCY_S
        llm.responder = reader
        base = Settings(
            redis_url=server.url,
            sources=("local",),
            index_dir=folder,
            openai_base_url=llm.url,
            openai_api_key="bench",
            llm_model=MODEL,
        )
        for label, concurrency, processes in CONFIGURATIONS:
            results[label] = _measure(base, llm, rows, concurrency, processes)

    sequential = results["concurrency 1"]["extraction_s"]
    assert isinstance(sequential, float)
    for measured in results.values():
        extraction_s = measured["extraction_s"]
        assert isinstance(extraction_s, float)
        measured["speed_up"] = round(sequential / extraction_s, 1)
    documents = rows * Settings().docs_per_row
    ideal_s = round(documents * LATENCY_S, 1)
    print(f"\n## extract: {documents} documents, stand-in LLM at {LATENCY_S * 1000:.0f} ms per call\n")
    print("| configuration | LLM calls | wall s | extraction s | speed-up vs concurrency 1 | tokens/row |")
    print("|---|---|---|---|---|---|")
    for label, m in results.items():
        calls = f"{m['llm_calls']}" + (f" {m['llm_calls_per_process']}" if "llm_calls_per_process" in m else "")
        print(f"| {label} | {calls} | {m['wall_s']} | {m['extraction_s']} | {m['speed_up']}× | {m['tokens_per_row']} |")
    print(f"\nIdeal sequential: {documents} calls × {LATENCY_S} s = {ideal_s} s. Target: ≥ 6× at concurrency 8.")
    return {
        "documents": documents,
        "latency_s": LATENCY_S,
        "worker_threads": THREADS,
        "ideal_sequential_s": ideal_s,
        "configurations": results,
        "quick": quick,
    }
