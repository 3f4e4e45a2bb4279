"""The rows found, live on the page: filled from row_found events while the papers are read, replayed for a page
opened mid-job, never doubled by a reconnect, and marked kept, merged or dropped once the dataset is in."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from contracts import TERMINAL_STATUSES, decode_event
from tests.browser.pages import SEED, expect_completed, fill_seed_form, submit
from tests.integration.test_streamed_rows import TwiceExtractor

#: per document, holding the worker's event loop: 12 documents take about 4 s, so the job runs while the page acts
PACE_S = 0.3


class SseCuttingProxy:
    """A TCP proxy to the API, both ways and keep-alive too, that closes the first task event stream once it has
    carried ``rows`` row_found events: the browser's EventSource then reconnects with Last-Event-ID."""

    def __init__(self, upstream: str, rows: int = 2) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.rows = rows
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.sse_requests: list[bytes] = []
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        watched = threading.Event()  # this connection carries the stream to cut

        def requests() -> None:
            try:
                while data := client.recv(65536):
                    if b"GET /sse/tasks/" in data:
                        self.sse_requests.append(data)
                        if not self.cut.is_set():
                            watched.set()
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=requests, daemon=True).start()
        seen = 0
        try:
            while chunk := upstream.recv(65536):
                client.sendall(chunk)
                if watched.is_set() and not self.cut.is_set():
                    seen += chunk.count(b'"kind":"row_found"')
                    if seen >= self.rows:
                        self.cut.set()
                        break
        except OSError:
            pass
        finally:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)  # wakes the other thread's recv: a close alone would not
                end.close()

    def close(self) -> None:
        self.server.close()


def found_rows(page: Page) -> list[dict[str, str]]:
    """Each row of the rows-found table: its candidate id, outcome, dataset row id and outcome text."""
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        "#found-table tbody tr",
        """trs => trs.map(tr => ({candidate: tr.dataset.candidate, outcome: tr.dataset.outcome,
            row_id: tr.dataset.rowId, text: tr.querySelector('.found-outcome').textContent}))""",
    )
    return rows


def check_marked(page: Page, dataset: dict[str, object]) -> list[dict[str, str]]:
    """The table holds every candidate once, marked as the dataset says."""
    rows = found_rows(page)
    candidates = [r["candidate"] for r in rows]
    assert len(candidates) == len(set(candidates))  # no row twice
    dataset_rows = dataset["rows"]
    dropped = dataset["stats"]["dropped_candidates"]  # type: ignore[index]
    assert isinstance(dataset_rows, list) and isinstance(dropped, dict)
    expected = {
        candidate: ("kept" if n == 0 else "merged", row["row_id"])
        for row in dataset_rows
        for n, candidate in enumerate(row["candidates"])
    }
    expected |= {c: ("dropped", "") for c in dropped}
    assert sorted(candidates) == sorted(expected)
    for row in rows:
        outcome, row_id = expected[row["candidate"]]
        assert (row["outcome"], row["row_id"]) == (outcome, row_id), row
        if outcome == "dropped":
            assert row["text"] == f"dropped: {dropped[row['candidate']]}"
        elif outcome == "merged":
            assert row["text"] == f"merged into {row_id}"
    return rows


def test_rows_fill_in_while_papers_are_read_and_are_marked_once_the_dataset_is_in(
    page: Page, api_url, run_worker, tmp_path: Path
):
    run_worker(extractors={"heuristic": TwiceExtractor(PACE_S)})
    page.goto(api_url)
    fill_seed_form(page)
    page.fill("#rows", "3")
    # the job's state at the moment the first found row appears
    page.evaluate(
        """() => new MutationObserver((_, observer) => {
            if (!document.querySelector('#found-table tbody tr')) return;
            window.firstRowStatus = document.querySelector('#job-status').textContent;
            window.resultsShown = !document.querySelector('#results').hidden;
            observer.disconnect();
        }).observe(document.querySelector('#found-table'), {childList: true, subtree: true})"""
    )
    task_id = submit(page)
    found = page.locator("#found-table tbody tr")
    expect(found.first).to_be_visible()
    expect(found.first.locator(".outcome")).to_have_text("found")
    page.screenshot(path=tmp_path / "1-rows-found.png", full_page=True)
    assert page.evaluate("window.firstRowStatus") == "processing"
    assert page.evaluate("window.resultsShown") is False
    headers = page.locator("#found-table thead th")
    expect(headers).to_have_text(["outcome", "technology_id", "technology_name", "paper"])

    expect_completed(page, rows=3)
    dataset = httpx.get(f"{api_url}/tasks/{task_id}").json()["result"]
    rows = check_marked(page, dataset)
    assert {r["outcome"] for r in rows} == {"kept", "merged", "dropped"}
    expect(page.locator("#found-summary")).to_contain_text("3 kept")
    expect(page.locator("#found-count")).to_have_text(str(len(rows)))
    page.screenshot(path=tmp_path / "2-marked.png", full_page=True)


def test_a_page_opened_mid_job_replays_the_rows_and_a_dropped_stream_doubles_none(
    page: Page, api_url, make_jobs, run_worker, tmp_path: Path
):
    jobs = make_jobs()
    run_worker(extractors={"heuristic": TwiceExtractor(PACE_S)})
    reply = httpx.post(f"{api_url}/api/v1/datasets/generate", json={**SEED, "rows": 3})
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    seen: list[str] = []  # wait until a few rows were published: the page then opens on a job under way
    deadline = time.monotonic() + 30
    while sum('"row_found"' in kind for kind in seen) < 3:
        assert time.monotonic() < deadline, "no rows were found"
        seen += [raw.decode() for raw in jobs.store.events.history(task_id, after=len(seen), block_ms=200)]
    assert all(decode_event(raw.encode()).status not in TERMINAL_STATUSES for raw in seen)

    proxy = SseCuttingProxy(api_url, rows=4)  # the stream drops after the replayed rows, mid-job
    try:
        page.goto(f"{proxy.url}/#/tasks/{task_id}")
        expect(page.locator("#found")).to_be_visible()
        expect_completed(page, rows=3)
        assert proxy.cut.is_set() and len(proxy.sse_requests) == 2
        assert b"last-event-id: " in proxy.sse_requests[1].lower()  # it resumed, not replayed again
    finally:
        proxy.close()
    dataset = httpx.get(f"{api_url}/tasks/{task_id}").json()["result"]
    marked = len(check_marked(page, dataset))
    shown = page.eval_on_selector_all("#event-list li", "items => items.map(li => Number(li.dataset.seq))")
    assert shown == list(range(1, len(shown) + 1))  # every event once, in order
    page.screenshot(path=tmp_path / "reconnected.png", full_page=True)

    # a page opened after the end shows the dataset, the rows found folded away but marked all the same
    page.goto(f"{api_url}/#/tasks/{task_id}")
    expect_completed(page, rows=3)
    expect(page.locator("#found")).not_to_have_attribute("open", "")
    expect(page.locator("#found-count")).to_have_text(str(marked))
    check_marked(page, dataset)
