"""HTTP for online sources: one async client, a Redis response cache, shared rate limits and retries.

Rate and concurrency limits live in Redis, so they hold across every worker process and machine: a
source's published limits are never exceeded however many jobs search at once. Each attempt of a
retried request goes through the limits again (which is why retries are done here rather than in
an httpx transport), and a ``Retry-After`` pushes back every worker's next request to that source.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import NamedTuple, TypeVar

import httpx
import msgspec

from pipeline.errors import SourceError
from pipeline.settings import Settings
from pipeline.store.sources import SourceState
from pipeline.version import VERSION

log = logging.getLogger(__name__)

T = TypeVar("T")

#: statuses worth another attempt: rate limited, or the server's trouble
RETRYABLE = frozenset({429, 500, 502, 503, 504})
_OK = frozenset({200})
_DOWNLOADED = frozenset({200, 301, 302, 303, 307, 308})


class Answer(NamedTuple):
    """An HTTP answer, its body read."""

    status: int
    headers: httpx.Headers
    body: bytes


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """How hard a source may be asked, across every worker: requests per second and at once."""

    per_second: float
    concurrent: int


class SourceHttp:
    """What an online source uses to ask its API: ``get`` returns a parsed, cached, polite answer."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        state: SourceState,
        *,
        retries: int,
        backoff_s: float,
        max_wait_s: float = 60.0,
    ) -> None:
        self.client = client
        self.state = state
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        # a lease outlives the longest a holder may wait for its slot plus its request, yet frees itself
        # when a worker dies holding it
        self._lease_ms = int(((client.timeout.read or 30.0) + max_wait_s + 10) * 1000)

    @classmethod
    def create(cls, settings: Settings) -> SourceHttp:
        """A client for the event loop it is first used on; ``close`` it on that loop."""
        agent = f"litminer/{VERSION}" + (f" (mailto:{settings.contact_email})" if settings.contact_email else "")
        timeout = httpx.Timeout(settings.http_timeout_s, connect=min(settings.http_timeout_s, 10.0))
        return cls(
            httpx.AsyncClient(timeout=timeout, headers={"User-Agent": agent}, follow_redirects=True),
            SourceState.connect(settings),
            retries=settings.http_retries,
            backoff_s=settings.http_backoff_ms / 1000,
        )

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[SourceHttp]:
        """A client for one search run."""
        http = cls.create(settings)
        try:
            yield http
        finally:
            await http.close()

    async def close(self) -> None:
        """Release the HTTP and Redis connections."""
        await self.client.aclose()
        await self.state.close()

    async def get(
        self,
        source: str,
        limits: Limits,
        url: str,
        *,
        parse: Callable[[bytes], T],
        params: Mapping[str, str | int] | None = None,
        secrets: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """GET ``url`` and parse the body; answers that parse are cached for the cache TTL.

        ``secrets`` are query parameters (API keys) left out of the cache key, logs and messages.
        ``parse`` raises ``ValueError`` or ``SyntaxError`` (XML) for a body it cannot read.
        """
        params = dict(params or {})
        digest = hashlib.sha256(f"{url}?{sorted(params.items())}".encode()).hexdigest()[:32]
        cached = await self.state.cached(source, digest)
        if cached is not None:
            try:
                return parse(cached)
            except (ValueError, SyntaxError):
                log.warning("%s: unreadable cached answer for %s; asking again", source, url)
        started = time.monotonic()
        query = {**params, **(secrets or {})}

        async def send() -> Answer:
            response = await self.client.get(url, params=query, headers=headers or {})
            return Answer(response.status_code, response.headers, response.content)

        body = (await self._fetch(source, limits, url, send)).body
        log.info("%s: GET %s %s: %d bytes in %.2f s", source, url, params, len(body), time.monotonic() - started)
        try:
            value = parse(body)
        except (ValueError, SyntaxError) as exc:
            raise SourceError(f"{source}: malformed response from {url}: {_short(str(exc))}", "malformed") from None
        await self.state.cache(source, digest, body)
        return value

    async def download(self, source: str, limits: Limits, url: str, *, max_bytes: int) -> Answer:
        """GET ``url`` as it is (redirects are answers, not followed), its body read up to ``max_bytes``.

        Limited, timed out and retried like ``get``; never cached here (the caller caches what it makes of it).
        Raises ``SourceError`` for a failed request or a body over ``max_bytes``.
        """

        async def send() -> Answer:
            response = await self.client.send(
                self.client.build_request("GET", url), stream=True, follow_redirects=False
            )
            try:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(source, url, max_bytes)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise _too_large(source, url, max_bytes)
            finally:
                await response.aclose()
            return Answer(response.status_code, response.headers, bytes(body))

        return await self._fetch(source, limits, url, send, ok=_DOWNLOADED)

    async def _fetch(
        self, source: str, limits: Limits, url: str, send: Callable[[], Awaitable[Answer]], ok: frozenset[int] = _OK
    ) -> Answer:
        reason, not_before = "", 0.0
        for attempt in range(self.retries + 1):
            async with self._slot(source, limits, not_before):
                try:
                    answer = await send()
                except httpx.TimeoutException:
                    reason, retry_after = f"no answer within {self.client.timeout.read:g} s", None
                except httpx.TransportError as exc:
                    reason, retry_after = f"connection failed ({type(exc).__name__})", None
                else:
                    if answer.status in ok:
                        return answer
                    reason = f"HTTP {answer.status}"
                    if answer.status not in RETRYABLE:
                        text = answer.body.decode("utf-8", "replace")
                        raise SourceError(f"{source}: {reason} from {url}: {_short(text)}", reason)
                    retry_after = _retry_after(answer.headers)
            if attempt == self.retries:
                break
            not_before = retry_after if retry_after is not None else self.backoff_s * 2**attempt
            if not_before > self.max_wait_s:
                message = f"{source}: {reason} from {url}, asked to wait {not_before:.0f} s; giving up"
                raise SourceError(message, reason)
            log.warning("%s: %s from %s; attempt %d in %.2f s", source, reason, url, attempt + 2, not_before)
        raise SourceError(f"{source}: {reason} from {url} after {self.retries + 1} attempts", reason)

    @asynccontextmanager
    async def _slot(self, source: str, limits: Limits, not_before_s: float) -> AsyncIterator[None]:
        """Hold one of the source's concurrent leases and wait for its next rate-limit slot."""
        lease, pause = uuid.uuid4().hex, 0.02
        while not await self.state.take_lease(source, lease, limit=limits.concurrent, lease_ms=self._lease_ms):
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
        try:
            interval_ms = int(1000 / limits.per_second)
            wait_ms = await self.state.reserve(source, interval_ms=interval_ms, not_before_ms=int(not_before_s * 1000))
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)
            yield
        finally:
            await self.state.release_lease(source, lease)


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta seconds or an HTTP date), if any."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _too_large(source: str, url: str, max_bytes: int) -> SourceError:
    limit = f"larger than {max_bytes} bytes"
    return SourceError(f"{source}: {url} is {limit}", f"too large ({limit})")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
