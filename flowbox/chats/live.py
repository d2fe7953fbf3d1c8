"""Live events of chats: a chat's new messages and status changes, fanned out in-process to the
WebSocket and SSE streams watching it.

Events are published right after their transaction commits. A stream subscribes first and then
reads what is stored, so nothing falls between the backlog and the live events; what arrives
twice is dropped by message ``seq`` and by event number.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, ContextManager

from . import store as chats_store

KEEPALIVE_SECONDS = 15.0


@dataclass
class Event:
    kind: str          # message | status | deleted | ping | error (the stream's credential was revoked)
    data: Any = None
    number: int = 0    # publish order (status and deleted events)
    id: str | None = None  # the message id, for SSE's Last-Event-ID


@dataclass
class Hub:
    subscribers: dict[str, set[asyncio.Queue]] = field(default_factory=dict)
    latest_status: dict[str, Event] = field(default_factory=dict)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    def subscribe(self, chat_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.setdefault(chat_id, set()).add(queue)
        return queue

    def unsubscribe(self, chat_id: str, queue: asyncio.Queue) -> None:
        queues = self.subscribers.get(chat_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[chat_id]
                self.latest_status.pop(chat_id, None)

    def _send(self, chat_id: str, event: Event) -> None:
        for queue in self.subscribers.get(chat_id, ()):
            queue.put_nowait(event)

    def message(self, message: dict[str, Any]) -> None:
        self._send(message["chat_id"], Event("message", message, id=message["id"]))

    def status(self, chat: dict[str, Any]) -> None:
        event = Event("status", chat, next(self._numbers))
        # Kept only while someone watches: it orders a new watcher's snapshot against the events
        # queued for it; with no watcher the stored status is as good.
        if chat["id"] in self.subscribers:
            self.latest_status[chat["id"]] = event
        else:
            self.latest_status.pop(chat["id"], None)
        self._send(chat["id"], event)

    def deleted(self, chat_id: str) -> None:
        self.latest_status.pop(chat_id, None)
        self._send(chat_id, Event("deleted", {"id": chat_id}, next(self._numbers)))


REVOKED = Event("error", {"error": "Unauthorized", "message": "The credential this stream was opened with has been revoked"})


async def watch(hub: Hub, store, chat_id: str, after_seq: int = 0,
                hold: Callable[[Callable[[], None]], ContextManager[Any]] | None = None) -> AsyncIterator[Event]:
    """The chat's stored messages after ``after_seq``, its current status, then live events until
    the chat is deleted. Pings every few seconds of quiet (streams use them to notice a gone peer).
    ``hold`` registers the stream by its credential (``OpenStreams.holder``): once that is revoked
    the stream ends with ``REVOKED``, an ``error`` event."""
    queue = hub.subscribe(chat_id)
    held = contextlib.ExitStack()
    if hold is not None:
        held.enter_context(hold(lambda: queue.put_nowait(REVOKED)))
    try:
        last_seq = after_seq
        for message in await chats_store.messages_after(store, chat_id, after_seq):
            last_seq = message["seq"]
            yield Event("message", message, id=message["id"])
        snapshot = hub.latest_status.get(chat_id)
        if snapshot is None:
            chat = await chats_store.get_chat(store, chat_id)
            # An event published during that read is newer than (or equal to) what it returned.
            snapshot = hub.latest_status.get(chat_id) or (Event("status", chat) if chat else Event("deleted", {"id": chat_id}))
        yield snapshot
        if snapshot.kind == "deleted":
            return
        last_status = snapshot
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                yield Event("ping")
                continue
            if event is REVOKED:
                yield event
                return
            if event.kind == "message":
                if event.data["seq"] <= last_seq:
                    continue
                last_seq = event.data["seq"]
            elif event.number <= last_status.number or (
                event.kind == "status" and _same(event.data, last_status.data)
            ):
                continue
            else:
                last_status = event
            yield event
            if event.kind == "deleted":
                return
    finally:
        held.close()
        hub.unsubscribe(chat_id, queue)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["status"], a["error"], a["waiting_for"]) == (b["status"], b["error"], b["waiting_for"])


def public(event: Event) -> dict[str, Any]:
    """The JSON a stream sends for an event."""
    data = event.data
    if event.kind == "message":
        data = chats_store.message_out(data)
    return {"event": event.kind, "data": data}
