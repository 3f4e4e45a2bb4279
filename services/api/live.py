"""Live events in the API process: one Redis pattern subscription, fanned out to WebSocket and SSE subscribers.

Delivery is exactly-once and in order per task, even across a lost subscription or a reconnecting
client, because every event is in a Redis stream before it is published (see pipeline/events.py):

1. a subscriber is registered (its queue starts collecting live events) *before* it reads history;
2. history comes from the task stream (entry ids are ``{seq}-0``) or the client stream;
3. live events with a ``seq`` the subscriber already sent are skipped; a gap in ``seq`` is filled
   from the task stream; after the Redis subscription is re-established every subscriber catches up
   from its stream again.

A task stream ends after the task's terminal event, or, when the job's record is gone (expired or
deleted; checked on every heartbeat), after an ``error`` event saying so (``services/api/vanished.py``).

Redis itself is behind ``EventFeed`` (``pipeline/store/events.py``); this module routes and orders.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Literal

import msgspec

from contracts import TERMINAL_STATUSES
from pipeline.errors import StoreUnavailable
from pipeline.settings import Settings
from pipeline.store import EventFeed
from pipeline.store.events import StreamEntry
from services.api.metrics import Metrics
from services.api.vanished import vanished_event

log = logging.getLogger(__name__)

Protocol = Literal["websocket", "sse"]
PROTOCOLS: tuple[Protocol, ...] = ("websocket", "sse")

#: how many stream entries one catch-up read asks for
_PAGE = 500
#: the longest pause between attempts to subscribe again, and how often a lost subscription is logged
_MAX_DELAY_S = 5.0
_LOG_EVERY_S = 60.0


class Route(msgspec.Struct):
    """The part of an event the fan-out needs to route and order it."""

    task_id: str
    client_id: str
    seq: int
    status: str


_route = msgspec.json.Decoder(Route).decode

#: a routed event: its route and the exact bytes every protocol sends
Item = tuple[Route, bytes]


class Marker(enum.Enum):
    """Queued instead of an event."""

    RESYNC = "resync"  # the Redis subscription was re-established: catch up from the stream
    HEARTBEAT = "heartbeat"  # time for a keep-alive (SSE comment; WebSocket pings come from uvicorn)


class Subscriber:
    """One open WebSocket or SSE connection: what it follows, its bounded queue, what it has sent."""

    def __init__(self, protocol: Protocol, *, queue_size: int, task_id: str = "", client_id: str = "") -> None:
        self.protocol = protocol
        self.task_id = task_id  # set for /ws/tasks/{id} and /sse/tasks/{id}
        self.client_id = client_id  # set for /ws/{client_id} and /sse/{client_id}
        self.queue: asyncio.Queue[Item | Marker] = asyncio.Queue(queue_size)
        self.last_seq: dict[str, int] = {}  # task → highest seq sent
        self.cursor = ""  # client subscribers: client-stream entry id after which catch-up reads
        self.finished = False  # task subscribers: the terminal event was sent
        self.last_sent = b""  # the last event sent (a vanished job's final event keeps its stage and progress)
        self.dropped = False  # it stopped reading and is being disconnected
        self.sending_since = 0.0  # loop time when the send in progress began (0: none)
        self.pump: asyncio.Task[None] | None = None

    def offer(self, item: Item | Marker) -> bool:
        """Queue an item without waiting; False when the queue is full."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def accept(self, route: Route) -> bool:
        """Whether ``route`` is new to this subscriber; records it as sent.

        A task subscriber is finished when the last event it was sent is terminal (``feed`` checks this
        between batches, so a reprocessed job's later events in the same history are still sent).
        """
        if route.seq <= self.last_seq.get(route.task_id, 0):
            return False
        self.last_seq[route.task_id] = route.seq
        self.finished = bool(self.task_id) and route.status in TERMINAL_STATUSES
        return True


class ConnectionManager:
    """The open connections of one protocol, indexed by the task and the client they follow."""

    def __init__(self, protocol: Protocol, metrics: Metrics) -> None:
        self.protocol = protocol
        self.metrics = metrics
        self.by_task: dict[str, set[Subscriber]] = {}
        self.by_client: dict[str, set[Subscriber]] = {}

    def add(self, subscriber: Subscriber) -> None:
        index, key = self._slot(subscriber)
        index.setdefault(key, set()).add(subscriber)
        self.metrics.connections.labels(self.protocol).inc()

    def remove(self, subscriber: Subscriber) -> None:
        index, key = self._slot(subscriber)
        members = index.get(key)
        if members is None or subscriber not in members:
            return
        members.discard(subscriber)
        if not members:
            del index[key]
        self.metrics.connections.labels(self.protocol).dec()

    def subscribers(self) -> list[Subscriber]:
        return [s for index in (self.by_task, self.by_client) for members in index.values() for s in members]

    def dispatch(self, route: Route, payload: bytes) -> None:
        for subscriber in (*self.by_task.get(route.task_id, ()), *self.by_client.get(route.client_id, ())):
            if not subscriber.dropped and not subscriber.offer((route, payload)):
                self.drop(subscriber, "its event queue is full", lost=1)

    def broadcast(self, marker: Marker) -> None:
        for subscriber in self.subscribers():
            if not subscriber.dropped and not subscriber.offer(marker):
                self.drop(subscriber, "its event queue is full")

    def expire(self, started_before: float, timeout_s: float) -> None:
        """Drop the subscribers whose send in progress began before ``started_before``."""
        for subscriber in self.subscribers():
            if not subscriber.dropped and 0 < subscriber.sending_since < started_before:
                self.drop(subscriber, f"a send took over {timeout_s} s")

    def drop(self, subscriber: Subscriber, reason: str, *, lost: int = 0) -> None:
        """Disconnect a subscriber that stopped reading (cancel its pump); count and log it."""
        subscriber.dropped = True
        if subscriber.pump is not None:
            subscriber.pump.cancel()
        lost += subscriber.queue.qsize()
        log.warning(
            "disconnecting a %s subscriber that stopped reading: %s (%d events not sent)",
            self.protocol,
            reason,
            lost,
            extra={"task_id": subscriber.task_id or None},
        )
        self.metrics.dropped.labels(self.protocol).inc(lost)
        self.metrics.slow_disconnects.labels(self.protocol).inc()

    def _slot(self, subscriber: Subscriber) -> tuple[dict[str, set[Subscriber]], str]:
        if subscriber.task_id:
            return self.by_task, subscriber.task_id
        return self.by_client, subscriber.client_id


class LiveEvents:
    """The API process's event fan-out: start it in the app's lifespan, then serve subscribers."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = EventFeed(settings)
        self.managers = {protocol: ConnectionManager(protocol, metrics) for protocol in PROTOCOLS}
        self.subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe; waits (up to 5 s) for the subscription so the first subscribers miss nothing live."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="litminer-events"),
            asyncio.create_task(self._tick(), name="litminer-heartbeat"),
        ]
        with suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), 5)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.events.close()

    async def _listen(self) -> None:
        """Keep the subscription; while Redis is away, try again every few seconds but log one line a minute."""
        delay = 0.1
        clock = asyncio.get_running_loop().time
        lost_since: float | None = None  # when the subscription was lost (None: it is up)
        logged = 0.0
        while True:
            try:
                async with self.events.subscription() as subscription:
                    self.subscribed.set()
                    delay = 0.1
                    if lost_since is not None:
                        log.warning("event subscription restored after %.0f s", clock() - lost_since)
                        lost_since = None
                    for manager in self.managers.values():
                        manager.broadcast(Marker.RESYNC)  # whatever was published while we were not subscribed
                    while True:
                        payload = await subscription.next(self.settings.heartbeat_s)
                        if payload is not None:
                            self._dispatch(payload)
            except StoreUnavailable as exc:
                self.subscribed.clear()
                self.metrics.resubscribed.inc()
                if lost_since is None or clock() - logged >= _LOG_EVERY_S:
                    lost_since = clock() if lost_since is None else lost_since
                    logged = clock()
                    log.warning(
                        "no live events: Redis does not answer (%s); trying again every %g s, logging once a minute "
                        "(REDIS_URL names the Redis)",
                        exc,
                        _MAX_DELAY_S,
                    )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)

    async def _tick(self) -> None:
        """One timer for all subscribers: heartbeats, and dropping those whose send hangs.

        (A timer per event and per send would cost more than the sends themselves at 2,000 events/s.)
        """
        loop = asyncio.get_running_loop()
        heartbeat_s, timeout_s = self.settings.heartbeat_s, self.settings.send_timeout_s
        next_beat = loop.time() + heartbeat_s
        while True:
            await asyncio.sleep(min(1.0, heartbeat_s, timeout_s / 2))
            now = loop.time()
            for manager in self.managers.values():
                manager.expire(now - timeout_s, timeout_s)
            if now >= next_beat:
                next_beat = now + heartbeat_s
                for manager in self.managers.values():
                    manager.broadcast(Marker.HEARTBEAT)

    def _dispatch(self, payload: bytes) -> None:
        try:
            route = _route(payload)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed event on the events channel")
            return
        self.metrics.received.inc()
        for manager in self.managers.values():
            manager.dispatch(route, payload)

    # -- serving one subscriber -----------------------------------------------------------------------

    async def serve(
        self,
        subscriber: Subscriber,
        send: Callable[[Route, bytes], Awaitable[None]],
        heartbeat: Callable[[], Awaitable[None]],
        closed: Callable[[], Coroutine[object, object, None]],
    ) -> None:
        """Send ``subscriber`` its events until its feed ends, the peer leaves or it falls behind.

        The subscriber must already be registered (``register``), so nothing published since is missed.
        """
        pump = asyncio.create_task(self._pump(subscriber, send, heartbeat))
        subscriber.pump = pump
        watcher = asyncio.create_task(closed())
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watcher):
                task.cancel()
            # redis-py can swallow a cancellation that lands while a command runs: ask again until both stopped
            while not (pump.done() and watcher.done()):
                await asyncio.wait({pump, watcher}, timeout=0.05)
                for task in (pump, watcher):
                    task.cancel()
            results = await asyncio.gather(pump, watcher, return_exceptions=True)
            self.unregister(subscriber)
        error = results[0]
        if isinstance(error, Exception) and not subscriber.dropped:
            log.warning("%s subscriber failed: %r", subscriber.protocol, error, extra={"task_id": subscriber.task_id})

    def register(self, subscriber: Subscriber) -> None:
        self.managers[subscriber.protocol].add(subscriber)

    def unregister(self, subscriber: Subscriber) -> None:
        self.managers[subscriber.protocol].remove(subscriber)

    async def _pump(
        self,
        subscriber: Subscriber,
        send: Callable[[Route, bytes], Awaitable[None]],
        heartbeat: Callable[[], Awaitable[None]],
    ) -> None:
        clock = asyncio.get_running_loop().time
        delivered = self.metrics.delivered.labels(subscriber.protocol)
        async for item in self.feed(subscriber):
            subscriber.sending_since = clock()  # watched by _tick
            await (heartbeat() if item is None else send(*item))
            subscriber.sending_since = 0.0
            if item is not None:
                subscriber.last_sent = item[1]
                delivered.inc()

    async def feed(self, subscriber: Subscriber) -> AsyncIterator[Item | None]:
        """The subscriber's events in order (history, then live); None when a heartbeat is due."""
        if subscriber.client_id and not subscriber.cursor:  # a new client subscriber: live from here on
            subscriber.cursor = await self._client_stream_end(subscriber.client_id)
        else:
            for item in await self._catch_up(subscriber):
                yield item
        while not subscriber.finished:
            queued = await subscriber.queue.get()
            if queued is Marker.HEARTBEAT:
                if subscriber.task_id and await self._job_gone(subscriber.task_id):
                    # its terminal event may be in the stream but not yet here: send that rather than ours
                    for item in await self._catch_up(subscriber):
                        yield item
                    if not subscriber.finished:
                        yield self._vanished(subscriber)
                    continue
                yield None
                continue
            if queued is Marker.RESYNC:
                for item in await self._catch_up(subscriber):
                    yield item
                continue
            route, payload = queued
            last = subscriber.last_seq.get(route.task_id)
            if last is not None and route.seq > last + 1:  # the channel lost something: fill from the stream
                for item in await self._task_history(route.task_id, after=last, until=route.seq - 1):
                    if subscriber.accept(item[0]):
                        yield item
            if subscriber.accept(route):
                yield route, payload

    async def _job_gone(self, task_id: str) -> bool:
        """Whether a followed job's record is gone; False when Redis cannot say now (the next heartbeat asks again)."""
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                return not await self.events.job_exists(task_id)
        except (StoreUnavailable, TimeoutError):
            return False

    def _vanished(self, subscriber: Subscriber) -> Item:
        """The terminal event that ends the stream of a job whose record is gone (marked as sent).

        Its seq is one past the last one sent, so a client's ``Last-Event-ID`` still counts up; the event is
        not stored (the job is gone: a reconnect gets a 404, not a replay).
        """
        task_id = subscriber.task_id
        log.info(
            "job no longer exists: ending a %s stream that follows it", subscriber.protocol, extra={"task_id": task_id}
        )
        payload = vanished_event(
            task_id,
            seq=subscriber.last_seq.get(task_id, 0) + 1,
            last=subscriber.last_sent,
            ttl_s=self.settings.result_ttl_s,
        )
        route = _route(payload)
        subscriber.accept(route)
        return route, payload

    async def _catch_up(self, subscriber: Subscriber) -> list[Item]:
        """What the subscriber's stream holds that it has not been sent yet."""
        if subscriber.task_id:
            items = await self._task_history(subscriber.task_id, after=subscriber.last_seq.get(subscriber.task_id, 0))
        else:
            items = await self._client_history(subscriber)
        return [item for item in items if subscriber.accept(item[0])]

    @staticmethod
    def _items(entries: list[StreamEntry]) -> list[Item]:
        return [(_route(payload), payload) for _, payload in entries]

    async def _task_history(self, task_id: str, *, after: int, until: int | None = None) -> list[Item]:
        return self._items(await self.events.job_events(task_id, after=after, until=until))

    async def _client_history(self, subscriber: Subscriber) -> list[Item]:
        items: list[Item] = []
        while True:
            entries = await self.events.client_events(subscriber.client_id, after=subscriber.cursor, count=_PAGE)
            items += self._items(entries)
            if entries:
                subscriber.cursor = entries[-1][0]
            if len(entries) < _PAGE:
                return items

    async def _client_stream_end(self, client_id: str) -> str:
        last = await self.events.client_events_before(client_id, before=None, count=1)
        return last[0][0] if last else "0-0"

    async def resume_client(self, subscriber: Subscriber, task_id: str, seq: int) -> None:
        """Position a client subscriber just after its event ``task_id``/``seq`` (an SSE Last-Event-ID).

        When that event is no longer in the client stream (trimmed or expired), everything the stream
        still holds is replayed.
        """
        subscriber.last_seq[task_id] = seq
        subscriber.cursor = "0-0"
        before: str | None = None
        while True:
            entries = await self.events.client_events_before(subscriber.client_id, before=before, count=_PAGE)
            for (route, _), (entry_id, _) in zip(self._items(entries), entries, strict=True):
                if route.task_id == task_id and route.seq <= seq:
                    subscriber.cursor = entry_id
                    return
            if len(entries) < _PAGE:
                return
            before = entries[-1][0]
