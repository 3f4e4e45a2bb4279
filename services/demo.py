"""The embedded demo: the example question end to end, with no setup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console

from pipeline.schema import check_request
from pipeline.settings import Settings
from pipeline.sources.registry import reachable
from services.api.requests import parse_generate_request
from services.client import ApiClient, ExportFormat
from services.embedded import EmbeddedStack, EmbeddedStackError, exit_on_signals
from services.logs import configure_logging, new_log_file
from services.progress import generate, say

#: how long the sources of a generate --embedded without --sources get to accept a connection
_PROBE_S = 2.0

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
    log_level: str = "INFO",
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
    outputs: list[tuple[Path | None, ExportFormat]] = [
        (out_dir / "dataset.json", "json"),
        (out_dir / "dataset.csv", "csv"),
    ]
    return run_embedded(body, outputs, env=env, console=console, log_level=log_level)


def run_embedded(
    body: dict[str, object],
    outputs: list[tuple[Path | None, ExportFormat]],
    *,
    env: Mapping[str, str] | None = None,
    console: Console | None = None,
    log_level: str = "INFO",
) -> int:
    """Generate ``body`` on an ``EmbeddedStack``, following it live and writing ``outputs``.

    The request is validated first, so a bad one is refused before anything starts. Without ``sources`` in
    ``body`` the job searches the default sources that can be reached from here (an offline machine would
    otherwise wait minutes for retries), and ``EmbeddedStackError`` says so when none can. The worker's and
    the API's logs go to a new file (its path is printed), so they never cross the live display.
    """
    env = dict(os.environ if env is None else env)
    console = console or Console()
    settings = Settings.from_env(env)
    check_request(parse_generate_request(body), max_rows=settings.max_rows)
    if not body.get("sources"):
        body = body | {"sources": _reachable_sources(settings, console)}
    log_file = new_log_file("embedded")
    configure_logging(log_level, file=log_file)
    say(console, f"logs: {log_file}")
    shown = console

    def on_redis(url: str) -> None:
        say(shown, f"embedded Redis on {url}")

    with exit_on_signals(), EmbeddedStack(env, on_redis=on_redis) as stack, ApiClient(stack.url, api_key="") as client:
        return generate(client, body, console, outputs)


def _reachable_sources(settings: Settings, console: Console) -> list[str]:
    """The default sources (``LITMINER_SOURCES`` or the built-in choice) that answer from here; says which do not."""
    names = list(settings.default_sources())
    up = reachable(settings, names, timeout_s=_PROBE_S)
    kept = [name for name in names if up[name]]
    left_out = [name for name in names if not up[name]]
    if not kept:
        raise EmbeddedStackError(
            f"no source can be reached from here ({', '.join(left_out)}: no connection within {_PROBE_S:g} s); "
            "check the network, or search the bundled sample library with --sources local (as litminer demo does)"
        )
    if left_out:
        say(
            console,
            f"searching {', '.join(kept)}; left out {', '.join(left_out)}: no connection within {_PROBE_S:g} s "
            "(--sources names the sources to search)",
        )
    return kept
