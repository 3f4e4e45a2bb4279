"""Reading untrusted files in a child process, with a time budget (the child is killed) and a memory cap.

A library holds whatever people drop into a folder: a 200 KB PDF can inflate into a page that pdfium parses
for minutes while its memory grows past a gigabyte, and a BibTeX file can hold 50 MB. Parsed in the worker,
such a file pins a core and leaves the worker's memory grown for good. Parsed in a child, the worker only
waits: the child is killed when its time is up, and it cannot map more than ``MEMORY_BYTES`` (a ``MemoryError``
in the child, or its death, instead of a worker the kernel kills).

The child is a fresh interpreter started with ``subprocess``, not a ``multiprocessing`` child: those import the
parent's ``__main__`` first (the whole CLI and API, two seconds, in a worker), and forking a worker that runs
threads is unsafe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from types import TracebackType
from typing import ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")

#: the most memory (address space) a reading child may map
MEMORY_BYTES = 1 << 30
#: CPU seconds a child may spend beyond its time budget before the kernel stops it: this only matters when
#: the worker that should have killed it is gone
_CPU_GRACE_S = 10
#: seconds a child may take to start and import its modules (not counted in any file's time budget)
_START_TIMEOUT_S = 60
_CHILD = "from pipeline.sources.parsing import serve; serve()"


class ReadFailed(Exception):
    """A file could not be read; the message says why, in the words of a warning."""


class ReaderUnavailable(RuntimeError):
    """The child could not be started: nothing is wrong with the file it would have read."""


class ReaderProcess:
    """A child process that runs read functions one at a time, each within ``timeout_s`` seconds.

    The child is started on the first ``run`` (it imports ``preload`` before it says it is ready), killed and
    replaced when a function overruns or the child dies, and stopped by ``close``.
    """

    def __init__(self, timeout_s: float, *, memory_bytes: int = MEMORY_BYTES, preload: Sequence[str] = ()) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.preload = list(preload)
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None

    def run(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` run in the child (it and its arguments are pickled).

        Raises ``ReadFailed`` when it raises (the message describes the exception), runs out of memory, takes
        longer than ``timeout_s`` or kills the child; ``ReaderUnavailable`` when no child can be started.
        """
        process, connection = self._started()
        connection.send((function, args, kwargs, self.timeout_s))
        if not connection.poll(self.timeout_s):
            self.close()
            raise ReadFailed(f"reading took longer than {self.timeout_s:g} s")
        try:
            ok, value = connection.recv()
        except (EOFError, OSError):
            self.close()
            died = _exit_reason(process.returncode)
            limit = self.memory_bytes >> 20
            raise ReadFailed(
                f"reading it killed the reader process ({died}), which may use {limit} MB of memory"
            ) from None
        if not ok:
            raise ReadFailed(value)
        return cast(T, value)

    def close(self) -> None:
        """Stop the child, busy or not; the next ``run`` starts another."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            connection.close()
        if process is not None:
            process.kill()
            process.wait()

    def __enter__(self) -> ReaderProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _started(self) -> tuple[subprocess.Popen[bytes], Connection]:
        if self._process is not None and self._connection is not None and self._process.poll() is None:
            return self._process, self._connection
        self.close()
        ours, theirs = Pipe()
        # The child finds our modules where we do, however this process was started.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        command = [sys.executable, "-c", _CHILD, str(theirs.fileno()), str(self.memory_bytes), *self.preload]
        try:
            process = subprocess.Popen(command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            ours.close()
            raise ReaderUnavailable(f"the reader process did not start ({exc})") from exc
        finally:
            theirs.close()
        self._process, self._connection = process, ours
        try:
            if ours.poll(_START_TIMEOUT_S) and ours.recv() == "ready":
                return process, ours
        except (EOFError, OSError):
            pass
        self.close()
        raise ReaderUnavailable(f"the reader process did not start ({_exit_reason(process.returncode)})")


def describe(error: BaseException) -> str:
    """An exception as the reason a warning gives: one line, at most 300 characters."""
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return " ".join(str(error).split())[:300] or type(error).__name__


def serve() -> None:
    """The child's main (arguments: the connection's descriptor, the memory cap, modules to import): run each
    function sent, answer ``(True, result)`` or ``(False, reason)``; end when the parent hangs up."""
    descriptor, memory, *preload = sys.argv[1:]
    memory_bytes = int(memory)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle: it stops this child
    logging.disable(logging.WARNING)  # parsers' complaints reach the parent as warnings, not on stderr
    _limit(resource.RLIMIT_AS, memory_bytes)
    connection = Connection(int(descriptor))
    for module in preload:
        import_module(module)
    connection.send("ready")
    while True:
        try:
            function, args, kwargs, timeout_s = connection.recv()
        except EOFError:
            return
        _limit_cpu(timeout_s)
        try:
            answer = (True, function(*args, **kwargs))
        except MemoryError:
            answer = (False, f"reading it needs more than {memory_bytes >> 20} MB of memory")
        except Exception as exc:  # any parser's error on any file: the parent turns it into a warning
            answer = (False, describe(exc))
        connection.send(answer)


def _limit_cpu(timeout_s: float) -> None:
    """Let the kernel stop this child (SIGXCPU) a little after ``timeout_s`` more CPU seconds."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    _limit(resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime + timeout_s) + _CPU_GRACE_S)


def _limit(kind: int, value: int) -> None:
    """Set the soft limit ``kind`` to ``value``, or to the hard limit when that is lower.

    Where the system refuses (some platforms do not enforce ``RLIMIT_AS``), the child goes on without it: the
    time budget, kept by the parent, still holds.
    """
    _, hard = resource.getrlimit(kind)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(kind, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _exit_reason(code: int | None) -> str:
    """How a child ended, from its exit code: a signal's name, or the code."""
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
