"""Resident memory of the deployed processes: an idle API and an idle worker, then both under load.

Idle: ``litminer api`` and ``litminer worker --processes 1 --threads 8`` started as deployed, on a private Redis,
measured after they settle; the worker's CPU while idle is measured too (its consumers wait on Redis). Under
load: the peaks the pipeline and events benchmarks recorded (``bench/results/{pipeline,events}.json``), when
they ran before this one (``python -m bench all`` runs them first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.proc import cpu_s, rss_mb
from services.embedded_redis import EmbeddedRedis, free_port

RESULTS = Path(__file__).parent / "results"
SETTLE_S = 1.0


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "--log-level", "ERROR", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:  # also: a worker's heartbeat arrived
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the API and worker did not become ready in 30 s")


def _under_load() -> dict[str, float | None]:
    """Peaks recorded by the pipeline and events benchmarks, if they ran."""
    found: dict[str, float | None] = {"worker_drain": None, "api_pipeline": None, "api_events": None}
    pipeline, events = RESULTS / "pipeline.json", RESULTS / "events.json"
    if pipeline.exists():
        measured = json.loads(pipeline.read_text())
        found["worker_drain"] = max(m["worker_peak_rss_mb"] for m in measured["throughput"].values())
        found["api_pipeline"] = measured["latency"]["api_peak_rss_mb"]
    if events.exists():
        found["api_events"] = json.loads(events.read_text())["api_rss_mb"]["peak"]
    return found


def run(quick: bool) -> dict[str, object]:
    idle_s = 2.0 if quick else 20.0
    with EmbeddedRedis() as server:
        port = free_port()
        env = {**os.environ, "REDIS_URL": server.url, "LITMINER_KEY_PREFIX": "bench-memory:"}
        api = _start(["api", "--port", str(port)], env)
        worker = _start(["worker", "--processes", "1", "--threads", "8"], env)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}")
            time.sleep(SETTLE_S)
            before = {"api": cpu_s(api.pid), "worker": cpu_s(worker.pid)}
            time.sleep(idle_s)
            idle_cpu = {
                name: round((cpu_s(p.pid) - before[name]) / idle_s * 100, 2)
                for name, p in (("api", api), ("worker", worker))
            }
            idle = {"api": round(rss_mb(api.pid), 1), "worker": round(rss_mb(worker.pid), 1)}
        finally:
            for process in (api, worker):
                process.terminate()
            for process in (api, worker):
                process.wait(15)
    load = _under_load()
    print("\n## memory: resident set size (RSS)\n")
    print("| process | idle MB | idle CPU % of a core | under load MB | target (idle) |")
    print("|---|---|---|---|---|")
    api_load = ", ".join(f"{v} ({k[4:]})" for k, v in load.items() if k.startswith("api") and v is not None) or "–"
    worker_load = f"{load['worker_drain']} (pipeline drain)" if load["worker_drain"] is not None else "–"
    print(f"| API (`litminer api`) | {idle['api']} | {idle_cpu['api']} | {api_load} | ≤ 80 MB |")
    print(f"| worker process (8 threads) | {idle['worker']} | {idle_cpu['worker']} | {worker_load} | ≤ 120 MB |")
    if None in load.values():
        print("\n(Under load: run `python -m bench pipeline` and `python -m bench events` first.)")
    return {
        "idle_rss_mb": idle,
        "idle_cpu_percent": idle_cpu,
        "idle_window_s": idle_s,
        "under_load_rss_mb": load,
        "quick": quick,
    }
