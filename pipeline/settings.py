"""Settings: one frozen Struct, read from the environment by entry points only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import msgspec


class SettingsError(ValueError):
    """An environment variable holds a value litminer cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable, with the defaults DESIGN.md fixes."""

    redis_url: str = "redis://redis:6379/0"
    key_prefix: str = "litminer:"
    result_ttl_s: int = 7 * 24 * 3600
    max_rows: int = 100
    max_retries: int = 3
    retry_min_backoff_ms: int = 30_000
    retry_max_backoff_ms: int = 120_000
    retry_jitter: bool = False
    stage_time_limit_ms: int = 600_000
    corpus: str | None = None
    index_dir: str = str(Path.home() / ".cache" / "litminer")
    sources: tuple[str, ...] = ("local",)
    extractor: str = "auto"
    docs_per_row: int = 4
    max_documents: int = 200
    event_stream_maxlen: int = 10_000
    event_queue_size: int = 1_000
    heartbeat_s: float = 15.0
    send_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (``os.environ`` by default)."""
        env = os.environ if env is None else env
        defaults = cls()
        sources = tuple(s.strip() for s in env.get("LITMINER_SOURCES", "").split(",") if s.strip())
        return cls(
            redis_url=redis_url_from_env(env),
            key_prefix=env.get("LITMINER_KEY_PREFIX", defaults.key_prefix),
            result_ttl_s=_int(env, "LITMINER_RESULT_TTL", defaults.result_ttl_s),
            max_rows=_int(env, "LITMINER_MAX_ROWS", defaults.max_rows),
            max_retries=_int(env, "LITMINER_MAX_RETRIES", defaults.max_retries),
            retry_min_backoff_ms=_int(env, "LITMINER_RETRY_MIN_BACKOFF_MS", defaults.retry_min_backoff_ms),
            retry_max_backoff_ms=_int(env, "LITMINER_RETRY_MAX_BACKOFF_MS", defaults.retry_max_backoff_ms),
            retry_jitter=env.get("LITMINER_RETRY_JITTER", "").lower() in {"1", "true", "yes"},
            stage_time_limit_ms=_int(env, "LITMINER_STAGE_TIME_LIMIT_MS", defaults.stage_time_limit_ms),
            corpus=env.get("LITMINER_CORPUS") or None,
            index_dir=env.get("LITMINER_INDEX_DIR", defaults.index_dir),
            sources=sources or defaults.sources,
            extractor=env.get("LITMINER_EXTRACTOR", defaults.extractor),
            docs_per_row=_int(env, "LITMINER_DOCS_PER_ROW", defaults.docs_per_row),
            max_documents=_int(env, "LITMINER_MAX_DOCUMENTS", defaults.max_documents),
            event_queue_size=_int(env, "LITMINER_EVENT_QUEUE_SIZE", defaults.event_queue_size, minimum=1),
            heartbeat_s=_float(env, "LITMINER_HEARTBEAT_S", defaults.heartbeat_s),
            send_timeout_s=_float(env, "LITMINER_SEND_TIMEOUT_S", defaults.send_timeout_s),
        )


def redis_url_from_env(env: Mapping[str, str]) -> str:
    """``REDIS_URL`` if set, else a URL from ``REDIS_HOST``/``PORT``/``DB``/``PASSWORD``."""
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    host = env.get("REDIS_HOST", "redis")
    port = _int(env, "REDIS_PORT", 6379)
    db = _int(env, "REDIS_DB", 0)
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value
