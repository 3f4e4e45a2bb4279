"""Columns named like members of every JavaScript object (``toString``, ``constructor``) show their own values
in Chromium: no flag, review mark or value borrowed from ``Object.prototype``."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.browser.pages import QUERY, expect_completed
from tests.conftest import follow

FIELDS = [
    {"name": "technology_name", "type": "str", "description": "Name of water treatment technology", "required": True},
    {"name": "toString", "type": "str", "description": "What the technology does", "required": False},
    {"name": "constructor", "type": "str", "description": "Who made the technology", "required": False},
]
PROTOTYPE_NAMES = ("toString", "constructor")


def shown(value: Any) -> str:
    """A cell's text as the page shows it (values.js formatValue), for the str and null values here."""
    return "—" if value is None else str(value)


def test_fields_named_like_object_members_show_their_own_values_and_nothing_borrowed(
    page: Page, api_url: str, make_jobs, run_worker
):
    jobs = make_jobs()
    run_worker()
    body = {"user_query": QUERY, "rows": 3, "model_name": "Technologies", "field_definitions": FIELDS}
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json=body)
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    assert follow(jobs, task_id)[-1].status == "completed"
    rows = httpx.get(f"{api_url}/api/v1/datasets/{task_id}").json()["rows"]
    assert rows
    first = rows[0]
    # a reviewed cell gives the row a review.cells object, looked up by field name as well
    approved = httpx.patch(
        f"{api_url}/api/v1/datasets/{task_id}/rows/{first['row_id']}",
        json={"action": "approve", "field": "technology_name"},
    )
    assert approved.status_code == 200, approved.text

    page.goto(f"{api_url}/#/tasks/{task_id}")
    expect_completed(page, rows=len(rows))
    table = page.locator("#results-table")
    expect(table.locator('tr[data-row="0"] button.cell[data-field="technology_name"]')).to_have_attribute(
        "data-review", "approved"
    )
    for name in PROTOTYPE_NAMES:
        cells = table.locator(f'button.cell[data-field="{name}"]')
        expect(cells).to_have_count(len(rows))
        expect(cells.locator(".flag")).to_have_count(0)  # no flag "function toString() { [native code] }"
        expect(table.locator(f'button.cell[data-field="{name}"][data-review]')).to_have_count(0)
        expect(cells).to_have_text([shown(row["row"].get(name)) for row in rows])
        for title in [cells.nth(i).get_attribute("title") or "" for i in range(len(rows))]:
            assert "native code" not in title and "undefined" not in title, title

    # the dialog of such a cell: its own value, not reviewed, no flag notice
    table.locator(f'tr[data-row="0"] button.cell[data-field="{PROTOTYPE_NAMES[1]}"]').click()
    expect(page.locator("#evidence-heading")).to_have_text(f"Evidence for {PROTOTYPE_NAMES[1]}")
    expect(page.locator("#evidence-value")).to_have_text(f"Value: {shown(first['row'].get(PROTOTYPE_NAMES[1]))}")
    expect(page.locator("#cell-state")).to_have_text("Not reviewed yet.")
    expect(page.locator("#evidence-body .notice")).to_have_count(0)
