"""A job's webhook deliveries: every attempt, its answer and the next try."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts import WebhookDeliveries
from pipeline.jobs import JobService


class WebhookController(Controller):
    """What became of a job's webhooks (another API key's jobs are unknown: 404)."""

    path = "/api/v1/tasks"

    @get("/{task_id:str}/webhooks", operation_id="getTaskWebhooks", sync_to_thread=True)
    def webhooks(
        self, task_id: FromPath[str], jobs: NamedDependency[JobService], owner: NamedDependency[str]
    ) -> WebhookDeliveries:
        """Every attempt at delivering the job's webhooks, oldest first: when, the answer or error, the next try."""
        return jobs.webhooks(task_id, owner)
