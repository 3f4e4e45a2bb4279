"""`litminer demo`, the main job, run as a user runs it: a subprocess with its own embedded Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``litminer [args…] demo --out tmp_path`` with its own embedded Redis and index, ``env`` added."""
    environment = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environment |= {"LITMINER_INDEX_DIR": str(tmp_path / "index"), "TMPDIR": str(tmp_path), **env}  # TMPDIR: logs
    command = [sys.executable, "-m", "services.cli", *args, "--out", str(tmp_path)]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)


def test_demo_writes_five_cited_rows_and_a_csv(tmp_path, sample_records):
    result = demo(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and "embedded Redis" in result.stdout
    assert "LITMINER_API_KEYS" not in result.stdout + result.stderr  # it binds 127.0.0.1 itself: no warning
    assert result.stderr == ""  # the worker's and the API's logs went to the file named on stdout
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert len(dataset["rows"]) == 5
    for row in dataset["rows"]:
        assert any(c["text_span"] in sample_records[c["source_id"]] for c in row["citations"])
    csv_lines = (tmp_path / "dataset.csv").read_text().splitlines()
    header = "technology_id,technology_name,confidence,sources,evidence,support,review,row_id"
    assert csv_lines[0] == header and len(csv_lines) == 6


def test_demo_on_a_question_the_corpus_does_not_answer_exits_3_and_says_why(tmp_path):
    result = demo(tmp_path, "demo", "--query", "CRISPR off-target detection methods")
    assert result.returncode == 3, result.stderr
    assert "addresses 'CRISPR off-target detection methods'" in result.stdout
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["rows"] == [] and dataset["papers"]
    assert all(p["decision"] == "excluded" and p["reason"] for p in dataset["papers"])


def test_demo_rejects_a_bad_fields_file_with_exit_code_2(tmp_path):
    fields = tmp_path / "fields.json"
    fields.write_text('[{"name": "bad name"}]')
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--fields", str(fields), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": ""},
    )
    assert result.returncode == 2
    assert "field_definitions[0].name" in result.stderr
    assert "embedded Redis" not in result.stdout  # refused before anything started
    assert not (tmp_path / "dataset.json").exists()


def test_demo_searches_openalex_when_asked(tmp_path, scholarly):
    result = demo(
        tmp_path,
        *("--log-level", "INFO", "demo", "--sources", "openalex", "--rows", "2"),
        LITMINER_OPENALEX_URL=scholarly.url("openalex"),
        OPENALEX_API_KEY="demo-key",
        LITMINER_SCREENING_THRESHOLD="0",  # the stand-in's few papers: see online_settings in conftest
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"openalex: \d+ documents for '\"water treatment technologies\" ", result.stdout), result.stdout
    calls = scholarly.calls("/openalex/works")
    assert calls and all(c.params["api_key"] == "demo-key" for c in calls)
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["rows"] and all(
        c["metadata"]["source"] == "openalex"
        for r in dataset["rows"]
        for c in r["citations"]
        if c["source_id"] != "generated"
    )
    logs = Path(re.search(r"^logs: (.+)$", result.stdout, re.MULTILINE)[1]).read_text()  # type: ignore[index]
    assert "/works" in logs and "/works" not in result.stderr  # requests are logged, to the file, without the key
    assert "demo-key" not in result.stdout + result.stderr + logs


def test_demo_rejects_an_unknown_source_with_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--sources", "nowhere", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": "", "LITMINER_INDEX_DIR": str(tmp_path / "index")},
    )
    assert result.returncode == 2
    assert "sources: unknown source 'nowhere'" in result.stderr
    assert not (tmp_path / "dataset.json").exists()
