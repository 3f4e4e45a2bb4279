"""The page as a reviewer uses it, in Chromium on the real API, worker and Redis: review cells, exclude rows,
reopen a task by its URL elsewhere, download citations and references, sort and filter, add a column, pick
sources, and what the page says when no worker runs or a stage retries."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from bibtexparser.entrypoint import parse_string
from playwright.sync_api import Page, Request, expect

from pipeline.settings import Settings
from tests.browser.conftest import PHONE
from tests.browser.pages import download_text, expect_completed, fits_width, heuristic_page, submit
from tests.fixtures.scholarly import Reply, ScholarlyAPI

GENERATED = "generated"


def backing(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A row's citations that back a value: quotes (not generated ids), none of a rejected cell."""
    cells = (row.get("review") or {}).get("cells", {})
    rejected = {field for field, cell in cells.items() if cell["status"] == "rejected"}
    return [c for c in row["citations"] if c["source_id"] != GENERATED and c["field"] not in rejected]


def table_row(page: Page, row_id: str) -> Any:
    return page.locator(f'#results-table tbody tr[data-row-id="{row_id}"]')


def test_review_a_cell_exclude_a_row_reopen_the_task_by_its_url_and_download(
    open_page: Callable[..., Page], api_url: str, make_jobs, run_worker
):
    run_worker()
    page = open_page()
    page.goto(api_url)
    task_id = submit(page)
    expect_completed(page, rows=5)
    expect(page).to_have_url(re.compile(rf"#/tasks/{task_id}$"))
    dataset = httpx.get(f"{api_url}/api/v1/datasets/{task_id}").json()
    rows = dataset["rows"]

    # the search queries used, and each row's support: the distinct papers quoting it
    queries = dataset["stats"]["queries"]
    assert queries
    expect(page.locator("#queries-list li")).to_have_text(queries)
    for row in rows:
        support = len({c["source_id"] for c in backing(row)})
        expect(table_row(page, row["row_id"]).locator("td.support-cell")).to_have_text(str(support))

    # edit a cell, with a reason and a name
    first, second = rows[0], rows[1]
    extracted = first["row"]["technology_name"]
    edited = f"{extracted} (pilot unit)"
    cell = table_row(page, first["row_id"]).locator('button.cell[data-field="technology_name"]')
    cell.click()
    expect(page.locator("#cell-state")).to_have_text("Not reviewed yet.")
    expect(page.locator("#review-value")).to_have_value(extracted)
    page.fill("#review-value", " ")
    page.click("#review-edit")  # nothing to save: said at the field, nothing sent
    expect(page.locator("#review-error")).to_contain_text("Type the new value")
    expect(page.locator("#review-value")).to_have_attribute("aria-invalid", "true")
    page.fill("#review-value", edited)
    page.fill("#review-reason", "as named in Table 2")
    page.fill("#review-reviewer", "Ada")
    with page.expect_response(lambda r: r.request.method == "PATCH") as reply:
        page.click("#review-edit")
    assert reply.value.status == 200, reply.value.text()
    expect(page.locator("#review-status")).to_have_text("Saved: edited.")
    expect(page.locator("#review-error")).to_be_hidden()
    expect(page.locator("#cell-state")).to_have_text(f"Edited · extracted value: {extracted}")
    expect(page.locator("#cell-history-list li")).to_have_count(1)
    expect(page.locator("#cell-history-list li")).to_contain_text("as named in Table 2")
    expect(page.locator("#cell-history-list li")).to_contain_text("Ada")
    page.keyboard.press("Escape")
    expect(page.locator("#evidence")).to_be_hidden()
    expect(cell).to_have_attribute("data-review", "edited")
    expect(cell).to_contain_text(edited)
    expect(cell.locator(".review-mark")).to_have_text("✎")

    # exclude a row: struck through, or hidden by the toggle
    excluded = table_row(page, second["row_id"])
    excluded.get_by_role("button", name=f"Exclude row {second['row_id']}").click()
    expect(excluded).to_have_class(re.compile(r"\bexcluded\b"))
    expect(excluded.locator(".row-toggle")).to_have_text("Restore")
    expect(excluded.locator("button.cell").first).to_have_css("text-decoration-line", "line-through")
    page.uncheck("#show-excluded")
    expect(excluded).to_be_hidden()
    expect(page.locator("#results-table tbody tr:visible")).to_have_count(4)
    page.check("#show-excluded")
    expect(excluded).to_be_visible()
    expect(page.locator("#audit-table tbody tr")).to_have_count(2)
    expect(page.locator("#audit-summary")).to_have_text("Review history (2 decisions)")

    reviewed = httpx.get(f"{api_url}/api/v1/datasets/{task_id}").json()
    assert reviewed["rows"][0]["row"]["technology_name"] == edited
    trail = [(e["row_id"], e["action"], e["reason"], e["reviewer"]) for e in reviewed["review"]]
    assert trail == [
        (first["row_id"], "edit", "as named in Table 2", "Ada"),
        (second["row_id"], "exclude", "", "Ada"),  # the name given once is remembered
    ]

    # the task's URL, opened in another browser on a phone: the events replayed, the reviewed dataset
    phone = open_page(PHONE)
    phone.goto(f"{api_url}/#/tasks/{task_id}")
    expect_completed(phone, rows=5)
    expect(phone.locator("#job-task-id")).to_have_text(task_id)
    events = phone.locator("#event-list li")
    expect(events.last).to_have_attribute("data-status", "completed")
    assert events.count() >= 5
    expect(phone.locator("#event-list li").first).to_have_attribute("data-seq", "1")
    reopened = table_row(phone, first["row_id"]).locator('button.cell[data-field="technology_name"]')
    expect(reopened).to_contain_text(edited)
    expect(reopened).to_have_attribute("data-review", "edited")
    expect(table_row(phone, second["row_id"])).to_have_class(re.compile(r"\bexcluded\b"))
    assert fits_width(phone)
    reopened.click()
    expect(phone.locator("#cell-state")).to_have_text(f"Edited · extracted value: {extracted}")
    expect(phone.locator("#cell-history-list li")).to_contain_text("as named in Table 2")
    assert fits_width(phone)
    phone.keyboard.press("Escape")
    phone.fill("#row-filter", "zzz-no-such-text")  # the table's controls work at phone width
    expect(phone.locator("#results-table tbody tr:visible")).to_have_count(0)
    expect(phone.locator("#rows-note")).to_have_text("No row matches (of 5).")
    phone.fill("#row-filter", "")
    expect(phone.locator("#results-table tbody tr:visible")).to_have_count(5)
    assert fits_width(phone)

    # the papers, each with the rows it supports (excluded rows struck through)
    supported: dict[str, set[str]] = {}
    for row in reviewed["rows"]:
        for citation in backing(row):
            supported.setdefault(citation["source_id"], set()).add(row["row_id"])
    papers = phone.locator("#cited-table tr.cited-paper")
    expect(papers).to_have_count(len(supported))
    top = max(supported, key=lambda paper: len(supported[paper]))
    expect(phone.locator(f'#cited-table tr[data-paper-id="{top}"] .row-chip')).to_have_count(len(supported[top]))
    meta = next(c["metadata"] for row in reviewed["rows"] for c in backing(row) if c["source_id"] == top)
    expect(phone.locator(f'#cited-table tr[data-paper-id="{top}"]')).to_contain_text(meta["title"])
    expect(phone.locator(f'#cited-table tr[data-paper-id="{top}"]')).to_contain_text(str(meta["year"]))

    # downloads: one line per citation with its quote, and one BibTeX entry per paper the kept rows cite
    citations = download_text(phone, "#download-citations-csv")
    header = next(csv.reader(io.StringIO(citations)))
    assert "quote" in header, header
    quotes = [line["quote"] for line in csv.DictReader(io.StringIO(citations))]
    assert quotes and all(quotes), quotes
    kept = [row for row in reviewed["rows"] if not (row.get("review") or {}).get("excluded")]
    cited = {c["source_id"] for row in kept for c in backing(row)}
    library = parse_string(download_text(phone, "#download-bibtex"))
    assert not library.failed_blocks, library.failed_blocks
    assert len(library.entries) == len(cited), [entry.key for entry in library.entries]


def test_sort_and_filter_the_rows_then_add_a_column(page: Page, settings: Settings, serve_api, make_jobs, run_worker):
    api_url = heuristic_page(page, settings, serve_api, run_worker)
    task_id = submit(page)
    expect_completed(page, rows=5)
    rows = httpx.get(f"{api_url}/api/v1/datasets/{task_id}").json()["rows"]
    names = [row["row"]["technology_name"] for row in rows]
    shown = page.locator('#results-table tbody button.cell[data-field="technology_name"]')

    # sort by a column: A→Z, then Z→A; by support: most papers first
    header = page.locator('#results-table th[data-field="technology_name"]')
    header.locator(".sort-button").click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert shown.all_inner_texts() == sorted(names, key=str.casefold)
    header.locator(".sort-button").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    assert shown.all_inner_texts() == sorted(names, key=str.casefold, reverse=True)
    page.click("#sort-support")
    expect(page.locator("#results-table th.support-col")).to_have_attribute("aria-sort", "descending")
    expect(header).to_have_attribute("aria-sort", "none")
    supports = [int(text) for text in page.locator("#results-table tbody td.support-cell").all_inner_texts()]
    assert supports == sorted(supports, reverse=True)

    # filter: rows with the text in any column
    word = names[0].split()[0].lower()
    matching = [row for row in rows if any(word in str(value).lower() for value in row["row"].values())]
    page.fill("#row-filter", word)
    expect(page.locator("#results-table tbody tr:visible")).to_have_count(len(matching))
    expect(page.locator("#rows-note")).to_have_text(f"Showing {len(matching)} of 5 rows.")
    page.fill("#row-filter", "")
    expect(page.locator("#results-table tbody tr:visible")).to_have_count(5)

    # add a column: a name the schema has already is refused where it was typed
    page.click("#add-column-box summary")
    page.fill("#new-column-name", "technology_name")
    with page.expect_response(lambda r: r.url.endswith("/reprocess")) as refused:
        page.click("#add-column-submit")
    assert refused.value.status == 400
    expect(page.locator("#add-column-error")).to_contain_text("duplicate")
    expect(page).to_have_url(re.compile(rf"#/tasks/{task_id}$"))

    page.fill("#new-column-name", "crop")
    page.select_option("#new-column-type", "str")
    page.fill("#new-column-description", "The crop the technology treats water for")
    with page.expect_response(lambda r: r.url.endswith("/reprocess")) as accepted:
        page.click("#add-column-submit")
    assert accepted.value.status == 202, accepted.value.text()
    child = accepted.value.json()["task_id"]
    expect(page).to_have_url(re.compile(rf"#/tasks/{child}$"))  # the new task's own URL
    expect(page.locator("#job-task-id")).to_have_text(child)
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator('#results-table th[data-field="crop"]')).to_contain_text("crop")
    reprocessed = httpx.get(f"{api_url}/api/v1/datasets/{child}").json()
    assert reprocessed["stats"]["parent_task_id"] == task_id
    assert [f["name"] for f in reprocessed["schema"]] == ["technology_id", "technology_name", "crop"]
    expect(page.locator("#results-table tbody tr")).to_have_count(len(reprocessed["rows"]))
    expect(page.locator("#results-summary")).to_contain_text(f"reprocessed from {task_id[:8]}")


def test_no_worker_running_is_said_plainly(api_url: str, make_jobs, page: Page, tmp_path: Path):
    # the page is closed before the API stops: its stream of the queued job would hold the shutdown
    make_jobs()  # Redis, the API, no worker
    page.goto(api_url)
    notice = page.locator("#no-worker")
    expect(notice).to_be_visible()
    expect(notice).to_have_text("No worker is running: start one with uv run litminer worker.")
    expect(notice.locator("code")).to_have_text("uv run litminer worker")
    # a job that stays queued makes the page ask again
    task_id = submit(page)
    with page.expect_request(lambda r: r.url.endswith("/ready"), timeout=10_000):
        expect(page.locator("#job-status")).to_have_text("queued")
    expect(notice).to_be_visible()
    expect(page.locator("#job #no-worker")).to_be_in_viewport()  # next to the waiting job
    page.screenshot(path=tmp_path / "no-worker.png")
    assert httpx.get(f"{api_url}/tasks/{task_id}").json()["status"] == "queued"


def test_a_retrying_stage_says_why_and_when_it_tries_again(
    page: Page, online_settings: Settings, scholarly: ScholarlyAPI, serve_api, run_worker, tmp_path: Path
):
    flaky = msgspec.structs.replace(
        online_settings,
        sources=("openalex",),
        extractor="heuristic",
        http_retries=0,  # the source's own retries would hide the 500: the search stage fails, and retries
        retry_min_backoff_ms=3_000,
        retry_max_backoff_ms=3_000,
    )
    api_url = serve_api(flaky)
    run_worker(settings_=flaky)
    page.goto(api_url)
    expect(page.locator("#source-openalex")).to_be_checked()
    scholarly.script("/openalex/works", Reply(status=500))
    task_id = submit(page)

    retry = page.locator("#retry")
    expect(retry).to_be_visible()
    expect(retry).to_contain_text("Search failed (retry 1)")
    expect(page.locator("#retry-error")).to_contain_text("500")
    expect(page.locator("#retry-countdown")).to_have_text(re.compile(r"^in [1-3] s$"))
    expect(page.locator('#stages > li[data-stage="search"]')).to_have_attribute("data-state", "retrying")
    expect(page.locator("#cancel")).to_be_visible()
    page.locator("#job").screenshot(path=tmp_path / "retrying.png")
    left = int(retry.get_attribute("data-seconds-left") or "0")
    page.wait_for_function("left => Number(document.querySelector('#retry').dataset.secondsLeft) < left", arg=left)
    expect(page.locator('#event-list li.warning[data-status="retrying"]')).to_contain_text("HTTP 500")

    expect(page.locator("#job-status")).to_have_text("completed")
    expect(retry).to_be_hidden()
    dataset = httpx.get(f"{api_url}/api/v1/datasets/{task_id}").json()
    assert dataset["stats"]["sources"] == ["openalex"]


def test_the_sources_selector_shows_what_can_be_searched_and_sends_the_choice(
    page: Page, online_settings: Settings, serve_api, run_worker
):
    sources = msgspec.structs.replace(
        online_settings,
        sources=("europepmc", "crossref", "arxiv"),
        openalex_api_key=None,
        crossref_url="http://127.0.0.1:9/crossref",  # nothing listens on the discard port
        extractor="heuristic",
    )
    api_url = serve_api(sources)
    run_worker(settings_=sources)
    sent: list[Any] = []

    def record(request: Request) -> None:
        if request.url.endswith("/api/v1/datasets/generate"):
            sent.append(request.post_data_json)

    page.on("request", record)
    page.goto(api_url)
    listed = httpx.get(f"{api_url}/api/v1/sources").json()
    states = {source["name"]: source for source in listed["sources"]}
    assert states["crossref"]["configured"] and not states["crossref"]["reachable"]
    assert not states["openalex"]["configured"] and states["openalex"]["note"] == "needs OPENALEX_API_KEY"
    assert states["europepmc"]["reachable"] and states["europepmc"]["default"]
    assert httpx.get(f"{api_url}/api/v1/sources").json()["checked_at"] == listed["checked_at"]  # probed once

    expect(page.locator("#sources li")).to_have_count(len(states))
    expect(page.locator("#source-europepmc")).to_be_checked()
    expect(page.locator("#source-arxiv")).to_be_checked()
    expect(page.locator("#source-crossref")).not_to_be_checked()  # a default, but it does not answer
    expect(page.locator('#sources li[data-source="crossref"]')).to_contain_text("not reachable right now")
    expect(page.locator("#source-openalex")).to_be_disabled()
    expect(page.locator('#sources li[data-source="openalex"]')).to_contain_text("needs OPENALEX_API_KEY")
    expect(page.locator("#source-local")).not_to_be_checked()  # reachable, but not a default
    expect(page.locator("#sources-note")).to_contain_text("Unreachable sources are left unchecked")

    # none chosen: said at the box, nothing sent
    page.uncheck("#source-europepmc")
    page.uncheck("#source-arxiv")
    page.click("#submit")
    expect(page.locator("#sources-fieldset .field-error")).to_have_text("Choose at least one source.")
    assert sent == []

    page.check("#source-europepmc")
    task_id = submit(page)
    assert sent[-1]["sources"] == ["europepmc"], sent[-1]
    expect(page.locator("#job-status")).to_have_text("completed")
    assert httpx.get(f"{api_url}/api/v1/datasets/{task_id}").json()["stats"]["sources"] == ["europepmc"]
