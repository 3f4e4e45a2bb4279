"""Liveness and readiness."""

from __future__ import annotations

import redis
from litestar import Controller, Response, get
from litestar.di import NamedDependency

from pipeline.runtime import Pipeline


class HealthController(Controller):
    """Probes for orchestrators and load balancers."""

    @get("/health", operation_id="health")
    async def health(self) -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/ready", operation_id="ready", sync_to_thread=True)
    def ready(self, pipeline: NamedDependency[Pipeline]) -> Response[dict[str, str]]:
        """Redis answers: the API can accept jobs."""
        try:
            pipeline.client.ping()
        except redis.RedisError as exc:
            return Response({"status": "unavailable", "detail": f"redis: {exc}"}, status_code=503)
        return Response({"status": "ready"})
