"""Which Redis errors are an outage to wait out, and how one reads in an event."""

from __future__ import annotations

import pytest
import redis
from redis._parsers import BaseParser

from pipeline.store.outages import describe, passing


def _reply(text: str) -> redis.ResponseError:
    """The exception redis-py raises for the error reply ``text`` of Redis."""
    error: redis.ResponseError = BaseParser.parse_error(text)  # type: ignore[no-untyped-call]
    return error


# What redis-py raises for each (the script ones are Redis 7's words for a refusal inside a Lua script)
REFUSALS = [
    (_reply("OOM command not allowed when used memory > 'maxmemory'."), "out of memory"),
    (
        redis.ResponseError("Error running script (call to f_a53f): @user_script:65: -OOM command not allowed"),
        "out of memory",
    ),
    (_reply("READONLY You can't write against a read only replica."), "read-only replica"),
    (redis.ResponseError("Error running script (call to f_1): @user_script:2: -READONLY You can't write"), "read-only"),
    (_reply("MISCONF Redis is configured to save RDB snapshots, but it's unable to"), "MISCONF"),
    (_reply("NOREPLICAS Not enough good replicas to write."), "min-replicas-to-write"),
    (redis.ResponseError("Error running script (call to f_1): @user_script:1: -NOREPLICAS Not enough"), "in sync"),
    (_reply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set"), "lost its master"),
    (redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), "unreachable"),
]


@pytest.mark.parametrize(("error", "words"), REFUSALS)
def test_refusals_and_lost_connections_are_waited_out_and_said_plainly(error: Exception, words: str) -> None:
    assert passing(error)
    assert words in describe(error)


@pytest.mark.parametrize(
    "error",
    [
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.ResponseError("ERR user_script:1: Script attempted to access nonexistent global variable 'OOM'"),
        ValueError("READONLY in a message that is not Redis's"),
    ],
)
def test_other_errors_are_not(error: Exception) -> None:
    assert not passing(error)
    assert describe(error) == str(error)
