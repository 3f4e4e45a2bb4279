"""How many LLM calls a process makes at once, and when: concurrency that adapts, within the provider's limits.

``Limiter.call`` is entered around every chat call. It waits for one of the process's slots (``Aimd``: the
slots grow while calls succeed and halve on a 429 or a timeout), then for the provider's shared rate window in
Redis (``LLMLimits``: every worker's calls within the provider's requests and tokens per minute, and no call
while a 429's Retry-After lasts). After the call, the provider's ``x-ratelimit-*`` headers teach every worker
its limits, and the tokens the call really spent replace its estimate.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgspec

from pipeline.store import REDIS_ERRORS
from pipeline.store.llm_limits import LLMLimits

log = logging.getLogger(__name__)

#: tokens a reply is expected to take until this process has seen replies (then: what they took on average)
_FIRST_ALLOWANCE = 500
#: weight of the latest call in the running estimate of the tokens a call takes beyond its prompt's estimate
_ALLOWANCE_WEIGHT = 0.2
#: pause after a 429 that says nothing of when to retry: the first, doubled for each 429 in a row, at most
_PAUSE_S, _MAX_PAUSE_S = 1.0, 60.0

_DURATION = re.compile(r"(\d+(?:\.\d*)?)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration_s(text: str) -> float | None:
    """Seconds in a duration as OpenAI writes its reset headers (Go's format: "1s", "6m0s", "20ms", "1h2m3.5s");
    None for anything else."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """When a 429 says to retry: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    raw = headers.get("retry-after")
    seconds = _number(raw)
    if seconds is not None or raw is None:
        return seconds
    try:
        return max(email.utils.parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class RateHeaders(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider's ``x-ratelimit-*`` headers say (None: not sent)."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    @classmethod
    def read(cls, headers: Mapping[str, str]) -> RateHeaders:
        def count(name: str) -> int | None:
            value = _number(headers.get(f"x-ratelimit-{name}"))
            return None if value is None else int(value)

        def reset(name: str) -> float | None:
            value = headers.get(f"x-ratelimit-reset-{name}")
            return None if value is None else duration_s(value)

        return cls(
            limit_requests=count("limit-requests"),
            limit_tokens=count("limit-tokens"),
            remaining_requests=count("remaining-requests"),
            remaining_tokens=count("remaining-tokens"),
            reset_requests_s=reset("requests"),
            reset_tokens_s=reset("tokens"),
        )

    def pause_s(self, tokens: int, window_s: float) -> float:
        """How long to hold every call when the provider says a call like this one would not fit: until one
        call's share of the limit comes back (a window ÷ the limit), at most until the stated reset."""
        pause = 0.0
        if self.remaining_requests == 0 and self.limit_requests:
            reset = window_s if self.reset_requests_s is None else self.reset_requests_s
            pause = min(window_s / self.limit_requests, reset)
        if self.remaining_tokens is not None and self.remaining_tokens < tokens and self.limit_tokens:
            reset = window_s if self.reset_tokens_s is None else self.reset_tokens_s
            pause = max(pause, min(window_s * tokens / self.limit_tokens, reset))
        return pause


class Aimd:
    """Calls at once, adapting as TCP's congestion window does: one more per window's worth of successes
    (additive increase), half as many after a 429 or a timeout (multiplicative decrease), between 1 and the
    ceiling. It starts at the ceiling: the shared rate window, not this one, paces a provider whose limits are
    known. One halving per overload: the calls already running when it halved do not halve it again."""

    def __init__(self, ceiling: int, *, adaptive: bool = True) -> None:
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.limit = float(ceiling)
        #: halvings so far: a call remembers it when it starts
        self.epoch = 0

    @property
    def window(self) -> int:
        """Calls allowed at once."""
        return int(self.limit)

    def succeeded(self) -> None:
        if self.adaptive:
            self.limit = min(self.limit + 1.0 / self.limit, float(self.ceiling))

    def overloaded(self, epoch: int) -> bool:
        """Halve the window for an overload seen by a call started at ``epoch``; whether it did."""
        if not self.adaptive or epoch != self.epoch:
            return False
        self.limit = max(1.0, self.limit / 2)
        self.epoch += 1
        return True


@dataclass
class Ticket:
    """One call inside ``Limiter.call``: its grant in the shared window, the tokens it was counted for, and the
    limits the window held it to (0: none)."""

    grant: str
    prompt_tokens: int
    tokens: int
    epoch: int
    rpm: int = 0
    tpm: int = 0


class Limiter:
    """One process's calls to one provider: AIMD slots, then the window shared in Redis (``shared``; None: slots
    only, and a 429's pause holds this process only)."""

    def __init__(self, shared: LLMLimits | None, provider: str, name: str, *, ceiling: int, adaptive: bool) -> None:
        self.shared = shared
        self.provider = provider
        self.name = name
        self.aimd = Aimd(ceiling, adaptive=adaptive)
        self.allowance = float(_FIRST_ALLOWANCE)
        self._running = 0
        self._freed = asyncio.Event()
        self._paused_until = 0.0
        self._rate_limited_in_a_row = 0
        # while no limit is known (none configured, none learned by any worker), one call at a time until the
        # provider answers: its headers tell every worker the limits, where a burst of calls could meet 429s
        self._answered = shared is None

    @asynccontextmanager
    async def call(self, prompt_tokens: int) -> AsyncIterator[Ticket]:
        """Hold a slot and a grant for one call of ``prompt_tokens`` (the estimate, plus the reply expected)."""
        while self._running >= (self.aimd.window if self._answered else 1):
            self._freed.clear()
            await self._freed.wait()
        self._running += 1
        try:
            ticket = Ticket(
                grant=uuid.uuid4().hex[:16],
                prompt_tokens=prompt_tokens,
                tokens=max(1, round(prompt_tokens + self.allowance)),
                epoch=self.aimd.epoch,
            )
            await self._granted(ticket)
            yield ticket
        finally:
            self._running -= 1
            self._freed.set()

    async def succeeded(self, ticket: Ticket, headers: Mapping[str, str], tokens: int | None) -> None:
        """A call went through, spending ``tokens`` (None: not said): grow the window, learn from the headers."""
        self.aimd.succeeded()
        self._rate_limited_in_a_row = 0
        if tokens is not None:
            self.allowance += _ALLOWANCE_WEIGHT * (tokens - ticket.prompt_tokens - self.allowance)
        if self.shared is not None:
            try:  # bookkeeping: the call is paid for and its reply in hand, so a Redis error must not lose it
                if tokens is not None:
                    await self.shared.settle(self.provider, ticket.grant, tokens)
                rate = await self._learn(ticket, headers)
                pause_s = rate.pause_s(ticket.tokens, self.shared.window_ms / 1000)
                if pause_s > 0:
                    await self.shared.block(self.provider, round(pause_s * 1000))
            except REDIS_ERRORS as exc:
                log.warning("%s: rate window not updated: %s", self.name, exc, extra={"stage": "extraction"})
        self._open()

    async def rate_limited(self, ticket: Ticket, headers: Mapping[str, str]) -> None:
        """A 429: halve the window, and hold every call until the provider's Retry-After."""
        self._rate_limited_in_a_row += 1
        backoff_s = min(_PAUSE_S * 2 ** (self._rate_limited_in_a_row - 1), _MAX_PAUSE_S)
        stated_s = retry_after_s(headers)
        # a stated 0 (or nothing) would send the call again at once, into another 429: the backoff then
        pause_s = stated_s if stated_s is not None and stated_s > 0 else backoff_s
        halved = self.aimd.overloaded(ticket.epoch)
        self._paused_until = max(self._paused_until, time.monotonic() + pause_s)
        if self.shared is not None:
            await self.shared.settle(self.provider, ticket.grant, 0)
            await self.shared.block(self.provider, round(pause_s * 1000))
            await self._learn(ticket, headers)
        log.warning(
            "%s answered 429 (rate limited): every call waits %.2f s; %d calls at once%s",
            self.name,
            pause_s,
            self.aimd.window,
            " (halved)" if halved else "",
            extra={"stage": "extraction"},
        )
        self._open()

    def timed_out(self, ticket: Ticket) -> None:
        """A call timed out: the provider is overloaded, so halve the window."""
        if self.aimd.overloaded(ticket.epoch):
            log.warning(
                "%s timed out: %d calls at once now", self.name, self.aimd.window, extra={"stage": "extraction"}
            )

    def _open(self) -> None:
        """The provider has answered (and its limits are recorded): let the calls waiting for a slot go."""
        self._answered = True
        self._freed.set()

    async def _learn(self, ticket: Ticket, headers: Mapping[str, str]) -> RateHeaders:
        """Record the limits the headers state, for every worker, when the window held the call to others (none
        learned yet, the configured ones, or limits the provider has changed since)."""
        rate = RateHeaders.read(headers)
        stale = (rate.limit_requests is not None and rate.limit_requests != ticket.rpm) or (
            rate.limit_tokens is not None and rate.limit_tokens != ticket.tpm
        )
        if self.shared is not None and stale:
            await self.shared.learn(self.provider, rpm=rate.limit_requests, tpm=rate.limit_tokens)
            log.info(
                "%s says its limits are %s requests and %s tokens per minute",
                self.name,
                rate.limit_requests,
                rate.limit_tokens,
                extra={"stage": "extraction"},
            )
        return rate

    async def _granted(self, ticket: Ticket) -> None:
        """Wait until this process's pause is over and the shared window grants the call."""
        pause_s = self._paused_until - time.monotonic()
        if pause_s > 0:
            await asyncio.sleep(pause_s)
        if self.shared is None:
            return
        while True:
            window = await self.shared.acquire(self.provider, ticket.grant, ticket.tokens)
            ticket.rpm, ticket.tpm = window.rpm, window.tpm
            if (window.rpm or window.tpm) and not self._answered:
                self._open()
            if not window.wait_ms:
                return
            log.debug(
                "%s: waiting %d ms for the rate window (%d calls of %d, %d tokens of %d per minute)",
                self.name,
                window.wait_ms,
                window.calls,
                window.rpm,
                window.tokens,
                window.tpm,
                extra={"stage": "extraction"},
            )
            await asyncio.sleep(window.wait_ms / 1000)


def _number(raw: str | None) -> float | None:
    """A header's number; None when absent, not a number, or not finite ("inf", "nan")."""
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
