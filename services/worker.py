"""The worker process: runs the stage actors (``pipeline.worker.runtime``) with Dramatiq worker threads."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
from collections.abc import Mapping
from multiprocessing.context import SpawnProcess

import dramatiq
import msgspec
from dramatiq import Worker

from pipeline.extractors.base import Extractor
from pipeline.settings import Settings
from pipeline.sources.base import Source
from pipeline.store.connections import where
from pipeline.worker.runtime import WorkerRuntime
from services.logs import configure_logging

log = logging.getLogger(__name__)


def start_worker(runtime: WorkerRuntime, *, threads: int = 8) -> Worker:
    """Start a Dramatiq worker for all stage queues of ``runtime`` in this process."""
    dramatiq.set_broker(runtime.broker)
    # Idle consumers block on a wake-up list (pipeline.store.queues.WakingRedisBroker): the timeout only bounds
    # how long a stop or a delayed retry waits, and costs one BLPOP per queue per timeout while idle.
    worker = Worker(runtime.broker, worker_threads=threads, worker_timeout=500)
    # Hold no more messages than there are threads (Dramatiq's default is twice as many), so the
    # batches of one big job spread over all workers instead of queueing behind one worker's threads.
    worker.queue_prefetch = threads
    # What Dramatiq's own CLI does in each worker process: TimeLimit starts its watcher on this signal, and
    # without it no stage would ever be stopped at LITMINER_STAGE_TIME_LIMIT_MS.
    runtime.broker.emit_after("process_boot")
    worker.start()
    return worker


def run_worker_process(
    settings: Settings,
    threads: int,
    log_level: str = "INFO",
    *,
    sources: Mapping[str, Source] | None = None,
    extractors: Mapping[str, Extractor] | None = None,
) -> None:
    """Run one worker until SIGINT or SIGTERM, then stop gracefully (``sources``/``extractors``: as in
    WorkerRuntime)."""
    configure_logging(log_level)
    runtime = WorkerRuntime(settings, sources=sources, extractors=extractors)
    worker = start_worker(runtime, threads=threads)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    log.info("worker started with %d threads on %s", threads, where(settings))
    stop.wait()
    log.info("worker stopping")
    worker.stop()
    runtime.close()


#: a worker process that dies sooner than this after its start is replaced only after as long again
_CRASH_LOOP_S = 5.0


def run_workers(settings: Settings, *, processes: int, threads: int, log_level: str = "INFO") -> int:
    """Run ``processes`` worker processes of ``threads`` threads each, starting a new one in place of any that
    dies, until SIGINT or SIGTERM; returns an exit code."""
    if processes <= 1:
        run_worker_process(settings, threads, log_level)
        return 0
    configure_logging(log_level)  # for the lines of this parent process, which only watches its children
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start(index: int) -> SpawnProcess:
        child = context.Process(
            target=run_worker_process,
            args=(_numbered(settings, index), threads, log_level),
            name=f"litminer-worker-{index}",
        )
        child.start()
        return child

    children = {index: start(index) for index in range(processes)}
    started = dict.fromkeys(children, time.monotonic())

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children.values():
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    exit_code = 0
    while children:
        multiprocessing.connection.wait([child.sentinel for child in children.values()])
        for index, child in list(children.items()):
            if child.is_alive():
                continue
            child.join()
            del children[index]
            if stopping.is_set():
                exit_code = max(exit_code, child.exitcode or 0)
                continue
            log.error("worker process %d (pid %s) exited with %s; starting a new one", index, child.pid, child.exitcode)
            if time.monotonic() - started[index] < _CRASH_LOOP_S:  # dying at start: do not spin
                stopping.wait(_CRASH_LOOP_S)
            if not stopping.is_set():
                children[index], started[index] = start(index), time.monotonic()
                if stopping.is_set():  # a signal came while it started: it was not among those told to stop
                    children[index].terminate()
    return exit_code


def _numbered(settings: Settings, index: int) -> Settings:
    """Settings of worker process ``index``: its own metrics port (LITMINER_WORKER_METRICS_PORT + index)."""
    if not settings.worker_metrics_port:
        return settings
    return msgspec.structs.replace(settings, worker_metrics_port=settings.worker_metrics_port + index)
