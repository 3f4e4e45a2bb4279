"""A worker process seen from outside: its heartbeat, Prometheus metrics, and the log context of each message."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from contracts import Stage
from contracts.ops import WorkerInfo
from pipeline.log_context import current_job
from pipeline.store import LIVE_S, REDIS_ERRORS, WorkerRegistry

log = logging.getLogger(__name__)


class WorkerMetrics:
    """Prometheus metrics of one worker process, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["actor"]
        self.processed = Counter(
            "litminer_worker_messages_processed", "Messages processed.", labels, registry=self.registry
        )
        self.failed = Counter(
            "litminer_worker_messages_failed", "Messages failed for good.", labels, registry=self.registry
        )
        self.retried = Counter(
            "litminer_worker_messages_retried",
            "Messages that failed and were scheduled again.",
            labels,
            registry=self.registry,
        )
        self.in_flight = Gauge("litminer_worker_in_flight", "Messages being processed.", registry=self.registry)
        self.duration = Histogram(
            "litminer_worker_stage_duration_seconds",
            "Time one stage message took.",
            ["stage"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )


class WorkerStatus(Middleware):
    """Heartbeats, counters and metrics of the worker this broker runs in; sets each message's log context.

    The heartbeat is written every ``interval_s`` from a thread of its own, so a worker busy in long stages
    still shows live.
    """

    def __init__(
        self, registry: WorkerRegistry, stages: dict[str, Stage], *, interval_s: float, metrics_port: int
    ) -> None:
        self.registry = registry
        self.stages = stages
        self.interval_s = interval_s
        self.metrics_port = metrics_port
        self.metrics = WorkerMetrics()
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        self.threads = 0
        self.counts = {"processed": 0, "failed": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._started: dict[str, float] = {}  # message id → start (monotonic): the messages in flight

    # -- lifecycle -------------------------------------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.threads = int(getattr(worker, "worker_threads", 0))
        self._stop.clear()
        try:
            self.beat()
        except REDIS_ERRORS as exc:  # the thread below beats again in a moment
            log.warning("heartbeat failed: %s", exc)
        self._thread = threading.Thread(target=self._beat_forever, name="litminer-heartbeat", daemon=True)
        self._thread.start()
        if self.metrics_port:
            self._server, _ = start_http_server(self.metrics_port, registry=self.metrics.registry)
            log.info("worker metrics on port %d", self.metrics_port)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        try:
            self.registry.remove(self.worker_id)
        except REDIS_ERRORS as exc:  # the heartbeat then expires by itself
            log.warning("could not remove the heartbeat of %s: %s", self.worker_id, exc)

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except REDIS_ERRORS as exc:  # Redis away for a moment: try again next time
                log.warning("heartbeat failed: %s", exc)

    def beat(self) -> None:
        """Write this worker's heartbeat (one round trip)."""
        now = time.time()
        with self._lock:
            counts = self.counts | {"in_flight": len(self._started)}
        info = WorkerInfo(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            threads=self.threads,
            started_at=self.started_at,
            last_seen=now,
            age_s=0.0,
            **counts,
        )
        self.registry.beat(info, ttl_s=max(int(LIVE_S * 2), int(self.interval_s * 3)))

    # -- messages --------------------------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        stage = self.stages.get(message.actor_name)
        if stage is not None and message.args:
            current_job.set((str(message.args[0]), stage))
        with self._lock:
            self._started[message.message_id] = time.monotonic()
        self.metrics.in_flight.inc()

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: object = None, exception: BaseException | None = None
    ) -> None:
        self._done(message, exception is not None and message.failed)
        if exception is None:
            self.metrics.processed.labels(message.actor_name).inc()
        elif message.failed:
            self.metrics.failed.labels(message.actor_name).inc()
        else:
            self.metrics.retried.labels(message.actor_name).inc()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._done(message, False)

    def _done(self, message: Any, failed: bool) -> None:
        """A message processed or skipped; skipped ones may never have started (an earlier middleware's skip)."""
        with self._lock:
            self.counts["failed" if failed else "processed"] += 1
            started = self._started.pop(message.message_id, None)
        current_job.set(None)
        if started is None:
            return
        self.metrics.in_flight.dec()
        stage = self.stages.get(message.actor_name)
        if stage is not None:
            self.metrics.duration.labels(stage).observe(time.monotonic() - started)
