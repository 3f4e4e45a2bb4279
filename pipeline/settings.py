"""Settings: one frozen Struct, read from the environment by entry points only."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from urllib.parse import quote

import msgspec

from pipeline.addresses import AddressRefused, http_target
from pipeline.errors import SettingsError


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable, with its default."""

    redis_url: str = "redis://redis:6379/0"
    #: Redis Sentinels (host, port) that name the master; empty: ``redis_url``'s host is the Redis. With them,
    #: ``redis_url`` still gives the password, database and TLS (``rediss://``) of the master and replicas
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    #: the name the Sentinels monitor the master under
    redis_sentinel_master: str = "mymaster"
    #: the Sentinels' own password (their ``requirepass``); None: they have none
    redis_sentinel_password: str | None = None
    #: with Sentinel, ms a write that a client is told about waits for a replica to hold it (``WAIT 1``); 0: never
    replica_wait_ms: int = 1_000
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
    #: a library file larger than this (MiB) is not read: skipped with a warning until it changes
    library_max_file_mb: int = 50
    #: a library PDF with more pages is not read: skipped with a warning until it changes
    library_max_pages: int = 500
    #: seconds reading one library file may take (in a child process, killed at the limit; the file is skipped)
    library_parse_timeout_s: float = 60.0
    #: characters of full text kept of one library document (about 250 pages), cut at a page boundary
    library_max_text_chars: int = 1_000_000
    #: default sources; empty means the keyless online sources, plus OpenAlex with a key, plus local with a corpus
    sources: tuple[str, ...] = ()
    extractor: str = "auto"
    docs_per_row: int = 4
    max_documents: int = 200
    #: documents screened per document read (the search gathers this many times more, then screens them)
    screening_pool: int = 3
    #: share of the question's weighted terms a document must state to be read (docs/quality.md calibrates it)
    screening_threshold: float = 0.6
    event_stream_maxlen: int = 10_000
    contact_email: str | None = None
    openalex_api_key: str | None = None
    semantic_scholar_api_key: str | None = None
    openalex_url: str = "https://api.openalex.org"
    europepmc_url: str = "https://www.ebi.ac.uk/europepmc/webservices/rest"
    crossref_url: str = "https://api.crossref.org"
    arxiv_url: str = "https://export.arxiv.org/api"
    semantic_scholar_url: str = "https://api.semanticscholar.org/graph/v1"
    search_cache_ttl_s: int = 24 * 3600
    http_timeout_s: float = 20.0
    #: the largest open-access copy downloaded for its full text
    full_text_max_bytes: int = 30 * 1024 * 1024
    #: hosts full text may be downloaded from even at a private or loopback address (a lab's own server)
    full_text_hosts: tuple[str, ...] = ()
    http_retries: int = 3
    http_backoff_ms: int = 1_000
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_concurrency: int = 8
    llm_timeout_s: float = 120.0
    llm_retries: int = 3
    llm_chunk_tokens: int = 6_000
    #: the provider's requests and tokens per minute, until its x-ratelimit-* headers say (0: no limit until then)
    llm_rpm: int = 0
    llm_tpm: int = 0
    extract_batch_size: int = 4
    max_tokens_per_job: int = 0
    #: USD per million prompt and completion tokens, by model (``LITMINER_LLM_PRICES``), for cost estimates
    llm_prices: dict[str, tuple[float, float]] = {}
    grounding_threshold: float = 92.0
    merge_threshold: float = 90.0
    event_queue_size: int = 1_000
    heartbeat_s: float = 15.0
    send_timeout_s: float = 10.0
    #: workers write a heartbeat this often; /ready wants one younger than 30 s
    worker_heartbeat_s: float = 5.0
    #: a worker process's Prometheus port (0: none); process i of ``--processes N`` listens on port + i
    worker_metrics_port: int = 0
    #: a Dramatiq broker whose heartbeat is older than this is dead: its unacknowledged messages are re-queued
    broker_heartbeat_timeout_ms: int = 15_000
    #: Dramatiq broker commands, per million, that also run queue maintenance (re-queueing dead workers' messages);
    #: 2 %: an idle worker polls each queue ~10 times a second, so maintenance comes within seconds of the timeout
    broker_maintenance_chance: int = 20_000
    #: deliveries of a stage that killed their worker before the job ends as ``error``
    max_crashes: int = 3
    #: an unfinished job unchanged this long with no message queued, delayed or in flight is sent on again
    reap_after_s: float = 60.0
    #: extraction batches released to the queue and not finished, at most (0: the live workers' threads, less
    #: ``fair_reserve`` each)
    fair_window: int = 0
    #: threads each worker keeps from extraction batches for the other stages, with the window of 0
    fair_reserve: int = 0
    #: extraction batches of one owner released and not finished, at most (0: no cap)
    owner_max_batches: int = 0
    #: API keys (empty: the API needs no key)
    api_keys: tuple[str, ...] = ()
    #: generate requests per minute per API key (per client IP without keys); 0: no limit
    rate_limit_per_minute: int = 60
    #: largest request body the API reads; larger ones get 413
    max_body_bytes: int = 256 * 1024
    #: origins allowed to call the API from a browser (CORS); empty: same origin only
    cors_origins: tuple[str, ...] = ()
    #: addresses or networks of proxies whose X-Forwarded-For names the client; empty: trust no proxy
    trusted_proxies: tuple[str, ...] = ()
    #: seconds a connection has to send a complete request head (also between keep-alive requests)
    header_timeout_s: float = 10.0
    #: seconds an idle keep-alive connection stays open
    keep_alive_s: int = 5
    #: open connections the API serves at most (0: derived from the open-file limit)
    max_connections: int = 0
    #: the secret webhooks are signed with (HMAC-SHA256); without it a request's callback_url is refused
    webhook_secret: str | None = None
    #: the callback URL of jobs whose request names none, by owner id ("*": every other owner, and an API without keys)
    callback_urls: dict[str, str] = {}
    #: hosts webhooks may go to even at a private or loopback address (a receiver on the same network)
    webhook_hosts: tuple[str, ...] = ()
    #: seconds before each retry of a failed webhook delivery; as many retries as delays
    webhook_retry_s: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)
    #: the longest one delivery attempt may take, connecting included
    webhook_timeout_s: float = 10.0
    #: PostgreSQL archive of ended jobs (``postgresql://…``); empty: no archive, jobs live only in Redis
    database_url: str = ""
    #: tries of an archive write after its first (backoff as stages'); then the message is dead-lettered
    archive_max_retries: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (``os.environ`` by default)."""
        env = os.environ if env is None else env
        defaults = cls()
        sources = _list(env, "LITMINER_SOURCES")
        return cls(
            redis_url=redis_url_from_env(env),
            redis_sentinels=_sentinels(env, "REDIS_SENTINELS"),
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER") or defaults.redis_sentinel_master,
            redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
            replica_wait_ms=_int(env, "LITMINER_REPLICA_WAIT_MS", defaults.replica_wait_ms, minimum=0),
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
            library_max_file_mb=_int(env, "LITMINER_LIBRARY_MAX_FILE_MB", defaults.library_max_file_mb, minimum=1),
            library_max_pages=_int(env, "LITMINER_LIBRARY_MAX_PAGES", defaults.library_max_pages, minimum=1),
            library_parse_timeout_s=_float(env, "LITMINER_LIBRARY_PARSE_TIMEOUT_S", defaults.library_parse_timeout_s),
            library_max_text_chars=_int(
                env, "LITMINER_LIBRARY_MAX_TEXT_CHARS", defaults.library_max_text_chars, minimum=1000
            ),
            sources=sources,
            extractor=env.get("LITMINER_EXTRACTOR", defaults.extractor),
            docs_per_row=_int(env, "LITMINER_DOCS_PER_ROW", defaults.docs_per_row),
            max_documents=_int(env, "LITMINER_MAX_DOCUMENTS", defaults.max_documents),
            screening_pool=_int(env, "LITMINER_SCREENING_POOL", defaults.screening_pool, minimum=1),
            screening_threshold=_float(
                env, "LITMINER_SCREENING_THRESHOLD", defaults.screening_threshold, maximum=1, zero=True
            ),
            contact_email=env.get("LITMINER_CONTACT_EMAIL") or None,
            openalex_api_key=env.get("OPENALEX_API_KEY") or None,
            semantic_scholar_api_key=env.get("SEMANTIC_SCHOLAR_API_KEY") or None,
            openalex_url=env.get("LITMINER_OPENALEX_URL", defaults.openalex_url),
            europepmc_url=env.get("LITMINER_EUROPEPMC_URL", defaults.europepmc_url),
            crossref_url=env.get("LITMINER_CROSSREF_URL", defaults.crossref_url),
            arxiv_url=env.get("LITMINER_ARXIV_URL", defaults.arxiv_url),
            semantic_scholar_url=env.get("LITMINER_SEMANTIC_SCHOLAR_URL", defaults.semantic_scholar_url),
            search_cache_ttl_s=_int(env, "LITMINER_SEARCH_CACHE_TTL", defaults.search_cache_ttl_s, minimum=1),
            http_timeout_s=_float(env, "LITMINER_HTTP_TIMEOUT_S", defaults.http_timeout_s),
            full_text_max_bytes=_int(env, "LITMINER_FULL_TEXT_MAX_BYTES", defaults.full_text_max_bytes, minimum=1024),
            full_text_hosts=_list(env, "LITMINER_FULL_TEXT_HOSTS"),
            http_retries=_int(env, "LITMINER_HTTP_RETRIES", defaults.http_retries, minimum=0),
            http_backoff_ms=_int(env, "LITMINER_HTTP_BACKOFF_MS", defaults.http_backoff_ms, minimum=0),
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            llm_model=env.get("LITMINER_LLM_MODEL") or defaults.llm_model,
            llm_concurrency=_int(env, "LITMINER_LLM_CONCURRENCY", defaults.llm_concurrency, minimum=1),
            llm_timeout_s=_float(env, "LITMINER_LLM_TIMEOUT_S", defaults.llm_timeout_s),
            llm_retries=_int(env, "LITMINER_LLM_RETRIES", defaults.llm_retries, minimum=0),
            llm_chunk_tokens=_int(env, "LITMINER_LLM_CHUNK_TOKENS", defaults.llm_chunk_tokens, minimum=500),
            llm_rpm=_int(env, "LITMINER_LLM_RPM", defaults.llm_rpm, minimum=0),
            llm_tpm=_int(env, "LITMINER_LLM_TPM", defaults.llm_tpm, minimum=0),
            extract_batch_size=_int(env, "LITMINER_EXTRACT_BATCH", defaults.extract_batch_size, minimum=1),
            max_tokens_per_job=_int(env, "LITMINER_MAX_TOKENS_PER_JOB", defaults.max_tokens_per_job, minimum=0),
            llm_prices=_prices(env, "LITMINER_LLM_PRICES"),
            grounding_threshold=_float(env, "LITMINER_GROUNDING_THRESHOLD", defaults.grounding_threshold, maximum=100),
            merge_threshold=_float(env, "LITMINER_MERGE_THRESHOLD", defaults.merge_threshold, maximum=100),
            event_queue_size=_int(env, "LITMINER_EVENT_QUEUE_SIZE", defaults.event_queue_size, minimum=1),
            heartbeat_s=_float(env, "LITMINER_HEARTBEAT_S", defaults.heartbeat_s),
            send_timeout_s=_float(env, "LITMINER_SEND_TIMEOUT_S", defaults.send_timeout_s),
            worker_heartbeat_s=_float(env, "LITMINER_WORKER_HEARTBEAT_S", defaults.worker_heartbeat_s),
            worker_metrics_port=_int(env, "LITMINER_WORKER_METRICS_PORT", defaults.worker_metrics_port, minimum=0),
            broker_heartbeat_timeout_ms=_int(
                env, "LITMINER_BROKER_HEARTBEAT_TIMEOUT_MS", defaults.broker_heartbeat_timeout_ms, minimum=1
            ),
            broker_maintenance_chance=_int(
                env, "LITMINER_BROKER_MAINTENANCE_CHANCE", defaults.broker_maintenance_chance, minimum=0
            ),
            max_crashes=_int(env, "LITMINER_MAX_CRASHES", defaults.max_crashes, minimum=1),
            reap_after_s=_float(env, "LITMINER_REAP_AFTER_S", defaults.reap_after_s),
            fair_window=_int(env, "LITMINER_FAIR_WINDOW", defaults.fair_window, minimum=0),
            fair_reserve=_int(env, "LITMINER_FAIR_RESERVE", defaults.fair_reserve, minimum=0),
            owner_max_batches=_int(env, "LITMINER_OWNER_MAX_BATCHES", defaults.owner_max_batches, minimum=0),
            api_keys=_list(env, "LITMINER_API_KEYS"),
            rate_limit_per_minute=_int(env, "LITMINER_RATE_LIMIT", defaults.rate_limit_per_minute, minimum=0),
            max_body_bytes=_int(env, "LITMINER_MAX_BODY_BYTES", defaults.max_body_bytes, minimum=1024),
            cors_origins=_list(env, "LITMINER_CORS_ORIGINS"),
            trusted_proxies=_proxies(env, "LITMINER_TRUSTED_PROXIES"),
            header_timeout_s=_float(env, "LITMINER_HEADER_TIMEOUT_S", defaults.header_timeout_s),
            keep_alive_s=_int(env, "LITMINER_KEEP_ALIVE_S", defaults.keep_alive_s, minimum=1),
            max_connections=_int(env, "LITMINER_MAX_CONNECTIONS", defaults.max_connections, minimum=0),
            webhook_secret=_webhook_secret(env),
            callback_urls=_callback_urls(env),
            webhook_hosts=_list(env, "LITMINER_WEBHOOK_HOSTS"),
            webhook_retry_s=_delays(env, "LITMINER_WEBHOOK_RETRY_S", defaults.webhook_retry_s),
            webhook_timeout_s=_float(env, "LITMINER_WEBHOOK_TIMEOUT_S", defaults.webhook_timeout_s),
            database_url=_database_url(env),
            archive_max_retries=_int(env, "LITMINER_ARCHIVE_MAX_RETRIES", defaults.archive_max_retries, minimum=0),
        )

    def default_sources(self) -> tuple[str, ...]:
        """``LITMINER_SOURCES``, or: Europe PMC, Crossref, arXiv, OpenAlex when keyed, local when a corpus is set."""
        if self.sources:
            return self.sources
        keyless = ("europepmc", "crossref", "arxiv")
        return keyless + (("openalex",) if self.openalex_api_key else ()) + (("local",) if self.corpus else ())

    @property
    def llm_configured(self) -> bool:
        """An OpenAI-compatible endpoint is configured (a key, a base URL, or both)."""
        return bool(self.openai_api_key or self.openai_base_url)

    def __repr__(self) -> str:
        """Settings without API keys or the Redis password, safe to log."""
        hidden = {"openalex_api_key", "semantic_scholar_api_key", "openai_api_key", "redis_url", "api_keys"}
        hidden |= {"redis_sentinel_password"}
        hidden |= {"webhook_secret", "callback_urls"}  # a callback URL may carry the receiver's token
        hidden |= {"database_url"}  # it may carry a password
        shown = (f"{n}={getattr(self, n)!r}" for n in self.__struct_fields__ if n not in hidden)
        return f"Settings({', '.join(shown)})"


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


def _sentinels(env: Mapping[str, str], name: str) -> tuple[tuple[str, int], ...]:
    """Comma-separated ``host:port`` pairs (an IPv6 host in brackets: ``[::1]:26379``)."""
    sentinels: list[tuple[str, int]] = []
    for item in _list(env, name):
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name} takes host:port pairs separated by commas, got {item!r}")
        sentinels.append((host, int(port)))
    return tuple(sentinels)


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _proxies(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses and networks (or ``*``: any peer), each checked and normalized.

    (uvicorn would take a typo for a host name that never matches, and ``10.0.0.1/8`` for one too.)
    """
    proxies: list[str] = []
    for proxy in _list(env, name):
        try:
            if proxy == "*":
                proxies.append(proxy)
            elif "/" in proxy:
                proxies.append(str(ipaddress.ip_network(proxy, strict=False)))
            else:
                proxies.append(str(ipaddress.ip_address(proxy)))
        except ValueError:
            raise SettingsError(f"{name} takes IP addresses and networks (or *), got {proxy!r}") from None
    return tuple(proxies)


def _webhook_secret(env: Mapping[str, str]) -> str | None:
    secret = env.get("LITMINER_WEBHOOK_SECRET") or None
    if secret is None and env.get("LITMINER_CALLBACK_URLS", "").strip():
        raise SettingsError("LITMINER_CALLBACK_URLS needs LITMINER_WEBHOOK_SECRET: every webhook is signed with it")
    return secret


def _database_url(env: Mapping[str, str]) -> str:
    """``LITMINER_DATABASE_URL``: a ``postgresql://`` (or ``postgres://``) URL, or empty for no archive."""
    url = env.get("LITMINER_DATABASE_URL", "").strip()
    if url and not url.startswith(("postgresql://", "postgres://")):
        scheme = url.partition(":")[0][:20]
        raise SettingsError(f"LITMINER_DATABASE_URL must be a postgresql:// URL, got a {scheme!r} one")
    return url


def _callback_urls(env: Mapping[str, str]) -> dict[str, str]:
    """``owner=URL`` pairs, comma-separated; the owner is an API key's owner id (16 hex digits) or ``*``."""
    urls: dict[str, str] = {}
    for item in _list(env, "LITMINER_CALLBACK_URLS"):
        owner, _, url = (part.strip() for part in item.partition("="))
        if not url or not (owner == "*" or re.fullmatch(r"[0-9a-f]{16}", owner)):
            raise SettingsError(
                f"LITMINER_CALLBACK_URLS takes owner=URL pairs (an owner id of 16 hex digits, or *), got {item!r}"
            )
        try:
            http_target(url)
        except AddressRefused as exc:
            raise SettingsError(f"LITMINER_CALLBACK_URLS: the URL of {owner} is {exc}") from None
        urls[owner] = url
    return urls


def _prices(env: Mapping[str, str], name: str) -> dict[str, tuple[float, float]]:
    """``model=input/output`` pairs, comma-separated: USD per million prompt and completion tokens."""
    prices: dict[str, tuple[float, float]] = {}
    for item in _list(env, name):
        model, _, price = (part.strip() for part in item.rpartition("="))  # a model name may hold a "/"
        given, _, taken = price.partition("/")
        try:
            pair = (float(given), float(taken))
        except ValueError:
            pair = (-1.0, -1.0)
        if not model or not all(0 <= p < float("inf") for p in pair):
            raise SettingsError(
                f"{name} takes model=input/output pairs (USD per million prompt and completion tokens, e.g. "
                f"gpt-4o-mini=0.15/0.60), separated by commas; got {item!r}"
            )
        prices[model] = pair
    return prices


def _delays(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated seconds (``none``: an empty list)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() == "none":
        return ()
    try:
        delays = tuple(float(item) for item in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated seconds (or none), got {raw!r}") from None
    if any(delay < 0 for delay in delays):
        raise SettingsError(f"{name} must not hold negative delays, got {raw!r}")
    return delays


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


def _float(
    env: Mapping[str, str], name: str, default: float, *, maximum: float | None = None, zero: bool = False
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < 0 or (value == 0 and not zero):
        raise SettingsError(f"{name} must be {'at least 0' if zero else 'positive'}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum:g}, got {raw!r}")
    return value


def check_installed(settings: Settings, *, sources: Collection[str], extractors: Collection[str]) -> None:
    """Refuse settings that name an extractor or default sources this installation does not have."""
    if settings.extractor != "auto" and settings.extractor not in extractors:
        raise SettingsError(
            f"LITMINER_EXTRACTOR={settings.extractor!r} is not available (auto, {', '.join(extractors)})"
        )
    unknown = [name for name in settings.default_sources() if name not in sources]
    if unknown:
        raise SettingsError(
            f"LITMINER_SOURCES names unknown sources {', '.join(unknown)} (available: {', '.join(sources)})"
        )
