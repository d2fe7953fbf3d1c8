"""Server-Sent Events: a streaming response that always stops its producer when the client goes
away, ``pump``, which runs work that reports progress through callbacks as its own task, and
``until_revoked``, which ends a stream when the credential that opened it is revoked.

Why a task: Litestar notices a disconnect by cancelling the scope that iterates the response, and
anyio keeps cancelling every await inside it, so cleanup that has to wait (the model thread
finishing its current token) must not run there. The producer task cleans up in its own context;
the response's generator only cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Awaitable, Callable, ContextManager

import anyio
from litestar.response import Stream
from litestar.response.streaming import ASGIStreamingResponse

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def wants_event_stream(accept: str) -> bool:
    return "text/event-stream" in accept.lower()


def event(data: Any, name: str | None = None) -> str:
    """One SSE event; ``data`` is JSON-encoded compactly (the bytes a JSON response would carry)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {name}\n" if name else "") + f"data: {text}\n\n"


class _ClosingStreamingResponse(ASGIStreamingResponse):
    __slots__ = ()

    async def send_body(self, send, receive) -> None:
        try:
            await super().send_body(send, receive)
        finally:
            # Suspended at a yield when the client left, the generator would otherwise only be
            # closed whenever it is garbage-collected. Shielded: a cancelled scope must not cut it short.
            with anyio.CancelScope(shield=True):
                await self.iterator.aclose()


class EventStream(Stream):
    """``text/event-stream`` over an async generator, which is closed as soon as the client disconnects."""

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str] | None = None, status_code: int = 200):
        super().__init__(events, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})},
                         status_code=status_code)

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIStreamingResponse:
        response = super().to_asgi_response(*args, **kwargs)
        response.__class__ = _ClosingStreamingResponse
        return response


_END = object()


async def pump(work: Callable[[Callable[[Any], None]], Awaitable[Any]]) -> AsyncIterator[tuple[bool, Any]]:
    """Runs ``work(emit)`` as its own task. Yields ``(False, item)`` for each emitted item as soon
    as it is emitted, then ``(True, result)``; an exception of ``work`` is raised here. Closing the
    generator early cancels the task and waits for its cleanup."""
    queue: asyncio.Queue = asyncio.Queue()
    task = asyncio.ensure_future(work(queue.put_nowait))
    task.add_done_callback(lambda _: queue.put_nowait(_END))
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            yield False, item
        yield True, task.result()
    finally:
        if not task.done():
            task.cancel()  # synchronous: the model stops even if the wait below is interrupted
            await asyncio.wait([task])


_REVOKED = object()


async def until_revoked(events: AsyncIterator[str], hold: Callable[[Callable[[], None]], ContextManager[Any]],
                        farewell: str = "") -> AsyncIterator[str]:
    """``events`` until the stream's credential is revoked, then ``farewell`` (an error event in
    the API's shape) and the end. ``hold(close)`` registers the stream (``OpenStreams.hold`` with
    the credential bound); ``events`` runs as its own task so that a revocation need not wait for
    its next item (a reply still queued for the model has none for a while)."""
    queue: asyncio.Queue = asyncio.Queue()

    async def forward() -> None:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for item in events:
                queue.put_nowait(item)

    with hold(lambda: queue.put_nowait(_REVOKED)):
        task = asyncio.ensure_future(forward())
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    task.result()  # its exception, if any, is ours
                    return
                if item is _REVOKED:
                    if farewell:
                        yield farewell
                    return
                yield item
        finally:
            if not task.done():
                task.cancel()  # synchronous: the producer (the model) stops even if the wait is interrupted
                await asyncio.wait([task])
