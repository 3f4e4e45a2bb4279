"""LLM-bound jobs at the provider's limit: a 200-document job against a stand-in provider enforcing RPM and TPM.

The provider (``tests.fixtures.llm.FakeLLM`` with ``ProviderLimits``) counts requests and tokens in a sliding
window (a minute; 5 s with ``--quick``), answers a call that does not fit with a real 429 (OpenAI's error body,
``retry-after``, ``retry-after-ms`` and ``x-ratelimit-*`` headers), sends ``x-ratelimit-*`` headers on every
answer, and takes 0.5–1.5 s per call. The job runs through the real pipeline: 2 worker processes of 8 threads,
documents from an in-memory source (``bench.fairness.Shelf``), a screening call per batch of 4 documents and a
call per document. Three modes, each with a fresh provider and key prefix (an empty window, no cached
extraction): a fixed concurrency of 8 and of 32 calls per process (no shared window: a 429 waits for its
Retry-After and is asked again) and the adaptive limiter (AIMD up to 32 per process, within the window all
workers share in Redis): once with the limits learned from the headers (the first job against a provider: each
process sends one call until the provider has answered), once with them configured (``LITMINER_LLM_RPM`` and
``LITMINER_LLM_TPM``, as every later job finds them learned).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import uuid
from contextlib import AbstractContextManager

import msgspec

from bench.extract import QUERY, reader, worker_processes
from bench.fairness import FIELDS, NAME, Shelf
from contracts import TERMINAL_STATUSES, Event, GenerateRequest, decode_event
from pipeline.extractors.base import Extractor
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.extractors.llm import OpenAIExtractor
from pipeline.jobs import JobService
from pipeline.settings import Settings
from services.embedded_redis import EmbeddedRedis
from tests.fixtures.llm import FakeLLM, ProviderLimits

PROCESSES, THREADS = 2, 8
LATENCY_S = (0.5, 1.5)
DOCS_PER_ROW = 5
#: (label, calls at once per process: fixed, or the adaptive window's ceiling; adaptive; limits configured)
MODES = [
    ("fixed 8 per process", 8, False, False),
    ("fixed 32 per process", 32, False, False),
    ("adaptive limiter (≤ 32), limits from headers", 32, True, False),
    ("adaptive limiter (≤ 32), limits known", 32, True, True),
]


class Scale(msgspec.Struct, frozen=True, kw_only=True):
    """A run's size: documents in the job, and the provider's window and limits (requests, tokens per window)."""

    documents: int
    window_s: float
    rpm: int
    tpm: int


#: 250 calls and about 140,000 tokens: 2.5 minutes at 100 requests or 2.8 at 50,000 tokens per minute
FULL = Scale(documents=200, window_s=60.0, rpm=100, tpm=50_000)
#: 38 calls and about 21,000 tokens: 2.4 windows of 16 requests or 2.1 of 10,000 tokens
QUICK = Scale(documents=30, window_s=5.0, rpm=16, tpm=10_000)


def _worker_main(settings: Settings, adaptive: bool, window_s: float) -> None:
    """A worker process as ``litminer worker`` runs it, with the in-memory source and the mode's extractor."""
    from services.worker import run_worker_process  # noqa: PLC0415

    extractors: dict[str, Extractor] = {
        "openai": OpenAIExtractor(settings, adaptive=adaptive, window_s=window_s),
        "heuristic": HeuristicExtractor(),
    }
    run_worker_process(settings, THREADS, "ERROR", sources={NAME: Shelf()}, extractors=extractors)


def workers(
    settings: Settings, service: JobService, *, adaptive: bool, window_s: float
) -> AbstractContextManager[None]:
    """PROCESSES worker processes on ``settings``, once they poll their queues; stopped at the end."""
    return worker_processes(service, PROCESSES, _worker_main, settings, adaptive, window_s)


def first_row_at(events: list[Event]) -> float | None:
    """When the first row was found: the first ``row_found`` event, else the first document that gave rows."""
    found = next((e for e in events if e.data.get("kind") == "row_found"), None)
    found = found or next(
        (e for e in events if e.data.get("kind") == "document_extracted" and int(str(e.data.get("rows", 0))) > 0),
        None,
    )
    return found.timestamp if found is not None else None


#: a mode still running after this many times the provider's limit (as the scale plans it) is stopped and
#: reported unfinished: a client that keeps sending into 429s can spend the provider's quota on refusals
GIVE_UP = 3.0


def events_until(service: JobService, task_id: str, deadline: float) -> list[Event]:
    """The job's events until its terminal one, or until ``deadline`` (monotonic)."""
    events: list[Event] = []
    while time.monotonic() < deadline:
        for raw in service.store.events.history(task_id, after=events[-1].seq if events else 0, block_ms=200):
            events.append(decode_event(raw))
            if events[-1].status in TERMINAL_STATUSES:
                return events
    return events


def measure(base: Settings, scale: Scale, concurrency: int, adaptive: bool, known: bool) -> dict[str, object]:
    """One job on a fresh provider and key prefix; its timings against the provider's limit (None when it did
    not finish in ``GIVE_UP`` × the planned limit)."""
    limits = ProviderLimits(rpm=scale.rpm, tpm=scale.tpm, window_s=scale.window_s, latency_s=LATENCY_S)
    with FakeLLM(limits) as llm:
        llm.responder = reader
        settings = msgspec.structs.replace(
            base,
            key_prefix=f"bench-llm-{uuid.uuid4().hex[:8]}:",
            openai_base_url=llm.url,
            llm_concurrency=concurrency,
            llm_rpm=scale.rpm if known else 0,
            llm_tpm=scale.tpm if known else 0,
        )
        service = JobService(settings, sources=[NAME])
        try:
            with workers(settings, service, adaptive=adaptive, window_s=scale.window_s):
                request = GenerateRequest(
                    user_query=QUERY,
                    rows=scale.documents // DOCS_PER_ROW,
                    field_definitions=FIELDS,
                    sources=[NAME],
                )
                job = service.submit(request)
                planned_s = scale.documents * 1.25 / scale.rpm * scale.window_s  # a call per document, screening
                events = events_until(service, job.task_id, time.monotonic() + 20 + GIVE_UP * planned_s)
                finished = bool(events) and events[-1].status == "completed"
                if not finished:
                    service.cancel(job.task_id)
                dataset = service.dataset(job.task_id) if finished else None
        finally:
            service.close()
    start = events[0].timestamp
    if dataset is None or dataset.stats.extraction is None:
        done = [e.data for e in events if e.data.get("kind") == "document_extracted"]
        return {
            "finished": False,
            "stopped_after_s": round(events[-1].timestamp - start, 1),
            "documents_done": int(str(done[-1]["documents_done"])) if done else 0,
            "calls": len(llm.admitted),
            "rate_limited": llm.rate_limited,
        }
    stats = dataset.stats.extraction
    calls = len(llm.admitted)
    tokens = sum(call.tokens for call in llm.admitted)
    limit_s = max(calls / scale.rpm, tokens / scale.tpm) * scale.window_s
    dataset_s = events[-1].timestamp - start
    search_s = next(e.timestamp for e in events if e.stage == "extraction") - start
    first_row = first_row_at(events)
    latency_s = statistics.median(call.latency_s for call in llm.admitted)
    busiest_calls, busiest_tokens = llm.busiest_window()
    return {
        "finished": True,
        "concurrency": concurrency,
        "adaptive": adaptive,
        "limits_configured": known,
        "documents": stats.documents,
        "documents_failed": stats.documents_failed,
        "calls": calls,
        "tokens": tokens,
        "rate_limited": llm.rate_limited,
        "rate_limited_pct": round(100 * llm.rate_limited / max(calls, 1), 1),
        "time_to_dataset_s": round(dataset_s, 1),
        "provider_limit_s": round(limit_s, 1),
        "vs_limit": round(dataset_s / limit_s, 2),
        "search_s": round(search_s, 2),
        "first_row_s": round(first_row - start, 2) if first_row is not None else None,
        "median_call_s": round(latency_s, 2),
        "first_row_target_s": round(search_s + 2 * latency_s, 2),
        "busiest_window_calls": busiest_calls,
        "busiest_window_tokens": busiest_tokens,
    }


def run(quick: bool) -> dict[str, object]:
    for name in ("", "dramatiq", "pipeline", "services"):
        logging.getLogger(name).setLevel(logging.WARNING)
    scale = QUICK if quick else FULL
    results: dict[str, dict[str, object]] = {}
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory(prefix="litminer-bench-") as folder:
        base = Settings(
            redis_url=server.url,
            sources=(NAME,),
            index_dir=folder,
            openai_api_key="bench",
            llm_model="bench-model",
            docs_per_row=DOCS_PER_ROW,
            max_documents=scale.documents,
            max_rows=scale.documents // DOCS_PER_ROW,
            screening_threshold=0.0,  # every document of the shelf is read: the job's size is exact
            rate_limit_per_minute=0,
        )
        for label, concurrency, adaptive, known in MODES:
            results[label] = measure(base, scale, concurrency, adaptive, known)
    window = "minute" if scale.window_s == 60 else f"{scale.window_s:g} s"
    print(
        f"\n## llm: a {scale.documents}-document job against a provider allowing {scale.rpm} requests and "
        f"{scale.tpm:,} tokens per {window}, {LATENCY_S[0]}–{LATENCY_S[1]} s per call; "
        f"{PROCESSES} worker processes × {THREADS} threads\n"
    )
    print(
        "| mode | time to dataset s | provider limit s | × limit | calls | 429s (% of calls) | documents failed "
        "| search s | first row s | search + 2 × median call s | busiest window: calls, tokens |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, m in results.items():
        if not m["finished"]:
            print(
                f"| {label} | not finished: stopped after {m['stopped_after_s']} s with {m['documents_done']} of "
                f"{scale.documents} documents read | | | {m['calls']} | {m['rate_limited']} | | | | | |"
            )
            continue
        print(
            f"| {label} | {m['time_to_dataset_s']} | {m['provider_limit_s']} | {m['vs_limit']}× | {m['calls']} "
            f"| {m['rate_limited']} ({m['rate_limited_pct']} %) | {m['documents_failed']} | {m['search_s']} "
            f"| {m['first_row_s']} | {m['first_row_target_s']} "
            f"| {m['busiest_window_calls']}, {m['busiest_window_tokens']:,} |"
        )
    print(
        "\nProvider limit: max(calls ÷ requests limit, tokens ÷ tokens limit) × the window. Targets (adaptive): "
        "time to dataset ≤ 1.1 × the limit, 0 documents failed, 429s ≤ 5 % of calls, first row ≤ search + 2 × "
        "the median call."
    )
    return {
        "documents": scale.documents,
        "window_s": scale.window_s,
        "rpm": scale.rpm,
        "tpm": scale.tpm,
        "latency_s": list(LATENCY_S),
        "worker_processes": PROCESSES,
        "worker_threads": THREADS,
        "modes": results,
        "quick": quick,
    }
