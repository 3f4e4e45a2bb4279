"""``JobService``: the one way into the pipeline for the API and the CLI.

It checks requests, stores jobs, sends their first stage by actor name, cancels them, and answers what
clients and operators ask (status, datasets, recent jobs, queues, workers). It imports no stage module and
installs no worker middleware: workers (``pipeline/worker/``) run the stages.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection

import msgspec

from contracts import (
    TERMINAL_STATUSES,
    Dataset,
    DatasetRow,
    Estimate,
    GenerateRequest,
    JobRecord,
    ReprocessRequest,
    ReviewChange,
    Stage,
    TaskStatus,
    WebhookDeliveries,
)
from contracts.ops import OpsView, Readiness, TaskList, TaskSummary
from contracts.progress import STAGE_START
from pipeline import review
from pipeline.errors import InvalidRequest, JobConflict, JobFinished, JobNotFound
from pipeline.extractors import extractor_names
from pipeline.reprocess import STAGE_INPUTS, earlier_stages, reprocessed_request
from pipeline.schema import check_client_id, check_request, check_task_id, prepare_schema
from pipeline.settings import Settings, check_installed
from pipeline.sources.registry import source_names
from pipeline.store import LIVE_S, REDIS_ERRORS, REVIEW, Store
from pipeline.webhooks import check_callback_url

log = logging.getLogger(__name__)

#: webhook attempts the operations view shows (the newest, of the jobs it lists)
WEBHOOK_ATTEMPTS_SHOWN = 50


class JobService:
    """Submits, follows and cancels jobs; ``owner`` (an API key's owner id, "" without keys) scopes what a
    caller sees: another key's job is unknown (``JobNotFound``).

    ``sources`` and ``extractors`` name what the workers can use, when it is not what the settings install
    (tests and benchmarks run workers with stand-ins).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sources: Collection[str] | None = None,
        extractors: Collection[str] | None = None,
    ) -> None:
        self.settings = settings
        self.sources = list(sources) if sources is not None else source_names(settings)
        self.extractors = list(extractors) if extractors is not None else extractor_names(settings)
        check_installed(settings, sources=self.sources, extractors=self.extractors)
        self.store = Store(settings)

    # -- starting jobs -----------------------------------------------------------------------------------

    def check(self, request: GenerateRequest) -> None:
        """Refuse a request that cannot run here (``InvalidRequest`` naming the field)."""
        check_request(request, max_rows=self.settings.max_rows)
        for name in request.sources or []:
            if name not in self.sources:
                raise InvalidRequest("sources", f"unknown source {name!r} (available: {', '.join(self.sources)})")
        if request.extractor not in (None, "auto") and request.extractor not in self.extractors:
            available = ", ".join(["auto", *self.extractors])
            raise InvalidRequest("extractor", f"{request.extractor!r} is not available (available: {available})")
        if request.callback_url:
            check_callback_url(request.callback_url, self.settings)

    def submit(self, request: GenerateRequest, *, owner: str = "") -> JobRecord:
        """Check the request, store a new job of ``owner`` and send its first stage."""
        self.check(request)
        return self._start(
            request, client_id=request.client_id, stage="schema_preparation", message="Job queued", owner=owner
        )

    def estimate(self, request: GenerateRequest, *, owner: str = "") -> JobRecord:
        """Check the request and start an estimate job of ``owner``: schema preparation and search as for a
        dataset, then extraction counts the calls and tokens it would spend instead of making them."""
        self.check(request)
        return self._start(
            request,
            client_id=request.client_id,
            stage="schema_preparation",
            message="Estimate queued",
            owner=owner,
            estimate=True,
        )

    def reprocess(self, parent_id: str, change: ReprocessRequest, *, owner: str = "") -> JobRecord:
        """A new job of ``owner`` running the parent's request (with overrides) from ``change.from_stage`` on.

        The parent's outputs of the earlier stages are copied to the new job inside Redis; the parent is
        left untouched. The schema is prepared here (it is quick and pure), so a changed schema needs no
        worker round trip.
        """
        parent = self.find(parent_id, owner)
        if parent.status not in TERMINAL_STATUSES:
            raise JobConflict(f"job {parent_id} is still {parent.status}; wait for it or cancel it first")
        if change.client_id is not None:
            check_client_id(change.client_id)
        request = reprocessed_request(parent, change)
        if change.callback_url is not None:  # "" drops the parent's
            request = msgspec.structs.replace(request, callback_url=change.callback_url or None)
        if change.max_tokens is not None:
            request = msgspec.structs.replace(request, max_tokens=change.max_tokens)
        self.check(request)
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
            keep_review=change.keep_review,
        )

    def rerun(self, task_id: str, stage: Stage) -> JobRecord:
        """Run a finished job again in place from ``stage``: its outputs from there on are overwritten.

        For operators (``litminer rerun``). Workers skip every message of a finished job, so that a late or
        redelivered message never overwrites a cancelled or completed one; this reopens the job first.
        """
        job = self.find(task_id)
        if job.status not in TERMINAL_STATUSES:
            raise JobConflict(f"job {task_id} is still {job.status}; wait for it or cancel it first")
        self._check_inputs(task_id, stage)
        message = self.store.queues.message(stage, task_id)
        reopened = self.store.jobs.transition(
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
        self.store.queues.send(message)
        self.store.replicated()
        log.info("job re-run", extra={"task_id": task_id, "stage": stage})
        return reopened

    def _check_inputs(self, task_id: str, stage: Stage, *, skip: tuple[str, ...] = ()) -> None:
        missing = self.store.jobs.missing_outputs(task_id, [n for n in STAGE_INPUTS[stage] if n not in skip])
        if missing:
            raise JobConflict(
                f"job {task_id} has no stored {', '.join(missing)} (the stage making it did not finish, or it "
                f"expired); start from an earlier stage"
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
        keep_review: bool = True,
        estimate: bool = False,
    ) -> JobRecord:
        client_id = client_id or str(uuid.uuid4())
        self.claim_client(client_id, owner)
        task_id = str(uuid.uuid4())
        queued = self.store.queues.message(stage, task_id)
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
            estimate=estimate,
        )
        if parent is not None:
            self._copy_inputs(parent, task_id, request, stage, keep_review=keep_review)
        # the job and its first message in one transaction: the caller is told it failed, or it runs
        try:
            self.store.jobs.create(
                job, message=message, send=lambda pipe, raw: self.store.queues.send_in(pipe, queued, raw)
            )
            self.store.replicated()  # with Sentinel, the 202 comes once a replica holds the job
        except REDIS_ERRORS:  # the caller is told it failed and gets no task id: the job must not run later
            self._discard(job)
            raise
        log.info("job queued", extra={"task_id": task_id, "stage": "queued"})
        return job

    def _discard(self, job: JobRecord) -> None:
        """Forget a job whose creation failed in part or no replica confirmed (Redis takes deletions even when out
        of memory); a first message sent anyway finds no job and is skipped."""
        try:
            self.store.jobs.discard(job)
        except REDIS_ERRORS:  # Redis is gone or read-only: the reaper will send its first stage once it is back
            log.exception("job left queued without its message", extra={"task_id": job.task_id, "stage": "queued"})

    def _copy_inputs(
        self, parent: str, task_id: str, request: GenerateRequest, stage: Stage, *, keep_review: bool
    ) -> None:
        """The prepared schema of the new request, plus the parent's outputs ``stage`` reads (copied in Redis),
        and its review trail unless told otherwise."""
        self.store.jobs.put_output(task_id, "schema", prepare_schema(request.model_name, request.field_definitions))
        if keep_review:
            self.store.jobs.copy_outputs(parent, task_id, [REVIEW])  # a parent never reviewed has none to copy
        missing = self.store.jobs.copy_outputs(parent, task_id, [n for n in STAGE_INPUTS[stage] if n != "schema"])
        if missing:  # expired since the check
            raise JobConflict(f"job {parent} has no stored {', '.join(missing)}; start from an earlier stage")

    def claim_client(self, client_id: str, owner: str) -> None:
        """Claim ``client_id`` for ``owner`` (``ClientIdTaken`` when another API key has it)."""
        check_client_id(client_id)
        self.store.jobs.claim_client(client_id, owner)

    # -- following and cancelling ------------------------------------------------------------------------

    def find(self, task_id: str, owner: str = "") -> JobRecord:
        """The job, if the caller may see it; a malformed id is ``InvalidRequest``, an unknown one ``JobNotFound``."""
        check_task_id(task_id)
        job = self.store.jobs.load(task_id, owner=owner)
        if job is None:
            raise JobNotFound(task_id)
        return job

    def status(self, task_id: str, owner: str = "") -> TaskStatus:
        """The job's status, with its dataset once completed."""
        job = self.find(task_id, owner)
        return task_status(job, self._finished(job))

    def dataset(self, task_id: str, owner: str = "", *, original: bool = False) -> Dataset:
        """The finished dataset with its reviews applied, or as extracted when ``original`` (``JobConflict`` until
        the job completed)."""
        return self._completed(self.find(task_id, owner), original=original)

    def _completed(self, job: JobRecord, *, original: bool = False) -> Dataset:
        """``_finished``, or ``JobConflict`` until the job completed (and always for an estimate, which has none)."""
        if job.estimate:
            raise JobConflict(estimate_has_no_dataset(job.task_id))
        dataset = self._finished(job, original=original)
        if dataset is None:
            raise JobConflict(
                f"job {job.task_id} is {job.status} (stage {job.stage}); the dataset exists once it completes"
            )
        return dataset

    def _finished(self, job: JobRecord, *, original: bool = False) -> Dataset | None:
        """A completed job's dataset, reviewed unless ``original``; None before it completed (or once expired)."""
        dataset = self.store.jobs.get_output(job.task_id, "dataset", Dataset) if job.status == "completed" else None
        if dataset is None or original:
            return dataset and review.with_row_ids(dataset)
        return review.apply(dataset, self.store.jobs.review_trail(job.task_id))

    def estimate_of(self, task_id: str, owner: str = "") -> Estimate:
        """The estimate of an estimate job (``JobConflict`` until it completed, and for a job that is no estimate)."""
        job = self.find(task_id, owner)
        if not job.estimate:
            raise JobConflict(f"task {task_id} is not an estimate (POST /api/v1/datasets/estimate starts one)")
        estimate = self.store.jobs.get_output(task_id, "estimate", Estimate) if job.status == "completed" else None
        if estimate is None:
            raise JobConflict(
                f"task {task_id} is {job.status} (stage {job.stage}); the estimate exists once it completes"
            )
        return estimate

    def review(self, task_id: str, row_id: str, change: ReviewChange, *, owner: str = "") -> DatasetRow:
        """Record one review decision on row ``row_id`` of a finished dataset; returns the row as reviewed.

        The reviewer is ``change.reviewer``, else the owner id, else "anonymous" (the API without keys).
        """
        extracted = self._completed(self.find(task_id, owner), original=True)
        trail = self.store.jobs.review_trail(task_id)
        current = review.apply(extracted, trail)
        entry = review.entry(current, row_id, change, reviewer=change.reviewer or owner or "anonymous")
        self.store.jobs.add_review(task_id, entry)
        self.store.queue_archive(task_id)  # the archive's copy carries the whole trail (with an archive)
        self.store.replicated()
        reviewed = review.apply(extracted, [*trail, entry])
        log.info("row reviewed", extra={"task_id": task_id, "stage": "done", "row_id": row_id, "action": entry.action})
        return next(row for row in reviewed.rows if row.row_id == row_id)

    def cancel(self, task_id: str, owner: str = "") -> JobRecord:
        """Cancel a queued job or abort a running one; cancelling twice returns the cancelled job."""
        job = self.find(task_id, owner)
        if job.status == "cancelled":
            return job
        if job.status in TERMINAL_STATUSES:
            raise JobFinished(f"job {task_id} already {job.status}; it cannot be cancelled")
        cancelled = self.store.jobs.transition(task_id, status="cancelled", message=f"Cancelled during {job.stage}")
        if cancelled is None:  # it finished between the load and the transition
            return self.cancel(task_id, owner)
        self.store.queues.abort(self.store.jobs.running_messages(cancelled))
        self.store.replicated()
        log.info("job cancelled", extra={"task_id": task_id, "stage": cancelled.stage})
        return cancelled

    # -- lists, queues and workers -------------------------------------------------------------------------

    def recent(self, *, limit: int, client_id: str | None = None, owner: str = "") -> TaskList:
        """The newest jobs first: one client's (claimed for ``owner``), else the owner's, else everyone's."""
        if client_id is not None:
            self.claim_client(client_id, owner)
        jobs = self.store.jobs.recent(limit=limit, client_id=client_id, owner=owner)
        return TaskList(tasks=[summary(job) for job in jobs])

    def ops(self, *, limit: int, owner: str = "") -> OpsView:
        """What an operator watches: recent jobs, each queue's depth, live workers, the latest webhook attempts."""
        try:
            jobs = self.store.jobs.recent(limit=limit, owner=owner)
            return OpsView(
                jobs=[summary(job) for job in jobs],
                queues=self.store.queues.depths(),
                workers=self.store.workers.live(),
                redis_ok=True,
                webhooks=self.store.webhooks.latest([job.task_id for job in jobs], limit=WEBHOOK_ATTEMPTS_SHOWN),
            )
        except REDIS_ERRORS:
            return OpsView(jobs=[], queues=[], workers=[], redis_ok=False)

    def webhooks(self, task_id: str, owner: str = "") -> WebhookDeliveries:
        """Every attempt at delivering the job's webhooks, oldest first."""
        self.find(task_id, owner)
        return WebhookDeliveries(task_id=task_id, attempts=self.store.webhooks.attempts(task_id))

    def readiness(self) -> Readiness:
        """Whether jobs can run: Redis answers and a worker sent a heartbeat in the last ``LIVE_S`` seconds."""
        try:
            workers = self.store.workers.live()
        except REDIS_ERRORS as exc:
            return Readiness(status="unavailable", detail=f"redis: {exc}", workers=0)
        if not workers:
            return Readiness(status="unavailable", detail=f"no worker heartbeat in the last {LIVE_S:g} s", workers=0)
        return Readiness(status="ready", workers=len(workers))

    @property
    def rate_limit_namespace(self) -> str:
        """Where the API's per-key request counters live in Redis."""
        return self.store.keys.rate_limit

    def close(self) -> None:
        self.store.close()


def estimate_has_no_dataset(task_id: str) -> str:
    """What asking an estimate job for a dataset is told: how to run it for real."""
    return (
        f"task {task_id} is an estimate; run it with POST /api/v1/tasks/{task_id}/reprocess "
        '{"from_stage": "extraction"}'
    )


def task_status(job: JobRecord, result: Dataset | None) -> TaskStatus:
    """A job as ``GET /tasks/{id}`` shows it, with ``result``, its dataset once completed."""
    return TaskStatus(
        task_id=job.task_id,
        client_id=job.client_id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        total=job.total,
        message=job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
        error=job.error,
        parent_task_id=job.parent_task_id,
        from_stage=job.from_stage,
        result=result,
    )


def summary(job: JobRecord) -> TaskSummary:
    """A job as a task list shows it."""
    return TaskSummary(
        task_id=job.task_id,
        client_id=job.client_id,
        status=job.status,
        stage=job.stage,
        progress=job.progress,
        message=job.message,
        query=job.request.user_query,
        model_name=job.request.model_name,
        rows=job.request.rows,
        created_at=job.created_at,
        updated_at=job.updated_at,
        duration_s=round(job.updated_at - job.created_at, 3),
        tokens=job.tokens,
        error=job.error,
        parent_task_id=job.parent_task_id,
    )
