"""LLM calls within the provider's limits: extractors sharing one Redis (as worker processes do), a stand-in
provider enforcing requests and tokens per window with real 429s, and jobs that never lose a document to one.

Windows are two seconds here (providers count per minute) so that the tests run fast.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import msgspec
import pytest
import redis

from contracts import Document, FieldDefinition, PreparedSchema
from pipeline.errors import ExtractionError
from pipeline.extractors.base import Extraction
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.extractors.llm import OpenAIExtractor
from pipeline.schema import prepare_schema
from pipeline.settings import Settings
from pipeline.store.keys import Keys
from pipeline.store.llm_limits import LLMLimits, provider_id
from tests.conftest import follow, wait_for
from tests.fixtures.llm import FakeLLM, ProviderLimits, Reply
from tests.integration.test_llm_extraction import reader, request

WINDOW_S = 2.0
SCHEMA: PreparedSchema = prepare_schema(
    "Practices",
    [
        FieldDefinition(name="technology_name", type="str", description="Name of the technology or practice"),
        FieldDefinition(name="description", type="str", description="What it does", required=False),
    ],
)
QUERY = "water treatment technologies used in specialty crop production"


def documents(count: int, prefix: str = "") -> list[Document]:
    return [
        Document(
            id=f"{prefix}{i}",
            title=f"Slow sand filtration of irrigation water, trial {prefix}{i}",
            source="local",
            abstract=f"Slow sand filtration removed Pythium from recycled irrigation water in trial {prefix}{i}. "
            "Yields held steady over two seasons.",
        )
        for i in range(count)
    ]


def extract_in_threads(settings: Settings, workers: int, each: int, *, adaptive: bool = True) -> list[Extraction]:
    """``workers`` extractors, each on an event loop and Redis connection of its own in a thread (as worker
    processes are), extracting ``each`` documents at once; every extraction."""
    results: list[Extraction] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        async def run() -> list[Extraction]:
            extractor = OpenAIExtractor(settings, adaptive=adaptive, window_s=WINDOW_S)
            try:
                return await asyncio.gather(
                    *(extractor.extract(QUERY, SCHEMA, d) for d in documents(each, f"w{index}-"))
                )
            finally:
                await extractor.close()

        found = asyncio.run(run())
        with lock:
            results.extend(found)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == workers * each
    return results


@pytest.mark.parametrize("headers", [True, False], ids=["limits from headers", "limits from settings"])
def test_extractors_sharing_redis_keep_within_the_providers_requests_per_window(
    llm: FakeLLM, llm_settings: Settings, headers: bool
) -> None:
    llm.responder = reader
    llm.limits = ProviderLimits(rpm=5, window_s=WINDOW_S, headers=headers, latency_s=(0.05, 0.2))
    settings = msgspec.structs.replace(llm_settings, llm_rpm=0 if headers else 5)
    extractions = extract_in_threads(settings, workers=3, each=6)

    assert [e.failure for e in extractions] == [None] * 18
    assert all(len(e.rows) == 1 for e in extractions)
    assert len(llm.admitted) == 18
    assert llm.busiest_window()[0] <= 5
    # the first call of each extractor may go before any header has told the limit; every later one waits
    assert llm.rate_limited == sum(e.rate_limited for e in extractions) <= 3


def test_extractors_sharing_redis_keep_within_the_providers_tokens_per_window(
    llm: FakeLLM, llm_settings: Settings
) -> None:
    llm.responder = reader
    llm.limits = ProviderLimits(tpm=2200, window_s=WINDOW_S, latency_s=(0.05, 0.2))
    extractions = extract_in_threads(llm_settings, workers=2, each=6)

    assert [e.failure for e in extractions] == [None] * 12
    assert len(llm.admitted) == 12
    assert llm.busiest_window()[1] <= 2200
    # the first call of each extractor may go before any header has told the limit; every later one waits
    assert llm.rate_limited == sum(e.rate_limited for e in extractions) <= 2


def test_a_storm_of_429s_at_a_fixed_concurrency_loses_no_document(llm: FakeLLM, llm_settings: Settings) -> None:
    llm.responder = reader
    llm.limits = ProviderLimits(rpm=3, window_s=1.0, headers=False)
    extractions = extract_in_threads(llm_settings, workers=2, each=6, adaptive=False)

    assert [e.failure for e in extractions] == [None] * 12
    assert llm.rate_limited > 0 and llm.rate_limited == sum(e.rate_limited for e in extractions)


def test_a_job_whose_calls_meet_429s_completes_with_every_document_and_counts_them(
    make_jobs, run_worker, llm: FakeLLM, llm_settings: Settings
) -> None:
    llm.responder = reader
    llm.limits = ProviderLimits(rpm=4, window_s=1.0, headers=False)
    jobs = make_jobs(settings_=llm_settings)
    run_worker(
        settings_=llm_settings,
        extractors={
            "openai": OpenAIExtractor(llm_settings, window_s=1.0),
            "heuristic": HeuristicExtractor(),
        },
        threads=4,
    )
    job = jobs.submit(request())
    events = follow(jobs, job.task_id, timeout=120)

    assert events[-1].status == "completed" and not [e for e in events if e.status == "retrying"]
    dataset = jobs.dataset(job.task_id)
    assert dataset is not None and dataset.stats.extraction is not None
    stats = dataset.stats.extraction
    assert stats.documents_failed == 0 and stats.documents_extracted == stats.documents > 0
    assert 0 < stats.rate_limited <= llm.rate_limited  # the screening calls' 429s are not a document's


def test_a_429_pauses_every_worker_until_its_retry_after(llm: FakeLLM, llm_settings: Settings) -> None:
    llm.responder = reader
    llm.script(Reply(status=429, headers={"retry-after-ms": "1500"}))
    keys = Keys(llm_settings.key_prefix)
    blocked = keys.llm_blocked(provider_id(llm.url, llm_settings.llm_model))
    client = redis.Redis.from_url(llm_settings.redis_url)

    async def run() -> tuple[Extraction, Extraction]:
        first, second = OpenAIExtractor(llm_settings), OpenAIExtractor(llm_settings)
        try:
            waiting = asyncio.create_task(first.extract(QUERY, SCHEMA, documents(1, "a")[0]))
            await asyncio.to_thread(wait_for, lambda: bool(client.exists(blocked)), 10, "the shared pause")
            other = await second.extract(QUERY, SCHEMA, documents(1, "b")[0])
            return await waiting, other
        finally:
            await first.close()
            await second.close()

    try:
        first, second = asyncio.run(run())
    finally:
        client.close()
    assert (first.rate_limited, second.rate_limited) == (1, 0)
    assert first.failure is None and second.failure is None
    refused, *later = llm.calls
    assert len(later) == 2
    assert all(call.received - refused.received >= 1.5 for call in later)  # the other extractor waited too


def test_cancelling_a_call_that_waits_for_the_provider_interrupts_the_wait(
    llm: FakeLLM, llm_settings: Settings
) -> None:
    async def run() -> None:
        limits = LLMLimits.connect(llm_settings)
        extractor = OpenAIExtractor(llm_settings)
        try:
            await limits.block(provider_id(llm.url, llm_settings.llm_model), 60_000)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(extractor.extract(QUERY, SCHEMA, documents(1)[0]), 0.5)
        finally:
            await extractor.close()
            await limits.close()

    asyncio.run(run())
    assert llm.calls == []


def extract_one(settings: Settings, document: Document) -> Extraction:
    """One document extracted on a fresh event loop."""
    extractor = OpenAIExtractor(settings)

    async def run() -> Extraction:
        try:
            return await extractor.extract(QUERY, SCHEMA, document)
        finally:
            await extractor.close()

    return asyncio.run(run())


def test_a_5xx_is_asked_again_up_to_the_retries_then_fails_the_batch(llm: FakeLLM, llm_settings: Settings) -> None:
    llm.responder = reader
    llm.script(Reply(status=500), Reply(status=503))
    extraction = extract_one(llm_settings, documents(1)[0])
    assert extraction.failure is None and len(extraction.rows) == 1 and len(llm.calls) == 3

    llm.script(Reply(status=500), Reply(status=502))
    with pytest.raises(ExtractionError, match="Error code: 502"):
        extract_one(msgspec.structs.replace(llm_settings, llm_retries=1), documents(1)[0])
    assert len(llm.calls) == 5


def test_a_timeout_halves_the_calls_at_once_and_is_asked_again(
    llm: FakeLLM, llm_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    llm.responder = reader
    llm.script(Reply(content='{"rows": []}', delay_s=2.0))
    settings = msgspec.structs.replace(llm_settings, llm_timeout_s=0.5, llm_concurrency=8)
    with caplog.at_level(logging.WARNING, logger="pipeline.extractors.limits"):
        extraction = extract_one(settings, documents(1)[0])

    assert extraction.failure is None and len(extraction.rows) == 1 and len(llm.calls) == 2
    assert "timed out: 4 calls at once now" in caplog.text
