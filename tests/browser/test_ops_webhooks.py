"""The operations page shows webhook delivery attempts (a real browser, API, worker, Redis and receiver)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from playwright.sync_api import Page, expect

from pipeline.jobs import JobService
from tests.conftest import follow
from tests.fixtures.requests import seed_request
from tests.fixtures.webhooks import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that answers the first POST with a 500, then 200."""
    made = Receiver(statuses=[500])
    yield made
    made.close()


def test_ops_page_lists_webhook_attempts(
    page: Page, settings, serve_api, make_jobs, run_worker, receiver, tmp_path: Path
):
    hooks = msgspec.structs.replace(
        settings, webhook_secret="whsec-page", webhook_hosts=("127.0.0.1",), webhook_retry_s=(0.3,)
    )
    api_url = serve_api(hooks)
    jobs: JobService = make_jobs(settings_=hooks)
    run_worker(settings_=hooks)
    job = jobs.submit(seed_request(callback_url=f"{receiver.url}?token=hidden"))
    assert follow(jobs, job.task_id)[-1].status == "completed"
    receiver.wait(2)

    page.goto(f"{api_url}/ops")
    rows = page.locator("#webhooks-table tbody tr[data-delivery-id]")
    expect(rows).to_have_count(2)  # the page refreshes until the second attempt is recorded
    delivered, retried = rows.nth(0), rows.nth(1)  # newest first
    expect(delivered).to_have_attribute("data-outcome", "delivered")
    expect(delivered).to_contain_text("HTTP 200")
    expect(delivered).to_contain_text(job.task_id[:8])
    expect(retried).to_have_attribute("data-outcome", "retrying")
    expect(retried).to_contain_text("HTTP 500")
    expect(retried).to_contain_text("task.completed")
    expect(page.locator("#webhooks-table")).not_to_contain_text("hidden")  # the URL's token is not shown
    expect(page.locator('#queues-table tbody tr[data-queue="webhooks"]')).to_be_visible()
    page.screenshot(path=tmp_path / "ops-webhooks.png", full_page=True)
