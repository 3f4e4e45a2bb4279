"""Live events over WebSocket and Server-Sent Events: per client id and per task.

Every protocol sends the event JSON exactly as it is stored in Redis, so WebSocket text frames and
SSE ``data:`` lines are byte-identical. SSE ids are the task's ``seq`` (``/sse/tasks/{id}``) or
``{task_id}:{seq}`` (``/sse/{client_id}``); send one back as ``Last-Event-ID`` to resume.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

import anyio.to_thread
from litestar import WebSocket, get, websocket
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath, HeaderParameter
from litestar.types import ASGIApp, Receive, Scope, Send

from pipeline.errors import InvalidRequest
from pipeline.jobs import JobService
from pipeline.schema import check_client_id, is_task_id
from services.api.errors import ANSWERED, refuse_websocket_for
from services.api.live import LiveEvents, Protocol, Route, Subscriber

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]
_RETRY = b"retry: 1000\n\n"  # EventSource reconnects after 1 s
_PING = b": ping\n\n"
_LAST_EVENT_ID = HeaderParameter(name="Last-Event-ID", required=False)
#: an event's seq in a Last-Event-ID: digits, few enough to be an int64 (longer ones never reach int())
_SEQ = re.compile(r"[0-9]{1,18}")


def _sse(live: LiveEvents, subscriber: Subscriber) -> ASGIApp:
    """The streaming response of one registered SSE subscriber."""
    per_task = bool(subscriber.task_id)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_event(route: Route, payload: bytes) -> None:
            event_id = str(route.seq) if per_task else f"{route.task_id}:{route.seq}"
            body = b"id: " + event_id.encode() + b"\ndata: " + payload + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})

        async def ping() -> None:
            await send({"type": "http.response.body", "body": _PING, "more_body": True})

        async def closed() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": _RETRY, "more_body": True})
        except BaseException:
            live.unregister(subscriber)
            raise
        await live.serve(subscriber, send_event, ping, closed)
        if not subscriber.dropped:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _task_subscriber(
    live: LiveEvents, jobs: JobService, protocol: Protocol, task_id: str, *, owner: str, last_event_id: str | None
) -> Subscriber:
    await anyio.to_thread.run_sync(jobs.find, task_id, owner)  # a bad id: 400; unknown, or another key's: 404
    after = 0
    if last_event_id:
        if not _SEQ.fullmatch(last_event_id):
            raise InvalidRequest(
                "Last-Event-ID", f"expected the seq of an event of this task, got {last_event_id[:40]!r}"
            )
        after = int(last_event_id)
    subscriber = Subscriber(protocol, queue_size=live.settings.event_queue_size, task_id=task_id)
    subscriber.last_seq[task_id] = after
    return subscriber


async def _client_subscriber(
    live: LiveEvents, jobs: JobService, protocol: Protocol, client_id: str, *, owner: str, last_event_id: str | None
) -> Subscriber:
    check_client_id(client_id)
    if owner:  # with API keys a client id is its first user's (ClientIdTaken); without, there is nothing to claim
        await anyio.to_thread.run_sync(jobs.claim_client, client_id, owner)
    subscriber = Subscriber(protocol, queue_size=live.settings.event_queue_size, client_id=client_id)
    if last_event_id == "0":  # before the first event: everything the client's stream still holds, then live
        subscriber.cursor = "0-0"
    elif last_event_id:
        task_id, _, seq = last_event_id.rpartition(":")
        if not is_task_id(task_id) or not _SEQ.fullmatch(seq):
            raise InvalidRequest("Last-Event-ID", f"expected '<task_id>:<seq>', got {last_event_id[:80]!r}")
        await live.resume_client(subscriber, task_id, int(seq))
    return subscriber


@get("/sse/{client_id:str}", operation_id="followClientSSE", media_type="text/event-stream")
async def sse_client(
    client_id: FromPath[str],
    live: NamedDependency[LiveEvents],
    jobs: NamedDependency[JobService],
    owner: NamedDependency[str],
    last_event_id: Annotated[str | None, _LAST_EVENT_ID] = None,
) -> ASGIApp:
    """Server-Sent Events of every task of ``client_id``, live (resumes after ``Last-Event-ID``)."""
    subscriber = await _client_subscriber(live, jobs, "sse", client_id, owner=owner, last_event_id=last_event_id)
    live.register(subscriber)
    return _sse(live, subscriber)


@get("/sse/tasks/{task_id:str}", operation_id="followTaskSSE", media_type="text/event-stream")
async def sse_task(
    task_id: FromPath[str],
    live: NamedDependency[LiveEvents],
    jobs: NamedDependency[JobService],
    owner: NamedDependency[str],
    last_event_id: Annotated[str | None, _LAST_EVENT_ID] = None,
) -> ASGIApp:
    """Server-Sent Events of one task: its history, then live, ending after the terminal event."""
    subscriber = await _task_subscriber(live, jobs, "sse", task_id, owner=owner, last_event_id=last_event_id)
    live.register(subscriber)
    return _sse(live, subscriber)


async def _serve_websocket(socket: WebSocket[object, object, State], live: LiveEvents, subscriber: Subscriber) -> None:
    live.register(subscriber)
    try:
        await socket.accept()
    except BaseException:
        live.unregister(subscriber)
        raise

    async def send_event(_: Route, payload: bytes) -> None:
        await socket.send_text(payload)

    async def ping() -> None:  # uvicorn sends protocol-level pings (ws_ping_interval = LITMINER_HEARTBEAT_S)
        pass

    async def closed() -> None:
        try:
            while True:
                await socket.receive_data("text")
        except WebSocketDisconnect:
            return

    await live.serve(subscriber, send_event, ping, closed)
    if socket.connection_state != "disconnect":
        code, reason = (1013, "too slow: stopped reading events") if subscriber.dropped else (1000, "")
        try:
            async with asyncio.timeout(live.settings.send_timeout_s):
                await socket.close(code, reason)
        except (TimeoutError, WebSocketDisconnect, RuntimeError):
            pass


@websocket("/ws/{client_id:str}")
async def ws_client(
    socket: WebSocket[object, object, State],
    client_id: FromPath[str],
    live: NamedDependency[LiveEvents],
    jobs: NamedDependency[JobService],
    owner: NamedDependency[str],
) -> None:
    """WebSocket of every task of ``client_id``, live."""
    try:
        subscriber = await _client_subscriber(live, jobs, "websocket", client_id, owner=owner, last_event_id=None)
    except ANSWERED as exc:  # a litminer error by the table, a Redis error as 503 (logged)
        await refuse_websocket_for(socket.scope, socket.send, exc)
        return
    await _serve_websocket(socket, live, subscriber)


@websocket("/ws/tasks/{task_id:str}")
async def ws_task(
    socket: WebSocket[object, object, State],
    task_id: FromPath[str],
    live: NamedDependency[LiveEvents],
    jobs: NamedDependency[JobService],
    owner: NamedDependency[str],
) -> None:
    """WebSocket of one task: its history, then live, closing after the terminal event."""
    try:
        subscriber = await _task_subscriber(live, jobs, "websocket", task_id, owner=owner, last_event_id=None)
    except ANSWERED as exc:  # a litminer error by the table, a Redis error as 503 (logged)
        await refuse_websocket_for(socket.scope, socket.send, exc)
        return
    await _serve_websocket(socket, live, subscriber)


stream_handlers = [sse_client, sse_task, ws_client, ws_task]
