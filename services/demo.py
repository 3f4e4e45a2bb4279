"""The embedded demo: the seed's example end to end, with no setup."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from contracts import TERMINAL_STATUSES, Dataset, decode_event
from pipeline.export import to_csv, to_json
from pipeline.runtime import Pipeline
from pipeline.schema import parse_generate_request
from pipeline.settings import Settings
from services.embedded_redis import EmbeddedRedis
from services.worker import start_worker

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
) -> int:
    """Run one job in this process (embedded Redis unless REDIS_URL is set); 0 when it completed.

    ``sources`` defaults to the bundled local corpus, so the demo needs no network.
    """
    env = dict(os.environ if env is None else env)
    body = {
        "user_query": query,
        "rows": rows,
        "model_name": model_name,
        "field_definitions": fields or SEED_FIELDS,
        "sources": sources or ["local"],
    }
    request = parse_generate_request(body, max_rows=Settings.from_env(env).max_rows)  # refused before anything starts
    with ExitStack() as stack:
        if not env.get("REDIS_URL"):
            redis_server = stack.enter_context(EmbeddedRedis())
            env["REDIS_URL"] = redis_server.url
            print(f"embedded Redis on {redis_server.url}")
        pipeline = Pipeline(Settings.from_env(env))
        stack.callback(pipeline.close)
        pipeline.validate_choices(request)
        worker = start_worker(pipeline, threads=4)
        stack.callback(worker.stop)
        job = pipeline.submit(request)
        print(f"task {job.task_id}: {query!r}, {rows} rows")
        status = _follow(pipeline, job.task_id)
        dataset = pipeline.dataset(job.task_id)
        if status != "completed" or dataset is None:
            print(f"job ended {status}", file=sys.stderr)
            return 1
        _write(dataset, out_dir)
        return 0
    return 1  # pragma: no cover - ExitStack never swallows


def _follow(pipeline: Pipeline, task_id: str) -> str:
    """Print every event of the task as it arrives; return the terminal status."""
    seq = 0
    while True:
        for raw in pipeline.events.history(task_id, after=seq, block_ms=5000):
            event = decode_event(raw)
            seq = event.seq
            print(f"[{event.progress:3d}%] {event.stage:<18} {event.status:<10} {event.message}")
            if event.status in TERMINAL_STATUSES:
                return event.status


def _write(dataset: Dataset, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dataset.json").write_bytes(to_json(dataset))
    (out_dir / "dataset.csv").write_text(to_csv(dataset), encoding="utf-8")
    names = [f.name for f in dataset.schema]
    print()
    print(" | ".join(names) + " | citations")
    for row in dataset.rows:
        print(" | ".join(json.dumps(row.row.get(n)) for n in names) + f" | {len(row.citations)}")
    if dataset.stats.shortfall:
        print(f"note: {dataset.stats.shortfall}")
    print(f"\nwrote {out_dir / 'dataset.json'} and {out_dir / 'dataset.csv'} ({len(dataset.rows)} rows)")
