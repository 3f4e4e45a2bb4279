"""Maps pipeline errors to HTTP responses whose message names the offending field."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.exceptions import TooManyRequestsException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import ExceptionHandlersMap, Scope, Send, WebSocketResponseBodyEvent, WebSocketResponseStartEvent

from pipeline.errors import JobConflict, JobNotFound
from pipeline.schema import InvalidRequest
from pipeline.store import ClientIdTaken


def _invalid(_: Request[object, object, State], exc: InvalidRequest) -> Response[dict[str, object]]:
    return Response({"status_code": 400, "detail": str(exc), "field": exc.field}, status_code=400)


def _taken(_: Request[object, object, State], exc: ClientIdTaken) -> Response[dict[str, object]]:
    return Response({"status_code": 403, "detail": str(exc), "field": exc.field}, status_code=403)


def _not_found(_: Request[object, object, State], exc: JobNotFound) -> Response[dict[str, object]]:
    return Response({"status_code": 404, "detail": f"no task with id {exc}"}, status_code=404)


def _conflict(_: Request[object, object, State], exc: JobConflict) -> Response[dict[str, object]]:
    return Response({"status_code": 409, "detail": str(exc)}, status_code=409)


def _too_large(request: Request[object, object, State], _: RequestEntityTooLarge) -> Response[dict[str, object]]:
    limit = request.route_handler.resolve_request_max_body_size()
    detail = f"request body too large: at most {limit} bytes"
    return Response({"status_code": 413, "detail": detail}, status_code=413)


def _too_many(_: Request[object, object, State], exc: TooManyRequestsException) -> Response[dict[str, object]]:
    headers = {name: str(value) for name, value in (exc.headers or {}).items()}
    retry_after = str(max(1, int(headers.get("RateLimit-Reset", "60"))))
    limit = headers.get("RateLimit-Limit", "")
    detail = f"too many requests: at most {limit} jobs a minute per API key (or address); retry in {retry_after} s"
    return Response(
        {"status_code": 429, "detail": detail}, status_code=429, headers={**headers, "Retry-After": retry_after}
    )


exception_handlers: ExceptionHandlersMap = {
    InvalidRequest: _invalid,
    ClientIdTaken: _taken,
    JobNotFound: _not_found,
    JobConflict: _conflict,
    RequestEntityTooLarge: _too_large,
    TooManyRequestsException: _too_many,
}


async def refuse_websocket(
    scope: Scope, send: Send, status: int, detail: str, *, field: str = "", headers: Mapping[str, str] | None = None
) -> None:
    """Refuse a WebSocket handshake with an HTTP error when the server can, else close with 4000 + status."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = {"status_code": status, "detail": detail, **({"field": field} if field else {})}
        extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
        start: WebSocketResponseStartEvent = {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *extra],
        }
        await send(start)
        end: WebSocketResponseBodyEvent = {
            "type": "websocket.http.response.body",
            "body": msgspec.json.encode(body),
            "more_body": False,
        }
        await send(end)
    else:
        await send({"type": "websocket.close", "code": 4000 + status, "reason": detail[:120]})
