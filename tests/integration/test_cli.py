"""`litminer generate | status | cancel | events | reprocess` against a real API, worker and Redis."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from contracts import GenerateRequest, decode_event
from pipeline.jobs import JobService
from services.cli import main
from services.client import ApiClient
from services.demo import SEED_FIELDS, SEED_QUERY
from services.embedded_redis import free_port
from services.progress import JobDisplay
from tests.conftest import follow
from tests.fixtures.proxy import CuttingProxy

FIELDS = json.dumps(SEED_FIELDS)
SEED = ["--rows", "5", "--fields", FIELDS, "--model-name", "TreatmentTechnologies", "--sources", "local"]


@pytest.fixture
def stack(make_jobs, run_worker, api_url):
    """A jobs with a worker, and the API on the same settings."""
    jobs = make_jobs()
    run_worker()
    return jobs, api_url


def submit(jobs: JobService, rows: int = 5, client_id: str | None = None) -> str:
    body = {"user_query": SEED_QUERY, "field_definitions": SEED_FIELDS, "rows": rows, "client_id": client_id}
    return jobs.submit(msgspec.convert(body, type=GenerateRequest)).task_id


def task_id_of(out: str) -> str:
    first = out.splitlines()[0]
    assert first.startswith("task "), out
    return first.split()[1].rstrip(":")


def test_generate_follows_the_job_prints_the_table_and_writes_the_csv(stack, tmp_path, capsys):
    _, url = stack
    out = tmp_path / "treatments.csv"
    assert main(["generate", SEED_QUERY, *SEED, "--out", str(out), "--api", url]) == 0
    printed = capsys.readouterr().out
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    columns = ["technology_id", "technology_name", "confidence", "sources", "evidence", "support", "review", "row_id"]
    assert len(rows) == 5 and list(rows[0]) == columns
    lines = printed.splitlines()
    assert any(line.startswith("[  0%] queued") and "Job queued" in line for line in lines)  # one line per event
    assert any("search" in line and "Kept " in line for line in lines)
    assert any("done" in line and "completed" in line for line in lines)
    assert "TreatmentTechnologies: 5 rows" in printed  # the table
    for row in rows:
        assert row["technology_id"] in printed
    assert f"wrote {out} (5 rows, " in printed


def test_generate_names_the_file_after_the_model_and_task_by_default(stack, tmp_path, monkeypatch, capsys):
    _, url = stack
    monkeypatch.chdir(tmp_path)
    assert main(["generate", SEED_QUERY, *SEED, "--format", "jsonl", "--api", url]) == 0
    task_id = task_id_of(capsys.readouterr().out)
    written = tmp_path / f"TreatmentTechnologies-{task_id}.jsonl"
    assert [json.loads(line)["row"]["technology_name"] for line in written.read_text().splitlines()]


def test_generate_refuses_bad_fields_with_exit_code_2_naming_the_field(api_url, tmp_path, capsys):
    fields = json.dumps([{"name": "a"}, {"name": "a"}])
    out = tmp_path / "x.csv"
    assert main(["generate", "q", "--fields", fields, "--out", str(out), "--api", api_url]) == 2
    captured = capsys.readouterr()
    assert "field_definitions[1].name" in captured.err and "duplicate" in captured.err
    assert "task " not in captured.out and not out.exists()


def test_generate_without_fields_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "q"])
    assert exit_.value.code == 2
    assert "--fields" in capsys.readouterr().err


def test_status_of_a_finished_task_human_and_json(stack, capsys):
    jobs, url = stack
    task_id = submit(jobs)
    follow(jobs, task_id)
    assert main(["status", task_id, "--api", url]) == 0
    out = capsys.readouterr().out
    assert f"task      {task_id}" in out and "status    completed" in out and "rows      5 of 5 requested" in out
    assert main(["status", task_id, "--json", "--api", url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "completed" and len(status["result"]["rows"]) == 5
    unknown = str(uuid.uuid4())
    assert main(["status", unknown, "--api", url]) == 1
    assert f"no task with id {unknown}" in capsys.readouterr().err
    assert main(["status", "no-such-task", "--api", url]) == 2  # not a task id: the API's 400
    assert "task_id" in capsys.readouterr().err


def test_cancel_refuses_finished_and_unknown_jobs(stack, capsys):
    jobs, url = stack
    finished = submit(jobs)
    follow(jobs, finished)
    assert main(["cancel", finished, "--api", url]) == 1
    assert "already completed" in capsys.readouterr().err  # the API's 409
    assert main(["cancel", str(uuid.uuid4()), "--api", url]) == 1
    assert "no task with id" in capsys.readouterr().err


def test_cancel_a_queued_job(api_url, capsys):
    # no worker runs on this test's settings: the job stays queued until cancelled
    with ApiClient(api_url) as client:
        accepted = client.generate({"user_query": SEED_QUERY, "field_definitions": SEED_FIELDS, "rows": 2})
    assert main(["cancel", accepted.task_id, "--api", api_url]) == 0
    assert f"task {accepted.task_id}: cancelled" in capsys.readouterr().out
    assert httpx.get(f"{api_url}/tasks/{accepted.task_id}").json()["status"] == "cancelled"


def test_an_unreachable_api_is_said_with_exit_code_1(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["status", "t", "--api", url]) == 1
    assert f"cannot reach the litminer API at {url}" in capsys.readouterr().err


def _open_sse_connections(url: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        if family.name == "litminer_open_connections":
            return sum(s.value for s in family.samples if s.labels.get("protocol") == "sse")
    return 0.0


def test_events_prints_a_clients_events_as_json_lines(stack, capsys):
    jobs, url = stack
    client_id = "cli-events-1"
    codes: list[int] = []
    tail = threading.Thread(target=lambda: codes.append(main(["events", client_id, "--count", "4", "--api", url])))
    tail.start()
    deadline = time.monotonic() + 10
    while _open_sse_connections(url) < 1:  # subscribed: nothing published from now on is missed
        assert time.monotonic() < deadline and tail.is_alive(), "events never connected"
        time.sleep(0.02)
    task_id = submit(jobs, client_id=client_id)
    tail.join(timeout=30)
    assert not tail.is_alive() and codes == [0]
    history = follow(jobs, task_id)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [msgspec.json.encode(event).decode() for event in history[:4]]
    assert [decode_event(line.encode()).seq for line in lines] == [1, 2, 3, 4]

    # without --last-event-id, what the API keeps of the client comes first: the finished job's events
    assert main(["events", client_id, "--count", "3", "--api", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [decode_event(line.encode()) for line in lines] == history[:3]

    # --last-event-id resumes after an event: the rest of the job, through its completed event
    rest = len(history) - 2
    assert main(["events", client_id, "--last-event-id", f"{task_id}:2", "--count", str(rest), "--api", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [decode_event(line.encode()) for line in lines] == history[2:]


def test_reprocess_from_assembly_follows_the_new_job_and_writes_its_dataset(stack, tmp_path, capsys):
    jobs, url = stack
    parent = submit(jobs, rows=3)
    follow(jobs, parent)
    out = tmp_path / "fewer.json"
    assert main(["reprocess", parent, "--from-stage", "assembly", "--rows", "2", "--out", str(out), "--api", url]) == 0
    printed = capsys.readouterr().out
    child = task_id_of(printed)
    assert f"reprocessing {parent} from assembly" in printed
    assert "Stage assembly started" in printed and "completed" in printed
    assert "Stage search started" not in printed  # search and extraction were reused
    dataset = json.loads(out.read_text())
    assert dataset["task_id"] == child and len(dataset["rows"]) == 2


def test_generate_embedded_runs_the_stack_in_process(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", settings.redis_url)  # the test's Redis, not a new embedded one
    monkeypatch.setenv("LITMINER_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("LITMINER_INDEX_DIR", settings.index_dir)
    out = tmp_path / "embedded.json"
    assert main(["generate", SEED_QUERY, *SEED, "--embedded", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    logs, task = printed.splitlines()[:2]
    assert "embedded Redis" not in printed and "http://127.0.0.1:" in task
    assert logs.startswith("logs: ") and "job queued" in Path(logs.removeprefix("logs: ")).read_text()
    assert len(json.loads(out.read_text())["rows"]) == 5


def _reader(stream) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], text: str, seen: list[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise AssertionError(f"no line with {text!r}; output so far: {''.join(seen)}") from None
        seen.append(line)
        if text in line:
            return line


def test_ctrl_c_off_a_terminal_cancels_the_job_without_asking(api_url, tmp_path):
    # no worker runs on this test's settings: the job stays queued, so it is still there to cancel
    out = tmp_path / "never.csv"
    command = [sys.executable, "-m", "services.cli", "generate", SEED_QUERY, *SEED, "--out", str(out), "--api", api_url]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,  # not a terminal: nobody to ask (test_terminal.py asks on a pty)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdin and process.stdout and process.stderr
    seen: list[str] = []
    try:
        lines = _reader(process.stdout)
        task_id = _wait_for(lines, "task ", seen).split()[1].rstrip(":")
        _wait_for(lines, "Job queued", seen)  # following
        process.send_signal(signal.SIGINT)
        _wait_for(lines, "stdin is not a terminal", seen)
        _wait_for(lines, f"cancelling job {task_id}", seen)
        _wait_for(lines, "cancelled", seen)
        assert process.wait(timeout=30) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Cancel job" not in "".join(seen)
    assert "cancelled" in process.stderr.read()
    assert httpx.get(f"{api_url}/tasks/{task_id}").json()["status"] == "cancelled"
    assert not out.exists()


def test_the_live_display_shows_each_stage_and_its_counters(stack):
    jobs, _ = stack
    task_id = submit(jobs)
    history = follow(jobs, task_id)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    with JobDisplay(console) as display:
        assert display.live
        for event in history:
            display.update(event)
    final = screen.getvalue().split("schema ")[-1]  # the last frame drawn
    assert "done" in final and "2 fields" in final
    kept = next(e for e in history if "found" in e.data)
    assert f"kept {kept.data['documents']} of {kept.data['found']} found" in final
    documents = kept.data["documents"]
    assert f"{documents}/{documents} documents" in final
    assert "5/5 rows" in final and "Dataset ready" in final


def test_a_dropped_event_stream_resumes_after_the_last_event_without_loss_or_repeat(stack):
    jobs, url = stack
    task_id = submit(jobs)
    history = follow(jobs, task_id)
    proxy = CuttingProxy(url)
    try:
        with ApiClient(proxy.url) as client:
            events = list(client.follow_task(task_id))
    finally:
        proxy.close()
    assert events == history
    assert len(proxy.requests) == 2
    assert b"last-event-id: 2\r\n" in proxy.requests[1].lower()


def test_generate_screens_by_the_criteria_given_and_exits_3_when_nothing_answers(stack, tmp_path, capsys):
    _, url = stack
    out = tmp_path / "treatments.json"
    assert main(["generate", SEED_QUERY, *SEED, "--exclude", "chlorine", "--out", str(out), "--api", url]) == 0
    dataset = json.loads(out.read_text())
    excluded = [p for p in dataset["papers"] if p["exclusion"] == "meets an exclusion criterion"]
    assert excluded and all("'chlorine'" in p["reason"] for p in excluded)
    assert not any("chlorin" in str(row["row"]).lower() for row in dataset["rows"])
    assert "papers: " in capsys.readouterr().out

    question = "CRISPR off-target detection methods"
    assert main(["generate", question, *SEED, "--out", str(tmp_path / "none.csv"), "--api", url]) == 3
    printed = capsys.readouterr().out
    assert f"addresses {question!r}" in printed and "(0 rows, 0 citations)" in printed
