"""What an area of flowbox (agents, chats, messaging, ...) brings to the app, declared once.

Each area package has one ``AREA`` in its ``area.py``; ``app.AREAS`` lists them, and the app, the
migrations, the ``flowbox`` command and the executable's build all read that tuple. Nothing
registers itself on import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:
    import click
    from sqlite_utils.migrations import Migrations

    from .agents.tools import ContextProvider, ToolProvider
    from .services import Services
    from .surfaces import Surface

Hook = Callable[["Services"], Awaitable[None]]


@dataclass(frozen=True)
class Area:
    name: str
    # Litestar route handlers and Routers: the routes that act for a caller in a Router that
    # authenticates as the API does (``http.authenticated``), public ones beside it.
    routes: tuple[Any, ...] = ()
    # Migration sets, applied in the order of the areas, then of this tuple. A set's name is stored
    # in each database (``_sqlite_migrations``): it never changes.
    migrations: tuple[Migrations, ...] = ()
    # Commands and command groups of the ``flowbox`` command.
    commands: tuple[click.Command, ...] = ()
    # The live objects the area keeps for a running app (socket registries, caches, workers), each
    # made once when the app is made by ``factory(services)``, and found by its type:
    # ``services.state(Hub)``.
    state: tuple[Callable[[Services], Any], ...] = ()
    # Run after the store opens, in the order of the areas; at shutdown, in the reverse order.
    on_startup: tuple[Hook, ...] = ()
    on_shutdown: tuple[Hook, ...] = ()
    # What the area gives agents: tools for an agent, and context retrieved before it answers.
    tool_providers: tuple[ToolProvider, ...] = ()
    context_providers: tuple[ContextProvider, ...] = ()
    # Bearer-token API paths that pages on any site may call (see flowbox/cors.py).
    browser_paths: tuple[str, ...] = ()
    # The error shape of the area's paths, where it is not the common ``{"error", "message"}``
    # (see flowbox/surfaces.py).
    errors: Surface | None = None
