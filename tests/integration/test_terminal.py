"""`litminer demo` in a real terminal (a pty): Ctrl-C asks whether to cancel, and the answer is obeyed.

The job is made slow by the stand-in LLM (each extraction answer takes seconds), so it is still running when
the test presses Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from pipeline.store import answers
from tests.fixtures.llm import Call, FakeLLM, Reply, echo_rows

ROOT = Path(__file__).resolve().parents[2]
#: what a terminal must not show around the prompt: worker failures or a traceback burying it
_NOISE = re.compile(r"CRITICAL|Traceback|Internal Server Error|Error 111")


@pytest.fixture
def slow_llm(llm: FakeLLM) -> FakeLLM:
    """The stand-in LLM, answering each extraction request after 3 s (screening stays fast)."""

    def slow(call: Call) -> Reply:
        return dataclasses.replace(echo_rows(call), delay_s=3.0)

    llm.responder = slow
    return llm


@pytest.fixture
def terminal(tmp_path: Path, slow_llm: FakeLLM) -> Iterator[pexpect.spawn[str]]:
    """``litminer demo`` on a pty, with its own embedded Redis, extracting with the slow stand-in LLM."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {
        "LITMINER_INDEX_DIR": str(tmp_path / "index"),
        "TMPDIR": str(tmp_path),  # the log file
        "OPENAI_BASE_URL": slow_llm.url,
        "OPENAI_API_KEY": "test-openai-key",
        "LITMINER_LLM_MODEL": "fake-model",
        "TERM": "xterm",
    }
    command = [sys.executable, "-m", "services.cli", "demo", "--out", str(tmp_path)]
    child = pexpect.spawn(
        command[0],
        command[1:],
        cwd=str(ROOT),
        env=env,
        encoding="utf-8",
        codec_errors="replace",
        timeout=60,
        dimensions=(40, 160),
    )
    child.logfile_read = io.StringIO()  # everything the terminal showed
    try:
        yield child
    finally:
        child.close(force=True)


def _start_and_interrupt(child: pexpect.spawn[str]) -> tuple[str, str]:
    """Wait for extraction, press Ctrl-C, wait for the prompt: (the embedded Redis URL, the task id)."""
    child.expect(r"embedded Redis on (redis://\S+)")
    redis_url = _group(child)
    child.expect(r"task ([0-9a-f-]{36}):")
    task_id = _group(child)
    child.expect("Extraction batch")
    child.sendintr()
    child.expect(rf"Cancel job {task_id}\? \[y/N\] ")
    return redis_url, task_id


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux: listed per thread under /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for task in tasks.iterdir() for c in (task / "children").read_text().split()]


def _group(child: pexpect.spawn[str]) -> str:
    """The first group of what the last ``expect`` matched."""
    assert isinstance(child.match, re.Match)
    return str(child.match.group(1))


def _screen(child: pexpect.spawn[str]) -> str:
    """Everything the terminal showed so far."""
    assert isinstance(child.logfile_read, io.StringIO)
    return child.logfile_read.getvalue()


def test_ctrl_c_then_y_cancels_the_job_and_exits_1_within_5_s(terminal):
    redis_url, task_id = _start_and_interrupt(terminal)
    assert not _NOISE.search(_screen(terminal)), _screen(terminal)
    assert answers(redis_url), "the embedded Redis died with the Ctrl-C"  # it must outlive the question
    (redis_pid,) = _children(terminal.pid)
    assert os.getpgid(redis_pid) != os.getpgid(terminal.pid)  # so the terminal's Ctrl-C never reaches it
    terminal.sendline("y")
    answered = time.monotonic()
    terminal.expect(pexpect.EOF, timeout=10)
    took = time.monotonic() - answered
    terminal.close()
    printed = terminal.before
    assert terminal.exitstatus == 1, printed
    assert took < 5, f"exited {took:.1f} s after the answer"
    assert f"cancelling job {task_id}" in printed
    assert f"job {task_id} cancelled: Cancelled during" in printed
    assert not _NOISE.search(_screen(terminal)), _screen(terminal)
    assert not answers(redis_url)  # stopped on the way out
    print(f"terminal: Ctrl-C, y: job cancelled, exit 1 {took:.1f} s after the answer")


def test_ctrl_c_then_enter_keeps_following_to_the_end(terminal, slow_llm, tmp_path):
    _start_and_interrupt(terminal)
    slow_llm.responder = echo_rows  # fast from now on: the job finishes soon after the answer
    terminal.sendline("")
    terminal.expect("still following job")
    terminal.expect(pexpect.EOF, timeout=60)
    terminal.close()
    assert terminal.exitstatus == 0, terminal.before
    assert "wrote " in terminal.before and (tmp_path / "dataset.json").exists()
