"""The Litestar application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from litestar import Litestar, Response, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig
from litestar.stores.base import Store
from litestar.stores.redis import RedisStore
from litestar.types import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from pipeline.archive import DurableJobService
from pipeline.jobs import JobService
from pipeline.settings import Settings
from pipeline.store import connect_async, connections
from pipeline.version import VERSION
from services.api.auth import RATE_LIMIT_STORE, ApiKeyAuth, provide_owner, rate_limit_config
from services.api.datasets import DatasetController
from services.api.errors import exception_handlers
from services.api.estimate import EstimateController
from services.api.health import HealthController
from services.api.live import LiveEvents
from services.api.metrics import Metrics
from services.api.openapi import SECURITY, SECURITY_SCHEMES
from services.api.ops import OpsController
from services.api.review import ReviewController
from services.api.sources import SourcesController
from services.api.streams import stream_handlers
from services.api.tasks import ReprocessController, TaskController
from services.api.web import web_handlers
from services.api.webhooks import WebhookController

log = logging.getLogger(__name__)

#: the request headers a browser on another origin (LITMINER_CORS_ORIGINS) may send
CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"]


@get("/metrics", operation_id="metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics(live: NamedDependency[LiveEvents]) -> Response[bytes]:
    """Prometheus metrics: requests by route, open connections, events published / delivered / dropped."""
    live.metrics.published.value = float(await live.events.published())
    # Litestar's request metrics and the process collectors live in the default registry; ours per app.
    body = generate_latest(REGISTRY) + generate_latest(live.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


#: request count, latency and in-progress gauges by route template (``/tasks/{task_id:str}``, not ids)
_requests = PrometheusConfig(app_name="litminer", prefix="litminer_http", group_path=True, exclude=["/metrics"])


def create_app(
    settings: Settings,
    *,
    sources: Collection[str] | None = None,
    extractors: Collection[str] | None = None,
) -> Litestar:
    """The litminer API for ``settings``; Redis connections live as long as the app.

    ``sources`` and ``extractors`` name what the workers can use when it is not what the settings install
    (as in ``JobService``): for benchmarks and embedding.
    """
    middleware: list[Middleware] = [_requests.middleware]
    if settings.api_keys:
        middleware.append(DefineMiddleware(ApiKeyAuth, keys=settings.api_keys))
    jobs = DurableJobService(settings, sources=sources, extractors=extractors)  # reads the archive, when there is one
    stores: dict[str, Store] = {}
    limiter_redis = None
    if settings.rate_limit_per_minute:  # counted in Redis, so every API process shares the limit
        middleware.append(rate_limit_config(settings.rate_limit_per_minute).middleware)
        limiter_redis = connect_async(settings)
        stores[RATE_LIMIT_STORE] = RedisStore(limiter_redis, namespace=jobs.rate_limit_namespace)
    cors = None
    if settings.cors_origins:
        cors = CORSConfig(
            allow_origins=list(settings.cors_origins), allow_headers=CORS_HEADERS, expose_headers=["Retry-After"]
        )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.jobs = jobs
        app.state.live = LiveEvents(settings, Metrics())
        await app.state.live.start()
        try:
            yield
        finally:
            await app.state.live.stop()
            jobs.close()
            if limiter_redis is not None:
                await connections.aclose(limiter_redis)  # its Sentinel connections too

    def provide_jobs(state: State) -> JobService:
        jobs: JobService = state.jobs
        return jobs

    def provide_live(state: State) -> LiveEvents:
        live: LiveEvents = state.live
        return live

    return Litestar(
        route_handlers=[
            DatasetController,
            EstimateController,
            ReviewController,
            TaskController,
            ReprocessController,
            WebhookController,
            HealthController,
            OpsController,
            SourcesController,
            metrics,
            *stream_handlers,
            *web_handlers,
        ],
        dependencies={
            "jobs": Provide(provide_jobs, sync_to_thread=False),
            "live": Provide(provide_live, sync_to_thread=False),
            "owner": Provide(provide_owner, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,
        middleware=middleware,
        stores=stores,
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors,
        logging_config=None,  # the process's logging is configure_logging's (text or JSON, with task context)
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="litminer",
            version=VERSION,
            path="/schema",
            components=SECURITY_SCHEMES,
            security=SECURITY if settings.api_keys else None,
        ),
    )
