"""The API's edge, against the real ``litminer api`` process: half-open sockets (slowloris), connections that
never finish their request head, forwarded headers, and a Redis that answers errors.

Each test that measures prints one ``edge:`` line (``pytest -s`` shows them); docs/reliability.md quotes them.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from services.embedded_redis import EmbeddedRedis, free_port
from tests.reliability.conftest import ROOT

pytestmark = pytest.mark.slow

#: the open-file limit of the slowloris run (soft and hard), as on many hosts by default
NOFILE = 1024
#: half-open sockets: more than the API process may open files
HALF_OPEN = 1100
#: what a slowloris client sends: a request line and a header, never the blank line that ends the head
PARTIAL_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"
BODY = {
    "user_query": "water treatment technologies used in specialty crop production",
    "rows": 2,
    "model_name": "Treatments",
    "field_definitions": [{"name": "technology_name", "type": "str", "description": "Name of a technology"}],
}


class Api:
    """A running ``litminer api`` process: its URL, port and log file."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def start_api(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Factory: ``litminer api`` with some environment (and an open-file limit), once it answers ``/health``."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, nofile: int | None = None, redis: str = redis_url, **env: str) -> Api:
        port = free_port()
        log = tmp_path / f"api-{len(started)}.log"
        environment = {
            **os.environ,
            "REDIS_URL": redis,
            "LITMINER_KEY_PREFIX": f"edge-{uuid.uuid4().hex[:8]}:",
            "LITMINER_INDEX_DIR": str(tmp_path / "index"),
            "LITMINER_SOURCES": "local",
            "LITMINER_LOG_FORMAT": "text",
            **env,
        }

        def limit_open_files() -> None:  # in the child, before exec: as `ulimit -n` would
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "api", "--port", str(port)],
                cwd=ROOT,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=limit_open_files,  # noqa: PLW1509 (no threads of ours run while it forks)
            )
        started.append(process)
        api = Api(process, port, log)
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"the API exited with {process.returncode}: {api.log_text()[-2000:]}"
            try:
                if httpx.get(f"{api.url}/health", timeout=1).status_code == 200:
                    return api
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not answer /health within 30 s"
            time.sleep(0.1)

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def half_open(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send a partial request head and then nothing, held until the block ends."""
    with ExitStack() as stack:
        sockets: list[socket.socket] = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
            sock.sendall(PARTIAL_HEAD)
            sockets.append(sock)
        yield sockets


@pytest.fixture
def many_open_files() -> Iterator[None]:
    """This test process may open the sockets it needs (its soft limit raised up to its hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = HALF_OPEN + 200
    # Not a skip: a machine that cannot run the scenario fails it, so CI never passes without it.
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"this process may open {hard} files, it needs {needed}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def closed_after(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes ``sock`` (reads to EOF; fails after ``timeout``)."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


# -- slowloris ----------------------------------------------------------------------------------------


def test_health_answers_while_half_open_sockets_exceed_the_open_file_limit(start_api, many_open_files):
    api = start_api(nofile=NOFILE)
    start = time.monotonic()
    with half_open(api.port, HALF_OPEN):
        opened = time.monotonic()
        print(f"edge: {HALF_OPEN} half-open sockets opened in {opened - start:.1f} s")
        start = time.monotonic()
        status: int | str
        try:
            status = httpx.get(f"{api.url}/health", timeout=30).status_code
        except httpx.TransportError as exc:
            status = type(exc).__name__
        health_s = time.monotonic() - start
        time.sleep(max(0.0, 3 - (time.monotonic() - opened)))  # let any flood of errors reach the log
        errors = api.log_text().count("Too many open files")
    print(
        f"edge: {HALF_OPEN} half-open sockets at ulimit -n {NOFILE}: /health answered {status} in {health_s:.2f} s, "
        f"{errors} 'Too many open files' lines in the API's log"
    )
    assert status == 200
    assert health_s < 5  # a coarse bound: the point is that /health answers at all (the target is under 1 s)
    assert errors <= 5
    assert httpx.get(f"{api.url}/health", timeout=5).status_code == 200  # and after the sockets are gone


def test_a_connection_that_never_completes_its_request_head_is_closed(start_api):
    api = start_api(LITMINER_HEADER_TIMEOUT_S="1", LITMINER_KEEP_ALIVE_S="30")
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(PARTIAL_HEAD)
        half_open_s = closed_after(sock, timeout=10)
    # Coarse bounds (the point is the timeout): closed after about 1 s, not after 30 s or never.
    assert 0.8 < half_open_s < 5, half_open_s

    # Between keep-alive requests: a complete request, then a head that trickles in a byte at a time.
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        trickled = 0
        try:
            for byte in PARTIAL_HEAD * 10:
                sock.sendall(bytes([byte]))
                trickled += 1
                time.sleep(0.2)  # each byte well within the keep-alive timeout
        except (BrokenPipeError, ConnectionResetError):
            pass
        waited = time.monotonic() - start
    print(
        f"edge: header timeout 1 s: a half-open connection closed after {half_open_s:.1f} s, a request head "
        f"trickled at 5 bytes/s after a response cut after {waited:.1f} s ({trickled} bytes)"
    )
    assert waited < 5, waited  # coarse: about the 1 s header timeout, not 30 s of keep-alive nor forever


# -- forwarded headers ----------------------------------------------------------------------------------


def _generate(api: Api, forwarded_for: str) -> int:
    reply = httpx.post(f"{api.url}/api/v1/datasets/generate", json=BODY, headers={"X-Forwarded-For": forwarded_for})
    return reply.status_code


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(start_api):
    untrusting = start_api(LITMINER_RATE_LIMIT="1")
    assert _generate(untrusting, "203.0.113.1") == 202
    assert _generate(untrusting, "203.0.113.2") == 429  # the same caller (127.0.0.1), whatever it claims

    behind_proxy = start_api(LITMINER_RATE_LIMIT="1", LITMINER_TRUSTED_PROXIES="127.0.0.1")
    assert _generate(behind_proxy, "203.0.113.1") == 202
    assert _generate(behind_proxy, "203.0.113.2") == 202  # two clients of the proxy, each with its own limit
    assert _generate(behind_proxy, "203.0.113.1") == 429


# -- Redis errors -------------------------------------------------------------------------------------------


def test_a_redis_that_answers_errors_is_a_503_and_a_line_in_the_api_log(start_api):
    with EmbeddedRedis() as server:
        api = start_api(redis=server.url, LITMINER_RATE_LIMIT="0")
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # every write is refused: OOM
        full = httpx.post(f"{api.url}/api/v1/datasets/generate?token=hidden-value", json=BODY)
        client.close()
    # Redis gone altogether: reads fail too, and WebSocket handshakes are refused the same way.
    task_id = str(uuid.uuid4())
    gone = httpx.get(f"{api.url}/tasks/{task_id}", timeout=30)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{api.port}/ws/tasks/{task_id}", open_timeout=30)

    assert full.status_code == 503, full.text
    assert full.json() == {
        "status_code": 503,
        "detail": "the job store (Redis) is not answering: OutOfMemoryError; retry in 5 s",
    }
    assert full.headers["retry-after"] == "5"
    assert gone.status_code == 503 and "ConnectionError" in gone.json()["detail"], gone.text
    assert gone.headers["retry-after"] == "5"
    assert refused.value.response.status_code == 503
    assert b"the job store (Redis) is not answering" in refused.value.response.body
    lines = [line for line in api.log_text().splitlines() if "ERROR" in line and "(Redis) is not answering" in line]
    assert len(lines) == 3, api.log_text()[-3000:]
    assert "POST /api/v1/datasets/generate: " in lines[0] and "OutOfMemoryError" in lines[0]
    assert f"GET /tasks/{task_id}: " in lines[1] and "ConnectionError" in lines[1]
    assert f"WebSocket /ws/tasks/{task_id}: " in lines[2]
    assert "hidden-value" not in api.log_text()
