"""The search stage inside real jobs: online stand-ins, a real worker, events through Redis."""

from __future__ import annotations

from contracts import Document, GenerateRequest
from tests.conftest import follow, wait_for
from tests.fixtures.requests import seed_request
from tests.fixtures.scholarly import Reply

QUESTION = "irrigation water treatment technologies"


def request(**changes: object) -> GenerateRequest:
    return seed_request(**{"user_query": QUESTION, "rows": 3, **changes})


def test_a_job_searches_the_online_sources_and_reports_each_one(online_settings, make_jobs, run_worker, scholarly):
    jobs = make_jobs(settings_=online_settings)
    run_worker(settings_=online_settings)
    job = jobs.submit(request())
    events = follow(jobs, job.task_id)
    assert events[-1].status == "completed", events[-1].message
    search = [e for e in events if e.stage == "search"]
    plan = next(e for e in search if e.message.startswith("Searching "))
    assert plan.data["sources"] == "openalex,europepmc,crossref,arxiv" and plan.data["target"] == 12
    assert plan.data["queries"] == '"irrigation water treatment technologies" | irrigation water treatment technologies'
    assert any(e.message.startswith("openalex: ") for e in search)
    handed = next(e for e in events if e.stage == "search" and e.message.startswith("Kept "))
    assert handed.data["found_openalex"] and handed.data["duplicates"] and handed.data["without_text"] == 1
    documents = jobs.store.jobs.inputs(job.task_id, "documents").get("documents", list[Document])
    assert len(documents) == handed.data["documents"] and all(d.abstract or d.full_text for d in documents)
    assert len({d.title for d in documents}) == len(documents)


def test_a_request_may_narrow_the_sources_and_a_failing_one_does_not_fail_the_job(
    online_settings, make_jobs, run_worker, scholarly
):
    scholarly.script("/crossref/works", *[Reply(status=500)] * 3)
    jobs = make_jobs(settings_=online_settings)
    run_worker(settings_=online_settings)
    job = jobs.submit(request(sources=["crossref", "openalex"]))
    events = follow(jobs, job.task_id)
    assert events[-1].status == "completed"
    failed = [e for e in events if e.message.startswith("Source crossref failed")]
    assert len(failed) == 1 and failed[0].data["source"] == "crossref" and "HTTP 500" in str(failed[0].data["error"])
    assert scholarly.calls("/europepmc/search") == [] and scholarly.calls("/arxiv/query") == []


def test_every_source_failing_ends_the_job_as_error_with_each_reason(online_settings, make_jobs, run_worker, scholarly):
    scholarly.script("/crossref/works", *[Reply(status=404, body=b"Resource not found.")] * 8)
    scholarly.script("/arxiv/query", *[Reply(body=b"<html>down</html>")] * 8)
    jobs = make_jobs(settings_=online_settings)
    run_worker(settings_=online_settings)
    job = jobs.submit(request(sources=["crossref", "arxiv"]))
    events = follow(jobs, job.task_id)
    assert events[-1].status == "error"
    assert "crossref: HTTP 404" in events[-1].message and "arxiv: malformed response" in events[-1].message


def test_a_retried_job_reads_the_cache_instead_of_asking_again(online_settings, make_jobs, run_worker, scholarly):
    jobs = make_jobs(settings_=online_settings)
    run_worker(settings_=online_settings)
    first = follow(jobs, jobs.submit(request(sources=["openalex"])).task_id)
    asked = len(scholarly.calls("/openalex/works"))
    second = follow(jobs, jobs.submit(request(sources=["openalex"])).task_id)
    assert first[-1].status == second[-1].status == "completed"
    assert asked >= 1 and len(scholarly.calls("/openalex/works")) == asked


def test_seed_question_on_the_sample_corpus_puts_treatment_technologies_first(settings):
    import asyncio

    from pipeline.screening import topic
    from pipeline.sources.http import SourceHttp
    from pipeline.sources.registry import available_sources
    from pipeline.stages.search import search
    from pipeline.text import plan_queries

    question = "water treatment technologies used in specialty crop production"
    local = available_sources(settings)["local"]

    async def run() -> list[Document]:
        async with SourceHttp.open(settings) as http:
            found = await search(topic(question), plan_queries(question), [local], 20, http=http, pool_size=60)
            return found.documents

    documents = asyncio.run(run())
    assert len(documents) == 20 and [d.rank for d in documents] == list(range(1, 21))
    top = " ".join(d.title.lower() for d in documents[:5])
    assert sum(word in top for word in ("treatment", "osmosis", "wetlands", "chlorination", "filtration")) >= 3


def test_cancelling_a_job_while_it_waits_on_a_slow_source_frees_the_worker(
    online_settings, make_jobs, run_worker, scholarly
):
    import time

    import msgspec

    settings = msgspec.structs.replace(online_settings, http_timeout_s=90.0)
    scholarly.script("/openalex/works", Reply(delay_s=60.0))  # longer than the second job may take
    jobs = make_jobs(settings_=settings)
    run_worker(settings_=settings, threads=1)
    job = jobs.submit(request(sources=["openalex"]))
    wait_for(lambda: scholarly.calls("/openalex/works"), what="the search to reach OpenAlex")
    cancelled_at = time.monotonic()
    jobs.cancel(job.task_id)
    # the only worker thread must be interrupted inside the search's event loop, not after the 60 s answer
    second = jobs.submit(request(sources=["openalex"]))
    events = follow(jobs, second.task_id, timeout=30)
    assert events[-1].status == "completed"
    print(f"second job done {time.monotonic() - cancelled_at:.2f} s after the cancel")
    assert jobs.store.jobs.get_output(job.task_id, "documents", list[Document]) is None
    record = jobs.store.jobs.load(job.task_id)
    assert record is not None and record.status == "cancelled" and record.stage == "search"
