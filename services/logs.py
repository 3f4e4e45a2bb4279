"""Logging setup for litminer processes: every line of a job carries its task_id and stage.

Human-readable by default; JSON lines with ``LITMINER_LOG_FORMAT=json`` (one object per line, for log
shippers).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote_plus

import msgspec

from pipeline.errors import SettingsError
from pipeline.log_context import current_job

LOG_FORMATS = ("text", "json")

#: query parameters whose value is a secret, by name (percent- and ``+``-decoded, case-folded): uvicorn logs
#: each request's path with its raw query, and EventSource and WebSocket clients send the API key as ``?token=``
SECRET_PARAMETERS = frozenset({"token", "access_token", "api_key", "api-key", "apikey", "key", "password", "secret"})
#: a query parameter in a log line: what precedes it, its raw name, its raw value (which a ``?`` ends only
#: when a name and ``=`` follow it: a URL in a parameter, ``?next=/page?token=…``, has parameters of its own)
_PARAMETER = re.compile(r"([?&])([^=&#?\s\"']+)=((?:[^&#?\s\"']|\?(?![^=&#?\s\"']+=))+)")
#: what else can carry a secret into a log line, and what it becomes: a Bearer token, a password in a URL
_SECRETS = (
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',]+"), r"\1***"),
    (re.compile(r"(\w://[^:/@\s]*:)[^@\s/]+@"), r"\1***@"),
)


def secret_parameter(raw_name: str) -> bool:
    """Whether a query parameter named ``raw_name`` (as sent, percent-encoded or not) carries a secret.

    The API decodes a name once (``?%74oken=`` is ``?token=``); a proxy in front may decode it again, so a name
    is decoded until it no longer changes (``%2574oken`` too), and spaces around it and case do not count.
    """
    name = raw_name
    for _ in range(3):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().casefold() in SECRET_PARAMETERS


def _mask_parameter(match: re.Match[str]) -> str:
    before, name, _ = match.groups()
    return f"{before}{name}=***" if secret_parameter(name) else match.group()


def redact(text: str) -> str:
    """``text`` with the values of secret query parameters, Bearer tokens and URL passwords replaced by ``***``."""
    if "=" in text:
        text = _PARAMETER.sub(_mask_parameter, text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message (see ``redact``) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: leave it to the handler's error reporting
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


#: one instance, so adding it again (configure_logging called twice) is a no-op
REDACT_SECRETS = RedactSecrets()
#: loggers that may have handlers of their own (uvicorn's, when it configures logging itself)
_REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error")


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


def configure_logging(level: str = "INFO", log_format: str | None = None, *, file: Path | None = None) -> None:
    """Log to stderr (or append to ``file``) as ``time level logger [task_id stage] message``, or as JSON lines.

    ``log_format`` defaults to ``LITMINER_LOG_FORMAT`` (``text`` or ``json``).
    """
    log_format = log_format or os.environ.get("LITMINER_LOG_FORMAT") or "text"
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"LITMINER_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler: logging.Handler = logging.StreamHandler() if file is None else logging.FileHandler(file, encoding="utf-8")
    handler.addFilter(_JobContext())
    handler.addFilter(REDACT_SECRETS)
    for name in _REDACTED_LOGGERS:
        logging.getLogger(name).addFilter(REDACT_SECRETS)
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


def new_log_file(command: str) -> Path:
    """A new, empty log file in the temporary folder for one run of ``command``; it stays after the run."""
    descriptor, name = tempfile.mkstemp(prefix=f"litminer-{command}-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
    os.close(descriptor)
    return Path(name)
