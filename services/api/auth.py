"""API keys, what belongs to whom, and the rate limit of requests that start jobs.

With ``LITMINER_API_KEYS`` set, every route but ``/health`` and the page shells (``/``, ``/ops``, ``/static``)
needs one of the keys, sent as ``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or ``?token=<key>`` (for
EventSource and WebSocket, which cannot set headers). A caller is known by its owner id, a short hash of its
key: the jobs it starts and the client ids it uses are its own, and another key sees them as unknown (404) or
taken (403). Without keys the owner id is "" and everything is everyone's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.types import ASGIApp, Receive, Scope, Send

from services.api.errors import ErrorBody, refuse_websocket

#: route ``opt`` key: anyone may call the route (a page shell or a probe, no data behind it)
PUBLIC = "public"
#: route ``opt`` key: the route starts jobs, so its requests count against the rate limit
STARTS_JOBS = "starts_jobs"
#: name of the store (in Redis, shared by every API process) that counts requests per caller
RATE_LIMIT_STORE = "rate_limit"

_HOW = "send it as 'Authorization: Bearer <key>', as 'X-API-Key: <key>', or as the query parameter ?token=<key>"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def owner_id(key: str) -> str:
    """The id a key's jobs and client ids are stored under: 16 hex digits of its SHA-256, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The key a request sends: its Bearer token, else its ``X-API-Key`` header, else its ``token`` parameter."""
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return connection.headers.get("x-api-key") or connection.query_params.get("token") or ""


class ApiKeyAuth(AbstractAuthenticationMiddleware):
    """Lets through requests carrying one of ``keys``; sets ``scope["user"]`` to the caller's owner id.

    HTTP requests without a valid key get a 401 (Litestar's authentication); WebSocket handshakes are
    refused with an HTTP 401 too, or closed with 4401 where the server cannot send an HTTP response.
    Routes with ``opt={PUBLIC: True}`` and CORS preflights are let through.
    """

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        super().__init__(app, exclude_from_auth_key=PUBLIC, scopes={ScopeType.HTTP})
        self.owners = [(_digest(key), owner_id(key)) for key in keys]

    def owner(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
        """The owner id of the key the connection sends, None when it sends none or an unknown one."""
        presented = _digest(presented_key(connection))
        found = None
        for key, owner in self.owners:  # digests of equal length, compared in constant time, every one
            if hmac.compare_digest(presented, key):
                found = owner
        return found

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        owner = self.owner(connection)
        if owner is None:
            raise NotAuthorizedException(detail=_refusal(connection), headers=_CHALLENGE)
        return AuthenticationResult(user=owner, auth=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
            owner = self.owner(connection)
            if owner is None:
                await refuse_websocket(
                    scope, send, ErrorBody(status_code=401, detail=_refusal(connection)), headers=_CHALLENGE
                )
                return
            scope["user"] = owner
        await super().__call__(scope, receive, send)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _refusal(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    if presented_key(connection):
        return f"this API key is not valid here; {_HOW}"
    return f"this API needs a key: {_HOW}"


def provide_owner(scope: Scope) -> str:
    """The caller's owner id ("" when the API needs no key)."""
    return str(scope.get("user") or "")


def _rate_limited_caller(request: Request[Any, Any, Any]) -> str:
    """Whom the rate limit counts: the API key (by owner id), else the client's address."""
    return str(request.scope.get("user") or get_remote_address(request))


def _starts_jobs(request: Request[Any, Any, Any]) -> bool:
    return bool(request.route_handler.opt.get(STARTS_JOBS))


def rate_limit_config(per_minute: int) -> RateLimitConfig:
    """At most ``per_minute`` requests a minute to the routes that start jobs, per API key (per address without)."""
    return RateLimitConfig(
        rate_limit=("minute", per_minute),
        identifier_for_request=_rate_limited_caller,
        check_throttle_handler=_starts_jobs,
        store=RATE_LIMIT_STORE,
    )
