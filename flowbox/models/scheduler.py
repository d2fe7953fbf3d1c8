"""A fair queue in front of a model that runs one generation at a time.

Waiting requests are grouped by key (the org); turns go round-robin across keys, so one busy
org cannot starve another. Waiting holds no thread: it is an asyncio future.

Room to wait is shared fairly too. While there is room anyone may wait; when ``max_waiting``
requests already wait, a newcomer whose org holds fewer of them than the org holding the most
takes the place of that org's newest request (which gets ``ModelBusy``, a 503, as it would have
on arrival). So one org's burst fills the queue only until others need it, and the 503s of a burst
fall on the org that made it ("longest queue drop", the classic fair buffer policy).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from typing import AsyncIterator

from ..errors import ModelBusy

FULL = "too many requests are waiting for the model"
DISPLACED = "too many requests of this organisation are waiting for the model"


class FairScheduler:
    def __init__(self, max_waiting: int = 64):
        self.max_waiting = max(1, max_waiting)
        self._queues: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self._waiting = 0
        self._busy = False

    @property
    def waiting(self) -> int:
        return self._waiting

    def waiting_for(self, key: str) -> int:
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    @property
    def busy(self) -> bool:
        return self._busy

    @contextlib.asynccontextmanager
    async def slot(self, key: str = "") -> AsyncIterator[None]:
        if self._busy or self._queues:
            if self._waiting >= self.max_waiting:
                self._make_room(key)  # raises ModelBusy when the newcomer's org already has its share
            future = asyncio.get_running_loop().create_future()
            self._queues.setdefault(key, deque()).append(future)
            self._waiting += 1
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.exception() is None:
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

    def _make_room(self, key: str) -> None:
        """The queue is full: displace the newest request of the org holding the most, unless the
        newcomer's org would then hold as many (then it is the newcomer that is refused)."""
        heaviest = max(self._queues, key=lambda k: len(self._queues[k]))
        if self.waiting_for(key) + 1 >= len(self._queues[heaviest]):
            raise ModelBusy(FULL)
        queue = self._queues[heaviest]
        victim = queue.pop()  # its newest: the request that would have been refused had it come last
        self._waiting -= 1
        if not queue:
            del self._queues[heaviest]
        victim.set_exception(ModelBusy(DISPLACED))

    def _remove(self, key: str, future: asyncio.Future) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        try:
            queue.remove(future)
        except ValueError:
            return  # already taken off (displaced)
        self._waiting -= 1
        if not queue:
            del self._queues[key]

    def _release(self) -> None:
        while self._queues:
            key, queue = next(iter(self._queues.items()))
            future = queue.popleft()
            self._waiting -= 1
            del self._queues[key]
            if queue:
                self._queues[key] = queue  # to the back of the round
            if not future.done():
                future.set_result(None)  # the slot passes straight to it; _busy stays True
                return
        self._busy = False
