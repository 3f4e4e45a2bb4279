"""A small client of the litminer HTTP API, used by the CLI (and usable from scripts).

Live events come over Server-Sent Events. A dropped stream is resumed with ``Last-Event-ID``, so a
reconnect neither loses nor repeats an event.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Literal

import httpx
import msgspec
from httpx_sse import SSEError, connect_sse

from contracts import TERMINAL_STATUSES, Event, TaskAccepted, TaskStatus, decode_event
from pipeline.errors import LitminerError

DEFAULT_API_URL = "http://127.0.0.1:8000"

ExportFormat = Literal["json", "csv", "jsonl"]

#: delays between reconnection attempts of a dropped event stream; the last one repeats
_RECONNECT_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
#: attempts in a row without receiving an event before following gives up
_MAX_RECONNECTS = 10


class ApiError(LitminerError):
    """The API refused a request; ``status`` is the HTTP status (0 when it could not be reached).

    ``field`` names the offending input of a 400 (``field_definitions[1].name``), else it is empty.
    """

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class ApiClient:
    """Talks to a running API at ``LITMINER_API_URL`` with ``LITMINER_API_KEY`` (when set, sent as a Bearer token).

    ``stream_read_timeout_s`` bounds the silence on an event stream (the server sends a heartbeat every
    ``LITMINER_HEARTBEAT_S``, 15 s by default); after it the stream is resumed on a new connection.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        stream_read_timeout_s: float | None = 90.0,
    ) -> None:
        self.base_url = (base_url or os.environ.get("LITMINER_API_URL") or DEFAULT_API_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LITMINER_API_KEY", "")
        self.has_key = bool(key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.stream_timeout = httpx.Timeout(timeout_s, read=stream_read_timeout_s)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------------

    def generate(self, body: dict[str, object]) -> TaskAccepted:
        """``POST /api/v1/datasets/generate`` (JSON body)."""
        return msgspec.json.decode(self._send("POST", "/api/v1/datasets/generate", body), type=TaskAccepted)

    def reprocess(self, task_id: str, body: dict[str, object]) -> TaskAccepted:
        """``POST /api/v1/tasks/{task_id}/reprocess``."""
        return msgspec.json.decode(self._send("POST", f"/api/v1/tasks/{task_id}/reprocess", body), type=TaskAccepted)

    def status(self, task_id: str) -> TaskStatus:
        """``GET /tasks/{task_id}``: 404 when unknown."""
        return msgspec.json.decode(self._send("GET", f"/tasks/{task_id}"), type=TaskStatus)

    def cancel(self, task_id: str) -> TaskStatus:
        """``POST /tasks/{task_id}/revoke``: 404 when unknown, 409 when the job already finished."""
        return msgspec.json.decode(self._send("POST", f"/tasks/{task_id}/revoke"), type=TaskStatus)

    def dataset(self, task_id: str, format: ExportFormat = "json") -> bytes:
        """``GET /api/v1/datasets/{task_id}?format=…``: the export's bytes (409 until the job completed)."""
        return self._send("GET", f"/api/v1/datasets/{task_id}", params={"format": format})

    # -- live events ---------------------------------------------------------------------------------

    def follow_task(self, task_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """Events of one task, from after ``last_event_id`` (its seq) to its terminal event.

        ``GET /sse/tasks/{task_id}``; a dropped connection is resumed after the last event received.
        """
        last = last_event_id
        start = None if last_event_id is None else str(last_event_id)
        for event in self._events(f"/sse/tasks/{task_id}", start, lambda event: str(event.seq)):
            if last is not None and event.seq <= last:
                continue  # never repeat an event, whatever the server sends
            last = event.seq
            yield event
            if event.status in TERMINAL_STATUSES:
                return

    def follow_client(self, client_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """Events of every task of ``client_id`` as they happen; endless.

        ``GET /sse/{client_id}``; ``last_event_id`` (``<task_id>:<seq>``) resumes after that event, and a
        dropped connection is resumed after the last event received.
        """
        yield from self._events(f"/sse/{client_id}", last_event_id, lambda event: f"{event.task_id}:{event.seq}")

    def _events(self, path: str, last_event_id: str | None, event_id: Callable[[Event], str]) -> Iterator[Event]:
        """Events of an SSE endpoint, over as many connections as it takes; the caller decides when to stop.

        Each connection resumes after the last event received (``Last-Event-ID``: ``event_id(event)``), the
        first one after ``last_event_id`` when that is set. A connection that drops (or ends) is replaced,
        after a backoff when it brought no event; ``_MAX_RECONNECTS`` such fruitless connections in a row end
        it with ``ApiError``, and so does an HTTP error at once (404 for an unknown task, 400 for a bad id),
        or a first connection that fails.
        """
        connected = False
        fruitless = 0
        reason = "the server closed the stream"
        while True:
            if fruitless >= _MAX_RECONNECTS:
                raise ApiError(0, f"lost the event stream {self.base_url}{path} ({reason})")
            if fruitless:
                time.sleep(_RECONNECT_DELAYS_S[min(fruitless, len(_RECONNECT_DELAYS_S)) - 1])
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            received = False
            try:
                with connect_sse(self.http, "GET", path, headers=headers, timeout=self.stream_timeout) as source:
                    connected = True
                    if source.response.is_error:
                        source.response.read()
                        raise self._error(source.response)
                    for message in source.iter_sse():
                        if message.data:
                            received = True
                            event = decode_event(message.data.encode())
                            last_event_id = event_id(event)
                            yield event
                reason = "the server closed the stream"
            except (httpx.TransportError, SSEError) as exc:
                if not connected:
                    raise self._unreachable(exc) from None
                reason = str(exc) or type(exc).__name__
            fruitless = 0 if received else fruitless + 1

    def _send(
        self, method: str, path: str, body: dict[str, object] | None = None, params: dict[str, str] | None = None
    ) -> bytes:
        try:
            response = self.http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.is_error:
            raise self._error(response)
        return response.content

    def _error(self, response: httpx.Response) -> ApiError:
        if response.status_code == 401:  # never echo the key: say where it comes from
            refused = "refused the API key" if self.has_key else "needs an API key"
            return ApiError(
                401, f"the litminer API at {self.base_url} {refused}: set LITMINER_API_KEY or pass --api-key"
            )
        return _api_error(response)

    def _unreachable(self, exc: Exception) -> ApiError:
        return ApiError(
            0,
            f"cannot reach the litminer API at {self.base_url} ({exc or type(exc).__name__}); is `litminer api` "
            "running there? (--api URL or LITMINER_API_URL name another)",
        )

    def close(self) -> None:
        self.http.close()


def _api_error(response: httpx.Response) -> ApiError:
    """The API's error body (``{"status_code", "detail", "field"}``) as an ``ApiError``."""
    detail, field = response.text, ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("detail") or detail)
        field = str(body.get("field") or "")
    return ApiError(response.status_code, detail or response.reason_phrase, field)
