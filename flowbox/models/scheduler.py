"""A fair queue in front of a model that runs one generation at a time.

Waiting requests are grouped by key (the org); turns go round-robin across keys, so one busy
org cannot starve another. Waiting holds no thread: it is an asyncio future.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from typing import AsyncIterator

from ..errors import ModelBusy


class FairScheduler:
    def __init__(self, max_waiting: int = 64):
        self.max_waiting = max_waiting
        self._queues: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self._busy = False

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def busy(self) -> bool:
        return self._busy

    @contextlib.asynccontextmanager
    async def slot(self, key: str = "") -> AsyncIterator[None]:
        if self._busy or self._queues:
            if self.waiting >= self.max_waiting:
                raise ModelBusy("too many requests are waiting for the model")
            future = asyncio.get_running_loop().create_future()
            self._queues.setdefault(key, deque()).append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # we were handed the slot as we gave up: pass it on
                else:
                    self._remove(key, future)
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _remove(self, key: str, future: asyncio.Future) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(future)
            if not queue:
                del self._queues[key]

    def _release(self) -> None:
        while self._queues:
            key, queue = next(iter(self._queues.items()))
            future = queue.popleft()
            del self._queues[key]
            if queue:
                self._queues[key] = queue  # to the back of the round
            if not future.done():
                future.set_result(None)  # the slot passes straight to it; _busy stays True
                return
        self._busy = False
