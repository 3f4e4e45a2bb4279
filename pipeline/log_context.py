"""The job a log line belongs to: set around each stage message, read by the log formatter."""

from __future__ import annotations

from contextvars import ContextVar

#: (task_id, stage) of the stage message this thread runs; coroutines it awaits on the shared event
#: loop inherit it, since ``run_coroutine_threadsafe`` copies the calling thread's context.
current_job: ContextVar[tuple[str, str] | None] = ContextVar("litminer_current_job", default=None)
