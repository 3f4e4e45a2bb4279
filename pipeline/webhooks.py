"""Webhooks: one signed POST to a job's callback URL when the job ends, retried with backoff.

When a job ends (completed, error, cancelled: ``JobStore.transition`` sees every end), the store queues a
``deliver_webhook`` message on the ``webhooks`` queue; a worker runs ``deliver`` for it. Each attempt

- POSTs a ``WebhookPayload`` as JSON, signed like Stripe's and Standard Webhooks' signatures::

      Litminer-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of f"{t}.{body}" with LITMINER_WEBHOOK_SECRET>
      Litminer-Delivery: <delivery id, the same on every attempt>
      Litminer-Event: task.completed | task.error | task.cancelled

  Receivers check it with ``verify_signature``;
- connects only to public addresses, checked when connecting (so a DNS change since the request was accepted
  cannot point it at the machines behind litminer), unless the host is allowed in ``LITMINER_WEBHOOK_HOSTS``;
- does not follow redirects (a 3xx is a failed attempt), and reads the status only, never the body;
- counts as delivered on a 2xx; anything else, a connection error, or no answer within
  ``LITMINER_WEBHOOK_TIMEOUT_S`` is a failed attempt, tried again after the next of ``LITMINER_WEBHOOK_RETRY_S``;
- is recorded with the job (``GET /api/v1/tasks/{task_id}/webhooks``, ``/ops``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import ssl
import time
import uuid
from collections.abc import Coroutine, Iterable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import certifi
import dramatiq
import httpcore
import httpx

from contracts import (
    Event,
    EventStatus,
    JobRecord,
    JobStatus,
    WebhookAttempt,
    WebhookPayload,
    WebhookType,
    decode_event,
    encode_webhook,
)
from pipeline.addresses import AddressRefused, PrivateAddress, check_url, http_target, public_addresses
from pipeline.errors import InvalidRequest
from pipeline.settings import Settings
from pipeline.store import WEBHOOK_ACTOR, Store, callback_url
from pipeline.version import VERSION

log = logging.getLogger(__name__)

T = TypeVar("T")

SIGNATURE_HEADER = "Litminer-Signature"
DELIVERY_HEADER = "Litminer-Delivery"
EVENT_HEADER = "Litminer-Event"
#: the longest callback URL accepted
MAX_URL_CHARS = 2048
#: delivery ids are derived from the task id and the terminal event's seq, so every attempt carries the same one
_DELIVERY_IDS = uuid.UUID("8f0d2a1e-5c3b-4d7a-9e61-2b4c8a7f3d10")
_ENDS: dict[EventStatus, tuple[WebhookType, JobStatus]] = {
    "completed": ("task.completed", "completed"),
    "error": ("task.error", "error"),
    "cancelled": ("task.cancelled", "cancelled"),
}


# -- signatures ------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` with ``secret``."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Litminer-Signature`` value for ``body``: ``t=<unix seconds>,v1=<hex>``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, tolerance_s: float = 300, *, now: float | None = None
) -> bool:
    """Whether ``header`` (a ``Litminer-Signature`` value) signs ``body`` with ``secret``, less than
    ``tolerance_s`` seconds ago (or ahead): an old signature may be a replay.

    ``body`` must be the request body exactly as received, before any JSON parsing. Every ``v1`` signature in
    the header is compared, in constant time.
    """
    pairs = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in pairs if name == "t"]
    signatures = [value for name, _, value in pairs if name == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).encode()
    matched = False
    for signature in signatures:
        matched |= hmac.compare_digest(expected, signature.encode())
    return matched


# -- checks ----------------------------------------------------------------------------------------------


def check_callback_url(url: str, settings: Settings) -> None:
    """Refuse a callback URL webhooks cannot or must not go to (``InvalidRequest`` naming ``callback_url``).

    It must be http(s) with a host and no user name or password, and every address of the host must be
    public unless the host is in ``LITMINER_WEBHOOK_HOSTS``; the server needs ``LITMINER_WEBHOOK_SECRET``.
    """
    if not settings.webhook_secret:
        raise InvalidRequest(
            "callback_url",
            "this server signs no webhooks: set LITMINER_WEBHOOK_SECRET (on the API and the workers) to use one",
        )
    if len(url) > MAX_URL_CHARS or any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidRequest(
            "callback_url", f"must be a URL of at most {MAX_URL_CHARS} characters, without spaces or control characters"
        )
    try:
        http_target(url)
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise InvalidRequest("callback_url", "must not carry a user name or password (a token in the path will do)")
        check_url(url, allowed_hosts(settings))
    except PrivateAddress as exc:
        raise InvalidRequest(
            "callback_url", f"refused: {exc}; webhooks go to public addresses unless LITMINER_WEBHOOK_HOSTS allows it"
        ) from None
    except AddressRefused as exc:
        raise InvalidRequest("callback_url", f"refused: {exc}") from None


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """``LITMINER_WEBHOOK_HOSTS``, lower case."""
    return frozenset(host.lower() for host in settings.webhook_hosts)


def shown_url(url: str) -> str:
    """``url`` without a user name or password, query string and fragment, which may carry the receiver's token."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


# -- the payload -----------------------------------------------------------------------------------------


def delivery_id(task_id: str, seq: int) -> str:
    """The id of the webhook announcing the event ``seq`` of a task (the same on every attempt)."""
    return str(uuid.uuid5(_DELIVERY_IDS, f"{task_id}:{seq}"))


def payload(job: JobRecord, event: Event) -> WebhookPayload:
    """The webhook announcing ``event``, the terminal event of ``job``."""
    kind, status = _ENDS[event.status]
    return WebhookPayload(
        id=delivery_id(job.task_id, event.seq),
        type=kind,
        created=event.timestamp,
        task_id=job.task_id,
        client_id=job.client_id,
        status=status,
        stage=event.stage,
        message=event.message,
        error=job.error if job.status == status else None,
        event=event,
        status_url=f"/tasks/{job.task_id}",
        dataset_url=f"/api/v1/datasets/{job.task_id}" if status == "completed" and not job.estimate else None,
    )


# -- sending ---------------------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """An attempt that failed before or without an HTTP answer; the message says why."""


class _PublicOnly(httpcore.AnyIOBackend):
    """Connects to a host's checked addresses only: the check and the connection use the same lookup."""

    def __init__(self, allowed: frozenset[str]) -> None:
        super().__init__()
        self.allowed = allowed

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await public_addresses(host, port, self.allowed)
        return await super().connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )


@functools.cache
def _tls() -> ssl.SSLContext:
    """The TLS context of every delivery (built once: it costs milliseconds of CPU)."""
    return ssl.create_default_context(cafile=certifi.where())


async def post(url: str, body: bytes, headers: dict[str, str], *, settings: Settings) -> int:
    """POST ``body`` to ``url``; returns the HTTP status, or raises ``DeliveryFailed`` saying why there is none."""
    timeout = settings.webhook_timeout_s
    phases = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    backend = _PublicOnly(allowed_hosts(settings))
    try:
        target = httpx.URL(url)  # IDNA hosts, percent-encoding: as httpx would send it
        request_url = httpcore.URL(
            scheme=target.raw_scheme, host=target.raw_host, port=target.port, target=target.raw_path
        )
        async with (
            asyncio.timeout(timeout),
            httpcore.AsyncConnectionPool(ssl_context=_tls(), network_backend=backend) as pool,
            pool.stream(
                "POST", request_url, headers=list(headers.items()), content=body, extensions={"timeout": phases}
            ) as response,
        ):
            return response.status  # the body is never read
    except AddressRefused as exc:
        raise DeliveryFailed(f"refused: {exc}") from None
    except (httpx.InvalidURL, httpcore.UnsupportedProtocol) as exc:
        raise DeliveryFailed(f"not a usable URL ({exc})") from None
    except (TimeoutError, httpcore.TimeoutException):
        raise DeliveryFailed(f"no answer within {timeout:g} s") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        raise DeliveryFailed(f"connection failed: {str(exc)[:200] or type(exc).__name__}") from None


# -- the actor's body ------------------------------------------------------------------------------------


class WebhookRuntime(Protocol):
    """What ``deliver`` needs from the worker running it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def broker(self) -> dramatiq.Broker: ...

    def run_async(self, coroutine: Coroutine[object, object, T]) -> T: ...


def deliver(runtime: WebhookRuntime, task_id: str, seq: int, attempt: int) -> None:
    """Attempt ``attempt`` (1 for the first) at delivering the webhook of event ``seq`` of a task; record it, and
    queue the next attempt after the next retry delay when this one failed and retries remain."""
    store, settings = runtime.store, runtime.settings
    job = store.jobs.load(task_id)
    url = callback_url(job, settings) if job is not None else None
    found = [decode_event(raw) for raw in store.events.history(task_id, after=seq - 1)[:1]]
    event = found[0] if found and found[0].seq == seq else None
    if job is None or url is None or event is None or event.status not in _ENDS:
        log.warning(
            "webhook dropped: the job, its callback URL or its event %d is gone",
            seq,
            extra={"task_id": task_id, "stage": "webhook"},
        )
        return
    sent = payload(job, event)
    body = encode_webhook(sent)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"litminer/{VERSION} (webhooks)",
        DELIVERY_HEADER: sent.id,
        EVENT_HEADER: sent.type,
    }
    at, started = time.time(), time.monotonic()
    status: int | None = None
    try:
        if not settings.webhook_secret:
            raise DeliveryFailed("this worker has no LITMINER_WEBHOOK_SECRET to sign with")
        headers[SIGNATURE_HEADER] = signature_header(settings.webhook_secret, body)
        status = runtime.run_async(post(url, body, headers, settings=settings))
        error = None if 200 <= status < 300 else f"HTTP {status}"
    except DeliveryFailed as exc:
        error = str(exc)
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    delays = settings.webhook_retry_s
    delay = delays[attempt - 1] if error is not None and attempt <= len(delays) else None
    store.webhooks.record(
        WebhookAttempt(
            delivery_id=sent.id,
            task_id=task_id,
            type=sent.type,
            url=shown_url(url),
            attempt=attempt,
            at=at,
            duration_ms=duration_ms,
            status_code=status,
            error=error,
            outcome="delivered" if error is None else "failed" if delay is None else "retrying",
            next_try_at=None if delay is None else time.time() + delay,
        )
    )
    context = {"task_id": task_id, "stage": "webhook"}
    if error is None:
        log.info("webhook %s delivered (HTTP %s, attempt %d)", sent.type, status, attempt, extra=context)
        return
    if delay is None:
        log.error("webhook %s failed for good after %d attempts: %s", sent.type, attempt, error, extra=context)
        return
    log.warning("webhook %s attempt %d failed (%s); next in %g s", sent.type, attempt, error, delay, extra=context)
    retry = store.queues.message(WEBHOOK_ACTOR, task_id, seq, attempt + 1)
    store.queues.send(retry, runtime.broker, delay_ms=int(delay * 1000))
