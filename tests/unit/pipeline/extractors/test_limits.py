"""pipeline.extractors.limits: OpenAI's rate-limit headers read, and the AIMD window of calls at once."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator

import openai
import pytest

from pipeline.extractors.limits import Aimd, RateHeaders, duration_s, retry_after_s
from tests.fixtures.llm import FakeLLM, ProviderLimits, go_duration

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello in JSON." * 20}]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1.5s", 1.5),
        ("59.347s", 59.347),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("250us", 0.00025),
    ],
)
def test_openai_durations_are_read_in_seconds(text: str, seconds: float) -> None:
    assert duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1", "1x", "s", "1s2", "-1s"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    assert duration_s(text) is None


@pytest.mark.parametrize("seconds", [0.02, 0.999, 1.0, 1.5, 59.347, 360.0, 3723.5])
def test_the_fake_providers_durations_read_back(seconds: float) -> None:
    assert duration_s(go_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


def test_retry_after_prefers_milliseconds_then_seconds_then_a_date() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert retry_after_s({"retry-after": "2"}) == 2.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < (retry_after_s({"retry-after": in_a_minute}) or 0) <= 60
    assert retry_after_s({"retry-after": "whenever"}) is None
    assert retry_after_s({}) is None


@pytest.fixture
def provider() -> Iterator[FakeLLM]:
    limits = ProviderLimits(rpm=3, tpm=100_000, window_s=30)
    with FakeLLM(limits) as server:
        yield server


def test_the_headers_of_a_provider_with_limits_are_read(provider: FakeLLM) -> None:
    client = openai.OpenAI(base_url=provider.url, api_key="sk-test", max_retries=0, timeout=5)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    rate = RateHeaders.read(raw.headers)
    spent = provider.admitted[0].tokens
    assert (rate.limit_requests, rate.remaining_requests) == (3, 2)
    assert (rate.limit_tokens, rate.remaining_tokens) == (100_000, 100_000 - spent)
    assert rate.reset_requests_s is not None and 29 < rate.reset_requests_s <= 30
    assert rate.reset_tokens_s == rate.reset_requests_s
    assert raw.parse().usage is not None


def test_a_call_over_the_limit_is_a_429_saying_when_it_would_fit(provider: FakeLLM) -> None:
    client = openai.OpenAI(base_url=provider.url, api_key="sk-test", max_retries=0, timeout=5)
    for _ in range(3):
        client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError, match=r"requests per min \(RPM\): Limit 3, Used 3") as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.code == "rate_limit_exceeded" and caught.value.type == "requests"
    headers = caught.value.response.headers
    wait = retry_after_s(headers)
    assert wait is not None and 29 < wait <= 30
    assert headers["retry-after"] == "30"
    assert RateHeaders.read(headers).remaining_requests == 0
    assert provider.rate_limited == 1 and len(provider.admitted) == 3 and provider.busiest_window()[0] == 4


def test_without_headers_only_the_429_says_anything() -> None:
    with FakeLLM(ProviderLimits(rpm=1, window_s=30, headers=False)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0, timeout=5)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert RateHeaders.read(raw.headers) == RateHeaders()
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="m", messages=MESSAGES)
        assert retry_after_s(caught.value.response.headers) is not None
        assert RateHeaders.read(caught.value.response.headers) == RateHeaders()


def test_a_call_pauses_everyone_only_when_the_next_would_not_fit() -> None:
    full = RateHeaders(limit_requests=60, remaining_requests=0, reset_requests_s=30.0)
    assert full.pause_s(tokens=100, window_s=60) == 1.0  # one request's share of the minute, not the reset
    assert RateHeaders(limit_requests=60, remaining_requests=1).pause_s(tokens=100, window_s=60) == 0
    short = RateHeaders(limit_tokens=6000, remaining_tokens=50, reset_tokens_s=0.5)
    assert short.pause_s(tokens=100, window_s=60) == 0.5  # the reset comes sooner than 100 tokens' share
    assert RateHeaders().pause_s(tokens=100, window_s=60) == 0


def test_the_window_starts_at_the_ceiling_and_never_passes_it() -> None:
    aimd = Aimd(8)
    assert aimd.window == 8
    for _ in range(20):
        aimd.succeeded()
    assert aimd.window == 8


def test_a_429_halves_the_window_once_for_the_calls_already_running() -> None:
    aimd = Aimd(32)
    running = aimd.epoch
    assert aimd.overloaded(running) and aimd.window == 16
    assert not aimd.overloaded(running) and aimd.window == 16  # the same burst of 429s halves once
    assert aimd.overloaded(aimd.epoch) and aimd.window == 8


def test_after_halving_it_grows_back_by_one_per_window_of_successes() -> None:
    aimd = Aimd(32)
    aimd.overloaded(aimd.epoch)
    aimd.overloaded(aimd.epoch)
    assert aimd.window == 8
    for window in range(8, 32):
        successes = 0
        while aimd.window == window:
            aimd.succeeded()
            successes += 1
        assert aimd.window == window + 1 and window <= successes <= window + 1
    aimd.succeeded()
    assert aimd.window == 32


def test_the_window_never_drops_below_one() -> None:
    aimd = Aimd(4)
    for _ in range(5):
        aimd.overloaded(aimd.epoch)
    assert aimd.window == 1
    aimd.succeeded()
    assert aimd.window == 2  # a window of one success


def test_a_fixed_window_neither_grows_nor_halves() -> None:
    aimd = Aimd(8, adaptive=False)
    assert aimd.window == 8
    assert not aimd.overloaded(aimd.epoch)
    aimd.succeeded()
    assert aimd.window == 8
