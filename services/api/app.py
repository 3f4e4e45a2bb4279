"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from pipeline.runtime import Pipeline
from pipeline.settings import Settings
from services.api.datasets import DatasetController
from services.api.errors import exception_handlers
from services.api.health import HealthController
from services.api.live import LiveEvents
from services.api.metrics import Metrics
from services.api.ops import OpsController
from services.api.streams import stream_handlers
from services.api.tasks import ReprocessController, TaskController
from services.api.web import web_handlers


@get("/metrics", operation_id="metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics(live: NamedDependency[LiveEvents]) -> Response[bytes]:
    """Prometheus metrics: requests by route, open connections, events published / delivered / dropped."""
    published = await live.redis.get(live.keys.events_published)
    live.metrics.published.value = float(published or 0)
    # Litestar's request metrics and the process collectors live in the default registry; ours per app.
    body = generate_latest(REGISTRY) + generate_latest(live.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


#: request count, latency and in-progress gauges by route template (``/tasks/{task_id:str}``, not ids)
_requests = PrometheusConfig(app_name="litminer", prefix="litminer_http", group_path=True, exclude=["/metrics"])


def create_app(settings: Settings) -> Litestar:
    """The litminer API for ``settings``; Redis connections live as long as the app."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pipeline = Pipeline(settings)
        app.state.live = LiveEvents(settings, Metrics())
        await app.state.live.start()
        try:
            yield
        finally:
            await app.state.live.stop()
            app.state.pipeline.close()

    def provide_pipeline(state: State) -> Pipeline:
        pipeline: Pipeline = state.pipeline
        return pipeline

    def provide_live(state: State) -> LiveEvents:
        live: LiveEvents = state.live
        return live

    return Litestar(
        route_handlers=[
            DatasetController,
            TaskController,
            ReprocessController,
            HealthController,
            OpsController,
            metrics,
            *stream_handlers,
            *web_handlers,
        ],
        dependencies={
            "pipeline": Provide(provide_pipeline, sync_to_thread=False),
            "live": Provide(provide_live, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,
        middleware=[_requests.middleware],
        logging_config=None,  # the process's logging is configure_logging's (text or JSON, with task context)
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="litminer", version="0.1.0", path="/schema"),
    )
