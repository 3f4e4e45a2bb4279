"""The archive in PostgreSQL: ended jobs with their datasets, documents and review trails, kept until deleted.

Payloads are stored as msgspec wrote them (``json`` columns keep the text exactly), so what is read back decodes
to the very Structs Redis held. Writes of one job take a transaction-scoped advisory lock on its id: a copy, a
review and a delete of the same job never interleave, and a copy never brings back a deleted job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import msgspec
import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from contracts import Dataset, JobRecord, ReviewEntry
from pipeline.archive.schema import migrate
from pipeline.errors import StoreUnavailable
from pipeline.store.jobs import owned_by

log = logging.getLogger(__name__)

_decode_job = msgspec.json.Decoder(JobRecord).decode
_decode_dataset = msgspec.json.Decoder(Dataset).decode
_decode_review = msgspec.json.Decoder(ReviewEntry).decode

_COPY_DOCUMENTS = "COPY archived_documents (task_id, position, document) FROM STDIN"

#: seconds a caller waits for a connection before the archive counts as unavailable
CONNECT_TIMEOUT_S = 5


class ArchiveUnavailable(StoreUnavailable):
    """PostgreSQL did not answer, or refused the archive's statements."""


class JobCopy(msgspec.Struct, frozen=True, kw_only=True):
    """A job as Redis holds it, to archive: each payload the JSON it is stored as."""

    job: JobRecord
    record: bytes
    dataset: bytes | None = None
    documents: list[bytes] = []
    review: list[bytes] = []


class ArchivedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job read back from the archive: its record, its dataset as extracted (when it completed), its trail."""

    job: JobRecord
    dataset: Dataset | None
    review: list[ReviewEntry]


class Archive:
    """The PostgreSQL archive at ``url``: a small connection pool, opened at once, connecting in the background.

    Every method raises ``ArchiveUnavailable`` when PostgreSQL does not answer within ``CONNECT_TIMEOUT_S``
    or fails a statement. The schema is brought up to date on the first connection (``prepare``).
    """

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
            name="archive",
        )
        self.pool.open(wait=False)
        self._migrated = False
        self._migrating = threading.Lock()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        try:
            with self.pool.connection() as conn:
                if not self._migrated:
                    self._migrate(conn)
                yield conn
        except psycopg.Error as exc:
            raise ArchiveUnavailable(f"the archive (PostgreSQL) failed: {type(exc).__name__}: {exc}") from exc

    def _migrate(self, conn: psycopg.Connection[TupleRow]) -> None:
        with self._migrating:
            if self._migrated:
                return
            applied = migrate(conn)
            if applied:
                log.info("archive schema migrated: %s", ", ".join(applied))
            self._migrated = True

    def prepare(self) -> bool:
        """Connect and bring the schema up to date now (at a process's start); False, logged, when PostgreSQL does
        not answer: the next use tries again."""
        try:
            with self._connection():
                return True
        except ArchiveUnavailable as exc:
            log.error("archive not ready (tried again on first use): %s", exc)
            return False

    # -- writes ------------------------------------------------------------------------------------------

    def save(self, copy: JobCopy) -> bool:
        """Store ``copy`` of a job: its record, dataset and documents unless the archive holds this version of the
        record or a newer one (a review's copy: the job has not changed), and the review entries it does not hold
        yet. False when the job was deleted (nothing is stored)."""
        job = copy.job
        with self._connection() as conn, conn.transaction():
            if self._deleted(conn, job.task_id):
                return False
            newer = conn.execute(
                "INSERT INTO archived_jobs AS a"
                " (task_id, owner, client_id, status, query, created_at, updated_at, record)"
                " VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s::json)"
                " ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,"
                " record = EXCLUDED.record, archived_at = now() WHERE a.updated_at < EXCLUDED.updated_at"
                " RETURNING task_id",
                [
                    job.task_id,
                    job.owner,
                    job.client_id,
                    job.status,
                    job.request.user_query,
                    job.created_at,
                    job.updated_at,
                    copy.record.decode(),
                ],
            ).fetchone()
            if newer is not None:
                conn.execute("DELETE FROM archived_datasets WHERE task_id = %s", [job.task_id])
                conn.execute("DELETE FROM archived_documents WHERE task_id = %s", [job.task_id])
                if copy.dataset is not None:
                    conn.execute(
                        "INSERT INTO archived_datasets (task_id, dataset) VALUES (%s, %s::json)",
                        [job.task_id, copy.dataset.decode()],
                    )
                with conn.cursor() as cursor, cursor.copy(_COPY_DOCUMENTS) as out:
                    for position, document in enumerate(copy.documents):
                        out.write_row((job.task_id, position, document.decode()))
            self._append_review(conn, job.task_id, 0, copy.review)
        return True

    def add_review(self, task_id: str, position: int, entry: ReviewEntry) -> bool:
        """Append ``entry`` to an archived job's trail as entry ``position`` (counted from 0); False when the trail
        already has one there (a concurrent review: read it again) or the job is gone."""
        with self._connection() as conn, conn.transaction():
            if self._deleted(conn, task_id):
                return False
            if conn.execute("SELECT 1 FROM archived_jobs WHERE task_id = %s", [task_id]).fetchone() is None:
                return False
            return self._append_review(conn, task_id, position, [msgspec.json.encode(entry)]) == 1

    def delete(self, task_id: str) -> bool:
        """Remove a job and everything archived with it, for good (a copy queued earlier cannot bring it back);
        whether the archive held it."""
        with self._connection() as conn, conn.transaction():
            self._lock(conn, task_id)
            conn.execute("INSERT INTO deleted_jobs (task_id) VALUES (%s) ON CONFLICT DO NOTHING", [task_id])
            gone = conn.execute("DELETE FROM archived_jobs WHERE task_id = %s RETURNING task_id", [task_id])
            return gone.fetchone() is not None

    def owner(self, task_id: str) -> str | None:
        """The owner id of an archived job ("" without API keys), None when the archive does not hold it."""
        with self._connection() as conn:
            found = conn.execute("SELECT owner FROM archived_jobs WHERE task_id = %s", [task_id]).fetchone()
        return None if found is None else str(found[0])

    def _lock(self, conn: psycopg.Connection[TupleRow], task_id: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [task_id])

    def _deleted(self, conn: psycopg.Connection[TupleRow], task_id: str) -> bool:
        """Take the job's lock; whether its owner deleted it."""
        self._lock(conn, task_id)
        return conn.execute("SELECT 1 FROM deleted_jobs WHERE task_id = %s", [task_id]).fetchone() is not None

    def _append_review(
        self, conn: psycopg.Connection[TupleRow], task_id: str, first: int, entries: Sequence[bytes]
    ) -> int:
        """Insert ``entries`` at positions ``first``… unless taken; how many were inserted."""
        inserted = 0
        for position, entry in enumerate(entries, first):
            done = conn.execute(
                "INSERT INTO archived_reviews (task_id, position, entry) VALUES (%s, %s, %s::json)"
                " ON CONFLICT DO NOTHING",
                [task_id, position, entry.decode()],
            )
            inserted += done.rowcount
        return inserted

    # -- reads -------------------------------------------------------------------------------------------

    def load(self, task_id: str, *, owner: str = "") -> ArchivedJob | None:
        """An archived job, or None when the archive does not hold it or (``owner`` given) it is another key's."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT j.record::text, d.dataset::text FROM archived_jobs j"
                " LEFT JOIN archived_datasets d USING (task_id) WHERE j.task_id = %s",
                [task_id],
            ).fetchone()
            if found is None:
                return None
            entries = conn.execute(
                "SELECT entry::text FROM archived_reviews WHERE task_id = %s ORDER BY position", [task_id]
            ).fetchall()
        record, dataset = found
        job = _decode_job(str(record))
        if not owned_by(job, owner):
            return None
        return ArchivedJob(
            job=job,
            dataset=None if dataset is None else _decode_dataset(str(dataset)),
            review=[_decode_review(str(entry)) for (entry,) in entries],
        )

    def recent(self, *, limit: int, client_id: str | None = None, owner: str = "") -> list[JobRecord]:
        """The newest archived jobs first: of one client, else of ``owner`` when given, else of everyone (with
        ``owner``, another key's jobs are left out, as ``JobStore.recent`` does)."""
        where, args = "", []
        if client_id is not None:
            where, args = "WHERE client_id = %s", [client_id]
        elif owner:
            where, args = "WHERE owner = %s", [owner]
        query = f"SELECT record::text FROM archived_jobs {where} ORDER BY created_at DESC LIMIT %s".encode()
        with self._connection() as conn:
            rows = conn.execute(query, [*args, limit]).fetchall()
        jobs = (_decode_job(str(record)) for (record,) in rows)
        return [job for job in jobs if owned_by(job, owner)]

    def close(self) -> None:
        self.pool.close()
