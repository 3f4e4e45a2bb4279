"""Typed clients of the litminer HTTP API: ``ApiClient`` (blocking, used by the CLI) and ``AsyncApiClient`` (asyncio).

Both send the same requests and decode the same answers into ``contracts`` Structs: one ``_Core`` builds each
request and reads each answer, so the two clients differ only in how they wait for the network. A refused request
raises ``ApiError`` with the HTTP status and, for a 400, the offending field. Live events come over Server-Sent
Events; a dropped stream is resumed with ``Last-Event-ID``, so a reconnect neither loses nor repeats an event.

Example (the API at ``LITMINER_API_URL``, its key in ``LITMINER_API_KEY`` when it needs one)::

    from contracts import FieldDefinition
    from services.client import ApiClient

    with ApiClient() as client:
        accepted = client.generate(
            user_query="water treatment technologies used in specialty crop production",
            field_definitions=[FieldDefinition(name="technology_name", description="Name of the technology")],
            rows=5,
        )
        status = client.wait(accepted.task_id)  # follows the live events to the job's end
        if status.result is not None:
            for row in status.result.rows:
                print(row.row["technology_name"], row.confidence, row.citations[0].metadata.doi)

``AsyncApiClient`` has the same methods, awaited (``async with AsyncApiClient() as client: ...``), and
``follow_task``/``follow_client`` are async iterators there.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, TypedDict, TypeVar, overload
from urllib.parse import quote

import httpx
import msgspec
from httpx_sse import SSEError, aconnect_sse, connect_sse

from contracts import (
    TERMINAL_STATUSES,
    Criterion,
    Dataset,
    DatasetRow,
    Estimate,
    Event,
    ExtractorName,
    FieldDefinition,
    GenerateRequest,
    ReprocessRequest,
    ReviewChange,
    TaskAccepted,
    TaskStatus,
    decode_event,
)
from pipeline.errors import LitminerError

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_API_URL = "http://127.0.0.1:8000"

ExportFormat = Literal["json", "csv", "jsonl"]
#: the dataset's other downloads: ``citations`` (csv, jsonl), ``references`` (bibtex, ris, csl-json), ``papers``
#: (json, csv)
ExportKind = Literal["citations", "references", "papers"]

#: delays between reconnection attempts of a dropped event stream; the last one repeats
_RECONNECT_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
#: attempts in a row without receiving an event before following gives up
_MAX_RECONNECTS = 10

T = TypeVar("T")


class ApiError(LitminerError):
    """The API refused a request; ``status`` is the HTTP status (0 when it could not be reached).

    ``field`` names the offending input of a 400 (``field_definitions[1].name``), else it is empty.
    """

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class GenerateFields(TypedDict, total=False):
    """The keyword arguments of ``generate``: the fields of ``contracts.GenerateRequest``."""

    user_query: str
    field_definitions: Sequence[FieldDefinition | Mapping[str, object]]
    rows: int
    model_name: str
    client_id: str | None
    sources: Sequence[str] | None
    extractor: ExtractorName | None
    criteria: Sequence[Criterion | Mapping[str, object]]
    callback_url: str | None
    max_tokens: int | None


class _ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The API's error answer (``services/api/errors.py``), read tolerantly."""

    detail: str = ""
    field: str | None = None


_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_decode_accepted = msgspec.json.Decoder(TaskAccepted).decode
_decode_status = msgspec.json.Decoder(TaskStatus).decode
_decode_dataset = msgspec.json.Decoder(Dataset).decode
_decode_row = msgspec.json.Decoder(DatasetRow).decode
_decode_estimate = msgspec.json.Decoder(Estimate).decode


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One request, ready to send, and how to read its answer."""

    method: str
    path: str
    decode: Callable[[bytes], T]
    body: bytes | None = None
    params: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"} if self.body is not None else {}


def _raw(content: bytes) -> bytes:
    return content


def _nothing(content: bytes) -> None:
    """The answer of a 204: no body to read."""


def _body(value: msgspec.Struct | Mapping[str, object]) -> bytes:
    """A request body as JSON. A Struct sends the fields that differ from their defaults, as a person writes a
    request (and an older API, which refuses fields it does not know, still takes it); a mapping is sent as it is
    and may hold Structs (``FieldDefinition``, ``Criterion``)."""
    if isinstance(value, msgspec.Struct):
        value = {f.encode_name: getattr(value, f.name) for f in msgspec.structs.fields(value) if not _default(value, f)}
    return msgspec.json.encode(dict(value))


def _default(struct: msgspec.Struct, field: msgspec.structs.FieldInfo) -> bool:
    """Whether ``struct`` holds ``field``'s default value."""
    value = getattr(struct, field.name)
    if field.default is not msgspec.NODEFAULT:
        return bool(value == field.default)
    return field.default_factory is not msgspec.NODEFAULT and bool(value == field.default_factory())


def _export(format: str, original: bool) -> dict[str, str]:
    """The query of a dataset download: its format, and whether to leave the review out."""
    return {"format": format, "original": "true"} if original else {"format": format}


def _segment(value: str) -> str:
    """A path segment: an id with a ``/`` in it cannot reach another route."""
    return quote(value, safe="")


def _seq(event: Event) -> str:
    """The SSE id of an event of ``/sse/tasks/{task_id}``."""
    return str(event.seq)


def _task_seq(event: Event) -> str:
    """The SSE id of an event of ``/sse/{client_id}``."""
    return f"{event.task_id}:{event.seq}"


class _Core:
    """What both clients share: the API's address and key, every request, and the reading of every answer."""

    def __init__(self, base_url: str | None, api_key: str | None) -> None:
        self.base_url = (base_url or os.environ.get("LITMINER_API_URL") or DEFAULT_API_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LITMINER_API_KEY", "")
        self.has_key = bool(key)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    # -- requests ------------------------------------------------------------------------------------

    def generate(
        self, request: GenerateRequest | Mapping[str, object] | None, fields: GenerateFields
    ) -> _Call[TaskAccepted]:
        if request is not None and fields:
            raise TypeError("generate takes a GenerateRequest (or a mapping) or keyword arguments, not both")
        body = _body(request if request is not None else {**fields})
        return _Call("POST", "/api/v1/datasets/generate", _decode_accepted, body)

    def estimate(
        self, request: GenerateRequest | Mapping[str, object] | None, fields: GenerateFields
    ) -> _Call[TaskAccepted]:
        call = self.generate(request, fields)
        return _Call("POST", "/api/v1/datasets/estimate", _decode_accepted, call.body)

    def task_estimate(self, task_id: str) -> _Call[Estimate]:
        return _Call("GET", f"/api/v1/tasks/{_segment(task_id)}/estimate", _decode_estimate)

    def reprocess(self, task_id: str, request: ReprocessRequest | Mapping[str, object]) -> _Call[TaskAccepted]:
        return _Call("POST", f"/api/v1/tasks/{_segment(task_id)}/reprocess", _decode_accepted, _body(request))

    def status(self, task_id: str) -> _Call[TaskStatus]:
        return _Call("GET", f"/tasks/{_segment(task_id)}", _decode_status)

    def cancel(self, task_id: str) -> _Call[TaskStatus]:
        return _Call("POST", f"/tasks/{_segment(task_id)}/revoke", _decode_status)

    def delete(self, task_id: str) -> _Call[None]:
        return _Call("DELETE", f"/api/v1/tasks/{_segment(task_id)}", _nothing)

    def dataset(self, task_id: str, original: bool) -> _Call[Dataset]:
        return _Call("GET", f"/api/v1/datasets/{_segment(task_id)}", _decode_dataset, params=_export("json", original))

    def download(self, task_id: str, format: ExportFormat, original: bool) -> _Call[bytes]:
        return _Call("GET", f"/api/v1/datasets/{_segment(task_id)}", _raw, params=_export(format, original))

    def export(self, task_id: str, kind: ExportKind, format: str, original: bool) -> _Call[bytes]:
        return _Call("GET", f"/api/v1/datasets/{_segment(task_id)}/{kind}", _raw, params=_export(format, original))

    def review(self, task_id: str, row_id: str, change: ReviewChange) -> _Call[DatasetRow]:
        path = f"/api/v1/datasets/{_segment(task_id)}/rows/{_segment(row_id)}"
        return _Call("PATCH", path, _decode_row, _body(change))

    def download_url(self, task_id: str, format: ExportFormat) -> str:
        """Where the dataset's export can be downloaded (with the API key, when the API needs one)."""
        return f"{self.base_url}/api/v1/datasets/{_segment(task_id)}?format={format}"

    def task_events(self, task_id: str, last_event_id: int | None) -> _EventStream:
        start = None if last_event_id is None else str(last_event_id)
        return _EventStream(self, f"/sse/tasks/{_segment(task_id)}", start, _seq, until_terminal=True)

    def client_events(self, client_id: str, last_event_id: str | None) -> _EventStream:
        return _EventStream(self, f"/sse/{_segment(client_id)}", last_event_id, _task_seq, until_terminal=False)

    # -- answers -------------------------------------------------------------------------------------

    def answer(self, call: _Call[T], response: httpx.Response) -> T:
        """The decoded answer to ``call``, or the ``ApiError`` it carries."""
        if response.is_error:
            raise self.error(response)
        try:
            return call.decode(response.content)
        except msgspec.DecodeError as exc:  # not litminer at this address, or a version that answers otherwise
            raise ApiError(response.status_code, f"unexpected answer from {self.base_url}{call.path}: {exc}") from None

    def error(self, response: httpx.Response) -> ApiError:
        """The API's error answer as an ``ApiError`` (a 401 says where the key comes from, never echoes it)."""
        if response.status_code == 401:
            refused = "refused the API key" if self.has_key else "needs an API key"
            return ApiError(
                401, f"the litminer API at {self.base_url} {refused}: set LITMINER_API_KEY or pass --api-key"
            )
        try:
            body = _decode_error(response.content)
        except msgspec.DecodeError:
            body = _ErrorBody(detail=response.text)
        return ApiError(response.status_code, body.detail or response.reason_phrase, body.field or "")

    def unreachable(self, exc: Exception) -> ApiError:
        """An ``ApiError`` (status 0) for a request that got no answer."""
        return ApiError(
            0,
            f"cannot reach the litminer API at {self.base_url} ({exc or type(exc).__name__}); is `litminer api` "
            "running there? (--api URL or LITMINER_API_URL name another)",
        )


class _EventStream:
    """One followed SSE endpoint, over as many connections as it takes.

    Each connection resumes after the last event received (``Last-Event-ID``: ``event_id(event)``), the first
    one after ``last_event_id`` when that is set. A connection that drops (or ends) is replaced, after a
    backoff when it brought no event; ``_MAX_RECONNECTS`` such fruitless connections in a row end it with
    ``ApiError``, and so does an HTTP error at once (404 for an unknown task, 400 for a bad id), or a first
    connection that fails. ``until_terminal`` streams (one task's) end after its terminal event and skip any
    event at or before the last seq seen, whatever the server sends.
    """

    def __init__(
        self,
        core: _Core,
        path: str,
        last_event_id: str | None,
        event_id: Callable[[Event], str],
        *,
        until_terminal: bool,
    ) -> None:
        self.core = core
        self.path = path
        self.last_event_id = last_event_id
        self.event_id = event_id
        self.until_terminal = until_terminal
        self.last_seq = int(last_event_id) if until_terminal and last_event_id else None
        self.finished = False
        self.connected = False
        self.fruitless = 0
        self.received = False
        self.reason = "the server closed the stream"

    def next_delay(self) -> float:
        """Seconds to wait before the next connection; raises ``ApiError`` once following is hopeless."""
        if self.fruitless >= _MAX_RECONNECTS:
            raise ApiError(0, f"lost the event stream {self.core.base_url}{self.path} ({self.reason})")
        self.received = False
        return _RECONNECT_DELAYS_S[min(self.fruitless, len(_RECONNECT_DELAYS_S)) - 1] if self.fruitless else 0.0

    @property
    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}

    def opened(self, response: httpx.Response) -> None:
        """A connection answered; an HTTP error there ends following (the response body must be read)."""
        self.connected = True
        if response.is_error:
            raise self.core.error(response)

    def receive(self, data: str) -> Event | None:
        """The event an SSE message carries, or None for a heartbeat or an event already given."""
        if not data:
            return None
        self.received = True
        try:
            event = decode_event(data.encode())
        except msgspec.DecodeError as exc:
            raise ApiError(0, f"unexpected event from {self.core.base_url}{self.path}: {exc}") from None
        if self.until_terminal:
            if self.last_seq is not None and event.seq <= self.last_seq:
                return None
            self.last_seq = event.seq
            self.finished = event.status in TERMINAL_STATUSES
        self.last_event_id = self.event_id(event)
        return event

    def closed(self, exc: Exception | None = None) -> None:
        """The connection ended (``exc``: how it dropped); a first connection that failed ends following."""
        if exc is not None:
            if not self.connected:
                raise self.core.unreachable(exc) from None
            self.reason = str(exc) or type(exc).__name__
        else:
            self.reason = "the server closed the stream"
        self.fruitless = 0 if self.received else self.fruitless + 1


class ApiClient:
    """A blocking client of the API at ``base_url`` (default ``LITMINER_API_URL``), sending ``api_key`` (default
    ``LITMINER_API_KEY``; none when empty) as a Bearer token. Use as a context manager, or ``close()`` it.

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
        self._core = _Core(base_url, api_key)
        self.base_url = self._core.base_url
        self.http = httpx.Client(base_url=self.base_url, headers=self._core.headers, timeout=timeout_s)
        self._stream_timeout = httpx.Timeout(timeout_s, read=stream_read_timeout_s)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def generate(
        self, request: GenerateRequest | Mapping[str, object] | None = None, /, **fields: Unpack[GenerateFields]
    ) -> TaskAccepted:
        """``POST /api/v1/datasets/generate``: queue a job, given as a ``GenerateRequest`` or its fields."""
        return self._send(self._core.generate(request, fields))

    def estimate(
        self, request: GenerateRequest | Mapping[str, object] | None = None, /, **fields: Unpack[GenerateFields]
    ) -> TaskAccepted:
        """``POST /api/v1/datasets/estimate``: queue an estimate of a generate request (no LLM call); once it
        completed, ``task_estimate`` reads it and ``reprocess(task_id, {"from_stage": "extraction"})`` runs it."""
        return self._send(self._core.estimate(request, fields))

    def task_estimate(self, task_id: str) -> Estimate:
        """``GET /api/v1/tasks/{task_id}/estimate``: an estimate job's estimate (409 until it completed)."""
        return self._send(self._core.task_estimate(task_id))

    def status(self, task_id: str) -> TaskStatus:
        """``GET /tasks/{task_id}``: the job's status, with the dataset in ``result`` once completed."""
        return self._send(self._core.status(task_id))

    def cancel(self, task_id: str) -> TaskStatus:
        """``POST /tasks/{task_id}/revoke``: cancel a queued or running job (409 once it finished)."""
        return self._send(self._core.cancel(task_id))

    def delete(self, task_id: str) -> None:
        """``DELETE /api/v1/tasks/{task_id}``: remove the job and its dataset everywhere, Redis and the archive (a
        running job is cancelled first); 404 for a job this API key cannot see."""
        self._send(self._core.delete(task_id))

    @overload
    def dataset(self, task_id: str, *, original: bool = False) -> Dataset: ...
    @overload
    def dataset(self, task_id: str, format: ExportFormat, *, original: bool = False) -> bytes: ...
    def dataset(self, task_id: str, format: ExportFormat | None = None, *, original: bool = False) -> Dataset | bytes:
        """``GET /api/v1/datasets/{task_id}``: the dataset; with a ``format``, the export's bytes, for a file.

        The values are the reviewed ones unless ``original`` (the extraction's). 409 until the job completed.
        """
        if format is None:
            return self._send(self._core.dataset(task_id, original))
        return self._send(self._core.download(task_id, format, original))

    def reprocess(self, task_id: str, request: ReprocessRequest | Mapping[str, object]) -> TaskAccepted:
        """``POST /api/v1/tasks/{task_id}/reprocess``: run a finished job again from one stage, as a new job."""
        return self._send(self._core.reprocess(task_id, request))

    def export(self, task_id: str, kind: ExportKind, format: str, *, original: bool = False) -> bytes:
        """``GET /api/v1/datasets/{task_id}/{kind}``: the per-citation table (``citations``: csv, jsonl), the
        cited papers' references (``references``: bibtex, ris, csl-json) or every paper considered (``papers``:
        json, csv), as bytes for a file."""
        return self._send(self._core.export(task_id, kind, format, original))

    def review(self, task_id: str, row_id: str, change: ReviewChange) -> DatasetRow:
        """``PATCH /api/v1/datasets/{task_id}/rows/{row_id}``: record one review decision; the row as reviewed."""
        return self._send(self._core.review(task_id, row_id, change))

    def download_url(self, task_id: str, format: ExportFormat = "json") -> str:
        """Where the dataset's export can be downloaded (with the API key, when the API needs one)."""
        return self._core.download_url(task_id, format)

    def wait(self, task_id: str) -> TaskStatus:
        """Follow the job's events to its end (completed, error or cancelled); its final status."""
        for _ in self.follow_task(task_id):
            pass
        return self.status(task_id)

    def follow_task(self, task_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """Events of one task (``GET /sse/tasks/{task_id}``) after seq ``last_event_id``, to its terminal event."""
        return self._follow(self._core.task_events(task_id, last_event_id))

    def follow_client(self, client_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """Events of every task of ``client_id`` (``GET /sse/{client_id}``) as they happen; endless.

        ``last_event_id`` (``<task_id>:<seq>``) resumes after that event.
        """
        return self._follow(self._core.client_events(client_id, last_event_id))

    def _follow(self, stream: _EventStream) -> Iterator[Event]:
        while not stream.finished:
            time.sleep(stream.next_delay())
            try:
                with connect_sse(
                    self.http, "GET", stream.path, headers=stream.headers, timeout=self._stream_timeout
                ) as source:
                    if source.response.is_error:
                        source.response.read()
                    stream.opened(source.response)
                    for message in source.iter_sse():
                        event = stream.receive(message.data)
                        if event is not None:
                            yield event
                        if stream.finished:
                            return
                stream.closed()
            except (httpx.TransportError, SSEError) as exc:
                stream.closed(exc)

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self.http.request(
                call.method, call.path, content=call.body, params=call.params, headers=call.headers
            )
        except httpx.HTTPError as exc:
            raise self._core.unreachable(exc) from None
        return self._core.answer(call, response)


class AsyncApiClient:
    """``ApiClient`` for asyncio: the same methods, awaited, over one ``httpx.AsyncClient``.

    Use as an async context manager, or ``await aclose()``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        stream_read_timeout_s: float | None = 90.0,
    ) -> None:
        self._core = _Core(base_url, api_key)
        self.base_url = self._core.base_url
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self._core.headers, timeout=timeout_s)
        self._stream_timeout = httpx.Timeout(timeout_s, read=stream_read_timeout_s)

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    def download_url(self, task_id: str, format: ExportFormat = "json") -> str:
        """Where the dataset's export can be downloaded (with the API key, when the API needs one)."""
        return self._core.download_url(task_id, format)

    async def generate(
        self, request: GenerateRequest | Mapping[str, object] | None = None, /, **fields: Unpack[GenerateFields]
    ) -> TaskAccepted:
        """``POST /api/v1/datasets/generate``: queue a job, given as a ``GenerateRequest`` or its fields."""
        return await self._send(self._core.generate(request, fields))

    async def estimate(
        self, request: GenerateRequest | Mapping[str, object] | None = None, /, **fields: Unpack[GenerateFields]
    ) -> TaskAccepted:
        """``POST /api/v1/datasets/estimate``: as ``ApiClient.estimate``."""
        return await self._send(self._core.estimate(request, fields))

    async def task_estimate(self, task_id: str) -> Estimate:
        """``GET /api/v1/tasks/{task_id}/estimate``: as ``ApiClient.task_estimate``."""
        return await self._send(self._core.task_estimate(task_id))

    async def status(self, task_id: str) -> TaskStatus:
        """``GET /tasks/{task_id}``: the job's status, with the dataset in ``result`` once completed."""
        return await self._send(self._core.status(task_id))

    async def cancel(self, task_id: str) -> TaskStatus:
        """``POST /tasks/{task_id}/revoke``: cancel a queued or running job (409 once it finished)."""
        return await self._send(self._core.cancel(task_id))

    async def delete(self, task_id: str) -> None:
        """``DELETE /api/v1/tasks/{task_id}``: as ``ApiClient.delete``."""
        await self._send(self._core.delete(task_id))

    @overload
    async def dataset(self, task_id: str, *, original: bool = False) -> Dataset: ...
    @overload
    async def dataset(self, task_id: str, format: ExportFormat, *, original: bool = False) -> bytes: ...
    async def dataset(
        self, task_id: str, format: ExportFormat | None = None, *, original: bool = False
    ) -> Dataset | bytes:
        """``GET /api/v1/datasets/{task_id}``: the dataset; with a ``format``, the export's bytes, for a file.

        The values are the reviewed ones unless ``original`` (the extraction's). 409 until the job completed.
        """
        if format is None:
            return await self._send(self._core.dataset(task_id, original))
        return await self._send(self._core.download(task_id, format, original))

    async def reprocess(self, task_id: str, request: ReprocessRequest | Mapping[str, object]) -> TaskAccepted:
        """``POST /api/v1/tasks/{task_id}/reprocess``: run a finished job again from one stage, as a new job."""
        return await self._send(self._core.reprocess(task_id, request))

    async def export(self, task_id: str, kind: ExportKind, format: str, *, original: bool = False) -> bytes:
        """``GET /api/v1/datasets/{task_id}/{kind}``: as ``ApiClient.export``."""
        return await self._send(self._core.export(task_id, kind, format, original))

    async def review(self, task_id: str, row_id: str, change: ReviewChange) -> DatasetRow:
        """``PATCH /api/v1/datasets/{task_id}/rows/{row_id}``: record one review decision; the row as reviewed."""
        return await self._send(self._core.review(task_id, row_id, change))

    async def wait(self, task_id: str) -> TaskStatus:
        """Follow the job's events to its end (completed, error or cancelled); its final status."""
        async for _ in self.follow_task(task_id):
            pass
        return await self.status(task_id)

    def follow_task(self, task_id: str, last_event_id: int | None = None) -> AsyncIterator[Event]:
        """Events of one task (``GET /sse/tasks/{task_id}``) after seq ``last_event_id``, to its terminal event."""
        return self._follow(self._core.task_events(task_id, last_event_id))

    def follow_client(self, client_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """Events of every task of ``client_id`` (``GET /sse/{client_id}``) as they happen; endless.

        ``last_event_id`` (``<task_id>:<seq>``) resumes after that event.
        """
        return self._follow(self._core.client_events(client_id, last_event_id))

    async def _follow(self, stream: _EventStream) -> AsyncIterator[Event]:
        while not stream.finished:
            await asyncio.sleep(stream.next_delay())
            try:
                async with aconnect_sse(
                    self.http, "GET", stream.path, headers=stream.headers, timeout=self._stream_timeout
                ) as source:
                    if source.response.is_error:
                        await source.response.aread()
                    stream.opened(source.response)
                    async for message in source.aiter_sse():
                        event = stream.receive(message.data)
                        if event is not None:
                            yield event
                        if stream.finished:
                            return
                stream.closed()
            except (httpx.TransportError, SSEError) as exc:
                stream.closed(exc)

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self.http.request(
                call.method, call.path, content=call.body, params=call.params, headers=call.headers
            )
        except httpx.HTTPError as exc:
            raise self._core.unreachable(exc) from None
        return self._core.answer(call, response)
