"""The PostgreSQL archive: ended jobs, their datasets, documents and review trails, kept after Redis lets them go.

With ``LITMINER_DATABASE_URL`` set, a worker copies every job that ends, and again after every review, from Redis
to the archive (``copy``: the ``archive_job`` actor on the ``archive`` queue), and the API reads a job from the
archive once it expired in Redis (``service.DurableJobService``). ``database`` holds the SQL, ``schema`` the
migrations (``migrations/*.sql``). This package never talks to Redis itself: it goes through ``pipeline.store``.
"""

from __future__ import annotations

from pipeline.archive.copy import archive_job, copy_of, declare_archive_actor
from pipeline.archive.database import Archive, ArchivedJob, ArchiveUnavailable, JobCopy
from pipeline.archive.schema import migrate, migrations
from pipeline.archive.service import DurableJobService

__all__ = [
    "Archive",
    "ArchiveUnavailable",
    "ArchivedJob",
    "DurableJobService",
    "JobCopy",
    "archive_job",
    "copy_of",
    "declare_archive_actor",
    "migrate",
    "migrations",
]
