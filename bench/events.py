"""Event fan-out: one API process, 1,000 live clients (500 SSE, 500 WebSocket), 2,000 events/s.

Each client follows its own client id. A publisher in this process emits events through the real
EventBus (Lua script: streams + pub/sub) spread round-robin over the clients; the clients run in a
second process and time every event from its ``timestamp`` to its arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import subprocess
import sys
import time
import uuid
from multiprocessing.connection import Connection

import httpx
import msgspec
import redis
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from bench.proc import cpu_s, percentile, rss_mb
from contracts import FieldDefinition, GenerateRequest, JobRecord
from pipeline.settings import Settings
from pipeline.store.events import EventBus, publisher_client
from pipeline.store.keys import Keys
from services.embedded_redis import EmbeddedRedis, free_port

CLIENTS = 1000  # half SSE, half WebSocket
RATE = 2000  # events per second, all clients together
DRAIN_S = 10.0  # how long clients may take to receive the last events
SETTLE_S = 2.0  # between the last client connecting and the first event: the API finishes 1,000 handshakes


class _Stamp(msgspec.Struct):
    task_id: str
    seq: int
    timestamp: float


_stamp = msgspec.json.Decoder(_Stamp).decode


class ClientStats(msgspec.Struct):
    received: int
    duplicates: int
    latencies_ms: list[float]
    failed_connections: int


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the client process ---------------------------------------------------------------------------------


class _Clients:
    """1,000 live subscribers in one event loop, half SSE (raw HTTP/1.1), half WebSocket."""

    def __init__(self, port: int, client_ids: list[str]) -> None:
        self.port = port
        self.client_ids = client_ids
        self.latencies: list[float] = []
        self.seen: set[tuple[str, int]] = set()
        self.duplicates = 0
        self.opened = 0
        self.failed = 0
        self.expected: int | None = None
        self.connected = asyncio.Event()
        self.all_received = asyncio.Event()

    def record(self, payload: bytes) -> None:
        now = time.time()
        stamp = _stamp(payload)
        self.latencies.append((now - stamp.timestamp) * 1000)
        key = (stamp.task_id, stamp.seq)
        if key in self.seen:
            self.duplicates += 1
        self.seen.add(key)
        if self.expected is not None and len(self.latencies) >= self.expected:
            self.all_received.set()

    def _settled(self) -> None:
        if self.opened + self.failed == len(self.client_ids):
            self.connected.set()

    async def sse(self, client_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET /sse/{client_id} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        self.opened += 1
        self._settled()
        while line := await reader.readline():  # chunk-size lines and blank lines are skipped
            if line.startswith(b"data: "):
                self.record(line[6:].rstrip(b"\r\n"))

    async def websocket(self, client_id: str) -> None:
        async with ws_connect(f"ws://127.0.0.1:{self.port}/ws/{client_id}", max_queue=None) as socket:
            self.opened += 1
            self._settled()
            async for message in socket:
                self.record(message if isinstance(message, bytes) else message.encode())

    async def follow(self, index: int, client_id: str) -> None:
        try:
            await (self.sse(client_id) if index % 2 == 0 else self.websocket(client_id))
        except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
            self.failed += 1
            self._settled()
            print(f"client failed: {exc!r}", file=sys.stderr)

    async def run(self, conn: Connection) -> ClientStats:
        followers = []
        for i, client_id in enumerate(self.client_ids):
            followers.append(asyncio.create_task(self.follow(i, client_id)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # do not overrun the listen backlog
        await self.connected.wait()
        conn.send(("ready", self.opened))
        expected: int = await asyncio.to_thread(conn.recv)
        self.expected = expected
        if len(self.latencies) >= expected:
            self.all_received.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_received.wait(), DRAIN_S)
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        return ClientStats(
            received=len(self.latencies),
            duplicates=self.duplicates,
            latencies_ms=self.latencies,
            failed_connections=self.failed,
        )


def _clients_main(port: int, client_ids: list[str], conn: Connection) -> None:
    _raise_fd_limit()
    stats = asyncio.run(_Clients(port, client_ids).run(conn))
    conn.send(("stats", msgspec.msgpack.encode(stats)))


# -- the benchmark --------------------------------------------------------------------------------------


def _start_api(redis_url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "LITMINER_KEY_PREFIX": prefix}
    api = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "--log-level", "ERROR", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return api
        except httpx.HTTPError:
            time.sleep(0.1)
    api.kill()
    raise RuntimeError("the API did not start")


def _api_counts(port: int) -> dict[str, float]:
    """The API's own event counters, summed over protocols."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("litminer_events_") or sample.name.startswith("litminer_slow_"):
                counts[sample.name] = counts.get(sample.name, 0) + sample.value
    return counts


def _publish(bus: EventBus, jobs: list[JobRecord], seconds: float) -> tuple[int, float]:
    """Publish at RATE for ``seconds``, round-robin over ``jobs``; returns (events published, elapsed s)."""
    published = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * RATE)
        while published < due:
            if bus.publish(jobs[published % len(jobs)], "processing", message="bench event") is not None:
                published += 1
        time.sleep(0.002)
    return published, time.monotonic() - start


def run(quick: bool) -> dict[str, object]:
    _raise_fd_limit()  # the API and the client process inherit it
    seconds = 4.0 if quick else 30.0
    prefix = "bench-events:"
    request = GenerateRequest(user_query="bench", field_definitions=[FieldDefinition(name="name")])
    client_ids = [f"bench-{i}" for i in range(CLIENTS)]
    jobs = [
        JobRecord(task_id=str(uuid.uuid4()), client_id=c, request=request, created_at=0.0, updated_at=0.0)
        for c in client_ids
    ]
    with EmbeddedRedis() as server:
        port = free_port()
        api = _start_api(server.url, prefix, port)
        reader = redis.Redis.from_url(server.url)
        publisher = publisher_client(Settings(redis_url=server.url))
        bus = EventBus(reader, publisher, Keys(prefix), ttl_s=3600, maxlen=10_000)
        parent, child = multiprocessing.get_context("spawn").Pipe()
        clients = multiprocessing.get_context("spawn").Process(target=_clients_main, args=(port, client_ids, child))
        try:
            idle_rss = rss_mb(api.pid, "VmRSS")
            connect_start = time.monotonic()
            clients.start()
            _, opened = parent.recv()
            connect_s = time.monotonic() - connect_start
            time.sleep(SETTLE_S)
            assert server.process is not None and clients.pid is not None
            pids = {"api": api.pid, "clients": clients.pid, "publisher": os.getpid(), "redis": server.process.pid}
            cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
            published, elapsed = _publish(bus, jobs, seconds)
            cpu = {name: round((cpu_s(pid) - cpu_before[name]) / elapsed, 2) for name, pid in pids.items()}
            parent.send(published)
            _, raw = parent.recv()
            stats = msgspec.msgpack.decode(raw, type=ClientStats)
            peak_rss = rss_mb(api.pid, "VmHWM")
            api_counts = _api_counts(port)
        finally:
            clients.join(30)
            api.terminate()
            api.wait(10)
            reader.close()
            publisher.close()

    latencies = stats.latencies_ms
    lat = {
        "p50": round(percentile(latencies, 0.50), 2),
        "p99": round(percentile(latencies, 0.99), 2),
        "max": round(max(latencies, default=float("nan")), 2),
    }
    result: dict[str, object] = {
        "clients": {"sse": CLIENTS // 2, "websocket": CLIENTS - CLIENTS // 2, "connected": opened},
        "connect_s": round(connect_s, 2),
        "seconds": round(elapsed, 2),
        "published": published,
        "publish_rate_per_s": round(published / elapsed, 1),
        "delivered": stats.received,
        "delivered_per_published": round(stats.received / published, 4) if published else None,
        "duplicates": stats.duplicates,
        "latency_ms": lat,
        "api_counters": api_counts,
        "cpu_cores_used": cpu,
        "api_rss_mb": {"idle": round(idle_rss, 1), "peak": round(peak_rss, 1)},
        "quick": quick,
    }
    print("\n## events: fan-out to 1,000 live clients\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| clients connected (SSE + WebSocket) | {opened} of {CLIENTS} in {connect_s:.1f} s | {CLIENTS} |")
    print(f"| events published | {published} in {elapsed:.1f} s ({published / elapsed:.0f}/s) | {RATE}/s |")
    print(f"| delivered / published | {result['delivered_per_published']} ({stats.duplicates} duplicates) | 1.0 |")
    print(f"| latency p50 / p99 / max | {lat['p50']} / {lat['p99']} / {lat['max']} ms | p99 ≤ 20 ms |")
    print(f"| API RSS idle / peak | {idle_rss:.1f} / {peak_rss:.1f} MB | ≤ 250 MB |")
    print(f"| CPU cores used while publishing | {', '.join(f'{k} {v}' for k, v in cpu.items())} | (2 cores) |")
    return result
