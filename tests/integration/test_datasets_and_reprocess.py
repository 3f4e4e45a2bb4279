"""Dataset exports and reprocessing over real HTTP, with real workers, Redis and stand-in scholarly and LLM APIs."""

from __future__ import annotations

import csv
import io
import json
import uuid

import httpx
import msgspec
import pytest

from contracts import Dataset, FieldDefinition, FieldValue, GenerateRequest, Paper
from pipeline.settings import Settings
from services.cli import main
from tests.conftest import follow
from tests.fixtures.fuzz import TIMEOUT, Tally, completed_job
from tests.fixtures.llm import FakeLLM
from tests.fixtures.scholarly import ScholarlyAPI

QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    {"name": "technology_id", "type": "str", "description": "Unique identifier", "required": True},
    {"name": "technology_name", "type": "str", "description": "Name of the technology", "required": True},
]
NEW_COLUMN = {"name": "crop", "type": "str", "description": "Crop irrigated", "required": False}


@pytest.fixture
def mining(online_settings: Settings, llm: FakeLLM) -> Settings:
    """Online sources and the LLM extractor on their stand-in servers (no arXiv: it allows one request per 3 s)."""
    return msgspec.structs.replace(
        online_settings,
        sources=("openalex", "europepmc", "crossref"),
        openai_api_key="test-openai-key",
        openai_base_url=llm.url,
        llm_model="fake",
        llm_timeout_s=5,
    )


@pytest.fixture
def stack(mining, make_jobs, run_worker, serve_api):
    """A worker and the API on the same settings; returns (jobs, API URL)."""
    jobs = make_jobs(settings_=mining)
    run_worker(settings_=mining)
    return jobs, serve_api(mining)


def generate(jobs, url: str, rows: int = 4) -> str:
    body = {"user_query": QUERY, "rows": rows, "model_name": "Treatments", "field_definitions": FIELDS}
    reply = httpx.post(f"{url}/api/v1/datasets/generate", json=body)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    assert follow(jobs, task_id)[-1].status == "completed"
    return task_id


def reprocess(jobs, url: str, task_id: str, **body: object) -> tuple[str, list[str]]:
    """Reprocess and follow the new job to its end: its id and the stages its events came from."""
    reply = httpx.post(f"{url}/api/v1/tasks/{task_id}/reprocess", json=body)
    assert reply.status_code == 202, reply.text
    assert reply.json()["parent_task_id"] == task_id
    child: str = reply.json()["task_id"]
    events = follow(jobs, child)
    assert events[-1].status == "completed", events[-1]
    return child, [e.stage for e in events]


def fetch(url: str, task_id: str, fmt: str) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/datasets/{task_id}", params={"format": fmt})


def read_csv(text: str, schema: list[FieldDefinition]) -> list[dict[str, FieldValue]]:
    """Parse the CSV export back into typed rows (the reader a spreadsheet user would write)."""
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        row: dict[str, FieldValue] = {}
        for field in schema:
            cell = record[field.name]
            if cell == "":
                row[field.name] = None
            elif field.type in ("int", "float"):
                row[field.name] = int(cell) if field.type == "int" else float(cell)
            elif field.type == "bool":
                row[field.name] = cell == "true"
            elif field.type.startswith(("list", "dict")):
                row[field.name] = json.loads(cell[1:] if cell.startswith("'") else cell)
            else:
                row[field.name] = cell[1:] if cell.startswith("'") else cell
        row["sources"], row["evidence"], row["support"] = record["sources"], record["evidence"], record["support"]
        rows.append(row)
    return rows


def test_each_export_format_parses_back_to_the_dataset(stack):
    jobs, url = stack
    task_id = generate(jobs, url)
    dataset = jobs.dataset(task_id)
    assert dataset is not None and len(dataset.rows) >= 3

    as_json = fetch(url, task_id, "json")
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["content-disposition"] == f'attachment; filename="Treatments-{task_id}.json"'
    assert msgspec.json.decode(as_json.content, type=Dataset) == dataset
    assert fetch(url, task_id, "json").content == httpx.get(f"{url}/api/v1/datasets/{task_id}").content  # default

    as_jsonl = fetch(url, task_id, "jsonl")
    assert as_jsonl.headers["content-type"] == "application/x-ndjson"
    assert as_jsonl.headers["content-disposition"].endswith(f'{task_id}.jsonl"')
    lines = as_jsonl.content.decode().splitlines()
    assert [msgspec.json.decode(line, type=type(dataset.rows[0])) for line in lines] == dataset.rows

    as_csv = fetch(url, task_id, "csv")
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"].endswith(f'{task_id}.csv"')
    header = "technology_id,technology_name,confidence,sources,evidence,support,review,row_id"
    assert as_csv.text.splitlines()[0] == header
    parsed = read_csv(as_csv.text, dataset.schema)
    assert [{k: v for k, v in r.items() if k not in ("sources", "evidence", "support")} for r in parsed] == [
        r.row for r in dataset.rows
    ]
    for parsed_row, row in zip(parsed, dataset.rows, strict=True):
        cited = [c for c in row.citations if c.source_id != "generated"]
        papers = {c.source_id: c.metadata for c in cited}
        labels = str(parsed_row["sources"]).split("; ")  # "Ruiz et al. 2021": first author's family name, year
        assert len(labels) == len(papers) == int(str(parsed_row["support"]))
        for label, paper in zip(labels, papers.values(), strict=True):
            assert label.startswith(paper.authors[0].split()[-1]) and str(paper.year) in label, (label, paper)
        assert all(c.text_span in str(parsed_row["evidence"]) for c in cited)


def test_dataset_errors_404_for_unknown_tasks_409_until_completed_400_for_bad_format(settings, make_jobs, api_url):
    jobs = make_jobs()  # no worker: the job stays queued
    job = jobs.submit(msgspec.convert({"user_query": QUERY, "field_definitions": FIELDS}, type=GenerateRequest))
    task_id = str(uuid.uuid4())
    unknown = fetch(api_url, task_id, "csv")
    assert unknown.status_code == 404 and task_id in unknown.json()["detail"]
    malformed = fetch(api_url, "no-such-task", "csv")
    assert malformed.status_code == 400 and malformed.json()["field"] == "task_id"
    queued = fetch(api_url, job.task_id, "csv")
    assert queued.status_code == 409 and "queued" in queued.json()["detail"]
    bad = fetch(api_url, job.task_id, "xlsx")
    assert bad.status_code == 400 and "format" in bad.text


@pytest.mark.timeout(180)
def test_dataset_downloads_whatever_the_model_name(
    fuzz_url: str, fuzz_settings: Settings, make_jobs, run_worker, tally: Tally
) -> None:
    """A model name is any Python identifier, so also one that Latin-1 (HTTP header text) cannot encode."""
    jobs = make_jobs(settings_=fuzz_settings)
    worker = run_worker(settings_=fuzz_settings)
    try:
        task_id = completed_job(fuzz_url, jobs, model_name="Δεδομένα")
    finally:
        worker.stop()
    label = "GET /api/v1/datasets/{task_id} (model name Δεδομένα)"
    try:
        for format in ("json", "csv", "jsonl"):
            reply = httpx.get(f"{fuzz_url}/api/v1/datasets/{task_id}", params={"format": format}, timeout=TIMEOUT)
            tally.record(label, reply.status_code)
            assert reply.status_code == 200, f"format={format}: {reply.status_code} {reply.text[:300]}"
            assert "attachment" in reply.headers["content-disposition"]
    finally:
        print(tally.line(label))


def test_reprocess_from_extraction_with_a_new_column_reads_the_same_documents_without_searching(
    stack, scholarly: ScholarlyAPI, llm: FakeLLM
):
    jobs, url = stack
    parent = generate(jobs, url)
    parent_export = fetch(url, parent, "json").content
    searches, calls = len(scholarly.requests), len(llm.calls)

    child, stages = reprocess(jobs, url, parent, from_stage="extraction", field_definitions=[*FIELDS, NEW_COLUMN])

    assert len(scholarly.requests) == searches  # no search request at all
    assert "search" not in stages and "schema_preparation" not in stages
    new_calls = llm.calls[calls:]
    old_documents = {c.document for c in llm.calls[:calls]}
    assert new_calls and {c.document for c in new_calls} == old_documents
    assert all("crop" in c.field_names for c in new_calls)
    dataset = jobs.dataset(child)
    assert dataset is not None
    assert [f.name for f in dataset.schema] == ["technology_id", "technology_name", "crop"]
    assert all("crop" in row.row for row in dataset.rows)
    assert dataset.stats.parent_task_id == parent
    assert dataset.stats.reused_stages == ["schema_preparation", "search"]
    assert set(dataset.stats.durations_s) == {"extraction", "assembly"}
    status = httpx.get(f"{url}/tasks/{child}").json()
    assert (status["parent_task_id"], status["from_stage"]) == (parent, "extraction")
    # the parent is untouched
    assert fetch(url, parent, "json").content == parent_export
    assert httpx.get(f"{url}/tasks/{parent}").json()["status"] == "completed"


def test_reprocess_from_assembly_with_fewer_rows_reuses_candidates(stack, scholarly: ScholarlyAPI, llm: FakeLLM):
    jobs, url = stack
    parent = generate(jobs, url, rows=4)
    before = jobs.dataset(parent)
    assert before is not None and len(before.rows) == 4
    searches, calls = len(scholarly.requests), len(llm.calls)

    child, stages = reprocess(jobs, url, parent, from_stage="assembly", rows=2)

    assert (len(scholarly.requests), len(llm.calls)) == (searches, calls)
    assert set(stages) == {"queued", "assembly", "done"}
    after = jobs.dataset(child)
    assert after is not None
    assert [r.row for r in after.rows] == [r.row for r in before.rows[:2]]
    assert after.stats.requested_rows == 2 and after.stats.reused_stages == [
        "schema_preparation",
        "search",
        "extraction",
    ]
    assert jobs.dataset(parent) == before


BAD_REPROCESS = [
    ({"from_stage": "assembly", "field_definitions": [*FIELDS, NEW_COLUMN]}, "field_definitions"),
    ({"from_stage": "assembly", "extractor": "heuristic"}, "extractor"),
    ({"from_stage": "extraction", "sources": ["crossref"]}, "sources"),
    ({"from_stage": "extraction", "criteria": [{"text": "greenhouse", "kind": "exclude"}]}, "criteria"),
    ({"from_stage": "search", "criteria": [{"text": ""}]}, "criteria[0].text"),
    ({"from_stage": "schema_preparation"}, "from_stage"),
    ({"rows": 2}, "from_stage"),
    ({"from_stage": "assembly", "rows": 0}, "rows"),
    ({"from_stage": "search", "sources": ["nowhere"]}, "sources"),
    ({"from_stage": "search", "field_definitions": [{"name": "bad name"}]}, "field_definitions[0].name"),
    (
        {"from_stage": "extraction", "field_definitions": [*FIELDS, {"name": "Technology_Name"}]},
        "field_definitions[2].name",
    ),
    ({"from_stage": "assembly", "colour": "red"}, "colour"),
]


def test_invalid_reprocess_requests_are_400s_naming_the_field_and_change_nothing(stack):
    jobs, url = stack
    parent = generate(jobs, url, rows=2)
    keys_before = sorted(jobs.store.client.scan_iter(f"{jobs.store.keys.prefix}job:*"))
    for body, field in BAD_REPROCESS:
        reply = httpx.post(f"{url}/api/v1/tasks/{parent}/reprocess", json=body)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["field"] == field, (body, reply.json())
    assert sorted(jobs.store.client.scan_iter(f"{jobs.store.keys.prefix}job:*")) == keys_before


def test_reprocess_refuses_unknown_and_running_parents(settings, make_jobs, api_url):
    jobs = make_jobs()  # no worker: the parent stays queued
    job = jobs.submit(msgspec.convert({"user_query": QUERY, "field_definitions": FIELDS}, type=GenerateRequest))
    unknown = httpx.post(f"{api_url}/api/v1/tasks/{uuid.uuid4()}/reprocess", json={"from_stage": "search"})
    assert unknown.status_code == 404
    malformed = httpx.post(f"{api_url}/api/v1/tasks/nope/reprocess", json={"from_stage": "search"})
    assert malformed.status_code == 400 and malformed.json()["field"] == "task_id"
    running = httpx.post(f"{api_url}/api/v1/tasks/{job.task_id}/reprocess", json={"from_stage": "search"})
    assert running.status_code == 409 and "still queued" in running.json()["detail"]


def test_reprocess_needs_the_parent_outputs_it_reuses(make_jobs, run_worker, api_url):
    jobs = make_jobs()
    run_worker()
    job = jobs.submit(msgspec.convert({"user_query": QUERY, "field_definitions": FIELDS}, type=GenerateRequest))
    follow(jobs, job.task_id)
    jobs.store.client.delete(jobs.store.keys.output(job.task_id, "candidates"))  # e.g. expired
    reply = httpx.post(f"{api_url}/api/v1/tasks/{job.task_id}/reprocess", json={"from_stage": "assembly"})
    assert reply.status_code == 409 and "no stored candidates" in reply.json()["detail"]


def test_cli_reprocess_submits_to_the_api_and_reports_bad_combinations(stack, capsys, tmp_path):
    jobs, url = stack
    parent = generate(jobs, url, rows=3)
    assert (
        main(["reprocess", parent, "--from-stage", "assembly", "--rows", "1", "--api", url, "--out", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    child = out.split()[1].rstrip(":")
    assert f"reprocessing {parent} from assembly" in out
    follow(jobs, child)
    dataset = jobs.dataset(child)
    assert dataset is not None and len(dataset.rows) == 1

    fields = json.dumps([*FIELDS, NEW_COLUMN])
    code = main(["reprocess", parent, "--from-stage", "assembly", "--fields", fields, "--api", url])
    assert code == 2
    assert "field_definitions" in capsys.readouterr().err
    assert main(["reprocess", str(uuid.uuid4()), "--from-stage", "search", "--api", url]) == 1


def test_rerun_reopens_a_finished_job_in_place(make_jobs, run_worker, settings, monkeypatch, capsys):
    jobs = make_jobs()
    run_worker()
    job = jobs.submit(
        msgspec.convert({"user_query": QUERY, "field_definitions": FIELDS, "rows": 3}, type=GenerateRequest)
    )
    last = follow(jobs, job.task_id)[-1]
    first_run = jobs.store.jobs.load(job.task_id)
    assert first_run is not None
    assert set(first_run.durations_s) == {"schema_preparation", "search", "extraction", "assembly"}
    earlier = {k: v for k, v in first_run.durations_s.items() if k != "assembly"}
    # a bare send of a finished job's stage is skipped: a late message never overwrites a finished job
    jobs.store.queues.send(jobs.store.queues.message("assembly", job.task_id))
    jobs.store.queues.broker.join("assembly", timeout=10_000)  # processed (skipped) and acknowledged
    assert jobs.store.events.history(job.task_id, after=last.seq) == []
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("LITMINER_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("LITMINER_SOURCES", "local")
    assert main(["rerun", job.task_id, "--stage", "assembly"]) == 0
    assert "re-running from assembly" in capsys.readouterr().out
    events = follow(jobs, job.task_id, after=last.seq)
    assert events[0].stage == "assembly" and events[0].message == "Re-running from stage assembly"
    assert events[-1].status == "completed"
    assert sum(e.message == "Stage assembly started" for e in events) == 1
    dataset = jobs.dataset(job.task_id)
    assert dataset is not None
    assert {k: v for k, v in dataset.stats.durations_s.items() if k != "assembly"} == earlier  # kept from run 1
    assert main(["rerun", "00000000-0000-4000-8000-000000000000", "--stage", "search"]) == 1  # unknown
    assert main(["rerun", "nope", "--stage", "search"]) == 2  # not a task id


def test_a_shortfall_is_said_in_the_final_event_and_stats_and_never_padded(make_jobs, run_worker):
    jobs = make_jobs()  # the bundled sample corpus holds far fewer than 80 water treatment technologies
    run_worker()
    job = jobs.submit(
        msgspec.convert({"user_query": QUERY, "field_definitions": FIELDS, "rows": 80}, type=GenerateRequest)
    )
    final = follow(jobs, job.task_id)[-1]
    dataset = jobs.dataset(job.task_id)
    assert dataset is not None and final.status == "completed"
    assert 0 < len(dataset.rows) < 80
    assert final.data["rows"] == len(dataset.rows) == dataset.stats.returned_rows
    assert final.data["requested_rows"] == 80
    assert final.data["shortfall"] == dataset.stats.shortfall
    assert f"only {len(dataset.rows)} of 80" in final.message
    assert dataset.stats.distinct_rows == len(dataset.rows)  # every supported row is returned, none invented


def test_reprocess_from_search_with_other_sources_searches_only_those(stack, scholarly: ScholarlyAPI):
    jobs, url = stack
    parent = generate(jobs, url, rows=2)
    searched = len(scholarly.requests)

    child, stages = reprocess(jobs, url, parent, from_stage="search", sources=["crossref"])

    # the parent's crossref answers are cached in Redis; nothing else is asked
    assert {r.route.split("/")[1] for r in scholarly.requests[searched:]} <= {"crossref"}
    assert "search" in stages and "schema_preparation" not in stages
    dataset = jobs.dataset(child)
    assert dataset is not None and dataset.stats.sources == ["crossref"]
    assert dataset.stats.reused_stages == ["schema_preparation"]


def test_the_papers_considered_download_as_json_and_csv(stack):
    jobs, url = stack
    task_id = generate(jobs, url)
    dataset = jobs.dataset(task_id)
    assert dataset.papers and dataset.stats.flow is not None
    as_json = httpx.get(f"{url}/api/v1/datasets/{task_id}/papers")
    assert as_json.headers["content-disposition"] == f'attachment; filename="Treatments-{task_id}-papers.json"'
    assert msgspec.json.decode(as_json.content, type=list[Paper]) == dataset.papers
    rows = list(csv.DictReader(io.StringIO(httpx.get(f"{url}/api/v1/datasets/{task_id}/papers?format=csv").text)))
    assert [r["id"] for r in rows] == [p.id for p in dataset.papers]
    assert {r["decision"] for r in rows} <= {"included", "excluded", "not_reached"}
    cited = {c.source_id for row in dataset.rows for c in row.citations}
    assert {r["id"] for r in rows if int(r["rows"])} == cited - {"generated"}
    assert dataset.stats.flow.cited == len(cited - {"generated"})
    # the paper without an abstract is excluded, and says why
    assert any(r["decision"] == "excluded" and r["exclusion"] == "no abstract or full text" for r in rows)
    assert httpx.get(f"{url}/api/v1/datasets/{task_id}/papers?format=xml").status_code == 400


def test_reprocess_from_search_with_criteria_screens_the_papers_again(stack):
    jobs, url = stack
    parent = generate(jobs, url, rows=2)
    criteria = [{"text": "strawberries", "kind": "exclude"}]
    child, stages = reprocess(jobs, url, parent, from_stage="search", criteria=criteria)
    assert "search" in stages
    before, after = jobs.dataset(parent), jobs.dataset(child)
    (excluded,) = [p for p in after.papers if p.exclusion == "meets an exclusion criterion"]
    assert excluded.title.startswith("Reverse osmosis") and "'strawberries'" in excluded.reason
    assert any(p.title.startswith("Reverse osmosis") and p.decision == "included" for p in before.papers)
    assert not any(r.row["technology_name"].lower().startswith("reverse osmosis") for r in after.rows)
