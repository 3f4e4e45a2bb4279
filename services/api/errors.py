"""litminer's errors as HTTP answers: one table, used by HTTP handlers and WebSocket handshakes alike.

Every error body is ``{"status_code", "detail"}``, plus ``field`` when one input is to blame.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.exceptions import TooManyRequestsException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import ExceptionHandlersMap, Scope, Send, WebSocketResponseBodyEvent, WebSocketResponseStartEvent

from pipeline.errors import (
    ClientIdTaken,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    LitminerError,
    RowNotFound,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

#: each branch of the error tree and its status (the first match wins: subclasses come before their bases)
STATUSES: dict[type[LitminerError], int] = {
    InvalidRequest: 400,
    ClientIdTaken: 403,
    JobNotFound: 404,
    RowNotFound: 404,
    JobConflict: 409,
    StoreUnavailable: 503,
}


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What every error answer carries."""

    status_code: int
    detail: str
    field: str | None = None


def error_body(exc: LitminerError) -> ErrorBody:
    """The status and body of ``exc`` (500 for an error no branch of the table covers)."""
    status = next((code for kind, code in STATUSES.items() if isinstance(exc, kind)), 500)
    if status == 500:
        log.error("request failed: %r", exc)
        return ErrorBody(status_code=500, detail="Internal Server Error")
    field = exc.field if isinstance(exc, InvalidRequest | ClientIdTaken) else None
    return ErrorBody(status_code=status, detail=str(exc), field=field)


def _litminer(_: Request[object, object, State], exc: LitminerError) -> Response[ErrorBody]:
    body = error_body(exc)
    return Response(body, status_code=body.status_code)


def _too_large(request: Request[object, object, State], _: RequestEntityTooLarge) -> Response[ErrorBody]:
    limit = request.route_handler.resolve_request_max_body_size()
    return Response(
        ErrorBody(status_code=413, detail=f"request body too large: at most {limit} bytes"), status_code=413
    )


def _too_many(_: Request[object, object, State], exc: TooManyRequestsException) -> Response[ErrorBody]:
    headers = {name: str(value) for name, value in (exc.headers or {}).items()}
    retry_after = str(max(1, int(headers.get("RateLimit-Reset", "60"))))
    limit = headers.get("RateLimit-Limit", "")
    detail = f"too many requests: at most {limit} jobs a minute per API key (or address); retry in {retry_after} s"
    return Response(
        ErrorBody(status_code=429, detail=detail), status_code=429, headers={**headers, "Retry-After": retry_after}
    )


exception_handlers: ExceptionHandlersMap = {
    LitminerError: _litminer,
    RequestEntityTooLarge: _too_large,
    TooManyRequestsException: _too_many,
}


async def refuse_websocket(
    scope: Scope, send: Send, body: ErrorBody, *, headers: Mapping[str, str] | None = None
) -> None:
    """Refuse a WebSocket handshake with an HTTP error when the server can, else close with 4000 + status."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
        start: WebSocketResponseStartEvent = {
            "type": "websocket.http.response.start",
            "status": body.status_code,
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
        await send({"type": "websocket.close", "code": 4000 + body.status_code, "reason": body.detail[:120]})
