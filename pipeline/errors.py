"""Pipeline errors. Permanent ones are never retried; anything else is retried with backoff."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of litminer's pipeline errors."""


class PermanentError(PipelineError):
    """Retrying cannot help (bad stored input, an unknown source): the job ends as ``error``."""


class JobCancelled(PipelineError):
    """The job was cancelled or finished while a stage ran; the stage stops quietly."""


class JobNotFound(PipelineError):
    """No job with that id (never created, or expired)."""


class JobConflict(PipelineError):
    """The job's state does not allow the request (still running, already finished, outputs missing)."""


class JobFinished(JobConflict):
    """The job already completed or failed, so it cannot be cancelled."""
