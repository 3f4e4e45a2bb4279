"""Serving the API as ``litminer api`` does: uvicorn with connection limits, tuned garbage collection, our logging."""

from __future__ import annotations

import gc
import logging
import socket

import uvicorn
from litestar import Litestar

from pipeline.settings import Settings
from services.api.connections import (
    AcceptErrorsOnceAMinute,
    ConnectionGuard,
    guarded_protocol,
    limits_for,
    raise_open_file_limit,
)

log = logging.getLogger(__name__)

#: connections the kernel holds until the server accepts them (they take no file descriptor of ours meanwhile)
LISTEN_QUEUE = 2048


class _Server(uvicorn.Server):
    """uvicorn's server with a listen queue longer than what it accepts in one go.

    asyncio uses one number, the backlog, both for the kernel's listen queue and for how many connections it
    accepts in one turn of its loop; the second must stay small for the connection cap to hold
    (``connections.limits_for``), the first need not: a short queue drops new connections in a burst, which
    then wait a second or more for the client's retry (1,100 sockets opened one after another at ``ulimit -n
    1024`` took 16-26 s with a queue of 32, 0.1 s with 2,048). So the queue is lengthened once asyncio listens.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", ()):
            for listener in server.sockets:
                with socket.fromfd(listener.fileno(), listener.family, listener.type) as same_socket:
                    same_socket.listen(LISTEN_QUEUE)


def server_config(app: Litestar, settings: Settings, *, host: str, port: int, open_files: int) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: connection limits for a process that may open ``open_files`` files,
    forwarded headers from the trusted proxies only, WebSocket heartbeats, our logging."""
    limits = limits_for(open_files, settings.max_connections)
    guard = ConnectionGuard(max_connections=limits.max_connections, header_timeout_s=settings.header_timeout_s)
    proxies = list(settings.trusted_proxies)
    log.info(
        "at most %d connections (open-file limit %d), %g s for a request head, %d s of keep-alive; "
        "X-Forwarded-For trusted from %s",
        limits.max_connections,
        open_files,
        settings.header_timeout_s,
        settings.keep_alive_s,
        ", ".join(proxies) or "no proxy (LITMINER_TRUSTED_PROXIES)",
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # Always h11 (what uvicorn uses without httptools), with the head deadline and the connection cap.
        http=guarded_protocol(guard),
        backlog=limits.backlog,
        # uvicorn's own keep-alive timeout closes idle connections; a trickled head is the guard's.
        timeout_keep_alive=settings.keep_alive_s,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: anyone on the host could pick the address
        # the rate limit counts. Only the configured proxies may name the client.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        # WebSocket heartbeat: uvicorn pings every LITMINER_HEARTBEAT_S (SSE streams send comments instead).
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=settings.heartbeat_s,
        timeout_graceful_shutdown=5,  # event streams never end by themselves; clients resume elsewhere
        log_config=None,  # uvicorn's loggers go through configure_logging's handler (LITMINER_LOG_FORMAT)
    )


def serve(app: Litestar, settings: Settings, *, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT or SIGTERM."""
    if not settings.api_keys:  # the embedded API of demo and generate --embedded binds 127.0.0.1 itself: no warning
        log.warning("LITMINER_API_KEYS is not set: the API is open to anyone who can reach %s:%d", host, port)
    logging.getLogger("asyncio").addFilter(AcceptErrorsOnceAMinute())
    config = server_config(app, settings, host=host, port=port, open_files=raise_open_file_limit())
    # Garbage-collector pauses set the API's tail latency (docs/performance.md): keep everything imported
    # so far out of full scans, and collect the young generation every 50,000 net allocations instead
    # of 700. Measured with 1,000 live clients at 2,000 events/s: p99 from 16-27 ms to 5-7 ms.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    server = _Server(config)
    server.run()
    if not server.started:  # as uvicorn.run: a server that never started (its error is logged) is a failed start
        raise SystemExit(3)
