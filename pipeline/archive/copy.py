"""Copying a job from Redis to the archive: the ``archive_job`` actor, on the ``archive`` queue.

A job's end and every review of its dataset queue one message (``Store.queue_archive``); the actor copies the
job as Redis holds it when the message runs, so a later copy always carries the latest review trail. A copy that
fails (PostgreSQL down) is logged and retried with the stages' backoff, ``LITMINER_ARCHIVE_MAX_RETRIES`` times,
then dead-lettered: the job itself is finished and stays readable from Redis until it expires.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
import msgspec
from dramatiq.middleware import CurrentMessage

from contracts import TERMINAL_STATUSES
from pipeline.archive.database import Archive, ArchiveUnavailable, JobCopy
from pipeline.settings import Settings
from pipeline.store import ARCHIVE_ACTOR, ARCHIVE_QUEUE, Store

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_split = msgspec.json.Decoder(list[msgspec.Raw]).decode


def copy_of(store: Store, task_id: str) -> JobCopy | None:
    """The job as Redis holds it now, to archive; None when it is gone or running again (a re-run: its next end
    is copied)."""
    job = store.jobs.load(task_id)
    if job is None or job.status not in TERMINAL_STATUSES:
        return None
    raws = store.jobs.inputs(task_id, "dataset", "documents").raws
    documents = raws["documents"]
    return JobCopy(
        job=job,
        record=_encode(job),
        dataset=raws["dataset"] if job.status == "completed" else None,
        documents=[bytes(document) for document in _split(documents)] if documents is not None else [],
        review=[_encode(entry) for entry in store.jobs.review_trail(task_id)],
    )


def archive_job(store: Store, archive: Archive, task_id: str, *, attempt: int, attempts: int) -> None:
    """Copy one job to the archive (attempt ``attempt`` of ``attempts``); ``ArchiveUnavailable``, logged, when
    PostgreSQL fails, so that the message is tried again."""
    context = {"task_id": task_id, "stage": "archive"}
    copy = copy_of(store, task_id)
    if copy is None:
        log.info("nothing to archive: the job is gone or running again", extra=context)
        return
    try:
        kept = archive.save(copy)
    except ArchiveUnavailable as exc:
        if attempt < attempts:
            log.warning(
                "archive copy failed (attempt %d of %d), tried again: %s", attempt, attempts, exc, extra=context
            )
        else:
            log.error("archive copy failed for good after %d attempts: %s", attempt, exc, extra=context)
        raise
    if kept:
        log.info("archived (%s, %d review entries)", copy.job.status, len(copy.review), extra=context)
    else:
        log.info("not archived: the job was deleted", extra=context)


def declare_archive_actor(broker: dramatiq.Broker, store: Store, settings: Settings) -> Archive | None:
    """Declare the ``archive_job`` actor on a worker's ``broker`` and return the archive it writes to (close it
    with the worker), or None without ``LITMINER_DATABASE_URL``. The schema is migrated in the background."""
    if not settings.database_url:
        return None
    archive = Archive(settings.database_url)
    threading.Thread(target=archive.prepare, name="archive-migrate", daemon=True).start()
    attempts = settings.archive_max_retries + 1

    def run_archive_job(task_id: str) -> None:
        message = CurrentMessage.get_current_message()
        attempt = int(message.options.get("retries", 0)) + 1 if message is not None else 1
        archive_job(store, archive, task_id, attempt=attempt, attempts=attempts)

    run_archive_job.__name__ = ARCHIVE_ACTOR
    declare = dramatiq.actor(
        broker=broker,
        actor_name=ARCHIVE_ACTOR,
        queue_name=ARCHIVE_QUEUE,
        max_retries=settings.archive_max_retries,
        time_limit=settings.stage_time_limit_ms,
    )
    declare(run_archive_job)
    return archive
