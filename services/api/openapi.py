"""What the OpenAPI document says about the routes that read their own bodies, and how to send an API key.

``POST /api/v1/datasets/generate`` and ``POST /api/v1/tasks/{task_id}/reprocess`` accept JSON or form
fields, so they read the body themselves (``services/api/requests.py``) instead of taking a ``data`` argument.
Litestar documents a request body from a ``data`` argument of the handler or of one of its dependencies: the
never-called dependencies below give the document the bodies' schemas, so clients (and schemathesis) see them.
"""

from __future__ import annotations

from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from contracts import GenerateRequest, ReprocessRequest, ReviewChange
from services.api.errors import ErrorBody

#: the ways to send an API key (``LITMINER_API_KEYS``): any one of them will do
SECURITY_SCHEMES = Components(
    security_schemes={
        "bearer": SecurityScheme(type="http", scheme="bearer", description="Authorization: Bearer <key>"),
        "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
        "token": SecurityScheme(
            type="apiKey", name="token", security_scheme_in="query", description="for EventSource and WebSocket"
        ),
    }
)
SECURITY: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}, {"token": []}]


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


_STARTS_JOB_ERRORS = {
    400: _error("the body is malformed or a field is invalid; `field` names it"),
    401: _error("the API needs a key (LITMINER_API_KEYS is set) and none or a wrong one was sent"),
    403: _error("`client_id` belongs to another API key"),
    413: _error("the body is larger than LITMINER_MAX_BODY_BYTES"),
    429: _error("more jobs a minute than LITMINER_RATE_LIMIT for this key (see Retry-After)"),
}


def _generate_body(data: GenerateRequest) -> None:
    """Never called: documents the generate body (also accepted form-urlencoded, with
    ``field_definitions_json_str`` holding the field definitions as a JSON string)."""


def _reprocess_body(data: ReprocessRequest) -> None:
    """Never called: documents the reprocess body."""


def _review_body(data: ReviewChange) -> None:
    """Never called: documents the review body."""


#: the dependencies and responses of the routes that take a body
GENERATE_BODY = {"documented_body": Provide(_generate_body, sync_to_thread=False)}
GENERATE_RESPONSES = _STARTS_JOB_ERRORS
REPROCESS_BODY = {"documented_body": Provide(_reprocess_body, sync_to_thread=False)}
REPROCESS_RESPONSES = {
    **_STARTS_JOB_ERRORS,
    404: _error("no task with this id (or another API key's)"),
    409: _error("the parent still runs, or the outputs to reuse are gone"),
}
REVIEW_BODY = {"documented_body": Provide(_review_body, sync_to_thread=False)}
DELETE_RESPONSES = {
    400: _error("the task id is malformed"),
    401: _error("the API needs a key (LITMINER_API_KEYS is set) and none or a wrong one was sent"),
    404: _error("no task with this id (or another API key's)"),
    503: _error("Redis or the archive (PostgreSQL) is not answering; nothing was deleted from what did not answer"),
}

REVIEW_RESPONSES = {
    400: _error("the body is malformed, or the decision does not fit the row; `field` names what is wrong"),
    401: _error("the API needs a key (LITMINER_API_KEYS is set) and none or a wrong one was sent"),
    404: _error("no task with this id (or another API key's), or no row with this id"),
    409: _error("the job has not completed: there is no dataset to review yet"),
}
