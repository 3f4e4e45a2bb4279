"""Connection limits of the API server: a deadline for every request head and a cap on open connections.

uvicorn closes a keep-alive connection that sends nothing (``timeout_keep_alive``), but not one that sends
part of a request head and then nothing, or a byte now and then; and it accepts connections until the
process runs out of file descriptors, after which every ``accept`` fails and asyncio logs each failure
(a slowloris attack: 1,100 such sockets at ``ulimit -n 1024`` stopped ``/health`` and wrote 132,194
"Too many open files" lines in about 30 s). So each connection here has ``header_timeout_s`` to send a
complete request head, and when the open connections reach the cap, the oldest one that is idle or has
not completed its head is closed to make room (those are what slowloris holds); only when there is none
is the new connection answered 503. Requests in progress and WebSocket or SSE streams are never closed.

``services/api/server.py`` puts this in uvicorn (``uvicorn.Config(http=guarded_protocol(guard))``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import ClassVar

import h11
import msgspec
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: file descriptors kept for everything but client connections: Redis pools (one connection per thread of
#: the sync client, 32 for event catch-up, the subscription, the rate limiter), log files, the listening
#: socket, the event loop's own
RESERVED_FILES = 128
#: what a client refused for lack of room is told to wait
RETRY_AFTER_S = 5
#: the longest a shed or timed-out connection goes unreported (one log line at most this often)
REPORT_EVERY_S = 60.0


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """How many connections the server takes, and how many it accepts at a time."""

    #: open connections served at most (WebSockets and SSE streams included)
    max_connections: int
    #: uvicorn's backlog: how many connections asyncio accepts in one turn of its loop (and the listen queue's
    #: length, which ``server.py`` sets longer once the server listens)
    backlog: int


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # a platform that caps it lower: keep the soft limit
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def limits_for(open_files: int, configured: int = 0) -> Limits:
    """The connection limits a process that may open ``open_files`` files can keep (``configured``: the cap)."""
    # Connections are counted here one loop turn after asyncio accepts them, and a closed one frees its
    # descriptor one turn later: in a flood, about three turns' worth of accepted connections are open
    # beyond the cap (with a backlog of 128 and a cap of 768, 1,100 half-open sockets still ran a limit of
    # 1,024 out), so the cap leaves four backlogs free. uvicorn's default, 2,048, is kept where that is cheap.
    backlog = max(16, min(2048, open_files // 32))
    fitting = max(16, open_files - RESERVED_FILES - 4 * backlog)
    if configured > fitting:
        log.warning(
            "LITMINER_MAX_CONNECTIONS=%d is more than the open-file limit (%d) leaves room for (%d): "
            "file descriptors may run out before the cap sheds connections",
            configured,
            open_files,
            fitting,
        )
    return Limits(max_connections=configured or fitting, backlog=backlog)


_REFUSAL_BODY = msgspec.json.encode(
    {"status_code": 503, "detail": f"the server has no room for another connection; retry in {RETRY_AFTER_S} s"}
)
#: the answer to a connection there is no room for
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    + f"retry-after: {RETRY_AFTER_S}\r\ncontent-length: {len(_REFUSAL_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _REFUSAL_BODY
)


class ConnectionGuard:
    """The HTTP connections of one server, oldest first, and what it closed or refused (logged once a minute)."""

    def __init__(self, *, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.open: dict[GuardedH11Protocol, None] = {}  # insertion-ordered: the oldest first
        self.evicted = self.refused = self.timed_out = 0
        self._logged_at = float("-inf")
        self._report: asyncio.TimerHandle | None = None

    def admit(self, connection: GuardedH11Protocol, open_now: int) -> bool:
        """Take a new connection (``open_now`` connections open, it included); False: refuse it."""
        self.open[connection] = None
        if open_now <= self.max_connections:
            return True
        oldest = next((other for other in self.open if other is not connection and other.evictable()), None)
        if oldest is None:
            self.refused += 1
            self._count(connection.loop)
            return False
        oldest.transport.close()
        self.evicted += 1
        self._count(connection.loop)
        return True

    def forget(self, connection: GuardedH11Protocol) -> None:
        """The connection is closed, or no longer HTTP (upgraded to WebSocket)."""
        self.open.pop(connection, None)

    def head_timed_out(self, loop: asyncio.AbstractEventLoop) -> None:
        """A connection was closed because its request head did not arrive in time."""
        self.timed_out += 1
        self._count(loop)

    def _count(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._report is None:  # the first event is logged at once, those after it at most once a minute
            delay = max(0.0, self._logged_at + REPORT_EVERY_S - loop.time())
            self._report = loop.call_later(delay, self._log, loop)

    def _log(self, loop: asyncio.AbstractEventLoop) -> None:
        level = logging.WARNING if self.evicted or self.refused else logging.INFO
        log.log(
            level,
            "connections: %d idle or incomplete closed to make room, %d refused with 503 (cap %d, "
            "LITMINER_MAX_CONNECTIONS), %d closed without a complete request head after %g s "
            "(LITMINER_HEADER_TIMEOUT_S); %d HTTP connections open",
            self.evicted,
            self.refused,
            self.max_connections,
            self.timed_out,
            self.header_timeout_s,
            len(self.open),
        )
        self.evicted = self.refused = self.timed_out = 0
        self._logged_at = loop.time()
        self._report = None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and the cap of its ``guard`` (see ``guarded_protocol``)."""

    guard: ClassVar[ConnectionGuard]
    head_timer: asyncio.TimerHandle | None = None
    #: there was no room for it: it gets a 503 as soon as it sends something
    refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A refused connection is answered once its request arrives: closing a socket with unread data resets
        # the connection, and the client would never read the 503. Meanwhile it is as evictable as any
        # connection without a request head, so a burst of refused connections does not pile up either.
        self.refused = not self.guard.admit(self, len(self.connections))
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            if not self.transport.is_closing():
                self.transport.write(REFUSAL)
                self.transport.close()
            return
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self.guard.forget(self)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._stop_head_timer()
        self.guard.forget(self)  # the WebSocket protocol takes the connection over; it is never evicted
        super().handle_websocket_upgrade(event)

    def evictable(self) -> bool:
        """Idle between requests or still sending its request head: nothing in progress is lost by closing it.

        (A connection upgraded to WebSocket belongs to another protocol: never this one's to close.)
        """
        return (
            self.conn.their_state is h11.IDLE
            and not self.transport.is_closing()
            and self.transport.get_protocol() is self
        )

    def _watch_head(self) -> None:
        """Arm the head deadline while a request head is awaited (a trickle of bytes does not extend it)."""
        if self.evictable():
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timed_out)
        else:
            self._stop_head_timer()

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.evictable():
            self.guard.head_timed_out(self.loop)
            self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` whose connections ``guard`` watches."""

    class Guarded(GuardedH11Protocol):
        pass

    Guarded.guard = guard
    return Guarded


class AcceptErrorsOnceAMinute(logging.Filter):
    """Lets through one "socket.accept() out of system resource" error of asyncio's a minute.

    Out of file descriptors, asyncio logs a failed ``accept`` up to ``backlog`` times per turn of the event
    loop; the cap should keep that from happening, and if something else eats the descriptors, one line a
    minute says so as well as thousands.
    """

    def __init__(self) -> None:
        super().__init__()
        self._logged_at = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        if record.created - self._logged_at < REPORT_EVERY_S:
            return False
        self._logged_at = record.created
        return True
