"""What a running flowbox holds: config, store, models, background tasks. One per app."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .config import Config
from .db import Store
from .models import ModelRegistry

log = logging.getLogger("flowbox")


@dataclass
class Services:
    config: Config
    store: Store
    models: ModelRegistry
    tasks: set[asyncio.Task] = field(default_factory=set)
    # Area packages keep their own live objects here (an embedder, socket hubs, ...).
    extras: dict[str, Any] = field(default_factory=dict)

    def spawn(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task:
        """Background work that must not be garbage-collected mid-flight and is awaited at shutdown."""
        task = asyncio.ensure_future(coro)
        task.set_name(name or "flowbox-task")
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed: %r", task.get_name(), task.exception())

    async def stop_tasks(self, timeout: float = 5.0) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


# Hooks other areas add to: run at startup (after the store opens) and at shutdown.
StartupHook = Callable[[Services], Awaitable[None]]
STARTUP_HOOKS: list[StartupHook] = []
SHUTDOWN_HOOKS: list[StartupHook] = []
