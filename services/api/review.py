"""Reviewing a dataset: approve, reject or edit a cell, exclude or restore a row (owners only)."""

from __future__ import annotations

import anyio.to_thread
from litestar import Controller, Request, patch
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts import DatasetRow
from pipeline.jobs import JobService
from pipeline.schema import check_task_id
from services.api.openapi import REVIEW_BODY, REVIEW_RESPONSES
from services.api.requests import parse_review_change, read_body


class ReviewController(Controller):
    """One review decision per request, kept in the dataset's audit trail."""

    path = "/api/v1/datasets"

    @patch(
        "/{task_id:str}/rows/{row_id:str}",
        operation_id="reviewRow",
        dependencies=REVIEW_BODY,
        responses=REVIEW_RESPONSES,
    )
    async def review(
        self,
        task_id: FromPath[str],
        row_id: FromPath[str],
        request: Request[object, object, State],
        jobs: NamedDependency[JobService],
        owner: NamedDependency[str],
    ) -> DatasetRow:
        """Record a decision on row ``row_id`` and return the row as reviewed.

        Body: ``{"action": "approve" | "reject" | "edit", "field": …, "value": … (edit only)}`` for a cell, or
        ``{"action": "exclude" | "restore"}`` for the row; optional ``reason`` and ``reviewer``. The dataset's
        downloads then show the reviewed values; ``?original=true`` gives the extraction as it was.
        """
        check_task_id(task_id)
        change = parse_review_change(await read_body(request))
        return await anyio.to_thread.run_sync(lambda: jobs.review(task_id, row_id, change, owner=owner))
