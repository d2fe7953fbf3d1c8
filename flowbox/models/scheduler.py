"""A fair queue in front of a model that runs ``slots`` generations at a time (the local model
decodes them together in one batch).

Waiting requests are grouped by key (the org); turns go round-robin across keys, so one busy
org cannot starve another. Waiting holds no thread: it is an asyncio future. An org may also be
capped (``max_per_key``): its requests beyond the cap wait, even with a slot free, while other
orgs' requests take the free slots; they are never refused for it.

Room to wait is shared fairly too. While there is room anyone may wait; when ``max_waiting``
requests already wait, a newcomer whose org holds fewer of them than the org holding the most
takes the place of that org's newest request (which gets ``ModelBusy``, a 503, as it would have
on arrival). So one org's burst fills the queue only until others need it, and the 503s of a burst
fall on the org that made it ("longest queue drop", the classic fair buffer policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from typing import AsyncIterator

from ..errors import ModelBusy
from ..stats import Timings

FULL = "too many requests are waiting for the model"
DISPLACED = "too many requests of this organisation are waiting for the model"


class FairScheduler:
    def __init__(self, max_waiting: int = 64, slots: int = 1, max_per_key: int = 0):
        self.max_waiting = max(1, max_waiting)
        self.slots = max(1, slots)
        self.max_per_key = max(0, max_per_key)  # 0: no cap beyond the fair queue
        self._queues: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self._waiting = 0
        self._running: dict[str, int] = {}  # by key; a slot handed to a waiter counts from the hand-over
        self.waits = Timings()  # how long each request waited for its turn (the metrics read it)

    @property
    def waiting(self) -> int:
        return self._waiting

    def waiting_for(self, key: str) -> int:
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    @property
    def running(self) -> int:
        return sum(self._running.values())

    def running_for(self, key: str) -> int:
        return self._running.get(key, 0)

    @property
    def busy(self) -> bool:
        """At least one generation runs."""
        return bool(self._running)

    def _may_run(self, key: str) -> bool:
        return self.max_per_key == 0 or self._running.get(key, 0) < self.max_per_key

    @contextlib.asynccontextmanager
    async def slot(self, key: str = "") -> AsyncIterator[None]:
        # Free slots are always handed to waiters that may run, so a free slot here means no such
        # waiter is ahead of this request.
        if self.running >= self.slots or not self._may_run(key):
            queued = time.perf_counter()
            if self._waiting >= self.max_waiting:
                self._make_room(key)  # raises ModelBusy when the newcomer's org already has its share
            future = asyncio.get_running_loop().create_future()
            self._queues.setdefault(key, deque()).append(future)
            self._waiting += 1
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self._release(key)  # we were handed the slot as we gave up: pass it on
                else:
                    self._remove(key, future)
                raise
            self.waits.observe(time.perf_counter() - queued)
        else:
            self._running[key] = self._running.get(key, 0) + 1
            self.waits.observe(0.0)
        try:
            yield
        finally:
            self._release(key)

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

    def _release(self, key: str) -> None:
        left = self._running[key] - 1
        if left:
            self._running[key] = left
        else:
            del self._running[key]
        while self.running < self.slots and self._hand_over():
            pass

    def _hand_over(self) -> bool:
        """Gives a free slot to the first waiter in the round whose org may run (its org then goes
        to the back of the round); False when no waiter may."""
        for key in list(self._queues):
            if not self._may_run(key):
                continue  # capped: it keeps its place in the round
            queue = self._queues.pop(key)
            future = queue.popleft()
            self._waiting -= 1
            if queue:
                self._queues[key] = queue  # to the back of the round
            if not future.done():
                self._running[key] = self._running.get(key, 0) + 1
                future.set_result(None)
            return True  # a waiter that had already gone took no slot: the caller looks again
        return False
