"""Everything in one process: Redis (embedded unless ``REDIS_URL`` is set), a worker and the real API.

``litminer generate --embedded`` and ``litminer demo`` run a job through it exactly as through a deployed
API: HTTP to submit, Server-Sent Events to follow, HTTP to download. The embedded redis-server runs in a
session of its own, so a Ctrl-C in the terminal reaches litminer (which asks whether to cancel the job) and
not Redis; the stack stops it once the job is over.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from types import TracebackType

import msgspec
import uvicorn

from pipeline.errors import LitminerError
from pipeline.settings import Settings
from pipeline.store import require_redis
from pipeline.worker.runtime import WorkerRuntime
from services.api.app import create_app
from services.embedded_redis import EmbeddedRedis
from services.worker import start_worker


class EmbeddedStackError(LitminerError):
    """The in-process API could not be started."""


class EmbeddedStack:
    """Redis, a Dramatiq worker and the API on a free loopback port, all stopped on exit.

    ``env`` (``os.environ`` by default) configures it as it configures ``litminer api`` and ``litminer
    worker``: ``REDIS_URL`` or ``REDIS_SENTINELS`` (else an embedded redis-server is started; a set one that
    does not answer raises ``StoreUnavailable``), ``LITMINER_KEY_PREFIX`` and the rest. ``on_redis`` is told the
    URL of an embedded Redis once it runs. On exit the worker gets ``stop_timeout_s`` to finish the messages in
    hand: the job is over by then (completed, failed or cancelled), so whatever still runs is of no use.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        threads: int = 4,
        on_redis: Callable[[str], None] | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 3.0,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.threads = threads
        self.on_redis = on_redis
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.url = ""
        self.settings: Settings | None = None
        self._stack = ExitStack()

    def __enter__(self) -> EmbeddedStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        env = dict(self.env)
        if env.get("REDIS_URL") or env.get("REDIS_SENTINELS"):
            advice = "start it, or unset REDIS_URL and REDIS_SENTINELS to have one started here"
            require_redis(Settings.from_env(env), advice=advice)
        else:
            redis_server = self._stack.enter_context(EmbeddedRedis())
            env["REDIS_URL"] = redis_server.url
            if self.on_redis is not None:
                self.on_redis(redis_server.url)
        # The API listens on loopback for this process only: no keys, no rate limit.
        settings = msgspec.structs.replace(Settings.from_env(env), api_keys=(), rate_limit_per_minute=0)
        self.settings = settings
        runtime = WorkerRuntime(settings)
        self._stack.callback(runtime.close)
        worker = start_worker(runtime, threads=self.threads)
        self._stack.callback(worker.stop, timeout=int(self.stop_timeout_s * 1000))
        self.url = self._stack.enter_context(serve_api(settings, start_timeout_s=self.start_timeout_s))


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (the terminal closed) exit through ``SystemExit``, so the stack
    is stopped on the way out: its redis-server, in a session of its own, would not get the hangup itself.

    Only the main thread can set signal handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, leave) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def serve_api(settings: Settings, *, start_timeout_s: float = 30.0) -> Iterator[str]:
    """The real API for ``settings``, served by uvicorn in a thread on a free loopback port; yields its URL.

    The socket is bound here, before uvicorn starts, so no other process can take the port meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto TCP: asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        log_config=None,  # uvicorn's loggers go to the process's handler (configure_logging), not to stderr
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=settings.heartbeat_s,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="litminer-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:  # uvicorn offers no hook: poll the flag it sets once it listens
            if not thread.is_alive():
                raise EmbeddedStackError("the embedded API did not start (its error is logged above)")
            if time.monotonic() > deadline:
                raise EmbeddedStackError(f"the embedded API did not start within {start_timeout_s:g} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
