"""Logging setup for litminer processes: every line carries task_id and stage when known."""

from __future__ import annotations

import logging


class _ContextDefaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name in ("task_id", "stage"):
            if not hasattr(record, name):
                setattr(record, name, "-")
        return True


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr as ``time level logger [task_id stage] message``."""
    handler = logging.StreamHandler()
    handler.addFilter(_ContextDefaults())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(task_id)s %(stage)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request's full URL at INFO, and OpenAlex's API key travels in the query string;
    # SourceHttp logs each request itself, without secrets.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
