"""The Pipeline: Redis client, job store, event bus, broker and the four stage actors, wired together."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import TypeVar, cast

import dramatiq
import msgspec
import redis
from dramatiq.asyncio import EventLoopThread
from dramatiq.middleware import CurrentMessage

from contracts import TERMINAL_STATUSES, Dataset, EventValue, GenerateRequest, JobRecord, ReprocessRequest, Stage
from pipeline.broker import build_broker
from pipeline.errors import JobCancelled, JobConflict, JobFinished, JobNotFound, PermanentError
from pipeline.events import EventBus, publisher_client
from pipeline.extractors.base import Extractor
from pipeline.extractors.heuristic import HeuristicExtractor
from pipeline.keys import Keys
from pipeline.middleware import STAGE_START
from pipeline.reprocess import STAGE_INPUTS, earlier_stages, reprocessed_request
from pipeline.schema import InvalidRequest, check_request
from pipeline.settings import Settings, SettingsError
from pipeline.sources.base import Source
from pipeline.sources.http import SourceHttp
from pipeline.sources.registry import available_sources
from pipeline.stages import assembly, extraction, schema_preparation, search
from pipeline.store import JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: stage → (actor name, the actor's body)
_STAGES: dict[Stage, tuple[str, Callable[[Pipeline, str], None]]] = {
    "schema_preparation": ("prepare_schema", schema_preparation.process),
    "search": ("search", search.process),
    "extraction": ("extract", extraction.process),
    "assembly": ("assemble", assembly.process),
}
#: the actor that extracts one batch of a job's documents (several run at once, on any workers)
_BATCH_ACTOR = "extract_batch"


class Pipeline:
    """Everything a process needs to submit, run, follow and cancel jobs."""

    def __init__(
        self,
        settings: Settings,
        *,
        sources: Mapping[str, Source] | None = None,
        extractors: Mapping[str, Extractor] | None = None,
    ) -> None:
        self.settings = settings
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self.keys = Keys(settings.key_prefix)
        self.publisher = publisher_client(settings.redis_url)
        self.events = EventBus(
            self.client, self.publisher, self.keys, ttl_s=settings.result_ttl_s, maxlen=settings.event_stream_maxlen
        )
        self.store = JobStore(self.client, self.keys, self.events, ttl_s=settings.result_ttl_s)
        self.sources = dict(sources) if sources is not None else available_sources(settings)
        self.extractors = dict(extractors) if extractors is not None else default_extractors(settings)
        if settings.extractor != "auto" and settings.extractor not in self.extractors:
            raise SettingsError(
                f"LITMINER_EXTRACTOR={settings.extractor!r} is not available (auto, {', '.join(self.extractors)})"
            )
        unknown = [name for name in settings.default_sources() if name not in self.sources]
        if unknown:
            raise SettingsError(
                f"LITMINER_SOURCES names unknown sources {', '.join(unknown)} (available: {', '.join(self.sources)})"
            )
        stage_of: dict[str, Stage] = {actor_name: stage for stage, (actor_name, _) in _STAGES.items()}
        self.broker, self.abortable, self.worker_status = build_broker(
            settings, self.client, self.store, stage_of | {_BATCH_ACTOR: "extraction"}, parts={_BATCH_ACTOR}
        )
        self.actors = {stage: self._declare(stage, name, body) for stage, (name, body) in _STAGES.items()}
        self.batch_actor = self._declare_batch()
        self._loop: EventLoopThread | None = None
        self._loop_lock = threading.Lock()
        self._source_http: SourceHttp | None = None

    def _declare(self, stage: Stage, name: str, body: Callable[[Pipeline, str], None]) -> dramatiq.Actor[[str], None]:
        def run_stage(task_id: str) -> None:
            body(self, task_id)

        run_stage.__name__ = name
        declare = dramatiq.actor(
            broker=self.broker, actor_name=name, queue_name=str(stage), time_limit=self.settings.stage_time_limit_ms
        )
        return declare(run_stage)

    def _declare_batch(self) -> dramatiq.Actor[[str, str, int], None]:
        def extract_batch(task_id: str, run_id: str, index: int) -> None:
            message = CurrentMessage.get_current_message()
            extraction.process_batch(self, task_id, run_id, index, message.message_id if message else "")

        declare = dramatiq.actor(
            broker=self.broker,
            actor_name=_BATCH_ACTOR,
            queue_name="extraction",
            time_limit=self.settings.stage_time_limit_ms,
        )
        return declare(extract_batch)

    def run_async(self, coroutine: Coroutine[object, object, T]) -> T:
        """Run ``coroutine`` on this process's event loop and wait for it.

        One loop per process, shared by every worker thread, so the LLM concurrency limit and the
        HTTP connection pool hold process-wide. Dramatiq's loop thread polls for interrupts, so an
        abort or time limit still lands in the waiting thread and cancels the coroutine.
        """
        with self._loop_lock:
            if self._loop is None:
                self._loop = EventLoopThread(log)
                self._loop.daemon = True
                self._loop.start(timeout=5)
        result: T = self._loop.run_coroutine(coroutine)
        return result

    def source_http(self) -> SourceHttp:
        """The HTTP client (and its Redis connections) that sources share; only on this process's event loop.

        One per process, kept open: creating one costs a TLS context (about 10 ms of CPU), and open
        connections to a source's API are reused by later searches.
        """
        if self._source_http is None:
            self._source_http = SourceHttp.create(self.settings)
        return self._source_http

    # -- used by the API, the CLI and the demo --------------------------------------------------------

    def validate_choices(self, request: GenerateRequest) -> None:
        """Reject sources and extractors this installation does not have."""
        for name in request.sources or []:
            if name not in self.sources:
                raise InvalidRequest("sources", f"unknown source {name!r} (available: {', '.join(self.sources)})")
        if request.extractor not in (None, "auto") and request.extractor not in self.extractors:
            available = ", ".join(["auto", *self.extractors])
            raise InvalidRequest("extractor", f"{request.extractor!r} is not available (available: {available})")

    def submit(self, request: GenerateRequest, *, owner: str = "") -> JobRecord:
        """Store a new job of ``owner`` (an API key's owner id) and enqueue its first stage.

        The request must already be validated.
        """
        self.validate_choices(request)
        return self._start(
            request, client_id=request.client_id, stage="schema_preparation", message="Job queued", owner=owner
        )

    def reprocess(self, parent_id: str, change: ReprocessRequest, *, owner: str = "") -> JobRecord:
        """A new job of ``owner`` running the parent's request (with overrides) from ``change.from_stage`` on.

        The parent's outputs of the earlier stages are copied to the new job inside Redis; the parent is
        left untouched. The schema is prepared here (it is quick and pure), so a changed schema needs no
        worker round trip. Another API key's parent is unknown (``JobNotFound``).
        """
        parent = self.store.load(parent_id, owner=owner)
        if parent is None:
            raise JobNotFound(parent_id)
        if parent.status not in TERMINAL_STATUSES:
            raise JobConflict(f"job {parent_id} is still {parent.status}; wait for it or cancel it first")
        request = reprocessed_request(parent, change)
        check_request(request, max_rows=self.settings.max_rows)
        self.validate_choices(request)
        stage: Stage = change.from_stage
        self._check_inputs(parent_id, stage, skip=("schema",))
        reused = earlier_stages(stage)
        return self._start(
            request,
            client_id=change.client_id or parent.client_id,
            stage=stage,
            message=f"Job queued: reprocessing {parent_id} from {stage}, reusing {', '.join(reused)}",
            parent=parent_id,
            owner=owner,
        )

    def rerun(self, task_id: str, stage: Stage) -> JobRecord:
        """Run a finished job again in place from ``stage``: its outputs from there on are overwritten.

        For operators (``litminer rerun``). A bare ``send(task_id)`` of a stage actor is skipped for a finished
        job, so that a late or redelivered message never overwrites a cancelled or completed one; this
        reopens the job first.
        """
        job = self.store.load(task_id)
        if job is None:
            raise JobNotFound(task_id)
        if job.status not in TERMINAL_STATUSES:
            raise JobConflict(f"job {task_id} is still {job.status}; wait for it or cancel it first")
        self._check_inputs(task_id, stage)
        message = self.actors[stage].message(task_id)
        reopened = self.store.transition(
            task_id,
            status="queued",
            stage=stage,
            progress=STAGE_START[stage],
            message=f"Re-running from stage {stage}",
            message_id=message.message_id,
            reopen=True,
        )
        if reopened is None:
            raise JobNotFound(task_id)
        self.broker.enqueue(message)
        log.info("job re-run", extra={"task_id": task_id, "stage": stage})
        return reopened

    def _check_inputs(self, task_id: str, stage: Stage, *, skip: tuple[str, ...] = ()) -> None:
        for name in STAGE_INPUTS[stage]:
            if name not in skip and not self.client.exists(self.keys.output(task_id, name)):
                raise JobConflict(
                    f"job {task_id} has no stored {name} (the stage making it did not finish, or it expired); "
                    f"start from an earlier stage"
                )

    def _start(
        self,
        request: GenerateRequest,
        *,
        client_id: str | None,
        stage: Stage,
        message: str,
        parent: str | None = None,
        owner: str = "",
    ) -> JobRecord:
        client_id = client_id or str(uuid.uuid4())
        self.store.claim_client(client_id, owner)  # ClientIdTaken when another API key uses it
        task_id = str(uuid.uuid4())
        queued = self.actors[stage].message(task_id)
        now = time.time()
        job = JobRecord(
            task_id=task_id,
            client_id=client_id,
            request=request,
            message=message,
            created_at=now,
            updated_at=now,
            message_id=queued.message_id,
            parent_task_id=parent,
            from_stage=stage if parent else None,
            owner=owner,
        )
        if parent is not None:
            self._copy_inputs(parent, task_id, request, stage)
        self.store.create(job, message=message)
        self.broker.enqueue(queued)
        log.info("job queued", extra={"task_id": task_id, "stage": "queued"})
        return job

    def _copy_inputs(self, parent: str, task_id: str, request: GenerateRequest, stage: Stage) -> None:
        """The prepared schema of the new request, plus the parent's outputs ``stage`` reads (copied in Redis)."""
        self.store.put_output(task_id, "schema", schema_preparation.run(request))
        names = [name for name in STAGE_INPUTS[stage] if name != "schema"]
        with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.copy(self.keys.output(parent, name), self.keys.output(task_id, name), replace=True)
                pipe.expire(self.keys.output(task_id, name), self.settings.result_ttl_s)
            copied = pipe.execute()[::2]
        if not all(copied):  # expired since the check
            missing = [name for name, ok in zip(names, copied, strict=True) if not ok]
            raise JobConflict(f"job {parent} has no stored {', '.join(missing)}; start from an earlier stage")

    def cancel(self, task_id: str) -> JobRecord:
        """Cancel a queued job or abort a running one; cancelling twice returns the cancelled job."""
        job = self.store.load(task_id)
        if job is None:
            raise JobNotFound(task_id)
        if job.status == "cancelled":
            return job
        if job.status in TERMINAL_STATUSES:
            raise JobFinished(f"job {task_id} already {job.status}; it cannot be cancelled")
        cancelled = self.store.transition(task_id, status="cancelled", message=f"Cancelled during {job.stage}")
        if cancelled is None:  # it finished between the load and the transition
            return self.cancel(task_id)
        running = [cancelled.message_id] if cancelled.message_id else []
        if cancelled.stage == "extraction":
            run = self.store.get_output(task_id, "extraction_run", extraction.ExtractionRun)
            running += run.message_ids if run else []
        for message_id in running:
            self.abortable.abort(message_id)
        log.info("job cancelled", extra={"task_id": task_id, "stage": cancelled.stage})
        return cancelled

    def dataset(self, task_id: str) -> Dataset | None:
        """The finished dataset of a job, if any."""
        return self.store.get_output(task_id, "dataset", Dataset)

    # -- used by stage actors -------------------------------------------------------------------------

    def job(self, task_id: str) -> JobRecord:
        """The job a stage works on; stops the stage when it is gone."""
        job = self.store.load(task_id, recent=True)  # JobEvents has just read and updated it
        if job is None:
            raise JobCancelled(f"job {task_id} no longer exists")
        return job

    def input(self, task_id: str, name: str, kind: type[T]) -> T:
        """A previous stage's output; missing input is permanent (re-run that stage first)."""
        return self.inputs(task_id, name).get(name, kind)

    def inputs(self, task_id: str, *names: str) -> Inputs:
        """Several previous stages' outputs, read in one round trip."""
        raws = cast("list[bytes | None]", self.client.mget([self.keys.output(task_id, name) for name in names]))
        return Inputs(task_id, dict(zip(names, raws, strict=True)))

    def report(
        self,
        task_id: str,
        *,
        message: str,
        progress: int | None = None,
        tokens: int | None = None,
        data: dict[str, EventValue] | None = None,
        outputs: Mapping[str, object] | None = None,
    ) -> None:
        """Progress inside a stage, with ``outputs`` to store; stops the stage when the job was cancelled meanwhile."""
        job = self.store.transition(
            task_id, status="processing", progress=progress, message=message, tokens=tokens, data=data, outputs=outputs
        )
        if job is None:
            raise JobCancelled(task_id)

    def hand_off(
        self,
        task_id: str,
        next_stage: Stage,
        *,
        progress: int,
        message: str,
        outputs: Mapping[str, object],
        data: dict[str, EventValue] | None = None,
    ) -> None:
        """Finish a stage: store its ``outputs`` and record the next stage's message (one round trip), then
        enqueue it; unless the job was cancelled meanwhile."""
        queued = self.actors[next_stage].message(task_id)
        job = self.store.transition(
            task_id, progress=progress, message=message, message_id=queued.message_id, data=data, outputs=outputs
        )
        if job is None:
            raise JobCancelled(task_id)
        self.broker.enqueue(queued)
        log.info("%s; next: %s", message, next_stage, extra={"task_id": task_id, "stage": job.stage})

    def complete(self, task_id: str, dataset: Dataset, *, message: str) -> None:
        """Store the dataset and mark the job completed (one round trip)."""
        self.store.transition(
            task_id,
            outputs={"dataset": dataset},
            status="completed",
            stage="done",
            progress=100,
            message=message,
            result_url=f"/api/v1/datasets/{task_id}",
            data={
                "rows": len(dataset.rows),
                "requested_rows": dataset.stats.requested_rows,
                "shortfall": dataset.stats.shortfall,
            },
        )
        log.info(message, extra={"task_id": task_id, "stage": "assembly"})

    def close(self) -> None:
        """Release the LLM connections, the event loop and Redis connections."""
        if self._loop is not None:
            for extractor in self.extractors.values():
                self._loop.run_coroutine(extractor.close())
            if self._source_http is not None:
                self._loop.run_coroutine(self._source_http.close())
                self._source_http = None
            self._loop.stop()  # type: ignore[no-untyped-call]
            self._loop = None
        self.abortable.closing = True  # its watcher's BLPOP is about to lose its connection
        self.broker.close()
        self.client.close()
        self.publisher.close()


class Inputs:
    """Previous stages' outputs of one job, as read together; decoded on demand."""

    def __init__(self, task_id: str, raws: dict[str, bytes | None]) -> None:
        self.task_id = task_id
        self.raws = raws

    def get(self, name: str, kind: type[T]) -> T:
        """One output; missing input is permanent (re-run the stage that produces it)."""
        value = self.optional(name, kind)
        if value is None:
            raise PermanentError(f"job {self.task_id} has no {name}; re-run the stage that produces it")
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        """One output, or None when missing."""
        raw = self.raws[name]
        return None if raw is None else msgspec.json.decode(raw, type=kind)


def default_extractors(settings: Settings) -> dict[str, Extractor]:
    """The heuristic extractor, plus the LLM when an OpenAI key or base URL is configured."""
    extractors: dict[str, Extractor] = {"heuristic": HeuristicExtractor()}
    if settings.llm_configured:
        # imported here: the openai package is about 30 MB of modules that a process without an LLM never needs
        from pipeline.extractors.llm import OpenAIExtractor  # noqa: PLC0415

        extractors["openai"] = OpenAIExtractor(settings)
    return extractors
