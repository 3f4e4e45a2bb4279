"""The embedded demo: the example question end to end, with no setup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console

from pipeline.schema import check_request
from pipeline.settings import Settings
from services.api.requests import parse_generate_request
from services.client import ApiClient, ExportFormat
from services.embedded import EmbeddedStack
from services.progress import generate, say

SEED_QUERY = "water treatment technologies used in specialty crop production"
SEED_FIELDS: list[dict[str, object]] = [
    {
        "name": "technology_id",
        "type": "str",
        "description": "Unique identifier for water treatment technology",
        "required": True,
    },
    {"name": "technology_name", "type": "str", "description": "Name of water treatment technology", "required": True},
]


def run_demo(
    *,
    query: str = SEED_QUERY,
    rows: int = 5,
    fields: object = None,
    model_name: str = "TreatmentTechnologies",
    out_dir: Path = Path("."),
    sources: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    console: Console | None = None,
) -> int:
    """Run one job in this process (embedded Redis unless REDIS_URL is set); 0 when it completed.

    The job goes through the real API, served in this process, exactly as ``litminer generate`` sends it;
    the dataset is written to ``out_dir`` as ``dataset.json`` and ``dataset.csv``. ``sources`` defaults to
    the bundled local corpus, so the demo needs no network.
    """
    body: dict[str, object] = {
        "user_query": query,
        "rows": rows,
        "model_name": model_name,
        "field_definitions": fields or SEED_FIELDS,
        "sources": sources or ["local"],
    }
    return run_embedded(
        body, [(out_dir / "dataset.json", "json"), (out_dir / "dataset.csv", "csv")], env=env, console=console
    )


def run_embedded(
    body: dict[str, object],
    outputs: list[tuple[Path | None, ExportFormat]],
    *,
    env: Mapping[str, str] | None = None,
    console: Console | None = None,
) -> int:
    """Generate ``body`` on an ``EmbeddedStack``, following it live and writing ``outputs``.

    The request is validated first, so a bad one is refused before anything starts.
    """
    env = dict(os.environ if env is None else env)
    console = console or Console()
    check_request(parse_generate_request(body), max_rows=Settings.from_env(env).max_rows)
    shown = console

    def on_redis(url: str) -> None:
        say(shown, f"embedded Redis on {url}")

    with EmbeddedStack(env, on_redis=on_redis) as stack, ApiClient(stack.url, api_key="") as client:
        return generate(client, body, console, outputs)
