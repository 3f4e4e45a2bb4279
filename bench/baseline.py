"""litminer against the seed's design (Celery 5, ``bench.celery_app``) on the same work, Redis and machine.

Measured alternately, A then B, in one process so that drift of the machine touches both: throughput of N
jobs queued at once (litminer with 2 worker processes × 8 threads, Celery with a prefork pool of 8), then
latency one job at a time, back to back and after a 0.5 s idle gap. litminer's latency is measured at an SSE
client of its API; Celery's at a Redis pub/sub subscriber (the seed's API would add a hop).
"""

from __future__ import annotations

import logging
import uuid

from bench import celery_app
from bench.pipeline import IDLE_GAP_S, drain, latency_summary, measure_latency, scratch_folder
from services.embedded_redis import EmbeddedRedis


def run(quick: bool) -> dict[str, object]:
    for name in ("", "dramatiq", "pipeline", "services", "celery"):
        logging.getLogger(name).setLevel(logging.WARNING)
    jobs, rounds = (100, 1) if quick else (2000, 2)
    sequential, idle = (10, 2) if quick else (200, 50)
    litminer: list[float] = []
    celery: list[float] = []
    litminer_cpu: list[float] = []  # jobs per CPU-second of the worker processes
    celery_cpu: list[float] = []
    with EmbeddedRedis() as server, scratch_folder() as folder:
        for round_ in range(rounds):
            ours = drain(server, 2, jobs, folder)
            rate, per_cpu = ours["jobs_per_s"], ours["jobs_per_worker_cpu_s"]
            assert isinstance(rate, float) and isinstance(per_cpu, float)
            litminer.append(rate)
            litminer_cpu.append(per_cpu)
            prefix = f"bench-celery-{uuid.uuid4().hex[:8]}:"
            seconds, cpu, worker = celery_app.drain(server.url, prefix, jobs)
            celery.append(round(jobs / seconds, 1))
            celery_cpu.append(round(jobs / cpu, 1))
            if round_ < rounds - 1:
                celery_app.stop_worker(worker)
        latency = measure_latency(server.url, sequential, idle, folder)
        try:  # the last round's Celery worker, idle since
            theirs = {
                "back_to_back": latency_summary(celery_app.latencies(server.url, prefix, sequential)),
                "after_idle": latency_summary(celery_app.latencies(server.url, prefix, idle, gap_s=IDLE_GAP_S)),
            }
        finally:
            celery_app.stop_worker(worker)
    ours_rate, their_rate = sum(litminer) / rounds, sum(celery) / rounds
    ours_cpu, their_cpu = sum(litminer_cpu) / rounds, sum(celery_cpu) / rounds
    b2b, gap = latency["back_to_back"], latency["after_idle"]
    assert isinstance(b2b, dict) and isinstance(gap, dict)
    print(f"\n## celery: litminer against the seed's Celery design, {jobs} jobs × {rounds} alternating rounds\n")
    print("| measure | litminer (2 × 8 threads) | Celery 5 (prefork × 8) | litminer / Celery |")
    print("|---|---|---|---|")
    rows = [
        ("jobs/s", ours_rate, their_rate),
        ("jobs per worker CPU-second", ours_cpu, their_cpu),
        ("back-to-back p50 ms", b2b["p50_ms"], theirs["back_to_back"]["p50_ms"]),
        ("back-to-back p99 ms", b2b["p99_ms"], theirs["back_to_back"]["p99_ms"]),
        (f"after {IDLE_GAP_S} s idle p50 ms", gap["p50_ms"], theirs["after_idle"]["p50_ms"]),
    ]
    for label, a, b in rows:
        print(f"| {label} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    print(f"\nRounds (jobs/s): litminer {litminer}, Celery {celery}; (jobs per worker CPU-second): litminer")
    print(f"{litminer_cpu}, Celery {celery_cpu}. Targets: throughput and jobs per worker CPU-second ≥ 1.5 × Celery's;")
    print("back-to-back and after-idle p50 ≤ Celery's.")
    return {
        "jobs": jobs,
        "rounds": {
            "litminer_jobs_per_s": litminer,
            "celery_jobs_per_s": celery,
            "litminer_jobs_per_worker_cpu_s": litminer_cpu,
            "celery_jobs_per_worker_cpu_s": celery_cpu,
        },
        "throughput_ratio": round(ours_rate / their_rate, 2),
        "cpu_ratio": round(ours_cpu / their_cpu, 2),
        "litminer_latency": {"back_to_back": b2b, "after_idle": gap},
        "celery_latency": theirs,
        "quick": quick,
    }
