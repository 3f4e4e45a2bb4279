"""Fixtures of the fuzz tests: an API with rate limiting off, one HTTP client, a tally of statuses per module."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import msgspec
import pytest

from pipeline.settings import Settings
from tests.fixtures.fuzz import TIMEOUT, Tally


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    made = Tally()
    yield made
    sent, server_errors = made.total()
    print(f"\nfuzz: all operations: {sent} requests, {server_errors} 5xx")


@pytest.fixture
def fuzz_settings(settings: Settings) -> Settings:
    """The test's settings (own key prefix) with rate limiting off: the fuzzer sends thousands of requests."""
    return msgspec.structs.replace(settings, rate_limit_per_minute=0)


@pytest.fixture
def fuzz_url(fuzz_settings: Settings, serve_api: Callable[[Settings], str]) -> str:
    return serve_api(fuzz_settings)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One client for the fuzzer's requests, so they reuse connections."""
    with httpx.Client(timeout=TIMEOUT) as client:
        yield client
