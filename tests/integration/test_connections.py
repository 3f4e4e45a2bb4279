"""The API server's connection cap, over real sockets: half-open and idle connections make room, streams stay."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import msgspec
import pytest
import uvicorn
from websockets.sync.client import connect as ws_connect

from pipeline.settings import Settings
from services.api.app import create_app
from services.api.server import server_config

PARTIAL_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"


@contextmanager
def serving(settings: Settings) -> Iterator[int]:
    """The API served as ``litminer api`` serves it (``server_config``), in a thread; yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = server_config(create_app(settings), settings, host="127.0.0.1", port=port, open_files=1024)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., socket.socket]]:
    """Factory: a connection to a port that sends ``data`` and, with ``until``, reads until that arrives."""
    with ExitStack() as stack:

        def open_(port: int, data: bytes, until: bytes = b"") -> socket.socket:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(data)
            received = b""
            while until not in received:
                chunk = sock.recv(4096)
                assert chunk, f"closed before {until!r}: {received!r}"
                received += chunk
            return sock

        yield open_


def is_closed(sock: socket.socket, timeout: float = 5) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (what it sends meanwhile is read and dropped)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def ask(port: int, request: bytes) -> bytes:
    """Everything the server sends on a new connection after ``request``, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def stream(port: int) -> bytes:
    return f"GET /sse/c-{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_at_the_cap_the_oldest_idle_or_half_open_connection_makes_room_and_streams_stay(settings, connect):
    settings = msgspec.structs.replace(settings, max_connections=4, header_timeout_s=30, keep_alive_s=30)
    with serving(settings) as port, ExitStack() as websockets:
        half_open = connect(port, PARTIAL_HEAD)
        idle = connect(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", until=b'"ok"')  # kept alive after it
        websocket = websockets.enter_context(ws_connect(f"ws://127.0.0.1:{port}/ws/c-{port}"))
        streams = [connect(port, stream(port), until=b"retry: 1000")]  # 4 open: the cap

        health = connect(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", until=b'"ok"')
        assert is_closed(half_open)  # the oldest connection that has not sent its request head
        assert is_closed(health)  # (Connection: close)
        assert not is_closed(idle, timeout=0.3)

        streams.append(connect(port, stream(port), until=b"retry: 1000"))  # 4 open again
        streams.append(connect(port, stream(port), until=b"retry: 1000"))
        assert is_closed(idle)  # the idle one made room this time

        # nothing left to close but streams, which are never closed: the new connection is refused
        answer = ask(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"\r\nretry-after: 5\r\n" in answer
        assert answer.endswith(b'the server has no room for another connection; retry in 5 s"}'), answer
        assert not any(is_closed(sock, timeout=0.3) for sock in streams)
        assert websocket.ping().wait(5)  # still open
        for sock in streams:  # before the server stops: it would wait for them
            sock.close()


def test_a_half_open_connection_is_closed_after_the_header_timeout(settings, connect):
    settings = msgspec.structs.replace(settings, header_timeout_s=0.5)
    with serving(settings) as port:
        sock = connect(port, PARTIAL_HEAD)
        start = time.monotonic()
        assert is_closed(sock, timeout=5)
        assert time.monotonic() - start >= 0.4  # coarse: closed by the timeout, not at once
