"""The reaper: gives dead workers' messages back to their queues, and sends on the stage of unfinished jobs
that nothing carries on any more.

A job moves only through its messages. When a message is gone (acknowledged after an outcome that Redis
refused to store for longer than a worker waits, or lost with a Redis that restarted without persistence)
and the job is not finished, nothing would ever change it again. Each worker runs a reaper thread; one of
them at a time (a turn held in Redis) looks for such jobs every quarter of ``LITMINER_REAP_AFTER_S``.

A message a dead worker held goes back on its queue when Dramatiq's queue maintenance runs on that queue
after the worker's broker heartbeat timed out; Dramatiq runs it on a random share of commands, which
consumers waiting on a wake-up list (``pipeline.store.queues``) seldom send. So the reaper also runs it on
every stage queue every few seconds (``MAINTENANCE_S``), one worker at a time, and then releases the extraction
batches the fair-sharing window allows (``pipeline.store.fair``): a safety net for releases a batch's end could
not make (Redis away for a moment) and for slots whose message left the queue without a worker finishing it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from contracts import STAGES, JobRecord, Stage
from pipeline.store import REDIS_ERRORS, Store
from pipeline.store.queues import WakingRedisBroker

log = logging.getLogger(__name__)

#: times a job's stage is sent again before the job ends as ``error``
MAX_REAPS = 2
#: how often one of the workers runs Dramatiq's queue maintenance on every queue
MAINTENANCE_S = 2.0


class Reaper(Middleware):
    """Sends again the stage of a job unchanged for ``after_s`` with no message queued, delayed or in flight."""

    def __init__(self, store: Store, *, after_s: float) -> None:
        self.store = store
        self.after_s = after_s
        self.interval_s = max(after_s / 4, 0.5)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        assert isinstance(broker, WakingRedisBroker)  # the store's broker, whose queues it maintains
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="litminer-reaper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, broker: WakingRedisBroker) -> None:
        queues = self.store.queues
        while not self._stop.wait(min(self.interval_s, MAINTENANCE_S)):
            try:
                if queues.take_turn(self.store.keys.maintenance_turn, int(MAINTENANCE_S * 1000)):
                    queues.maintain(broker)
                    queues.fair.release()
                if queues.take_turn(self.store.keys.reaper_turn, int(self.interval_s * 1000)):
                    self.reap(broker)
            except REDIS_ERRORS as exc:  # Redis away for a moment: look again next time
                log.warning("reaper: %s", exc)

    def reap(self, broker: dramatiq.Broker) -> list[str]:
        """One look; returns the ids of the jobs sent on again or ended."""
        stale = self.store.jobs.unchanged_since(time.time() - self.after_s)
        if not stale:
            return []
        live = self.store.queues.live_messages()
        reaped = []
        for raw, job in stale:
            carried = any(message_id in live for message_id in self.store.jobs.running_messages(job))
            if not carried and self._recover(broker, raw, job):
                reaped.append(job.task_id)
        return reaped

    def _recover(self, broker: dramatiq.Broker, raw: bytes, job: JobRecord) -> bool:
        """Send the job's stage again, or end the job after ``MAX_REAPS`` times; False when the job changed
        meanwhile (it is carried on after all)."""
        stage: Stage = job.stage if job.stage in STAGES else (job.from_stage or "schema_preparation")
        context = {"task_id": job.task_id, "stage": stage}
        lost = f"no message carried it on for {self.after_s:g} s (its last outcome could not be stored in Redis)"
        if self.store.jobs.reaps(job.task_id) >= MAX_REAPS:
            error = f"stage {stage} was lost {MAX_REAPS + 1} times: {lost}"
            ended = self.store.jobs.transition(
                job.task_id,
                status="error",
                error=error,
                message=f"Stage {stage} failed: {error}; re-run it with `litminer rerun {job.task_id} --stage {stage}`",
                only_from=raw,
            )
            if ended is not None:
                log.error("reaper ended the job: %s", error, extra=context)
            return ended is not None
        message = self.store.queues.message(stage, job.task_id)
        sent_on = self.store.jobs.transition(
            job.task_id, message_id=message.message_id, message=f"Stage {stage} sent again: {lost}", only_from=raw
        )
        if sent_on is None:
            return False
        self.store.jobs.count_reap(job.task_id)
        log.warning("reaper sends the stage again: %s", lost, extra=context)
        self.store.queues.send(message, broker)
        return True
