"""Exports that cite, over real HTTP: a real job on stand-in scholarly APIs, reviewed, then its citations table and
references downloaded as a user would, and read back with bibtexparser, rispy and json."""

from __future__ import annotations

import csv
import io
import json

import httpx
import msgspec
import pytest
import rispy  # type: ignore[import-untyped]
from bibtexparser.entrypoint import parse_string

from contracts import GENERATED_SOURCE, Dataset, DatasetRow
from pipeline.export import CITATION_COLUMNS, CitationLine
from pipeline.settings import Settings
from tests.conftest import follow

QUERY = "water treatment technologies used in specialty crop production"
FIELDS = [
    {"name": "technology_id", "type": "str", "description": "Unique identifier", "required": True},
    {"name": "technology_name", "type": "str", "description": "Name of the technology", "required": True},
]


@pytest.fixture
def reviewed(online_settings: Settings, make_jobs, run_worker, serve_api) -> tuple[str, str, Dataset, Dataset]:
    """A finished job on the stand-in APIs with one row excluded and a cell of another rejected, over HTTP.

    Returns the API's URL, the task id, and the dataset as reviewed and as extracted.
    """
    settings = msgspec.structs.replace(online_settings, sources=("openalex", "europepmc", "crossref"))
    jobs = make_jobs(settings_=settings)
    run_worker(settings_=settings)
    url = serve_api(settings)
    body = {"user_query": QUERY, "rows": 4, "model_name": "Treatments", "field_definitions": FIELDS}
    reply = httpx.post(f"{url}/api/v1/datasets/generate", json={**body, "extractor": "heuristic"})
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    assert follow(jobs, task_id)[-1].status == "completed"
    original = jobs.dataset(task_id)
    assert len(original.rows) >= 3
    first, second = original.rows[0].row_id, original.rows[1].row_id
    for row_id, change in [(first, {"action": "exclude"}), (second, {"action": "reject", "field": "technology_name"})]:
        answer = httpx.patch(f"{url}/api/v1/datasets/{task_id}/rows/{row_id}", json=change)
        assert answer.status_code == 200, answer.text
    return url, task_id, jobs.dataset(task_id), original


def get(url: str, task_id: str, export: str, **params: str) -> httpx.Response:
    reply = httpx.get(f"{url}/api/v1/datasets/{task_id}/{export}", params=params)
    assert reply.status_code == 200, reply.text
    return reply


def kept(dataset: Dataset) -> list[DatasetRow]:
    return [row for row in dataset.rows if not (row.review and row.review.excluded)]


def cited(rows: list[DatasetRow]) -> set[str]:
    """The papers the rows' values cite: no generated identifiers, no quotes of rejected cells."""
    return {
        c.source_id
        for row in rows
        for c in row.citations
        if c.source_id != GENERATED_SOURCE
        and not (row.review and c.field in row.review.cells and row.review.cells[c.field].status == "rejected")
    }


def test_citations_download_as_csv_and_jsonl_without_excluded_rows(reviewed):
    url, task_id, dataset, original = reviewed
    excluded = dataset.rows[0].row_id
    expected = [(row.row_id, c.text_span) for row in kept(dataset) for c in row.citations if c.source_id != "generated"]
    assert expected and len(kept(dataset)) == len(dataset.rows) - 1

    as_csv = get(url, task_id, "citations", format="csv")
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = f'attachment; filename="Treatments-{task_id}-citations.csv"'
    assert as_csv.headers["content-disposition"] == disposition
    lines = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(lines[0]) == list(CITATION_COLUMNS)
    assert [(line["row_id"], line["quote"].removeprefix("'")) for line in lines] == expected
    assert excluded not in {line["row_id"] for line in lines}
    rejected = [line for line in lines if line["review"] == "rejected"]
    assert rejected and all(line["field"] == "technology_name" and line["value"] == "" for line in rejected)
    assert all(line["title"] and line["source_id"] for line in lines)

    as_jsonl = get(url, task_id, "citations", format="jsonl")
    assert as_jsonl.headers["content-type"] == "application/x-ndjson"
    assert as_jsonl.headers["content-disposition"].endswith(f'{task_id}-citations.jsonl"')
    typed = [msgspec.json.decode(line, type=CitationLine) for line in as_jsonl.content.splitlines()]
    assert [(c.row_id, c.quote) for c in typed] == expected

    # as extracted: every row, nothing reviewed
    everything = list(csv.DictReader(io.StringIO(get(url, task_id, "citations", original="true").text)))
    assert excluded in {line["row_id"] for line in everything}
    assert {line["review"] for line in everything} == {""}
    assert len(everything) == sum(c.source_id != "generated" for row in original.rows for c in row.citations)


def test_references_download_as_bibtex_ris_and_csl_json_one_per_cited_paper(reviewed):
    url, task_id, dataset, original = reviewed
    papers = {c.source_id: c.metadata for row in dataset.rows for c in row.citations}
    wanted = cited(kept(dataset))
    assert wanted and wanted <= cited(original.rows)

    bib = get(url, task_id, "references", format="bibtex")
    assert bib.headers["content-type"] == "application/x-bibtex"
    assert bib.headers["content-disposition"] == f'attachment; filename="Treatments-{task_id}.bib"'
    library = parse_string(bib.text)
    assert not library.failed_blocks and len(library.entries) == len(wanted)
    dois = sorted(d for d in (papers[s].doi for s in wanted) if d)
    assert dois and sorted(e.fields_dict["doi"].value for e in library.entries if "doi" in e.fields_dict) == dois

    ris = get(url, task_id, "references", format="ris")
    assert ris.headers["content-type"] == "application/x-research-info-systems; charset=utf-8"
    assert ris.headers["content-disposition"] == f'attachment; filename="Treatments-{task_id}.ris"'
    records = rispy.loads(ris.text)
    assert sorted(r["title"] for r in records) == sorted(" ".join(papers[s].title.split()) for s in wanted)
    assert sorted(r["doi"] for r in records if "doi" in r) == dois

    csl = get(url, task_id, "references", format="csl-json")
    assert csl.headers["content-type"] == "application/vnd.citationstyles.csl+json"
    assert csl.headers["content-disposition"] == f'attachment; filename="Treatments-{task_id}-references.json"'
    items = json.loads(csl.content)
    assert sorted(i["id"] for i in items) == sorted(e.key for e in library.entries) == sorted(r["id"] for r in records)
    assert all(i["title"] and i["type"] for i in items)
    assert sum(len(i.get("author", [])) for i in items) == sum(len(papers[s].authors) for s in wanted)

    # as extracted, the excluded row's and the rejected cell's papers count again
    all_papers = parse_string(get(url, task_id, "references", original="true").text).entries
    assert len(all_papers) == len(cited(original.rows))


def test_the_wide_csv_of_a_reviewed_dataset(reviewed):
    url, task_id, dataset, _ = reviewed
    lines = list(csv.DictReader(io.StringIO(httpx.get(f"{url}/api/v1/datasets/{task_id}?format=csv").text)))
    assert [line["row_id"] for line in lines] == [row.row_id for row in kept(dataset)]
    assert lines[0]["review"] == "technology_name: rejected" and lines[0]["technology_name"] == ""
    assert [int(line["support"]) for line in lines] == [len(cited([row])) for row in kept(dataset)]
    as_extracted = httpx.get(f"{url}/api/v1/datasets/{task_id}", params={"format": "csv", "original": "true"}).text
    assert len(list(csv.DictReader(io.StringIO(as_extracted)))) == len(dataset.rows)


@pytest.mark.parametrize(("export", "format"), [("citations", "bibtex"), ("references", "csv")])
def test_an_unknown_format_is_a_400_naming_it(reviewed, export: str, format: str) -> None:
    url, task_id, _, _ = reviewed
    reply = httpx.get(f"{url}/api/v1/datasets/{task_id}/{export}", params={"format": format})
    assert reply.status_code == 400, reply.text
    assert [(e["key"], e["source"]) for e in reply.json()["extra"]] == [("format", "query")]


def test_unknown_tasks_are_404_and_unfinished_ones_409(make_jobs, api_url):
    jobs = make_jobs()  # no worker: the job stays queued
    body = {"user_query": QUERY, "field_definitions": FIELDS}
    queued = httpx.post(f"{api_url}/api/v1/datasets/generate", json=body).json()["task_id"]
    for export in ("citations", "references"):
        assert httpx.get(f"{api_url}/api/v1/datasets/{queued}/{export}").status_code == 409
        unknown = httpx.get(f"{api_url}/api/v1/datasets/00000000-0000-4000-8000-000000000000/{export}")
        assert unknown.status_code == 404
    assert jobs.status(queued).status == "queued"
