"""Fair sharing: how long a small job takes while another owner's big job runs.

Owner A submits a job of 500 documents (200 with ``--quick``); once its extraction batches run, owner B submits
jobs of 5 documents, one after the other, until A's job is done. B's time from submit to its ``completed``
event is measured idle (no other job; the median of 3), under A's job with fair sharing (the median;
``LITMINER_FAIR_WINDOW`` 0: as many batches released as the workers have threads, owners in turn), the same
with a thread of each worker kept for the other stages (``LITMINER_FAIR_RESERVE=1``), and under A's job
without fair sharing (a window of 100,000: every batch queued at once, first come first served). A's job
alone shows what the sharing costs it. The LLM is a stand-in answering each call in 200 ms
(``tests.fixtures.llm.FakeLLM``: a screening call per batch and one call per document); the documents come
from an in-memory source; 2 worker processes of 4 threads each. Every job has a question of its own, so no
job reads another's cached extractions.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import msgspec

from bench.extract import reader, worker_processes
from contracts import TERMINAL_STATUSES, Document, Event, FieldDefinition, GenerateRequest, decode_event
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.sources.base import Page
from pipeline.sources.http import SourceHttp
from services.embedded_redis import EmbeddedRedis
from tests.fixtures.llm import FakeLLM

NAME = "shelf"
LATENCY_S = 0.2
PROCESSES, THREADS = 2, 4
SMALL_DOCUMENTS = 5
IDLE_RUNS = 3
TIMEOUT_S = 300.0  # a job that has not finished by then fails the benchmark
#: a window no job here reaches: every batch is queued at once, as without fair sharing
UNLIMITED = 100_000
QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    FieldDefinition(name="technology_name", type="str", description="Name of the technology or practice"),
    FieldDefinition(name="description", type="str", description="What it does", required=False),
]
_TECHNOLOGIES = ["Slow sand filtration", "UV disinfection", "Chlorine dioxide dosing", "Ozonation", "Biochar filters"]
_CROPS = ["leafy greens", "strawberries", "tomatoes", "apples", "blueberries", "melons"]
DOCUMENTS = [
    Document(
        id=f"{NAME}:{i}",
        title=f"{_TECHNOLOGIES[i % 5]} of irrigation water for {_CROPS[i % 6]}: field trial {i}",
        abstract=f"{_TECHNOLOGIES[i % 5]} removed pathogens from irrigation water in trial {i}. Yields held steady.",
        authors=["A. Author"],
        year=2020,
        doi=f"10.5555/fair.{i}",
        source=NAME,
        rank=i,
    )
    for i in range(600)
]


class Shelf:
    """A source answering every query at once with the first ``size`` of ``DOCUMENTS``."""

    name = NAME

    async def pages(self, query: str, size: int, http: SourceHttp) -> AsyncIterator[Page]:
        yield Page(documents=DOCUMENTS[:size])


def _worker_main(settings: Settings) -> None:
    """A worker process as ``litminer worker`` runs it, with the in-memory source."""
    from services.worker import run_worker_process  # noqa: PLC0415

    run_worker_process(settings, THREADS, "WARNING", sources={NAME: Shelf()})


@contextmanager
def workers(settings: Settings, service: JobService) -> Iterator[None]:
    """PROCESSES worker processes on ``settings``, once their heartbeats show (fair sharing sizes its window
    from them); stopped at the end."""
    with worker_processes(service, PROCESSES, _worker_main, settings):
        deadline = time.monotonic() + 60
        while len(service.store.workers.live()) < PROCESSES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{PROCESSES} worker processes did not start in 60 s")
            time.sleep(0.05)
        yield


class Owner:
    """Submits jobs as one owner (a client id of its own), each with a question of its own."""

    def __init__(self, service: JobService, name: str) -> None:
        self.service = service
        self.client_id = f"{name}-{uuid.uuid4().hex[:6]}"
        self.jobs = 0

    def submit(self, documents: int) -> str:
        self.jobs += 1
        request = GenerateRequest(
            user_query=f"{QUERY} ({self.client_id} job {self.jobs})",
            rows=documents // 5,
            field_definitions=FIELDS,
            sources=[NAME],
            client_id=self.client_id,
        )
        return self.service.submit(request).task_id


def follow(service: JobService, task_id: str, *, until: str | None = None) -> list[Event]:
    """The job's events until its terminal one (or until one whose message contains ``until``)."""
    events: list[Event] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for raw in service.store.events.history(task_id, after=events[-1].seq if events else 0, block_ms=200):
            events.append(decode_event(raw))
            if events[-1].status in TERMINAL_STATUSES or (until is not None and until in events[-1].message):
                if events[-1].status in {"error", "cancelled"}:
                    raise RuntimeError(f"job {task_id} ended {events[-1].status}: {events[-1].message}")
                return events
    raise RuntimeError(f"job {task_id} did not get there in {TIMEOUT_S:.0f} s; last event: {events[-1:]}")


def duration_s(service: JobService, task_id: str) -> float:
    """Seconds from a finished job's first event (queued) to its last (completed)."""
    events = follow(service, task_id)
    return round(events[-1].timestamp - events[0].timestamp, 2)


def finished(service: JobService, task_id: str) -> bool:
    job = service.store.jobs.load(task_id)
    return job is not None and job.status in TERMINAL_STATUSES


def measure(base: Settings, big: int, window: int, reserve: int = 0) -> dict[str, object]:
    """On a fresh key prefix and fresh workers with fair-sharing ``window``: the small job idle, the big job
    alone, then small jobs one after the other while the big job runs again."""
    prefix = f"bench-fair-{uuid.uuid4().hex[:8]}:"
    settings = msgspec.structs.replace(base, key_prefix=prefix, fair_window=window, fair_reserve=reserve)
    service = JobService(settings, sources=[NAME])
    try:
        with workers(settings, service):
            a, b = Owner(service, "owner-a"), Owner(service, "owner-b")
            duration_s(service, b.submit(SMALL_DOCUMENTS))  # warms up the workers' connections: not counted
            idle = [duration_s(service, b.submit(SMALL_DOCUMENTS)) for _ in range(IDLE_RUNS)]
            alone_s = duration_s(service, a.submit(big))
            big_job = a.submit(big)
            follow(service, big_job, until="batch 2 started")  # A's batches run
            loaded: list[float] = []
            while not loaded or not finished(service, big_job):  # one after the other, while A's job runs
                small = b.submit(SMALL_DOCUMENTS)
                small_s = duration_s(service, small)
                if not loaded or not finished(service, big_job):
                    loaded.append(small_s)
            big_s = duration_s(service, big_job)
    finally:
        service.close()
    idle_s, loaded_s = round(statistics.median(idle), 2), round(statistics.median(loaded), 2)
    return {
        "window": window or PROCESSES * (THREADS - reserve),
        "small_idle_s": idle_s,
        "small_idle_runs_s": idle,
        "small_under_load_s": loaded_s,
        "small_under_load_runs_s": loaded,
        "ratio": round(loaded_s / idle_s, 1),
        "big_alone_s": alone_s,
        "big_s": big_s,
        "small_jobs_during_big": len(loaded),
    }


def run(quick: bool) -> dict[str, object]:
    for name in ("", "dramatiq", "pipeline", "services"):
        logging.getLogger(name).setLevel(logging.WARNING)
    big = 200 if quick else 500
    with EmbeddedRedis() as server, FakeLLM() as llm, tempfile.TemporaryDirectory(prefix="litminer-bench-") as folder:
        llm.latency_s = LATENCY_S
        llm.responder = reader
        base = Settings(
            redis_url=server.url,
            sources=(NAME,),
            index_dir=folder,
            openai_base_url=llm.url,
            openai_api_key="bench",
            llm_model="bench-model",
            docs_per_row=5,
            max_documents=big,
            max_rows=big // 5,
            screening_threshold=0.0,  # every document of the shelf is read: the jobs' sizes are exact
            rate_limit_per_minute=0,
        )
        results = {
            f"fair sharing (window: the {PROCESSES * THREADS} threads)": measure(base, big, 0),
            f"fair sharing, 1 thread per worker reserved (window {PROCESSES * (THREADS - 1)})": measure(
                base, big, 0, reserve=1
            ),
            "first come, first served (window 100,000)": measure(base, big, UNLIMITED),
        }
    batches = -(-big // base.extract_batch_size)
    print(
        f"\n## fairness: owner B's {SMALL_DOCUMENTS}-document job while owner A's {big}-document job runs "
        f"({batches} batches), {PROCESSES} × {THREADS} worker threads, stand-in LLM at {LATENCY_S * 1000:.0f} ms\n"
    )
    print("| mode | B idle s (median of 3) | B under A's job s (median of n) | ratio | A alone s | A with B's jobs s |")
    print("|---|---|---|---|---|---|")
    for label, m in results.items():
        runs = m["small_under_load_runs_s"]
        assert isinstance(runs, list)
        loaded = f"{m['small_under_load_s']} (n = {len(runs)}, max {max(runs)})"
        row = f"| {label} | {m['small_idle_s']} | {loaded} | {m['ratio']}× | {m['big_alone_s']} | {m['big_s']} |"
        print(row)
    print("\nTarget: B under load ≤ 3× B idle with fair sharing (the default, and with the reserve).")
    return {
        "big_documents": big,
        "small_documents": SMALL_DOCUMENTS,
        "latency_s": LATENCY_S,
        "worker_processes": PROCESSES,
        "worker_threads": THREADS,
        "modes": results,
        "quick": quick,
    }
