"""What the browser tests do on the page: fill the seed form, submit, wait for a finished job, measure widths."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from playwright.sync_api import Download, Page, expect

from pipeline.settings import Settings

QUERY = "water treatment technologies used in specialty crop production"
COLUMNS = [
    {"name": "technology_id", "type": "str", "description": "Unique identifier for water treatment technology"},
    {"name": "technology_name", "type": "str", "description": "Name of water treatment technology"},
]
STAGES = ("schema_preparation", "search", "extraction", "assembly")
SEED = {
    "user_query": QUERY,
    "rows": 5,
    "model_name": "TreatmentTechnologies",
    "field_definitions": [{**column, "required": True} for column in COLUMNS],
}


def submit(page: Page) -> str:
    """Press submit; the id of the task the API accepted."""
    with page.expect_response(lambda r: r.url.endswith("/api/v1/datasets/generate")) as reply:
        page.click("#submit")
    assert reply.value.status == 202, reply.value.text()
    task_id: str = reply.value.json()["task_id"]
    return task_id


def fill_seed_form(page: Page) -> None:
    page.fill("#user_query", QUERY)
    page.fill("#rows", "5")
    page.fill("#model_name", "TreatmentTechnologies")
    expect(page.locator("#columns > li")).to_have_count(2)
    for i, column in enumerate(COLUMNS):
        page.fill(f"#col-{i}-name", column["name"])
        page.select_option(f"#col-{i}-type", column["type"])
        page.fill(f"#col-{i}-description", column["description"])
        page.check(f"#col-{i}-required")


def expect_completed(page: Page, rows: int) -> None:
    expect(page.locator("#progress-text")).to_have_text("100 %")
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    expect(page.locator("#job-status")).to_have_text("completed")
    for stage in STAGES:
        expect(page.locator(f'#stages > li[data-stage="{stage}"]')).to_have_attribute("data-state", "done")
    expect(page.locator("#results-table tbody tr")).to_have_count(rows)
    expect(page.locator("#cancel")).to_be_hidden()


def page_width(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def fits_width(page: Page) -> bool:
    """Nothing scrolls the page sideways (only the tables' own boxes may)."""
    fits: bool = page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    return fits


def heuristic_page(
    page: Page, settings: Settings, serve_api: Callable[[Settings], str], run_worker: Callable[..., object]
) -> str:
    """Open the page on an API and a worker that extract with the heuristic extractor from the local corpus."""
    heuristic = msgspec.structs.replace(settings, extractor="heuristic", sources=("local",))
    api_url = serve_api(heuristic)
    run_worker(settings_=heuristic)
    page.goto(api_url)
    return api_url


def download_text(page: Page, selector: str) -> str:
    """Click a download link; the file's text."""
    with page.expect_download() as download:
        page.click(selector)
    saved: Download = download.value
    path = saved.path()
    assert path is not None, saved.failure()
    return path.read_text(encoding="utf-8")
