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
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
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
from pipeline.store import REDIS_ERRORS

log = logging.getLogger(__name__)

#: seconds a client is told to wait (``Retry-After``) when the job store does not answer
STORE_RETRY_AFTER_S = 5
_RETRY_LATER = {"Retry-After": str(STORE_RETRY_AFTER_S)}
#: what handlers meet that this module answers: litminer's errors, by the table, and Redis's, as 503
ANSWERED: tuple[type[Exception], ...] = (LitminerError, *REDIS_ERRORS)

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


def store_error_body(exc: Exception, request_line: str) -> ErrorBody:
    """The 503 of a Redis error met while serving ``request_line`` (method and path, never the query: it may
    hold an API key), which is logged as one ERROR line."""
    log.error("%s: the job store (Redis) is not answering: %s: %s", request_line, type(exc).__name__, exc)
    detail = f"the job store (Redis) is not answering: {type(exc).__name__}; retry in {STORE_RETRY_AFTER_S} s"
    return ErrorBody(status_code=503, detail=detail)


def _litminer(_: Request[object, object, State], exc: LitminerError) -> Response[ErrorBody]:
    body = error_body(exc)
    return Response(body, status_code=body.status_code, headers=_RETRY_LATER if body.status_code == 503 else None)


def _redis(request: Request[object, object, State], exc: Exception) -> Response[ErrorBody]:
    body = store_error_body(exc, f"{request.method} {request.url.path}")
    return Response(body, status_code=503, headers=_RETRY_LATER)


def _unexpected(request: Request[object, object, State], exc: Exception) -> Response[ErrorBody]:
    # Litestar logs nothing with logging_config=None, and uvicorn never sees the exception: say it here.
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return Response(ErrorBody(status_code=500, detail="Internal Server Error"), status_code=500)


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
    **dict.fromkeys(REDIS_ERRORS, _redis),
    RequestEntityTooLarge: _too_large,
    TooManyRequestsException: _too_many,
    HTTP_500_INTERNAL_SERVER_ERROR: _unexpected,  # any other exception (Litestar's HTTP errors keep their own)
}


async def refuse_websocket_for(scope: Scope, send: Send, exc: Exception) -> None:
    """Refuse a WebSocket handshake that met ``exc`` (one of ``ANSWERED``) as an HTTP request would be answered."""
    body = error_body(exc) if isinstance(exc, LitminerError) else store_error_body(exc, f"WebSocket {scope['path']}")
    await refuse_websocket(scope, send, body, headers=_RETRY_LATER if body.status_code == 503 else None)


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
