"""services/logs.py: secrets are masked in log lines whatever their encoding."""

from __future__ import annotations

import logging

import pytest

from services.logs import REDACT_SECRETS, redact


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ('"GET /sse/tasks/1?token=KEY HTTP/1.1" 200', '"GET /sse/tasks/1?token=*** HTTP/1.1" 200'),
        # each of these authenticates: the API decodes a query parameter's name once
        ('"GET /sse/tasks/1?%74oken=KEY HTTP/1.1" 200', '"GET /sse/tasks/1?%74oken=*** HTTP/1.1" 200'),
        ('"GET /sse/tasks/1?tok%65n=KEY HTTP/1.1" 200', '"GET /sse/tasks/1?tok%65n=*** HTTP/1.1" 200'),
        ("/ws/c1?x=1&TOKEN=KEY", "/ws/c1?x=1&TOKEN=***"),
        ("/ws/c1?access%5Ftoken=KEY", "/ws/c1?access%5Ftoken=***"),
        ("/ws/c1?%54%4F%4B%45%4E=KEY#top", "/ws/c1?%54%4F%4B%45%4E=***#top"),
        # these do not, but a proxy that decodes again, or a sloppy client, might make them: masked anyway
        ("/ws/c1?%2574oken=KEY", "/ws/c1?%2574oken=***"),
        ("/ws/c1?token+=KEY&b=2", "/ws/c1?token+=***&b=2"),
        ("/works?api_key=KEY&filter=x", "/works?api_key=***&filter=x"),
        ("/maps?key=KEY", "/maps?key=***"),
        # the whole value up to the next parameter, a key with = or ? in it too
        ("/sse/c1?token=K=E?Y&after=3", "/sse/c1?token=***&after=3"),
        # a URL inside a parameter has parameters of its own
        ("/login?next=/sse/c1?token=KEY", "/login?next=/sse/c1?token=***"),
        ("url='http://h/x?apikey=KEY'", "url='http://h/x?apikey=***'"),
        ("Authorization: Bearer KEY", "Authorization: Bearer ***"),
        ("redis://:KEY@redis:6379/0", "redis://:***@redis:6379/0"),
    ],
)
def test_secret_query_parameters_are_masked_whatever_their_encoding(line: str, masked: str) -> None:
    assert redact(line) == masked


@pytest.mark.parametrize(
    "line",
    [
        "/api/v1/datasets/1?format=csv&original=true",
        "/sse/c1?tokens=3&monkey=1",  # names that only contain a secret's name
        "a = b and token= nothing",
        "/x?token=",
    ],
)
def test_other_parameters_are_left_alone(line: str) -> None:
    assert redact(line) == line


def test_the_filter_masks_a_records_arguments_before_any_handler_formats_them() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '"%s %s"', ("GET", "/x?%74oken=KEY"), None)
    assert REDACT_SECRETS.filter(record)
    assert record.getMessage() == '"GET /x?%74oken=***"'
