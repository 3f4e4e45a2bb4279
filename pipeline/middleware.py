"""Dramatiq middleware of ours: exact retry backoff, and job status + events from actor lifecycle."""

from __future__ import annotations

import logging
import random
import traceback
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage
from dramatiq_abort import Abort

from contracts import Stage

if TYPE_CHECKING:
    from pipeline.store import JobStore

log = logging.getLogger(__name__)

#: Where each stage starts on the 0–100 progress scale.
STAGE_START: dict[Stage, int] = {"schema_preparation": 0, "search": 10, "extraction": 35, "assembly": 90}


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
        broker.enqueue(message, delay=delay)


class JobEvents(Middleware):
    """Turns stage actor lifecycle into job status and events.

    Must sit before StageRetries in the middleware list: Dramatiq runs "after" hooks in reverse,
    so this one then sees whether the message was failed or scheduled for retry.
    """

    def __init__(self, store: JobStore, stages: dict[str, Stage], *, parts: set[str]) -> None:
        self.store = store
        self.stages = stages  # actor name → stage
        self.parts = parts  # actors doing a batch of a stage (numbered by their last argument): they keep its progress

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        stage = self.stages.get(message.actor_name)
        if stage is None:
            return
        task_id = message.args[0]
        attempt = int(message.options.get("retries", 0)) + 1
        part = message.actor_name in self.parts
        what = f"{stage.capitalize()} batch {message.args[-1] + 1}" if part else f"Stage {stage}"
        started = self.store.transition(
            task_id,
            status="processing",
            stage=stage,
            progress=None if part else STAGE_START[stage],
            message=f"{what} started" + (f" (attempt {attempt})" if attempt > 1 else ""),
            data={"attempt": attempt},
        )
        if started is None:  # cancelled, finished or expired: nothing to do
            log.info("skipping stage of a finished job", extra={"task_id": task_id, "stage": stage})
            raise SkipMessage()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        stage = self.stages.get(message.actor_name)
        if stage is not None:  # skipped because an abort arrived before the stage started
            self.store.transition(message.args[0], status="cancelled", message=f"Cancelled before {stage}")

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: object = None, exception: BaseException | None = None
    ) -> None:
        stage = self.stages.get(message.actor_name)
        if stage is None or exception is None:
            return
        task_id = message.args[0]
        context = {"task_id": task_id, "stage": stage}
        if isinstance(exception, Abort):
            self.store.transition(task_id, status="cancelled", message=f"Cancelled during {stage}")
        elif message.failed:
            text = str(exception) or type(exception).__name__
            log.error("stage failed: %s", text, extra=context)
            self.store.transition(task_id, status="error", error=text, message=f"Stage {stage} failed: {text}")
        else:
            retries = int(message.options.get("retries", 0))
            delay = int(message.options.get("retry_delay_ms", 0))
            log.warning("stage will retry in %d ms: %s", delay, exception, extra=context)
            self.store.transition(
                task_id,
                status="retrying",
                message=f"Stage {stage} failed ({exception}); retry {retries} in {delay / 1000:g} s",
                data={"retry": retries, "delay_ms": delay, "error": str(exception)},
            )
