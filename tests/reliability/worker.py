"""A litminer worker process for fault tests: the real worker, its heuristic extractor made faulty.

``LITMINER_TEST_FAULT=slow`` sleeps ``LITMINER_TEST_SLOW_S`` per document before extracting, so a test
can act while a stage runs; ``crash`` ends the whole process (``os._exit``) on the first document: a
poison message. Run as ``python -m tests.reliability.worker THREADS``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from contracts import Document, PreparedSchema
from pipeline.extractors import default_extractors
from pipeline.extractors.base import Extraction, Extractor
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.settings import Settings
from pipeline.worker.runtime import WorkerRuntime
from services.logs import configure_logging
from services.worker import start_worker


class SlowExtractor(HeuristicExtractor):
    """The heuristic extractor, ``LITMINER_TEST_SLOW_S`` seconds per document."""

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        await asyncio.sleep(float(os.environ.get("LITMINER_TEST_SLOW_S", "0.5")))
        return await super().extract(query, schema, document)


class CrashExtractor(HeuristicExtractor):
    """Kills the worker process it runs in, every time."""

    async def extract(self, query: str, schema: PreparedSchema, document: Document) -> Extraction:
        os._exit(3)


FAULTS: dict[str, type[HeuristicExtractor]] = {"slow": SlowExtractor, "crash": CrashExtractor}


def faulty_extractors(settings: Settings, fault: str) -> dict[str, Extractor]:
    """The production extractors, the heuristic one replaced by a faulty one when ``fault`` names one."""
    return default_extractors(settings) | ({"heuristic": FAULTS[fault]()} if fault else {})


def main() -> None:
    configure_logging("INFO")
    settings = Settings.from_env()
    runtime = WorkerRuntime(settings, extractors=faulty_extractors(settings, os.environ.get("LITMINER_TEST_FAULT", "")))
    worker = start_worker(runtime, threads=int(sys.argv[1]) if len(sys.argv) > 1 else 4)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print("worker ready", flush=True)
    stop.wait()
    worker.stop()
    runtime.close()


if __name__ == "__main__":
    main()
