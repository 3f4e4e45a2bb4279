"""services/api/errors.py: the one table from litminer's errors to HTTP answers."""

from __future__ import annotations

import pytest

from pipeline.errors import (
    ClientIdTaken,
    InvalidRequest,
    JobConflict,
    JobFinished,
    JobNotFound,
    LitminerError,
    PermanentError,
    SettingsError,
    SourceError,
    StoreUnavailable,
)
from services.api.errors import error_body


@pytest.mark.parametrize(
    ("error", "status", "field"),
    [
        (InvalidRequest("rows", "must be between 1 and 100, got 0"), 400, "rows"),
        (ClientIdTaken("c1"), 403, "client_id"),
        (JobNotFound("5c87…"), 404, None),
        (JobConflict("job x is still processing"), 409, None),
        (JobFinished("job x already completed"), 409, None),  # a subclass takes its base's status
        (StoreUnavailable("Connection refused"), 503, None),
    ],
)
def test_each_branch_of_the_error_tree_has_its_status(error: LitminerError, status: int, field: str | None) -> None:
    body = error_body(error)
    assert (body.status_code, body.field) == (status, field)
    assert body.detail == str(error)


@pytest.mark.parametrize(
    "error", [PermanentError("no documents"), SourceError("crossref: HTTP 500"), SettingsError("x")]
)
def test_an_error_no_request_should_see_is_a_plain_500(error: LitminerError) -> None:
    body = error_body(error)
    assert body.status_code == 500 and body.detail == "Internal Server Error" and body.field is None


def test_every_litminer_error_derives_from_one_base() -> None:
    import pipeline.errors as errors

    kinds = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(kinds) >= 12 and all(issubclass(kind, LitminerError) for kind in kinds)
