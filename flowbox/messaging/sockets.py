"""The websocket at ``/ws/<token>`` (the Socket API of ``messaging-api.txt``).

Each connection has a reader (this handler: frames in, one at a time, in order) and a writer
task (frames out, from one bounded queue). A ``message.send`` goes through
``conversation.handle``, the same path as REST; the socket follows every thread it has used
through the hub, so replies made anywhere (the engine, a human agent over REST, the fallback
agent later) reach every socket on that thread, ``message.delivered`` before ``message.received``.

Close codes: 1000 the client closed; 1001 going away (the server's shutdown hook) or 1012
(uvicorn, when it stops before the hooks run); 1008 the client stopped reading (its send queue
overflowed); 1009 a frame past the server's 1 MiB cap (uvicorn's ws_max_size, set by flowbox serve);
4401 unknown, used or expired token, or the project token an agent socket was opened with was rotated;
4404 the project was deleted; 4408 no frame for ``messaging_socket_idle_ms``; 4429 too many
sockets from one address, or a flood of frames past the rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from litestar import WebSocket, websocket
from litestar.params import FromPath

from ..errors import Problem
from ..revocation import project_token, streams_of
from ..services import Services
from . import conversation, projects, socket_threads
from .common import rest_error
from .hub import Subscription, hub_of
from .incoming import check_thread_id
from .socket_frames import DOCUMENT_FRAMES, SDK_FRAMES, dumps, error_frame, frame, incoming_from_send, parse_frame
from .socket_tokens import Grant, tokens_of

log = logging.getLogger("flowbox.messaging.sockets")

SEND_QUEUE = 256             # frames waiting for a client that reads slowly; past it the socket closes (1008)
MAX_THREADS_PER_SOCKET = 100  # threads one socket may follow
PONG = frame("pong")
_CLOSE = object()


class Registry:
    """Open sockets, counted per client address; closed together at shutdown."""

    def __init__(self) -> None:
        self.open: set["Connection"] = set()
        self.per_address: dict[str, int] = {}

    def count(self, address: str) -> int:
        return self.per_address.get(address, 0)

    def add(self, conn: "Connection") -> None:
        self.open.add(conn)
        self.per_address[conn.address] = self.count(conn.address) + 1

    def remove(self, conn: "Connection") -> None:
        if conn in self.open:
            self.open.discard(conn)
            left = self.count(conn.address) - 1
            if left > 0:
                self.per_address[conn.address] = left
            else:
                self.per_address.pop(conn.address, None)


def registry_of(services: Services) -> Registry:
    return services.state(Registry)


def address_of(scope: Any) -> str:
    client = scope.get("client") or ("?", 0)
    return str(client[0])


class Connection:
    def __init__(self, services: Services, ws: WebSocket, grant: Grant, address: str):
        self.services, self.ws, self.grant, self.address = services, ws, grant, address
        config = services.config
        self.idle = config.messaging_socket_idle_ms / 1000
        self.max_frame = config.messaging_socket_max_frame_bytes
        self.rate, self.burst = config.messaging_socket_frames_per_second, max(1, config.messaging_socket_frame_burst)
        self.tokens, self.stamp, self.dropped, self.flood_told = float(self.burst), time.monotonic(), 0, 0.0
        self.allowed = DOCUMENT_FRAMES if grant.dialect == "document" else SDK_FRAMES
        self.out: asyncio.Queue[Any] = asyncio.Queue(SEND_QUEUE)
        self.subs: dict[str, Subscription] = {}
        self.checked: set[tuple[str, str | None]] = set()   # (thread, secret) pairs found allowed
        self.close_code: tuple[int, str] | None = None   # set once closing starts
        self.writer: asyncio.Task | None = None
        self.closer: asyncio.Future | None = None

    # -- out ---------------------------------------------------------------------------------

    def push(self, text: str) -> None:
        if self.close_code is not None:
            return
        try:
            self.out.put_nowait(text)
        except asyncio.QueueFull:  # the client stopped reading: let it reconnect and read history
            if self.writer is not None:
                self.writer.cancel()
            self.close_soon(1008, "client too slow: send queue overflow")

    def close_soon(self, code: int, reason: str) -> None:
        if self.closer is None:  # kept referenced until done
            self.closer = asyncio.ensure_future(self.close(code, reason))

    def hub_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in self.allowed:
            self.push(dumps(event))

    async def write_loop(self) -> None:
        with contextlib.suppress(Exception):  # the client is gone: the reader hears of it too
            while True:
                item = await self.out.get()
                if item is _CLOSE:
                    return
                await self.ws.send_text(item)

    async def close(self, code: int, reason: str) -> None:
        """Sends what is queued, then the close frame (once). The reader then receives the
        disconnect and the connection ends."""
        if self.close_code is not None:
            return
        self.close_code = (code, reason)
        with contextlib.suppress(asyncio.QueueFull):
            self.out.put_nowait(_CLOSE)
        if self.writer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.writer), 2)
        with contextlib.suppress(Exception):  # a client that reads nothing cannot hold us here
            await asyncio.wait_for(self.ws.close(code, reason), 2)

    # -- in ----------------------------------------------------------------------------------

    async def run(self) -> None:
        self.writer = asyncio.create_task(self.write_loop())
        try:
            await self.read_loop()
        finally:
            for sub in self.subs.values():
                sub.close()
            self.writer.cancel()

    async def read_loop(self) -> None:
        if self.grant.thread_id:
            self.follow(self.grant.thread_id)
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), self.idle)
            except asyncio.TimeoutError:
                if self.close_code is not None:
                    return  # closing, and the client never answered the close
                await self.close(4408, f"idle: no frame for {self.idle:g} seconds")
                continue
            if message["type"] == "websocket.disconnect":
                return
            if self.close_code is not None or not self.take_token():
                continue
            text = message.get("text")
            if text is None:
                self.push(error_frame("Binary frames are not supported: send JSON text frames"))
                continue
            size = len(text) if text.isascii() else len(text.encode())
            if size > self.max_frame:
                self.push(error_frame(f"Frame too large: {size} bytes, at most {self.max_frame}"))
                continue
            await self.on_frame(text)

    def take_token(self) -> bool:
        """The per-socket frame rate limit: a dropped frame gets an error frame (at most one a
        second); ``burst`` drops in a row close the socket."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.dropped = 0
            return True
        self.dropped += 1
        if self.dropped >= self.burst:
            self.close_soon(4429, "flood: too many frames")
        elif now - self.flood_told >= 1:
            self.flood_told = now
            self.push(error_frame(f"Too many frames: at most {self.rate} a second; frame dropped"))
        return False

    async def on_frame(self, text: str) -> None:
        """One frame in; whatever it holds, an answer out and the socket stays open."""
        try:
            body = parse_frame(text)
        except Problem as exc:
            return self.push(error_frame(exc.text))
        kind, payload = body["type"], body.get("payload")
        context = {"threadId": payload.get("threadId"), "traceId": payload.get("traceId")} if isinstance(payload, dict) else {}
        try:
            if kind == "ping":
                self.push(PONG)
            elif kind == "message.send":
                await self.send_message(payload)
            elif kind == "thread.noticed":
                thread_id = await self.use_thread(payload)
                await socket_threads.mark_noticed(self.services.store, self.grant.project_id, thread_id)
            elif kind == "activity.user.typing":
                thread_id = await self.use_thread(payload)
                hub_of(self.services).publish(self.grant.project_id, thread_id, {"type": "activity.user.typing", "payload": {
                    "threadId": thread_id, "originator": payload.get("originator") if isinstance(payload.get("originator"), dict) else {}}})
            elif kind == "log":
                pass  # the SDK's debug log lines: not stored
            else:
                self.push(error_frame(f"Unknown message type \"{kind[:64]}\"", **context))
        except Problem as exc:
            self.push(error_frame(exc.text, **context))
        except _ProjectGone:
            await self.close(4404, "project deleted")
        except Exception:
            log.exception("socket frame %s failed", kind)
            self.push(error_frame("Internal error while processing the message; it may not have been stored", **context))

    async def use_thread(self, payload: Any) -> str:
        """The frame's thread, checked against its owner (once per thread and secret), and followed."""
        thread_id = payload.get("threadId") if isinstance(payload, dict) else None
        if thread_id is None:
            raise rest_error(400, "threadId is required")
        check_thread_id(thread_id)
        nonce = payload.get("nonce")
        secret_sha = socket_threads.secret_hash(nonce) if isinstance(nonce, str) else self.grant.secret_hash
        if (thread_id, secret_sha) not in self.checked:
            if len(self.checked) >= 4 * MAX_THREADS_PER_SOCKET:  # a client cycling through nonces: start over
                self.checked.clear()
            if thread_id not in self.subs and len(self.subs) >= MAX_THREADS_PER_SOCKET:
                raise rest_error(400, f"A socket follows at most {MAX_THREADS_PER_SOCKET} threads; open another socket")
            if not self.grant.agent:
                await self.check_access(thread_id, secret_sha)
            self.checked.add((thread_id, secret_sha))
        self.follow(thread_id)
        return thread_id

    async def check_access(self, thread_id: str, secret_sha: str | None) -> None:
        issued = None
        if secret_sha is None and self.grant.dialect == "sdk":  # an SDK client without a secret gets one
            issued = socket_threads.new_secret()
            secret_sha = socket_threads.secret_hash(issued)
        access = await socket_threads.authorize(self.services.store, self.grant.project_id, thread_id, secret_sha)
        if access == "denied":
            raise rest_error(403, "This thread belongs to another client: its secret (nonce) does not match")
        if issued is not None and access == "claimed":
            self.grant.secret_hash = secret_sha
            self.push(frame("secret.generated", {"threadId": thread_id}, message={"secret": issued}))

    def follow(self, thread_id: str) -> None:
        if thread_id not in self.subs:
            self.subs[thread_id] = hub_of(self.services).subscribe(self.grant.project_id, thread_id, sink=self.hub_event)

    async def send_message(self, payload: Any) -> None:
        incoming = incoming_from_send(payload, moderator_ok=self.grant.agent)
        thread_id = await self.use_thread(payload)
        project = await projects.get_project(self.services.store, self.grant.project_id)
        if project is None:
            raise _ProjectGone()
        if incoming.from_moderator:  # a human agent's message is stored as a reply, with no delivered event of its own
            self.push(frame("message.delivered", incoming.delivered(thread_id)))
        # Shielded: a socket that goes away mid-message does not cut the message's transaction short.
        work = self.services.spawn(conversation.handle(self.services, project, thread_id, incoming), name="messaging-socket-send")
        outcome = await asyncio.shield(work)
        if outcome.agent_pending:  # the fallback agent is writing; its answer follows on the hub
            hub_of(self.services).publish(project["id"], thread_id, {"type": "agent.typing", "payload": {"threadId": thread_id}})


class _ProjectGone(Exception):
    pass


@websocket("/ws/{token:str}", summary="The messaging socket (URL from GET /socket.info)")
async def socket_endpoint(socket: WebSocket, token: FromPath[str]) -> None:
    services: Services = socket.app.state.services
    await socket.accept()
    grant = tokens_of(services).take(token)
    address = address_of(socket.scope)
    registry = registry_of(services)
    limit = services.config.messaging_socket_max_per_address
    if grant is None:
        message, code = "The socket URL is unknown, used or expired; request a new one from /socket.info", (4401, "invalid or expired token")
    elif limit and registry.count(address) >= limit:
        message, code = f"Too many open sockets from this address (at most {limit})", (4429, "too many sockets")
    else:
        conn = Connection(services, socket, grant, address)
        registry.add(conn)
        try:
            with streams_of(services).hold(project_token(grant.token_hash), lambda: conn.close_soon(4401, "token revoked")):
                await conn.run()
        finally:
            registry.remove(conn)
        return
    with contextlib.suppress(Exception):
        await socket.send_text(error_frame(message))
        await socket.close(*code)


async def close_all(services: Services) -> None:
    """Shutdown: every socket still open is closed with 1001 (going away); clients reconnect."""
    conns = list(registry_of(services).open)
    await asyncio.gather(*(conn.close(1001, "server shutting down") for conn in conns), return_exceptions=True)


ROUTES = [socket_endpoint]
