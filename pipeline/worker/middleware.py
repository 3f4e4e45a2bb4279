"""Dramatiq middleware of ours: exact retry backoff, job status + events from the actors' lifecycle, and the
release of the next extraction batches when one ends."""

from __future__ import annotations

import functools
import logging
import random
import traceback
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage, TimeLimitExceeded
from dramatiq_abort import Abort

from contracts import JobRecord, Stage
from contracts.progress import STAGE_START, StageRetrying, StageStarted
from pipeline.errors import JobCancelled
from pipeline.store import BATCH_ACTOR, REDIS_ERRORS, JobStore
from pipeline.store.fair import FairShare
from pipeline.store.jobs import Redelivered
from pipeline.store.outages import describe, until_redis_answers
from pipeline.store.queues import JOB_OPTION

log = logging.getLogger(__name__)


class StageRetries(Middleware):
    """Retries failed messages after min × 2^n ms (30 s, 60 s, 120 s by default), capped at max.

    Replaces Dramatiq's Retries, whose backoff always adds random jitter; here jitter is opt-in.
    Exceptions in ``permanent`` (aborts included) fail the message at once.
    """

    def __init__(
        self,
        *,
        max_retries: int,
        min_backoff_ms: int,
        max_backoff_ms: int,
        jitter: bool,
        permanent: tuple[type[BaseException], ...],
    ) -> None:
        self.max_retries = max_retries
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.jitter = jitter
        self.permanent = permanent

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries"}

    def backoff_ms(self, retries: int) -> int:
        """Delay before retry number ``retries + 1``."""
        delay = int(min(self.min_backoff_ms * 2**retries, self.max_backoff_ms))
        if self.jitter:
            delay = min(int(delay * random.uniform(1, 2)), self.max_backoff_ms)
        return delay

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: object = None, exception: BaseException | None = None
    ) -> None:
        if exception is None:
            return
        if isinstance(exception, self.permanent):
            message.fail()
            return
        actor = broker.get_actor(message.actor_name)
        retries = int(message.options.get("retries", 0))
        if retries >= int(message.options.get("max_retries", actor.options.get("max_retries", self.max_retries))):
            message.fail()
            return
        delay = self.backoff_ms(retries)
        message.options["retries"] = retries + 1
        message.options["retry_delay_ms"] = delay
        message.options["traceback"] = traceback.format_exc(limit=30)
        broker.enqueue(message, delay=delay)  # a worker's broker waits out a Redis outage (``patient``)


class JobEvents(Middleware):
    """Turns stage actor lifecycle into job status and events.

    Must sit before StageRetries in the middleware list: Dramatiq runs "after" hooks in reverse,
    so this one then sees whether the message was failed or scheduled for retry.
    """

    def __init__(self, store: JobStore, stages: dict[str, Stage], *, parts: set[str], max_crashes: int) -> None:
        self.store = store
        self.stages = stages  # actor name → stage
        self.parts = parts  # actors doing a batch of a stage (numbered by their last argument): they keep its progress
        self.max_crashes = max_crashes

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        stage = self.stages.get(message.actor_name)
        if stage is None:
            return
        task_id = message.args[0]
        part = message.actor_name in self.parts
        # Redis hands out the same enqueued message again when its worker died; a retry is enqueued anew.
        delivery = str(message.options.get("redis_message_id", message.message_id))
        seen = message.options.get(JOB_OPTION)  # the record as the hand-off that sent this message stored it

        def current(job: JobRecord) -> bool:
            # Not when its worker died after handing the job on but before acknowledging it: that stage is done.
            return part or job.message_id in (None, message.message_id)

        attempt = int(message.options.get("retries", 0)) + 1
        what = f"{stage.capitalize()} batch {message.args[-1] + 1}" if part else f"Stage {stage}"
        start = functools.partial(
            self.store.transition,
            task_id,
            status="processing",
            stage=stage,
            progress=None if part else STAGE_START[stage],
            accept=current,
        )
        try:  # its first delivery (the usual case) is counted with the change: one round trip
            started = start(
                message=f"{what} started" + (f" (attempt {attempt})" if attempt > 1 else ""),
                data=StageStarted(attempt=attempt),
                seen=seen.encode() if isinstance(seen, str) else None,
                delivery=delivery,
            )
        except Redelivered as redelivered:
            crashes = redelivered.deliveries - 1
            started = self._restart(message, stage, what=what, attempt=attempt, crashes=crashes, start=start)
        if started is None:  # cancelled, finished, expired, or handed on already: nothing to do
            log.info("skipping the message of a stage the job is not in", extra={"task_id": task_id, "stage": stage})
            raise SkipMessage()

    def _restart(
        self,
        message: Any,
        stage: Stage,
        *,
        what: str,
        attempt: int,
        crashes: int,
        start: Callable[..., JobRecord | None],
    ) -> JobRecord | None:
        """Start a stage whose earlier deliveries died with their worker ``crashes`` times, unless that is too many."""
        task_id = message.args[0]
        if crashes >= self.max_crashes:  # a poison message: end the job instead of killing workers forever
            text = f"worker died {crashes} times in stage {stage}"
            log.error("giving up: %s", text, extra={"task_id": task_id, "stage": stage})
            self.store.transition(task_id, status="error", error=text, message=f"Stage {stage} failed: {text}")
            message.fail()  # dead-lettered, for inspection
            raise SkipMessage()
        notes = [f"attempt {attempt}"] if attempt > 1 else []
        notes.append(f"redelivered: a worker died {crashes}× running it")
        return start(
            message=f"{what} started" + "".join(f" ({note})" for note in notes),
            data=StageStarted(attempt=attempt, crashes=crashes),
        )

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: object = None, exception: BaseException | None = None
    ) -> None:
        stage = self.stages.get(message.actor_name)
        if stage is None:
            return
        task_id = message.args[0]
        context = {"task_id": task_id, "stage": stage}
        if exception is None:
            return
        change: dict[str, Any]
        if isinstance(exception, Abort | JobCancelled):  # (JobCancelled: it noticed the cancel itself)
            change = {"status": "cancelled", "message": f"Cancelled during {stage}"}
        elif message.failed:
            text = _reason(broker, message, exception)
            log.error("stage failed: %s", text, extra=context)
            change = {"status": "error", "error": text, "message": f"Stage {stage} failed: {text}"}
        else:
            retries = int(message.options.get("retries", 0))
            delay = int(message.options.get("retry_delay_ms", 0))
            reason = _reason(broker, message, exception)
            log.warning("stage will retry in %d ms: %s", delay, reason, extra=context)
            change = {
                "status": "retrying",
                "message": f"Stage {stage} failed ({reason}); retry {retries} in {delay / 1000:g} s",
                "data": StageRetrying(retry=retries, delay_ms=delay, error=reason),
            }
        until_redis_answers(lambda: self.store.transition(task_id, **change), "recording the outcome", context)


def _reason(broker: dramatiq.Broker, message: Any, exception: BaseException) -> str:
    """What went wrong, in words: a time limit names itself and its length, a Redis outage what Redis said."""
    if isinstance(exception, TimeLimitExceeded):
        limit_ms = message.options.get("time_limit") or broker.get_actor(message.actor_name).options["time_limit"]
        return f"took longer than its time limit of {int(limit_ms) / 1000:g} s (LITMINER_STAGE_TIME_LIMIT_MS)"
    return describe(exception)


class FairRelease(Middleware):
    """Frees the slot of an extraction batch a worker is done with (processed, failed, skipped, aborted) and
    releases the next batches in turn (``pipeline.store.fair``).

    A Redis error here is only logged: the reaper releases every few seconds, and frees the slots of messages
    that have left the queue.
    """

    def __init__(self, fair: FairShare) -> None:
        self.fair = fair

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: object = None, exception: BaseException | None = None
    ) -> None:
        self._done(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._done(message)

    def _done(self, message: Any) -> None:
        if message.actor_name != BATCH_ACTOR:
            return
        try:
            self.fair.finished(str(message.options.get("redis_message_id", "")))
        except REDIS_ERRORS as exc:
            log.warning("next batches not released: %s", exc, extra={"task_id": message.args[0], "stage": "extraction"})
