"""Cost estimates over real HTTP: the API, real workers and Redis, the real openai client against a stand-in LLM."""

from __future__ import annotations

import json
import uuid

import httpx
import msgspec
import psycopg
import pytest
import redis

from contracts import Estimate
from pipeline.extractors.chunks import request_tokens
from pipeline.settings import Settings
from pipeline.store import ARCHIVE_QUEUE
from services.cli import main
from tests.conftest import follow, wait_for
from tests.fixtures.llm import FakeLLM

QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    {"name": "technology_name", "type": "str", "description": "Name of the technology or practice"},
    {"name": "description", "type": "str", "description": "What it does", "required": False},
    {"name": "year", "type": "int", "description": "Year it was studied", "required": False},
]
BODY = {"user_query": QUERY, "rows": 2, "model_name": "Practices", "field_definitions": FIELDS}
PRICES = {"fake-model": (0.15, 0.60)}


@pytest.fixture
def estimating(llm_settings: Settings, make_jobs, run_worker, serve_api):
    """A job service, a worker and the API on the stand-in LLM's settings (prices set); the API's URL."""
    settings = msgspec.structs.replace(llm_settings, llm_prices=PRICES)
    jobs = make_jobs(settings_=settings)
    run_worker(settings_=settings)
    return jobs, serve_api(settings)


def start(url: str, **changes: object) -> str:
    reply = httpx.post(f"{url}/api/v1/datasets/estimate", json=BODY | changes)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["task_id"])


def estimate_of(url: str, task_id: str) -> Estimate:
    reply = httpx.get(f"{url}/api/v1/tasks/{task_id}/estimate")
    assert reply.status_code == 200, reply.text
    return msgspec.json.decode(reply.content, type=Estimate)


def run_for_real(url: str, jobs, task_id: str, **changes: object) -> str:
    """Reprocess the estimate from extraction (reusing its search) and follow the new job to its end."""
    reply = httpx.post(f"{url}/api/v1/tasks/{task_id}/reprocess", json={"from_stage": "extraction", **changes})
    assert reply.status_code == 202, reply.text
    real = str(reply.json()["task_id"])
    assert follow(jobs, real)[-1].status == "completed"
    return real


def sent_tokens(llm: FakeLLM) -> int:
    """What the requests the stand-in received come to, counted as the estimate counts."""
    total = 0
    for call in [*llm.screenings, *llm.calls]:
        reply_format = call.body.get("response_format")
        total += request_tokens(call.messages, reply_format if isinstance(reply_format, dict) else None)
    return total


def test_an_estimate_calls_no_llm_and_counts_what_the_real_run_then_sends(estimating, llm):
    jobs, url = estimating
    task_id = start(url)
    events = follow(jobs, task_id)

    assert llm.calls == [] and llm.screenings == []  # neither screening nor extraction was asked
    last = events[-1]
    assert (last.status, last.stage, last.progress) == ("completed", "done", 100)
    assert last.data["kind"] == "estimate_ready" and last.message.startswith("Estimate: ")
    assert {"search", "extraction"} <= {e.stage for e in events}  # it searched like any job
    estimate = estimate_of(url, task_id)
    assert estimate.task_id == task_id and estimate.documents == 8 and estimate.batches == 2
    assert (estimate.extractor, estimate.model, estimate.completion_basis) == ("openai", "fake-model", "guess")
    assert last.data["calls"] == estimate.calls == estimate.screening_calls + estimate.extraction_calls
    assert last.data["prompt_tokens"] == estimate.prompt_tokens and last.data["cost_usd"] == estimate.cost_usd
    status = httpx.get(f"{url}/tasks/{task_id}").json()
    assert status["status"] == "completed" and status["result"] is None

    real = run_for_real(url, jobs, task_id)

    assert len(llm.screenings) == estimate.screening_calls == 2
    assert len(llm.calls) == estimate.extraction_calls == estimate.documents  # the screener kept every document
    assert estimate.prompt_tokens == sent_tokens(llm)  # the very requests the estimate counted were sent
    assert abs(estimate.prompt_tokens - llm.prompt_tokens) <= 0.15 * llm.prompt_tokens  # the stand-in: chars / 4
    assert estimate.completion_tokens > 0
    dataset = httpx.get(f"{url}/api/v1/datasets/{real}")
    assert dataset.status_code == 200 and len(dataset.json()["rows"]) == 2
    stats = dataset.json()["stats"]["extraction"]
    assert stats["llm_calls"] == estimate.calls

    # The real run taught the deployment how this model answers: the next estimate scales its guess by it.
    second = start(url)
    follow(jobs, second)
    again = estimate_of(url, second)
    assert (again.completion_basis, again.history_runs) == ("history", 1)
    assert abs(again.completion_tokens - llm.completion_tokens) <= 0.05 * llm.completion_tokens


def test_chunks_of_a_long_full_text_are_counted_as_the_extractor_sends_them(
    tmp_path, llm_settings: Settings, make_jobs, run_worker, serve_api, llm
):
    filler = " ".join(f"Plot {i} was irrigated with filtered water and observed weekly." for i in range(400))
    record = {
        "id": "long",
        "title": "Sand filtration of irrigation water in strawberry fields",
        "abstract": "Sand filtration removed suspended solids from irrigation water.",
        "full_text": filler,
    }
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps(record) + "\n", encoding="utf-8")
    settings = msgspec.structs.replace(llm_settings, corpus=str(corpus), llm_chunk_tokens=800)
    jobs = make_jobs(settings_=settings)
    run_worker(settings_=settings)
    url = serve_api(settings)
    task_id = start(url, rows=1)
    follow(jobs, task_id)
    estimate = estimate_of(url, task_id)

    run_for_real(url, jobs, task_id)

    assert estimate.documents == 1 and estimate.extraction_calls == len(llm.calls) >= 4
    assert estimate.prompt_tokens == sent_tokens(llm)
    assert abs(estimate.prompt_tokens - llm.prompt_tokens) <= 0.15 * llm.prompt_tokens


def test_money_and_a_budget_the_estimate_exceeds(llm_settings, make_jobs, run_worker, serve_api, llm):
    # one document per batch, so that the real run's budget check comes between documents
    settings = msgspec.structs.replace(llm_settings, llm_prices=PRICES, extract_batch_size=1)
    jobs = make_jobs(settings_=settings)
    run_worker(settings_=settings)
    url = serve_api(settings)
    task_id = start(url, max_tokens=3000)
    events = follow(jobs, task_id)
    estimate = estimate_of(url, task_id)

    price_in, price_out = PRICES["fake-model"]
    assert (estimate.input_price, estimate.output_price) == (price_in, price_out)
    expected = (estimate.prompt_tokens * price_in + estimate.completion_tokens * price_out) / 1_000_000
    assert estimate.cost_usd == round(expected, 6) and estimate.cost_usd > 0
    assert estimate.budget == 3000 and estimate.over_budget
    assert 0 < estimate.documents_within_budget < estimate.documents
    data = events[-1].data
    assert (data["budget"], data["over_budget"]) == (3000, True)
    assert data["documents_within_budget"] == estimate.documents_within_budget
    assert "over the budget of 3,000 tokens" in events[-1].message

    # Run for real, the job keeps the estimate's budget and stops extraction when it is spent.
    real = run_for_real(url, jobs, task_id)
    stats = httpx.get(f"{url}/api/v1/datasets/{real}").json()["stats"]["extraction"]
    assert stats["budget_exhausted"] and stats["documents_skipped"] > 0

    # A larger budget given when reprocessing replaces it.
    bigger = run_for_real(url, jobs, task_id, max_tokens=10**9)
    stats = httpx.get(f"{url}/api/v1/datasets/{bigger}").json()["stats"]["extraction"]
    assert not stats["budget_exhausted"] and stats["documents_skipped"] == 0


def test_a_model_without_a_price_has_no_cost_and_the_heuristic_extractor_costs_nothing(
    llm_settings, make_jobs, run_worker, serve_api, llm
):
    jobs = make_jobs(settings_=llm_settings)
    run_worker(settings_=llm_settings)
    url = serve_api(llm_settings)
    priced = start(url)
    free = start(url, extractor="heuristic")
    follow(jobs, priced)
    follow(jobs, free)

    unpriced = estimate_of(url, priced)
    assert unpriced.calls > 0 and unpriced.cost_usd is None and unpriced.input_price is None
    heuristic = estimate_of(url, free)
    assert (heuristic.extractor, heuristic.calls, heuristic.prompt_tokens, heuristic.completion_tokens) == (
        "heuristic",
        0,
        0,
        0,
    )
    assert heuristic.cost_usd == 0 and heuristic.completion_basis == "none" and heuristic.documents > 0
    assert llm.calls == [] and llm.screenings == []


def test_datasets_of_an_estimate_and_estimates_of_other_tasks_are_409s(estimating):
    jobs, url = estimating
    task_id = start(url)
    follow(jobs, task_id)
    for path in ("", "/papers", "/citations", "/references"):
        reply = httpx.get(f"{url}/api/v1/datasets/{task_id}{path}")
        assert reply.status_code == 409, (path, reply.text)
        assert reply.json()["detail"] == (
            f'task {task_id} is an estimate; run it with POST /api/v1/tasks/{task_id}/reprocess {{"from_stage": '
            '"extraction"}'
        )

    generated = httpx.post(f"{url}/api/v1/datasets/generate", json=BODY).json()["task_id"]
    reply = httpx.get(f"{url}/api/v1/tasks/{generated}/estimate")
    assert reply.status_code == 409 and f"task {generated} is not an estimate" in reply.json()["detail"]

    unknown = str(uuid.uuid4())
    reply = httpx.get(f"{url}/api/v1/tasks/{unknown}/estimate")
    assert reply.status_code == 404 and unknown in reply.json()["detail"]


def test_an_estimate_not_done_yet_is_a_409(settings: Settings, make_jobs, api_url):
    make_jobs()  # no worker: it stays queued
    task_id = start(api_url)
    reply = httpx.get(f"{api_url}/api/v1/tasks/{task_id}/estimate")
    assert reply.status_code == 409
    assert reply.json()["detail"] == f"task {task_id} is queued (stage queued); the estimate exists once it completes"


@pytest.mark.parametrize("value", [0, -5, "many"])
def test_a_bad_max_tokens_is_a_400_naming_the_field(api_url, value):
    for path in ("generate", "estimate"):
        reply = httpx.post(f"{api_url}/api/v1/datasets/{path}", json=BODY | {"max_tokens": value})
        assert reply.status_code == 400, reply.text
        assert reply.json()["field"] == "max_tokens"


def test_cli_generate_estimate_prints_the_table_and_how_to_run_it(estimating, capsys, llm):
    _, url = estimating
    code = main(["generate", QUERY, "--rows", "2", "--fields", json.dumps(FIELDS), "--estimate", "--api", url])
    printed = capsys.readouterr().out

    assert code == 0, printed
    task_id = printed.splitlines()[0].split()[1].rstrip(":")
    estimate = estimate_of(url, task_id)
    for column in ("documents", "LLM calls", "input tokens", "output tokens", "cost", "budget"):
        assert column in printed
    assert f"{estimate.prompt_tokens:,}" in printed and f"${estimate.cost_usd:.4f}" in printed
    assert f"litminer reprocess {task_id} --from-stage extraction --api {url}" in printed
    assert llm.calls == [] and llm.screenings == []


def test_cli_estimate_with_embedded_is_refused(capsys):
    code = main(["generate", QUERY, "--fields", json.dumps(FIELDS), "--estimate", "--embedded"])
    assert code == 2 and "--estimate" in capsys.readouterr().err


def test_an_estimate_is_archived_without_a_dataset_and_still_says_how_to_run_it_once_expired(
    settings: Settings, database_url: str, serve_api, make_jobs, run_worker
):
    archived = msgspec.structs.replace(settings, database_url=database_url)
    url = serve_api(archived)
    jobs = make_jobs(settings_=archived)
    worker = run_worker(settings_=archived)
    task_id = start(url)
    assert follow(jobs, task_id)[-1].data["kind"] == "estimate_ready"
    worker.runtime.broker.join(ARCHIVE_QUEUE, timeout=30_000)

    def archived_rows() -> list[int]:
        with psycopg.connect(database_url) as conn:
            tables = ("archived_jobs", "archived_datasets")
            found = [
                conn.execute(f"SELECT count(*) FROM {t} WHERE task_id = %s".encode(), [task_id]).fetchone()
                for t in tables
            ]
        return [int(row[0]) if row else 0 for row in found]

    wait_for(lambda: archived_rows()[0] == 1, what="the estimate archived")
    assert archived_rows() == [1, 0]  # the job, no dataset

    client = redis.Redis.from_url(archived.redis_url)  # expired in Redis, as the TTL would have it
    client.delete(*client.scan_iter(match=f"{archived.key_prefix}*{task_id}*"))
    client.close()

    status = httpx.get(f"{url}/tasks/{task_id}").json()
    assert (status["status"], status["result"]) == ("completed", None)
    reply = httpx.get(f"{url}/api/v1/datasets/{task_id}")
    assert reply.status_code == 409 and f"task {task_id} is an estimate" in reply.json()["detail"]
