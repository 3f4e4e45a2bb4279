"""pipeline/sources/parsing.py: functions run in a child process that is killed at its time budget."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipeline.sources.parsing import ReaderProcess, ReaderUnavailable, ReadFailed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_function_runs_in_a_child_and_its_error_comes_back_as_a_reason():
    with ReaderProcess(30) as reader:
        child = reader.run(os.getpid)
        assert child != os.getpid()
        with pytest.raises(ReadFailed, match=r"^invalid literal for int\(\) with base 10: 'x'$"):
            reader.run(int, "x")
        assert reader.run(int, "7") == 7 and reader.run(os.getpid) == child  # the same child goes on
    assert not alive(child)  # and is gone once the reader is closed


def test_memory_beyond_the_cap_fails_the_read_and_not_the_caller():
    with ReaderProcess(30, memory_bytes=256 << 20) as reader:
        with pytest.raises(ReadFailed, match=r"^reading it needs more than 256 MB of memory$"):
            reader.run(bytearray, 512 << 20)
        assert reader.run(len, "abc") == 3


def test_an_overrun_kills_the_child_and_the_next_read_gets_a_new_one():
    with ReaderProcess(0.5) as reader:
        first = reader.run(os.getpid)
        started = time.monotonic()
        with pytest.raises(ReadFailed, match=r"^reading took longer than 0\.5 s$"):
            reader.run(time.sleep, 60)
        # The point of the test is the timeout: a coarse bound, far below the 60 s the child would sleep.
        assert time.monotonic() - started < 10
        assert not alive(first)
        assert reader.run(os.getpid) not in (first, os.getpid())


def test_a_child_that_dies_is_reported_and_replaced():
    with ReaderProcess(30) as reader:
        child = reader.run(os.getpid)
        with pytest.raises(ReadFailed, match=r"^reading it killed the reader process \(SIGKILL\)"):
            reader.run(os.kill, child, signal.SIGKILL)
        assert reader.run(os.getpid) != child


def test_a_child_that_cannot_start_is_not_a_broken_file():
    with ReaderProcess(30, preload=["no.such.module"]) as reader, pytest.raises(ReaderUnavailable):
        reader.run(len, "abc")
