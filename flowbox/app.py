"""Builds the Litestar app: the one place that wires config, store, models and every API surface."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from typing import AsyncIterator

from litestar import Litestar, get
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from . import __version__
from .config import Config
from .db import Store
from .errors import ApiError
from .http import api_error_handler, http_exception_handler, internal_error_handler
from .models import ModelRegistry
from .services import SHUTDOWN_HOOKS, STARTUP_HOOKS, Services

log = logging.getLogger("flowbox")

# Each module has ROUTES (a list of Litestar handlers) and may register startup hooks on import.
ROUTE_MODULES = ["flowbox.agents.api"]


@get("/healthz", summary="Liveness check (no authentication)", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app(config: Config, *, preload_model: bool = True) -> Litestar:
    store = Store(config.db_path)
    models = ModelRegistry(config)
    services = Services(config=config, store=store, models=models)
    routes = [healthz]
    for name in ROUTE_MODULES:
        routes.extend(importlib.import_module(name).ROUTES)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await store.open()
        log.info("store open at %s (sqlite-vec %s)", store.path, store.vec_version)
        if preload_model:
            # Warm the default model in the background; requests that need it wait for it.
            services.spawn(models.get("local"), name="preload-model")
        from .agents.chat import resume_async_runs

        await resume_async_runs(services)
        for hook in STARTUP_HOOKS:
            await hook(services)
        try:
            yield
        finally:
            for hook in SHUTDOWN_HOOKS:
                with contextlib.suppress(Exception):
                    await hook(services)
            await services.stop_tasks()
            await models.aclose()
            await store.close()

    app = Litestar(
        route_handlers=routes,
        lifespan=[lifespan],
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_exception_handler,
            Exception: internal_error_handler,
        },
        openapi_config=OpenAPIConfig(title="flowbox", version=__version__, path="/schema"),
        request_max_body_size=config.max_body_bytes,
        debug=False,
    )
    app.state.services = services
    return app


async def wait_ready(services: Services) -> None:
    """For tests and benchmarks: the default model is loaded."""
    await services.models.get("local")
    await asyncio.sleep(0)
