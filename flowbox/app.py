"""Builds the Litestar app: the one place that wires config, store, models and every area (``AREAS``)."""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

from litestar import Litestar

from . import __version__, core, metrics, warmup
from .admin import area as admin
from .admin.console import openapi_config
from .agents import area as agents
from .apidoc import document_common
from .area import Area
from .chats import area as chats
from .config import Config
from .cors import app_cors, bearer_cors
from .db import Store
from .knowledge import area as knowledge
from .logs import app_logging, redact_logs
from .messaging import area as messaging
from .middleware import body_deadline, header_deadline, rate_limit, request_log, setup_access_log
from .models import ModelRegistry
from .openai_compat import area as openai_compat
from .services import Services
from .surfaces import Surfaces
from .whatsapp import area as whatsapp

log = logging.getLogger("flowbox")

# Everything flowbox is. The order is the order of migrations and startup (shutdown: reversed):
# the core first, the agents before the areas that use them.
AREAS: tuple[Area, ...] = (
    core.AREA, agents.AREA, chats.AREA, whatsapp.AREA, messaging.AREA, knowledge.AREA, admin.AREA, openai_compat.AREA,
)


def create_app(config: Config, *, preload_model: bool = True, models: ModelRegistry | None = None) -> Litestar:
    """``models``: a registry whose model is already loaded (``flowbox serve`` loads it first, so a
    bad model file is a one-line error before anything starts)."""
    setup_access_log(config.log_level)
    redact_logs()  # no key or socket token in a log line (uvicorn logs WebSocket URLs with their query)
    store = Store(config.db_path, checkpoints=not config.replicate_to)  # Litestream checkpoints (replication.py)
    models = models or ModelRegistry(config)
    services = Services(config=config, store=store, models=models, areas=AREAS)
    routes = [route for area in AREAS for route in area.routes]
    if config.metrics_key:
        routes.append(metrics.metrics_endpoint)
    browser_paths = [path for area in AREAS for path in area.browser_paths]
    surfaces = Surfaces(area.errors for area in AREAS if area.errors)
    document_common(routes, surfaces.documented_error)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await store.open()
        try:
            log.info("store open at %s (sqlite-vec %s)", store.path, store.vec_version)
            if preload_model:
                # Load the default model before serving, so the first chat does not wait for it.
                await models.get("local")
            for area in AREAS:
                for hook in area.on_startup:
                    await hook(services)
            warming = warmup.start(services)  # in the background: serving starts now
            yield
            warming.cancel()  # before the embedder closes under it
        finally:  # also when startup fails: no thread may outlive the app
            for area in reversed(AREAS):
                for hook in area.on_shutdown:
                    with contextlib.suppress(Exception):
                        await hook(services)
            await services.stop_tasks()
            await models.aclose()
            await store.close()

    app = Litestar(
        route_handlers=routes,
        lifespan=[lifespan],
        exception_handlers=surfaces.exception_handlers(),  # each error in the shape of the surface it leaves by
        openapi_config=openapi_config(__version__),  # rendered offline at /schema
        middleware=[request_log(services.state(metrics.Metrics).http, fields=config.log_format == "json"), bearer_cors(config, browser_paths),
                    body_deadline(config.request_body_timeout_ms / 1000, config.request_body_min_rate, surfaces.rendered),
                    rate_limit(config.rate_limit_per_minute, config.rate_limit_burst, surfaces.rendered)],
        cors_config=app_cors(config),
        request_max_body_size=config.max_body_bytes,
        debug=False,
        **app_logging(config.log_format),
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
        # json: uvicorn's own lines go to the root logger, which writes JSON (logs.setup_process_log)
        **({"log_config": None} if config.log_format == "json" else {}),
    }
