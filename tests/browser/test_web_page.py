"""The web pages in a real browser (Debian's Chromium driven by Playwright) on the real API, worker and Redis."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from playwright.sync_api import Page, Request, expect

from pipeline.settings import Settings
from tests.browser.pages import (
    QUERY,
    SEED,
    expect_completed,
    fill_seed_form,
    heuristic_page,
    page_width,
    submit,
)
from tests.conftest import follow


def test_seed_example_runs_live_to_a_table_with_evidence_and_a_csv_download(
    page: Page, api_url, make_jobs, run_worker, tmp_path: Path
):
    run_worker()
    page.goto(api_url)
    # the seed example is there already; fill it anyway
    expect(page.locator("#user_query")).to_have_value(QUERY)
    expect(page.locator("#rows")).to_have_value("5")
    expect(page.locator("#model_name")).to_have_value("TreatmentTechnologies")
    expect(page.locator("#col-1-name")).to_have_value("technology_name")
    fill_seed_form(page)
    page.screenshot(path=tmp_path / "1-form.png", full_page=True)

    task_id = submit(page)
    expect(page.locator("#job-task-id")).to_have_text(task_id)
    expect_completed(page, rows=5)
    headers = page.locator("#results-table thead th")
    expect(headers).to_have_count(5)  # the two columns, support, confidence, and the row's review buttons
    expect(headers.nth(0)).to_contain_text("technology_id")
    expect(headers.nth(1)).to_contain_text("technology_name")
    expect(headers.nth(2)).to_contain_text("support")
    expect(headers.nth(3)).to_contain_text("confidence")
    page.screenshot(path=tmp_path / "2-results.png", full_page=True)

    # the evidence behind the first technology name is the dataset's own citation
    dataset = httpx.get(f"{api_url}/tasks/{task_id}").json()["result"]
    first_row = dataset["rows"][0]
    quotes = [c["text_span"] for c in first_row["citations"] if c["field"] == "technology_name"]
    titles = [c["metadata"]["title"] for c in first_row["citations"] if c["field"] == "technology_name"]
    cell = page.locator('#results-table tbody tr >> nth=0 >> button.cell[data-field="technology_name"]')
    expect(cell).to_have_text(first_row["row"]["technology_name"])
    cell.click()
    evidence = page.locator("#evidence")
    expect(evidence).to_be_visible()
    # the quote highlighted between the sentences either side, and where in the paper it is
    quote = evidence.locator("blockquote mark").first
    expect(quote).not_to_be_empty()
    assert quote.inner_text().strip() in quotes
    shown = next(c for c in first_row["citations"] if c["text_span"] == quote.inner_text().strip())
    context = " ".join(evidence.locator("blockquote").first.inner_text().split())
    assert context == " ".join(f"{shown['before']} {shown['text_span']} {shown['after']}".split())
    place = {"title": "in the title", "abstract": "in the abstract", "full_text": "in the full text"}[shown["part"]]
    expect(evidence.locator(".quote-place").first).to_contain_text(place)
    expect(evidence.locator(".paper-title").first).not_to_be_empty()
    assert evidence.locator(".paper-title").first.inner_text().strip() in titles
    page.screenshot(path=tmp_path / "3-evidence.png")
    page.click("#evidence-close")
    expect(evidence).to_be_hidden()

    # a generated identifier looks different from quoted values, and says so instead of quoting
    generated = page.locator('#results-table tbody tr >> nth=0 >> button.cell[data-field="technology_id"]')
    expect(generated).to_have_class(re.compile(r"\bgenerated\b"))
    expect(generated).to_have_attribute("title", re.compile("generated"))
    expect(generated).to_have_css("font-style", "italic")
    expect(
        page.locator('#results-table tbody tr >> nth=0 >> button.cell[data-field="technology_name"]')
    ).not_to_have_class(re.compile(r"\bgenerated\b"))
    generated.click()
    expect(evidence.locator(".generated-label")).to_have_text("Generated, no quote")
    page.keyboard.press("Escape")
    expect(evidence).to_be_hidden()

    with page.expect_download() as download:
        page.click("#download-csv")
    saved = tmp_path / "dataset.csv"
    download.value.save_as(saved)
    with saved.open(encoding="utf-8", newline="") as file:
        records = list(csv.DictReader(file))
    assert len(records) == 5
    assert [r["technology_name"] for r in records] == [r["row"]["technology_name"] for r in dataset["rows"]]
    expect(page.locator("#download-json")).to_have_attribute("href", f"/api/v1/datasets/{task_id}?format=json")

    recent = page.locator(f'#recent-list li[data-task-id="{task_id}"]')
    expect(recent).to_be_visible()
    expect(recent).to_contain_text(task_id[:8])
    expect(recent).to_contain_text("completed")

    # phone width: nothing scrolls sideways but the table's own box, with a fresh page and with results loaded
    page.set_viewport_size({"width": 360, "height": 800})
    page.reload()
    expect(page.locator("#columns > li")).to_have_count(2)
    assert page_width(page) <= 360
    page.locator(f'#recent-list a[data-task-id="{task_id}"]').click()  # opens the finished task
    expect_completed(page, rows=5)
    assert page_width(page) <= 360
    page.screenshot(path=tmp_path / "4-phone.png", full_page=True)


CONFIDENCE_RANK = {"high": 3, "medium": 2, "low": 1}


def shown_confidences(page: Page) -> list[str]:
    """The confidence of each row of the results table, top to bottom, hidden rows included."""
    levels: list[str] = page.eval_on_selector_all(
        "#results-table tbody tr", "rows => rows.map(row => row.dataset.confidence)"
    )
    return levels


def test_results_show_confidence_and_every_paper_with_its_screening_decision(
    page: Page, settings: Settings, serve_api, make_jobs, run_worker, tmp_path: Path
):
    api_url = heuristic_page(page, settings, serve_api, run_worker)
    fill_seed_form(page)
    task_id = submit(page)
    expect_completed(page, rows=5)
    dataset = httpx.get(f"{api_url}/tasks/{task_id}").json()["result"]
    assert dataset["stats"]["extractor"] == "heuristic"
    rows = dataset["rows"]
    levels = [row["confidence"] for row in rows]
    assert set(levels) <= set(CONFIDENCE_RANK), levels

    # a confidence badge on every row, with the reason for it as its tooltip
    table = page.locator("#results-table")
    expect(table.locator("thead th.confidence-col")).to_contain_text("confidence")
    expect(table.locator("tbody tr .confidence")).to_have_count(5)
    for i, row in enumerate(rows):
        badge = table.locator("tbody tr").nth(i).locator(".confidence")
        expect(badge).to_have_text(row["confidence"])
        expect(badge).to_have_class(f"confidence confidence-{row['confidence']}")
        if row["basis"]:
            expect(badge).to_have_attribute("title", row["basis"])
        for field, level in row["cell_confidence"].items():
            cell = table.locator("tbody tr").nth(i).locator(f'button.cell[data-field="{field}"]')
            expect(cell).to_have_attribute("data-confidence", level)
            expect(cell).to_have_class(re.compile(rf"\bconf-{level}\b"))
    page.screenshot(path=tmp_path / "1-confidence.png", full_page=True)

    # sorting: high first, then (clicked again) low first; the evidence still opens for the row it belongs to
    sort = page.locator("#sort-confidence")
    sort.click()
    expect(table.locator("th.confidence-col")).to_have_attribute("aria-sort", "descending")
    descending = shown_confidences(page)
    assert [CONFIDENCE_RANK[level] for level in descending] == sorted(
        (CONFIDENCE_RANK[level] for level in levels), reverse=True
    )
    sort.click()
    expect(table.locator("th.confidence-col")).to_have_attribute("aria-sort", "ascending")
    ascending = shown_confidences(page)
    assert [CONFIDENCE_RANK[level] for level in ascending] == sorted(CONFIDENCE_RANK[level] for level in levels)
    top = table.locator('tbody tr >> nth=0 >> button.cell[data-field="technology_name"]')
    row_index = int(top.get_attribute("data-row") or "")
    expect(top).to_have_text(rows[row_index]["row"]["technology_name"])
    top.click()
    expect(page.locator("#evidence-heading")).to_have_text("Evidence for technology_name")
    page.keyboard.press("Escape")
    expect(page.locator("#evidence")).to_be_hidden()

    # the filter above the table
    for choice, floor in (("high", 3), ("medium", 2), ("all", 0)):
        page.select_option("#confidence-filter", choice)
        wanted = sum(1 for level in levels if CONFIDENCE_RANK[level] >= floor)
        expect(table.locator("tbody tr:visible")).to_have_count(wanted)
        expect(table.locator("tbody tr")).to_have_count(5)

    # the papers: a PRISMA-like flow, then every paper considered with its decision
    papers = dataset["papers"]
    decisions = [paper["decision"] for paper in papers]
    assert "included" in decisions and "excluded" in decisions, decisions
    section = page.locator("#papers")
    expect(section).to_be_visible()
    flow = dataset["stats"]["flow"]
    assert flow is not None
    expect(section.locator("#flow")).to_contain_text(f"{flow['found']} found")
    expect(section.locator("#flow")).to_contain_text(f"{flow['cited']} cited")
    expect(section.locator("tr.paper")).to_have_count(len(papers))
    expect(section.locator("tr.paper .decision.decision-included")).to_have_count(decisions.count("included"))
    expect(section.locator("tr.paper .decision.decision-excluded")).to_have_count(decisions.count("excluded"))
    cited = max(papers, key=lambda paper: paper["rows"])
    assert cited["rows"] > 0
    cited_row = section.locator(f'tr.paper[data-paper-id="{cited["id"]}"]')
    expect(cited_row).to_contain_text(cited["title"])
    expect(cited_row).to_contain_text(f"{round(cited['score'] * 100)} %")
    if cited["doi"]:
        expect(cited_row.locator("a.paper-link")).to_have_attribute("href", re.compile(r"^https://doi\.org/"))
    page.screenshot(path=tmp_path / "2-papers.png", full_page=True)

    # the decision filter hides the excluded papers
    page.select_option("#decision-filter", "included")
    expect(section.locator("tr.paper:visible")).to_have_count(decisions.count("included"))
    expect(section.locator("tr.paper:visible .decision-excluded")).to_have_count(0)
    expect(section.locator("tr.paper .decision-excluded").first).to_be_hidden()
    page.select_option("#decision-filter", "excluded")
    expect(section.locator("tr.paper:visible")).to_have_count(decisions.count("excluded"))
    expect(section.locator("tr.paper:visible .decision-included")).to_have_count(0)
    page.select_option("#decision-filter", "all")
    expect(section.locator("tr.paper:visible")).to_have_count(len(papers))
    expect(page.locator("#empty-result")).to_be_hidden()

    # phone width: the papers scroll inside their own box too
    page.set_viewport_size({"width": 360, "height": 800})
    assert page_width(page) <= 360


def test_a_question_the_corpus_does_not_answer_shows_why_and_the_papers_excluded(
    page: Page, settings: Settings, serve_api, make_jobs, run_worker, tmp_path: Path
):
    api_url = heuristic_page(page, settings, serve_api, run_worker)
    fill_seed_form(page)
    page.fill("#user_query", "CRISPR off-target detection methods")
    task_id = submit(page)
    expect(page.locator("#job-status")).to_have_text("completed")
    dataset = httpx.get(f"{api_url}/tasks/{task_id}").json()["result"]
    assert dataset["rows"] == []
    shortfall = dataset["stats"]["shortfall"]
    assert shortfall and "addresses" in shortfall, shortfall

    empty = page.locator("#empty-result")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("addresses")
    expect(page.locator("#empty-reason")).to_have_text(shortfall)
    expect(page.locator("#results-table")).to_be_hidden()  # no empty table
    expect(page.locator("#shortfall")).to_be_hidden()  # said once, in the box above

    section = page.locator("#papers")
    expect(section).to_be_visible()
    papers = dataset["papers"]
    excluded = [paper for paper in papers if paper["decision"] == "excluded"]
    assert excluded, [paper["decision"] for paper in papers]
    expect(section.locator("tr.paper")).to_have_count(len(papers))
    expect(section.locator("tr.paper .decision.decision-excluded")).to_have_count(len(excluded))
    first = section.locator(f'tr.paper[data-paper-id="{excluded[0]["id"]}"]')
    expect(first.locator(".decision")).to_have_text("excluded")
    expect(first.locator(".paper-reason")).to_contain_text(excluded[0]["reason"])
    page.screenshot(path=tmp_path / "empty.png", full_page=True)
    page.set_viewport_size({"width": 360, "height": 800})
    assert page_width(page) <= 360


def test_an_exclusion_criterion_typed_in_the_form_screens_papers_out(
    page: Page, settings: Settings, serve_api, make_jobs, run_worker, tmp_path: Path
):
    api_url = heuristic_page(page, settings, serve_api, run_worker)
    fill_seed_form(page)
    include = page.get_by_label("Include only papers that…")
    exclude = page.get_by_label("Exclude papers that…")
    expect(include).to_have_attribute("id", "criteria-include")
    expect(exclude).to_have_attribute("id", "criteria-exclude")
    sent: list[Any] = []

    def record(request: Request) -> None:
        if request.url.endswith("/api/v1/datasets/generate"):
            sent.append(request.post_data_json)

    page.on("request", record)

    # a criterion the API refuses (too long) is reported at its own line of its own box, and creates no task
    exclude.fill("chlorine\n\n" + "x" * 501)
    field, message = refused(page)
    assert field == "criteria[1].text"
    expect(exclude).to_have_attribute("aria-invalid", "true")
    expect(page.locator(f"#{exclude.get_attribute('aria-describedby')}")).to_have_text(f"Line 3: {message}")
    expect(page.locator("#generate-form .field-error")).to_have_count(1)
    expect(page.locator("#job")).to_be_hidden()

    # one criterion per line, blank lines ignored, an empty box sends nothing
    include.fill("")
    exclude.fill("  chlorine  \n\n")
    page.screenshot(path=tmp_path / "1-criteria.png", full_page=True)
    task_id = submit(page)
    assert sent[-1]["criteria"] == [{"text": "chlorine", "kind": "exclude"}], sent[-1]
    expect(exclude).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#job-status")).to_have_text("completed")
    dataset = httpx.get(f"{api_url}/tasks/{task_id}").json()["result"]
    assert dataset["stats"]["extractor"] == "heuristic"

    # no row names a chlorine treatment
    names = page.locator('#results-table tbody button.cell[data-field="technology_name"]')
    expect(names).to_have_count(len(dataset["rows"]))
    shown = names.all_inner_texts()
    assert shown, "no rows"
    assert not any("chlor" in name.lower() for name in shown), shown

    # the papers the criterion left out say so
    section = page.locator("#papers")
    expect(section).to_be_visible()
    excluded = section.locator("tr.paper").filter(
        has=page.locator(".paper-reason", has_text="meets exclusion criterion 'chlorine'")
    )
    expect(excluded.first).to_be_visible()
    assert excluded.count() >= 1
    expect(excluded.first.locator(".decision")).to_have_text("excluded")
    expect(excluded.first.locator(".exclusion")).to_have_text("meets an exclusion criterion")
    page.screenshot(path=tmp_path / "2-excluded.png", full_page=True)

    # phone width: the two boxes stack and nothing scrolls sideways
    page.set_viewport_size({"width": 360, "height": 800})
    assert page_width(page) <= 360


def refused(page: Page) -> tuple[str, str]:
    """Press submit expecting a 400: the field it names and its message without the field prefix."""
    with page.expect_response(lambda r: r.url.endswith("/api/v1/datasets/generate")) as reply:
        page.click("#submit")
    assert reply.value.status == 400, reply.value.text()
    body = reply.value.json()
    field, detail = body["field"], body["detail"]
    return field, detail.removeprefix(f"{field}: ")


def expect_error_at(page: Page, field: str, message: str) -> None:
    """The input named by ``field`` is invalid and described by an error that shows ``message``; no other errors."""
    control = page.locator(f'#generate-form [data-field="{field}"]')
    expect(control).to_have_attribute("aria-invalid", "true")
    expect(control).to_have_attribute("aria-describedby", re.compile(r"\S"))
    error = page.locator(f"#{control.get_attribute('aria-describedby')}")
    expect(error).to_have_text(message)
    expect(page.locator("#generate-form .field-error")).to_have_count(1)
    expect(page.locator("#form-error")).to_be_hidden()


def test_a_bad_schema_shows_the_message_next_to_the_column_and_creates_no_task(
    page: Page, api_url, make_jobs, settings, tmp_path: Path
):
    jobs = make_jobs()
    page.goto(api_url)
    page.click("#add-column")
    expect(page.locator("#columns > li")).to_have_count(3)
    page.fill("#col-2-name", "technology_name")  # the same name as column 1

    field, message = refused(page)
    assert field == "field_definitions[2].name"
    assert "duplicate" in message
    expect_error_at(page, field, message)
    # next to column 3's name: inside that column's own box
    expect(page.locator("#columns > li").nth(2).locator(".field-error")).to_have_text(message)
    page.screenshot(path=tmp_path / "duplicate-name.png", full_page=True)

    # a type the select does not offer, forced in by script: the error moves to that column's type
    page.fill("#col-2-name", "crop")
    page.eval_on_selector("#col-0-type", "s => { s.add(new Option('money', 'money')); s.value = 'money'; }")
    field, message = refused(page)
    assert field == "field_definitions[0].type"
    expect_error_at(page, field, message)
    expect(page.locator("#col-2-name")).not_to_have_attribute("aria-invalid", "true")  # the earlier error is gone

    # a blank question is reported at the question
    page.select_option("#col-0-type", "str")
    page.fill("#user_query", "  ")
    field, message = refused(page)
    assert field == "user_query"
    expect_error_at(page, field, message)

    # removing the extra column renumbers the rest
    page.get_by_role("button", name="Remove column 3").click()
    expect(page.locator("#columns > li")).to_have_count(2)
    expect(page.locator("#col-1-name")).to_have_value("technology_name")

    assert list(jobs.store.client.scan_iter(f"{settings.key_prefix}job:*")) == []
    assert jobs.store.client.zcard(jobs.store.keys.jobs) == 0
    expect(page.locator("#job")).to_be_hidden()


def test_cancel_while_queued_shows_cancelled(page: Page, api_url, make_jobs, tmp_path: Path):
    make_jobs()  # no worker: the job waits in its queue
    page.goto(api_url)
    task_id = submit(page)
    cancel = page.locator("#cancel")
    expect(cancel).to_be_visible()
    expect(page.locator("#job-status")).to_have_text("queued")
    with page.expect_response(lambda r: r.url.endswith(f"/tasks/{task_id}/revoke")) as reply:
        cancel.click()
    assert reply.value.status == 200
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#message")).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#message")).not_to_be_empty()
    expect(cancel).to_be_hidden()
    expect(page.locator("#results")).to_be_hidden()
    page.screenshot(path=tmp_path / "cancelled.png", full_page=True)
    assert httpx.get(f"{api_url}/tasks/{task_id}").json()["status"] == "cancelled"


def test_without_eventsource_the_page_follows_over_websocket(
    page: Page, api_url, make_jobs, run_worker, tmp_path: Path
):
    run_worker()
    page.add_init_script("delete window.EventSource;")
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.goto(api_url)
    page.fill("#rows", "3")
    task_id = submit(page)
    expect_completed(page, rows=3)
    assert any(url.endswith(f"/ws/tasks/{task_id}") for url in sockets), sockets
    page.screenshot(path=tmp_path / "websocket.png", full_page=True)


def test_ops_page_lists_jobs_queues_and_workers_and_cancels(page: Page, api_url, make_jobs, run_worker, tmp_path: Path):
    jobs = make_jobs()
    waiting = httpx.post(f"{api_url}/api/v1/datasets/generate", json=SEED)  # no worker yet: stays queued
    assert waiting.status_code == 202, waiting.text
    queued_id = waiting.json()["task_id"]

    page.goto(f"{api_url}/ops")
    expect(page.locator("#redis")).to_have_attribute("data-ok", "true")
    queued = page.locator(f'#jobs-table tbody tr[data-task-id="{queued_id}"]')
    expect(queued).to_contain_text("queued")
    expect(page.locator('#queues-table tbody tr[data-queue="schema_preparation"] td').nth(1)).to_have_text("1")
    expect(page.locator("#queues-table tbody tr[data-queue]")).to_have_count(5)  # four stages and webhooks
    queued.get_by_role("button", name="Cancel").click()
    expect(queued).to_contain_text("cancelled")
    expect(queued.get_by_role("button")).to_have_count(0)

    run_worker()
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=SEED)
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    assert follow(jobs, task_id)[-1].status == "completed"
    done = page.locator(f'#jobs-table tbody tr[data-task-id="{task_id}"]')
    expect(done).to_contain_text("completed")  # the page refreshes by itself
    expect(done).to_contain_text(task_id[:8])
    expect(done).to_contain_text("100 %")
    expect(done).to_contain_text(QUERY)
    expect(page.locator("#workers-table tbody tr[data-worker-id]").first).to_be_visible()
    page.screenshot(path=tmp_path / "ops.png", full_page=True)

    page.get_by_role("link", name="Datasets").click()
    expect(page.locator("#user_query")).to_be_visible()
    expect(page.get_by_role("link", name="Operations")).to_have_attribute("href", "/ops")


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_with_api_keys_the_page_asks_for_one_and_follows_with_it(
    page: Page, settings, serve_api, make_jobs, run_worker, transport: str
):
    secured = msgspec.structs.replace(settings, api_keys=("page-key-1",))
    api_url = serve_api(secured)
    run_worker(settings_=secured)
    if transport == "websocket":
        page.add_init_script("delete window.EventSource;")
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/sse/" in request.url else None)
    page.on("websocket", lambda socket: streams.append(socket.url))
    page.goto(api_url)
    expect(page.locator("#auth")).to_be_visible()  # the recent-tasks list got a 401
    page.fill("#api-key", "page-key-1")
    page.click("#save-api-key")
    expect(page.locator("#auth")).to_be_hidden()
    page.fill("#rows", "3")
    task_id = submit(page)
    expect_completed(page, rows=3)
    assert any(f"/tasks/{task_id}?token=page-key-1" in url for url in streams), streams
