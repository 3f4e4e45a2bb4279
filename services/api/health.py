"""Liveness and readiness."""

from __future__ import annotations

import redis
from litestar import Controller, Response, get
from litestar.di import NamedDependency

from pipeline.runtime import Pipeline
from pipeline.workers import LIVE_S, live_workers
from services.api.auth import PUBLIC


class HealthController(Controller):
    """Probes for orchestrators and load balancers."""

    @get("/health", operation_id="health", opt={PUBLIC: True})
    async def health(self) -> dict[str, str]:
        """The process is up (liveness: touches nothing else; needs no API key)."""
        return {"status": "ok"}

    @get("/ready", operation_id="ready", sync_to_thread=True)
    def ready(self, pipeline: NamedDependency[Pipeline]) -> Response[dict[str, object]]:
        """Jobs can run: Redis answers and at least one worker sent a heartbeat in the last 30 s (else 503)."""
        try:
            workers = live_workers(pipeline.client, pipeline.keys)
        except redis.RedisError as exc:
            return Response({"status": "unavailable", "detail": f"redis: {exc}", "workers": 0}, status_code=503)
        if not workers:
            detail = f"no worker heartbeat in the last {LIVE_S:g} s"
            return Response({"status": "unavailable", "detail": detail, "workers": 0}, status_code=503)
        return Response({"status": "ready", "workers": len(workers)})
