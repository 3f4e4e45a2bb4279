"""`litminer generate` shows each row as it is found, then what assembly made of it (real API, worker, Redis)."""

from __future__ import annotations

import io
import json
import re

import msgspec
from rich.console import Console

from contracts import Dataset, GenerateRequest
from contracts.progress import ExtractionDone, RowFound, read_data
from services.cli import main
from services.demo import SEED_FIELDS, SEED_QUERY
from services.progress import JobDisplay, print_outcomes
from tests.conftest import follow
from tests.integration.test_streamed_rows import TwiceExtractor

ARGS = ["--rows", "3", "--fields", json.dumps(SEED_FIELDS), "--model-name", "TreatmentTechnologies"]


def test_generate_prints_each_row_found_then_marks_the_merged_and_dropped_ones(
    make_jobs, run_worker, api_url, tmp_path, capsys
):
    run_worker(extractors={"heuristic": TwiceExtractor()})
    out = tmp_path / "treatments.json"
    assert main(["generate", SEED_QUERY, *ARGS, "--out", str(out), "--api", api_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    dataset = msgspec.json.decode(out.read_bytes(), type=Dataset)

    found = [i for i, line in enumerate(lines) if re.match(r"\[ *\d+%\] extraction +processing Row found in '", line)]
    done = next(i for i, line in enumerate(lines) if "Extracted " in line and " candidate rows from " in line)
    candidates = [c for row in dataset.rows for c in row.candidates] + list(dataset.stats.dropped_candidates)
    assert len(found) == len(candidates) and max(found) < done  # one line per row, while extraction runs
    assert "technology_name=" in lines[found[0]]

    merged = sum(len(row.candidates) - 1 for row in dataset.rows)
    dropped = dataset.stats.dropped_candidates
    summary = f"{len(candidates)}: 3 kept, {merged} merged into another, {len(dropped)} dropped"
    at = lines.index(f"rows found while reading: {summary}")
    assert at > next(i for i, line in enumerate(lines) if "TreatmentTechnologies: 3 rows" in line) > done
    listed = lines[at + 1 :]
    for row in dataset.rows:
        for candidate in row.candidates[1:]:
            assert any(f"({candidate}) into row {row.row_id}" in line and "merged" in line for line in listed)
    for candidate, why in dropped.items():
        assert any(line.endswith(f"({candidate}): {why}") and "dropped" in line for line in listed)


def test_the_live_display_prints_rows_above_the_bars(make_jobs, run_worker):
    jobs = make_jobs()
    run_worker(extractors={"heuristic": TwiceExtractor()})
    body = {"user_query": SEED_QUERY, "field_definitions": SEED_FIELDS, "rows": 3}
    task_id = jobs.submit(msgspec.convert(body, type=GenerateRequest)).task_id
    history = follow(jobs, task_id)
    rows = [data for e in history if isinstance(data := read_data(e.data), RowFound)]
    assert rows and any(isinstance(read_data(e.data), ExtractionDone) for e in history)

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200, color_system=None)
    replayed = [e for e in history if isinstance(read_data(e.data), RowFound)][:3]  # a redelivered batch's rows
    with JobDisplay(console) as display:
        for event in history + replayed:
            display.update(event)
    assert list(display.found) == [data.candidate for data in rows]
    assert screen.getvalue().count("+ Row found in '") == len(rows)  # each shown once
    print_outcomes(console, jobs.dataset(task_id), display.found)
    assert f"rows found while reading: {len(rows)}: 3 kept" in screen.getvalue()
