"""litminer's errors: one tree, so callers catch by meaning and the API maps each branch to one status.

A stage that raises ``PermanentError`` (or ``JobCancelled``) is not retried; any other exception in a stage is
retried with backoff. The API turns ``InvalidRequest``, ``ClientIdTaken``, ``JobNotFound`` (and ``RowNotFound``),
``JobConflict`` and ``StoreUnavailable`` into 400, 403, 404, 409 and 503 (``services/api/errors.py``); the pipeline
never raises HTTP errors itself.
"""

from __future__ import annotations


class LitminerError(Exception):
    """Base of every error litminer raises on purpose."""


class SettingsError(LitminerError):
    """An environment variable (or a setting) holds a value litminer cannot use."""


class InvalidRequest(LitminerError):
    """A request that cannot be run; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ClientIdTaken(LitminerError):
    """Another API key claimed this client id first (with keys, a client id belongs to the first key using it)."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client_id: {client_id!r} belongs to another API key; choose another client id")
        self.field = "client_id"


class JobNotFound(LitminerError):
    """No job with that id (never created, expired, or another API key's)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id}")
        self.task_id = task_id


class RowNotFound(LitminerError):
    """The dataset has no row with that id."""

    def __init__(self, task_id: str, row_id: str) -> None:
        super().__init__(f"task {task_id} has no row {row_id[:128]!r}")
        self.row_id = row_id


class JobConflict(LitminerError):
    """The job's state does not allow the request (still running, already finished, outputs missing)."""


class JobFinished(JobConflict):
    """The job already completed or failed, so it cannot be cancelled."""


class StoreUnavailable(LitminerError):
    """Redis did not answer."""


class StageError(LitminerError):
    """Raised inside a stage; retried with backoff unless it is a ``PermanentError``."""


class PermanentError(StageError):
    """Retrying cannot help (bad stored input, an unknown source, a refused key): the job ends as ``error``."""


class JobCancelled(StageError):
    """The job was cancelled or finished while a stage ran; the stage stops quietly."""


class SourceError(StageError):
    """A literature source failed (after its retries); the message says why, without secrets, and ``reason`` in a
    few words ("HTTP 404", "no answer within 20 s"; the message itself when none was given)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ExtractionError(StageError):
    """Extraction failed for now; the batch is retried with backoff (cached documents are kept)."""


class ExtractorRefused(PermanentError):
    """The extractor's endpoint refused us (bad key, no access, unknown model): retrying cannot help."""
