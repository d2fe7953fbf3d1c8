"""What a running flowbox holds: config, store, models, background tasks, and the live objects
its areas declared (``Area.state``). One per app."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, TypeVar

from .config import Config
from .db import Store
from .models import ModelRegistry

if TYPE_CHECKING:
    from .area import Area

log = logging.getLogger("flowbox")
T = TypeVar("T")


@dataclass
class Services:
    config: Config
    store: Store
    models: ModelRegistry
    areas: tuple[Area, ...] = ()
    tasks: set[asyncio.Task] = field(default_factory=set)
    _state: dict[type, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for area in self.areas:
            for factory in area.state:
                made = factory(self)
                if type(made) in self._state:  # found by type: one of each
                    raise TypeError(f"two areas keep a {type(made).__name__}")
                self._state[type(made)] = made

    def state(self, kind: type[T]) -> T:
        """The live object of this type an area keeps (``Area.state``): ``services.state(Hub)``."""
        return self._state[kind]

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
