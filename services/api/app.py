"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from pipeline.runtime import Pipeline
from pipeline.settings import Settings
from services.api.datasets import DatasetController
from services.api.errors import exception_handlers
from services.api.health import HealthController
from services.api.tasks import TaskController


def create_app(settings: Settings) -> Litestar:
    """The litminer API for ``settings``; Redis connections live as long as the app."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pipeline = Pipeline(settings)
        try:
            yield
        finally:
            app.state.pipeline.close()

    def provide_pipeline(state: State) -> Pipeline:
        pipeline: Pipeline = state.pipeline
        return pipeline

    return Litestar(
        route_handlers=[DatasetController, TaskController, HealthController],
        dependencies={"pipeline": Provide(provide_pipeline, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="litminer", version="0.1.0", path="/schema"),
    )
