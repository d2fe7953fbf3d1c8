"""The agents area: the Agents API (agents, threads, chat, usage), async runs and their callbacks."""

from __future__ import annotations

from ..area import Area
from ..http import authenticated
from . import api, callbacks, chat, usage_api
from .cli import agents

AREA = Area(
    name="agents",
    routes=(authenticated([*api.HANDLERS, *usage_api.HANDLERS]),),  # every route acts for the caller's API key
    migrations=(callbacks.migrations,),  # its tables are in the core set, which came first
    commands=(agents,),
    on_startup=(chat.resume_async_runs, callbacks.queue_missed),
)
