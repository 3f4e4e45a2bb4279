"""Run benchmarks: ``python -m bench [NAME|all] [--quick]``; prints markdown tables, writes bench/results/NAME.json."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import baseline, capacity, estimate, events, extract, fairness, library, llm, memory, pipeline, relevance

BENCHMARKS: dict[str, Callable[[bool], dict[str, object]]] = {
    "pipeline": pipeline.run,
    "celery": baseline.run,
    "events": events.run,
    "library": library.run,
    "extract": extract.run,
    "memory": memory.run,
    "relevance": relevance.run,
    "fairness": fairness.run,
    "capacity": capacity.run,
    "estimate": estimate.run,
    "llm": llm.run,
}
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", nargs="?", default="all", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute in all)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    for name in BENCHMARKS if args.name == "all" else [args.name]:
        started = time.monotonic()
        result = BENCHMARKS[name](args.quick)
        result["seconds"] = round(time.monotonic() - started, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {RESULTS / f'{name}.json'} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
