"""Cost estimates: start one (``POST /api/v1/datasets/estimate``) and read it (``GET /api/v1/tasks/{id}/estimate``)."""

from __future__ import annotations

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts import Estimate, TaskAccepted
from pipeline.jobs import JobService
from services.api.auth import STARTS_JOBS
from services.api.datasets import accepted
from services.api.openapi import GENERATE_BODY, GENERATE_RESPONSES
from services.api.requests import parse_generate_request, read_body


class EstimateController(Controller):
    """What a dataset would cost: a job that searches as for a dataset, then counts extraction's calls and tokens
    instead of making them."""

    path = "/api/v1"

    @post(
        "/datasets/estimate",
        status_code=202,
        operation_id="estimateDataset",
        opt={STARTS_JOBS: True},
        dependencies=GENERATE_BODY,
        responses=GENERATE_RESPONSES,
    )
    async def estimate(
        self, request: Request[object, object, State], jobs: NamedDependency[JobService], owner: NamedDependency[str]
    ) -> TaskAccepted:
        """Take a generate request's body and queue an estimate job; follow it like any job. No LLM is called.

        Once it completed, ``GET /api/v1/tasks/{task_id}/estimate`` has the estimate, and
        ``POST /api/v1/tasks/{task_id}/reprocess`` with ``{"from_stage": "extraction"}`` runs it for real,
        reusing its search.
        """
        generate = parse_generate_request(await read_body(request))
        return accepted(await anyio.to_thread.run_sync(lambda: jobs.estimate(generate, owner=owner)))

    @get("/tasks/{task_id:str}/estimate", operation_id="getEstimate", sync_to_thread=True)
    def get_estimate(
        self, task_id: FromPath[str], jobs: NamedDependency[JobService], owner: NamedDependency[str]
    ) -> Estimate:
        """The estimate: LLM calls, prompt and completion tokens, money with prices configured, the budget (404 for
        unknown tasks; 409 until it completed, and for a task that is no estimate)."""
        return jobs.estimate_of(task_id, owner)
