"""Logging setup for litminer processes: every line of a job carries its task_id and stage.

Human-readable by default; JSON lines with ``LITMINER_LOG_FORMAT=json`` (one object per line, for log
shippers).
"""

from __future__ import annotations

import logging
import os
import time

import msgspec

from pipeline.log_context import current_job
from pipeline.settings import SettingsError

LOG_FORMATS = ("text", "json")


class _JobContext(logging.Filter):
    """Fills ``task_id`` and ``stage`` from the record's extra, else from the stage message being run."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = current_job.get()
        for index, name in enumerate(("task_id", "stage")):
            if getattr(record, name, None) is None:
                setattr(record, name, job[index] if job else "-")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, task_id, stage (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "task_id": getattr(record, "task_id", "-"),
            "stage": getattr(record, "stage", "-"),
            "process": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


def configure_logging(level: str = "INFO", log_format: str | None = None) -> None:
    """Log to stderr as ``time level logger [task_id stage] message``, or as JSON lines.

    ``log_format`` defaults to ``LITMINER_LOG_FORMAT`` (``text`` or ``json``).
    """
    log_format = log_format or os.environ.get("LITMINER_LOG_FORMAT") or "text"
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"LITMINER_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(_JobContext())
    formatter = (
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(task_id)s %(stage)s] %(message)s")
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request's full URL at INFO, and OpenAlex's API key travels in the query string;
    # SourceHttp logs each request itself, without secrets.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
