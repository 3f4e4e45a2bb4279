"""The full chain on a real Redis broker with a real in-process Dramatiq worker."""

from __future__ import annotations

import asyncio
import threading

import pytest

from contracts import (
    GENERATED_SOURCE,
    CandidateRow,
    Dataset,
    Document,
    PreparedSchema,
)
from pipeline.errors import JobFinished, JobNotFound
from pipeline.extractors.base import Extraction
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.stages import extraction
from tests.conftest import follow, wait_for
from tests.fixtures.requests import seed_request


class FlakyExtractor(HeuristicExtractor):
    """Fails on the first document it sees the first ``failures`` times, then extracts like the heuristic one.

    Other documents succeed (and are cached), so a retried batch shows that finished work is kept.
    """

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        self.calls[document.id] = self.calls.get(document.id, 0) + 1
        first = next(iter(self.calls))
        if document.id == first and self.calls[document.id] <= self.failures:
            raise ConnectionError(f"upstream unavailable (call {self.calls[document.id]})")
        return await super().extract(query, schema, document)


class SlowExtractor(HeuristicExtractor):
    """Waits in short sleeps until cancelled (an abort cancels the batch's coroutine); records that."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.interrupted = threading.Event()

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.interrupted.set()
            raise
        return Extraction()


def test_full_chain_produces_cited_rows(make_jobs, run_worker, sample_records):
    jobs = make_jobs()
    run_worker()
    job = jobs.submit(seed_request())
    events = follow(jobs, job.task_id)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].status == "completed" and events[-1].progress == 100
    started = [e.stage for e in events if e.message.startswith("Stage ")]
    assert started == ["schema_preparation", "search", "extraction", "assembly"]
    assert any(e.message.startswith("Extracted 10/20") for e in events)

    dataset = jobs.dataset(job.task_id)
    assert dataset is not None and len(dataset.rows) == 5
    names = {r.row["technology_name"] for r in dataset.rows}
    assert len(names) == 5
    for row in dataset.rows:
        assert row.row["technology_id"] and row.citations
        [generated] = [c for c in row.citations if c.source_id == GENERATED_SOURCE]
        assert generated.field == "technology_id"
        for citation in row.citations:
            if citation is not generated:
                assert citation.text_span in sample_records[citation.source_id]
    record = jobs.store.jobs.load(job.task_id)
    assert record is not None and record.status == "completed" and record.stage == "done"
    assert record.result_url == f"/api/v1/datasets/{job.task_id}"


def test_every_job_key_has_the_result_ttl(make_jobs, run_worker, settings):
    jobs = make_jobs()
    run_worker()
    job = jobs.submit(seed_request())
    follow(jobs, job.task_id)
    keys = [k.decode() for k in jobs.store.client.scan_iter(f"{settings.key_prefix}*{job.task_id}*")]
    assert len(keys) >= 6  # record, seq, stream, schema, documents, candidates, dataset
    for key in keys:
        assert 0 < jobs.store.client.ttl(key) <= settings.result_ttl_s, key


def test_a_redelivered_stage_overwrites_its_output_instead_of_appending(make_jobs, run_worker):
    jobs = make_jobs()
    worker = run_worker()
    job = jobs.submit(seed_request())
    first_events = follow(jobs, job.task_id)
    before = jobs.store.jobs.get_output(job.task_id, "candidates", list[CandidateRow])
    dataset_before = jobs.dataset(job.task_id)
    assert before and dataset_before

    # The extraction message is delivered again while the job is (once more) in that stage.
    jobs.store.jobs.transition(job.task_id, status="processing", stage="extraction", reopen=True)
    extraction.process(worker.runtime, job.task_id)
    second_events = follow(jobs, job.task_id, after=first_events[-1].seq)

    assert second_events[-1].status == "completed"
    assert jobs.store.jobs.get_output(job.task_id, "candidates", list[CandidateRow]) == before
    dataset_after = jobs.dataset(job.task_id)
    assert dataset_after is not None and dataset_before is not None
    assert dataset_after.rows == dataset_before.rows
    assert dataset_after.stats.candidate_rows == dataset_before.stats.candidate_rows


def test_transient_failures_retry_with_backoff_then_complete(make_jobs, run_worker, settings):
    flaky = FlakyExtractor(failures=2)
    jobs = make_jobs()
    run_worker(extractors={"heuristic": flaky})
    job = jobs.submit(seed_request())
    events = follow(jobs, job.task_id)

    retrying = [e for e in events if e.status == "retrying"]
    assert [e.data["delay_ms"] for e in retrying] == [settings.retry_min_backoff_ms, settings.retry_min_backoff_ms * 2]
    assert all(e.stage == "extraction" for e in retrying)
    assert "upstream unavailable" in str(retrying[0].data["error"])
    assert events[-1].status == "completed"


def test_a_stage_that_always_fails_ends_in_error_with_its_message(make_jobs, run_worker, settings):
    jobs = make_jobs()
    run_worker(extractors={"heuristic": FlakyExtractor(failures=10**6)})
    job = jobs.submit(seed_request())
    events = follow(jobs, job.task_id)

    assert len([e for e in events if e.status == "retrying"]) == settings.max_retries
    assert events[-1].status == "error" and events[-1].stage == "extraction"
    record = jobs.store.jobs.load(job.task_id)
    assert record is not None and record.status == "error"
    assert record.error is not None and "upstream unavailable" in record.error
    assert jobs.store.jobs.get_output(job.task_id, "dataset", Dataset) is None
    dead_letters = f"{settings.key_prefix}dramatiq:extraction.XQ.msgs"
    # the worker dead-letters the message just after publishing the error event
    wait_for(lambda: jobs.store.client.hlen(dead_letters) == 1, what="the message in the dead-letter queue")
    dead = jobs.store.client.hgetall(dead_letters)
    assert len(dead) == 1 and b"upstream unavailable" in next(iter(dead.values()))  # the dead-letter queue keeps it


def test_revoking_a_queued_job_cancels_it_without_running(make_jobs, run_worker):
    jobs = make_jobs()
    job = jobs.submit(seed_request())  # no worker yet: it stays queued
    cancelled = jobs.cancel(job.task_id)
    assert cancelled.status == "cancelled"
    assert jobs.cancel(job.task_id).status == "cancelled"  # a second revoke returns the current status

    worker = run_worker()
    jobs.store.queues.broker.join("schema_preparation")
    worker.join()
    record = jobs.store.jobs.load(job.task_id)
    assert record is not None and record.status == "cancelled" and record.stage == "queued"
    assert jobs.store.jobs.get_output(job.task_id, "schema", PreparedSchema) is None
    events = follow(jobs, job.task_id)
    assert [e.status for e in events] == ["started", "cancelled"]


def test_revoking_a_running_job_aborts_it_and_later_stages_never_run(make_jobs, run_worker):
    slow = SlowExtractor()
    jobs = make_jobs()
    run_worker(extractors={"heuristic": slow})
    job = jobs.submit(seed_request())
    assert slow.started.wait(timeout=30)
    jobs.cancel(job.task_id)
    assert slow.interrupted.wait(timeout=10), "the running stage was not interrupted"

    events = follow(jobs, job.task_id)
    assert events[-1].status == "cancelled"
    jobs.store.queues.broker.join("extraction")
    jobs.store.queues.broker.join("assembly")
    record = jobs.store.jobs.load(job.task_id)
    assert record is not None and record.status == "cancelled" and record.stage == "extraction"
    assert jobs.store.jobs.get_output(job.task_id, "candidates", list[CandidateRow]) is None
    assert jobs.store.jobs.get_output(job.task_id, "dataset", Dataset) is None
    assert not [e for e in jobs.store.events.history(job.task_id) if b'"stage":"assembly"' in e]


def test_cancelling_a_finished_job_is_refused(make_jobs, run_worker):
    jobs = make_jobs()
    run_worker()
    job = jobs.submit(seed_request())
    follow(jobs, job.task_id)
    with pytest.raises(JobFinished):
        jobs.cancel(job.task_id)
    with pytest.raises(JobNotFound):
        jobs.cancel("00000000-0000-4000-8000-000000000000")
