"""Liveness and readiness."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from contracts.ops import Readiness
from pipeline.jobs import JobService
from services.api.auth import PUBLIC


class HealthController(Controller):
    """Probes for orchestrators and load balancers."""

    @get("/health", operation_id="health", opt={PUBLIC: True})
    async def health(self) -> dict[str, str]:
        """The process is up (liveness: touches nothing else; needs no API key)."""
        return {"status": "ok"}

    @get("/ready", operation_id="ready", sync_to_thread=True)
    def ready(self, jobs: NamedDependency[JobService]) -> Response[Readiness]:
        """Jobs can run: Redis answers and at least one worker sent a heartbeat in the last 30 s (else 503)."""
        readiness = jobs.readiness()
        return Response(readiness, status_code=200 if readiness.status == "ready" else 503)
