"""Builds the Litestar app: the one place that wires config, store, models and every API surface."""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import AsyncIterator

from litestar import Litestar, get
from litestar.exceptions import HTTPException

from . import __version__
from .admin.console import openapi_config
from .apidoc import document_common
from .config import Config
from .cors import app_cors, bearer_cors
from .db import Store
from .errors import ApiError
from .logs import redact_logs
from .http import api_error_handler, http_exception_handler, internal_error_handler
from .middleware import body_deadline, header_deadline, rate_limit, request_log, setup_access_log
from .models import ModelRegistry
from .services import SHUTDOWN_HOOKS, STARTUP_HOOKS, Services

log = logging.getLogger("flowbox")

# Each module has ROUTES (a list of Litestar handlers) and may register startup hooks on import.
ROUTE_MODULES = ["flowbox.agents.api", "flowbox.chats.api", "flowbox.agents.usage_api", "flowbox.agents.callbacks", "flowbox.whatsapp.api", "flowbox.admin.api", "flowbox.messaging.api", "flowbox.knowledge.api", "flowbox.openai_compat.api"]


@get("/healthz", summary="Liveness check (no authentication)", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app(config: Config, *, preload_model: bool = True, models: ModelRegistry | None = None) -> Litestar:
    """``models``: a registry whose model is already loaded (``flowbox serve`` loads it first, so a
    bad model file is a one-line error before anything starts)."""
    setup_access_log(config.log_level)
    redact_logs()  # no key or socket token in a log line (uvicorn logs WebSocket URLs with their query)
    store = Store(config.db_path)
    models = models or ModelRegistry(config)
    services = Services(config=config, store=store, models=models)
    routes = [healthz]
    browser_paths: list[str] = []  # bearer-token APIs that pages on any site may call (see flowbox/cors.py)
    for name in ROUTE_MODULES:
        module = importlib.import_module(name)
        routes.extend(module.ROUTES)
        browser_paths.extend(getattr(module, "BROWSER_PATHS", ()))
    document_common([handler for handler in routes if hasattr(handler, "http_methods")])

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await store.open()
        try:
            log.info("store open at %s (sqlite-vec %s)", store.path, store.vec_version)
            if preload_model:
                # Load the default model before serving, so the first chat does not wait for it.
                await models.get("local")
            from .agents.chat import resume_async_runs

            await resume_async_runs(services)
            for hook in STARTUP_HOOKS:
                await hook(services)
            yield
        finally:  # also when startup fails: no thread may outlive the app
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
        openapi_config=openapi_config(__version__),  # rendered offline at /schema
        middleware=[request_log, bearer_cors(config, browser_paths), body_deadline(config.request_body_timeout_ms / 1000, config.request_body_min_rate),
                    rate_limit(config.rate_limit_per_minute, config.rate_limit_burst)],
        cors_config=app_cors(config),
        request_max_body_size=config.max_body_bytes,
        debug=False,
    )
    app.state.services = services
    return app


def uvicorn_options(config: Config) -> dict:
    """How uvicorn serves flowbox: one place for `flowbox serve` and the tests."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    proxies = ",".join(p.strip() for p in config.trusted_proxies.split(",") if p.strip())
    return {
        "host": config.host, "port": config.port, "log_level": config.log_level, "access_log": False,
        "timeout_graceful_shutdown": 10,
        "ssl_certfile": config.tls_cert or None, "ssl_keyfile": config.tls_key or None,
        "ws_max_size": 1 << 20,  # no client frame flowbox accepts is near this (uvicorn's default: 16 MiB)
        "http": header_deadline(AutoHTTPProtocol, config.request_header_timeout_ms / 1000),
        # uvicorn believes X-Forwarded-For from loopback by default: any local client could name any address
        "proxy_headers": bool(proxies), "forwarded_allow_ips": proxies or None,
    }
