"""In-process pub/sub per thread: everything produced for a thread (the user's message echoed as
``message.delivered``, engine and agent replies and human-agent replies as ``message.received``,
``control.pause`` / ``control.resume`` / ``control.handover``) is published here after it is
stored, so sockets and consoles can follow a thread live.

Events are ``{"type": ..., "payload": {...}}``, the socket frame shape. A subscriber that
falls behind loses its oldest events rather than slowing the publisher.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

from ..services import Services

Key = tuple[str, str | None]


class Subscription:
    def __init__(self, hub: "Hub", key: Key, maxsize: int, sink: Callable[[dict[str, Any]], None] | None = None):
        self.hub, self.key, self.sink = hub, key, sink
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, event: dict[str, Any]) -> None:
        if self.sink is not None:  # the subscriber takes events as they come (a socket's own send queue)
            self.sink(event)
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()

    def close(self) -> None:
        self.hub._remove(self)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.queue.get()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Hub:
    def __init__(self) -> None:
        self._subs: dict[Key, set[Subscription]] = {}

    def subscribe(self, project_id: str, thread_id: str | None = None, maxsize: int = 256,
                  sink: Callable[[dict[str, Any]], None] | None = None) -> Subscription:
        """Events of one thread, or (``thread_id`` None) of every thread of the project; with
        ``sink``, each event is handed to it at once instead of queued."""
        sub = Subscription(self, (project_id, thread_id), maxsize, sink)
        self._subs.setdefault(sub.key, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    def publish(self, project_id: str, thread_id: str, event: dict[str, Any]) -> int:
        """Delivers to the thread's and the project's subscribers; returns how many got it."""
        count = 0
        for key in ((project_id, thread_id), (project_id, None)):
            for sub in list(self._subs.get(key, ())):
                sub.put({**event, "threadId": thread_id} if key[1] is None else event)
                count += 1
        return count

    def subscribers(self, project_id: str, thread_id: str) -> int:
        return len(self._subs.get((project_id, thread_id), ()))


def hub_of(services: Services) -> Hub:
    return services.state(Hub)
