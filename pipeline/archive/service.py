"""``DurableJobService``: the ``JobService`` of an API with an archive: reads fall back to it, deletes reach it.

A job is read from Redis while it is there, and from the archive once it expired there; both hold the same
payloads, so every answer is the same bytes from either. Without ``LITMINER_DATABASE_URL`` it is exactly a
``JobService`` plus ``delete``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

from contracts import TERMINAL_STATUSES, Dataset, DatasetRow, JobRecord, ReviewChange, TaskStatus
from contracts.ops import TaskList
from pipeline import review
from pipeline.archive.database import Archive, ArchivedJob, ArchiveUnavailable
from pipeline.errors import JobConflict, JobNotFound
from pipeline.jobs import JobService, estimate_has_no_dataset, summary, task_status
from pipeline.schema import check_task_id
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: tries of a review of an archived dataset that meets concurrent reviews
_REVIEW_TRIES = 5


class DurableJobService(JobService):
    """Jobs in Redis, and ended jobs in the PostgreSQL archive (``archive``, None without one) after they expire."""

    def __init__(
        self,
        settings: Settings,
        *,
        sources: Collection[str] | None = None,
        extractors: Collection[str] | None = None,
    ) -> None:
        super().__init__(settings, sources=sources, extractors=extractors)
        self.archive = Archive(settings.database_url) if settings.database_url else None
        if self.archive is not None:  # migrated now, in the background: a PostgreSQL outage never stops the API
            threading.Thread(target=self.archive.prepare, name="archive-migrate", daemon=True).start()

    def _archived(self, task_id: str, owner: str) -> ArchivedJob:
        """The job from the archive (``JobNotFound`` when it holds none the caller may see)."""
        archived = self.archive.load(task_id, owner=owner) if self.archive is not None else None
        if archived is None:
            raise JobNotFound(task_id)
        return archived

    def status(self, task_id: str, owner: str = "") -> TaskStatus:
        """The job's status, with its dataset once completed: from Redis, else from the archive."""
        try:
            return super().status(task_id, owner)
        except JobNotFound:
            archived = self._archived(task_id, owner)
        return task_status(archived.job, _dataset(archived) if archived.job.status == "completed" else None)

    def dataset(self, task_id: str, owner: str = "", *, original: bool = False) -> Dataset:
        """The finished dataset, reviewed unless ``original``: from Redis, else from the archive."""
        try:
            return super().dataset(task_id, owner, original=original)
        except JobNotFound:
            archived = self._archived(task_id, owner)
        dataset = _dataset(archived, original=original)
        if dataset is None:
            job = archived.job
            if job.estimate:
                raise JobConflict(estimate_has_no_dataset(task_id))
            raise JobConflict(
                f"job {task_id} is {job.status} (stage {job.stage}); the dataset exists once it completes"
            )
        return dataset

    def recent(self, *, limit: int, client_id: str | None = None, owner: str = "") -> TaskList:
        """The newest jobs first, from Redis and the archive (Redis only, logged, while the archive is down)."""
        listed = super().recent(limit=limit, client_id=client_id, owner=owner)
        if self.archive is None:
            return listed
        try:
            archived = self.archive.recent(limit=limit, client_id=client_id, owner=owner)
        except ArchiveUnavailable as exc:
            log.warning("recent tasks listed from Redis only: %s", exc)
            return listed
        seen = {task.task_id for task in listed.tasks}
        tasks = [*listed.tasks, *(summary(job) for job in archived if job.task_id not in seen)]
        tasks.sort(key=lambda task: task.created_at, reverse=True)
        return TaskList(tasks=tasks[:limit])

    def review(self, task_id: str, row_id: str, change: ReviewChange, *, owner: str = "") -> DatasetRow:
        """Record one review decision: in Redis (then copied to the archive), else in the archive itself."""
        try:
            return super().review(task_id, row_id, change, owner=owner)
        except JobNotFound:
            if self.archive is None:
                raise
        for _ in range(_REVIEW_TRIES):
            archived = self._archived(task_id, owner)
            extracted = _dataset(archived, original=True)
            if extracted is None:
                raise JobConflict(f"job {task_id} is {archived.job.status}: there is no dataset to review")
            current = review.apply(extracted, archived.review)
            entry = review.entry(current, row_id, change, reviewer=change.reviewer or owner or "anonymous")
            if self.archive.add_review(task_id, len(archived.review), entry):
                reviewed = review.apply(extracted, [*archived.review, entry])
                context = {"task_id": task_id, "stage": "done", "row_id": row_id, "action": entry.action}
                log.info("archived row reviewed", extra=context)
                return next(row for row in reviewed.rows if row.row_id == row_id)
        raise JobConflict(f"job {task_id} is being reviewed by others right now; try again")

    def delete(self, task_id: str, owner: str = "") -> None:
        """Remove a job everywhere: the archive, then Redis; a job still queued or running is cancelled in between.

        ``JobNotFound`` when neither holds a job the caller may see. The archive goes first: when PostgreSQL fails,
        nothing else has changed; and a copy queued before (a review's, the cancel's) finds the job deleted
        instead of bringing it back.
        """
        check_task_id(task_id)
        job = self.store.jobs.load(task_id, owner=owner)
        if job is None and not self._archive_holds(task_id, owner):
            raise JobNotFound(task_id)
        if self.archive is not None:
            self.archive.delete(task_id)
        if job is not None and job.status not in TERMINAL_STATUSES:
            job = self._cancelled(task_id, owner)
        if job is not None:
            self.store.jobs.erase(job)
            self.store.replicated()  # with Sentinel: a failover does not bring it back
        log.info("job deleted", extra={"task_id": task_id, "stage": job.stage if job is not None else "done"})

    def _archive_holds(self, task_id: str, owner: str) -> bool:
        archived_owner = self.archive.owner(task_id) if self.archive is not None else None
        return archived_owner is not None and (not owner or archived_owner == owner)

    def _cancelled(self, task_id: str, owner: str) -> JobRecord:
        """Cancel a running job before it is deleted (it may have ended meanwhile: then as it ended)."""
        try:
            return self.cancel(task_id, owner)
        except JobConflict:  # it ended between the load and the cancel
            return self.find(task_id, owner)

    def close(self) -> None:
        super().close()
        if self.archive is not None:
            self.archive.close()


def _dataset(archived: ArchivedJob, *, original: bool = False) -> Dataset | None:
    """An archived job's dataset, with its trail applied unless ``original``; None unless it completed."""
    if archived.dataset is None:
        return None
    if original:
        return review.with_row_ids(archived.dataset)
    return review.apply(archived.dataset, archived.review)
