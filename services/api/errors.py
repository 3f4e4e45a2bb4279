"""Maps pipeline errors to HTTP responses whose message names the offending field."""

from __future__ import annotations

from litestar import Request, Response
from litestar.datastructures import State
from litestar.types import ExceptionHandlersMap

from pipeline.errors import JobConflict, JobNotFound
from pipeline.schema import InvalidRequest


def _invalid(_: Request[object, object, State], exc: InvalidRequest) -> Response[dict[str, object]]:
    return Response({"status_code": 400, "detail": str(exc), "field": exc.field}, status_code=400)


def _not_found(_: Request[object, object, State], exc: JobNotFound) -> Response[dict[str, object]]:
    return Response({"status_code": 404, "detail": f"no task with id {exc}"}, status_code=404)


def _conflict(_: Request[object, object, State], exc: JobConflict) -> Response[dict[str, object]]:
    return Response({"status_code": 409, "detail": str(exc)}, status_code=409)


exception_handlers: ExceptionHandlersMap = {
    InvalidRequest: _invalid,
    JobNotFound: _not_found,
    JobConflict: _conflict,
}
