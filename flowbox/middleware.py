"""ASGI middleware: a request id, one log line per request (never bodies, never query strings,
which can carry tokens) and its timing for the metrics, per-key rate limits answering 429 with Retry-After, and time limits on
slow clients (408): ``body_deadline`` for a request's body, ``header_deadline`` (a uvicorn protocol)
for its headers."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import secrets
import time
from typing import Any, Callable

from .errors import Problem, RateLimited
from .logs import AccessFormatter
from .stats import HttpStats, Timings
from .surfaces import common_body

log = logging.getLogger("flowbox.access")


def setup_access_log(level: str) -> None:
    """Access lines go straight to stderr, not through the app's queued log handler: that
    handler formats and copies every record and wakes a second thread, which cost a quarter
    of the throughput of a cheap authenticated GET."""
    if not any(getattr(h, "_flowbox_access", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(AccessFormatter())
        handler._flowbox_access = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False
    log.setLevel(level.upper())

ASGIApp = Callable[..., Any]
# (path, problem) -> (status, JSON body, headers): the problem in the shape of the surface the path belongs to
Render = Callable[[str, Problem], tuple[int, bytes, list[tuple[bytes, bytes]]]]


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


_ID_PREFIX = secrets.token_hex(3)
_ids = itertools.count(1)


def _next_id() -> str:
    """Unique per process start, and cheap: os.urandom per request cost 9% of a cheap GET."""
    return f"{_ID_PREFIX}{next(_ids):010x}"


def request_log(stats: HttpStats, fields: bool = False) -> Callable[[ASGIApp], ASGIApp]:
    """``stats`` gets each request's duration by method, route template and status, and the count of
    WebSockets open by route template: templates, never paths (an id in a label would make a metric
    series per id). ``fields``: the log line carries its parts as fields too (the json log format)."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope, receive, send):
            if scope["type"] not in ("http", "websocket"):
                return await app(scope, receive, send)
            incoming = _header(scope, b"x-request-id")
            request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else _next_id()
            state = scope.setdefault("state", {})
            state["request_id"] = request_id
            route = scope.get("path_template", "")  # routing comes before an app's middleware
            started = time.perf_counter()
            status = {"code": 0}

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                elif message["type"] == "websocket.accept":
                    status["code"] = 101
                    stats.open_sockets[route] += 1
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                method, code = scope.get("method", "WS"), status["code"]
                if scope["type"] == "http":
                    timings = stats.requests.get((method, route, code))
                    if timings is None:
                        timings = stats.requests[(method, route, code)] = Timings()
                    timings.observe(seconds)
                elif code == 101:
                    stats.open_sockets[route] -= 1
                path = scope.get("path", "")
                log.info("%s %s %s %d %.1fms", request_id, method, path, code, seconds * 1000, extra={
                    "request_id": request_id, "method": method, "path": path, "route": route, "status": code,
                    "duration_ms": round(seconds * 1000, 1), "org_id": state.get("org_id"),
                } if fields else None)

        return middleware

    return factory


class TokenBuckets:
    """One bucket per caller: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, per_minute: int, burst: int, max_callers: int = 100_000):
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, caller: str, now: float | None = None) -> float:
        """0 if allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens >= 1:
            if len(self._buckets) >= self.max_callers and caller not in self._buckets:
                self._buckets.clear()  # a flood of distinct callers: start over rather than grow
            self._buckets[caller] = (tokens - 1, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1 - tokens) / self.rate


def _caller(scope: dict) -> str:
    """The presented credential (hashed: keys never sit in memory as map keys), else the address."""
    for name in (b"authorization", b"x-api-key"):
        value = _header(scope, name)
        if value:
            return "k:" + hashlib.sha256(value.encode()).hexdigest()[:32]
    client = scope.get("client") or ("?", 0)
    return f"a:{client[0]}"


def rate_limit(per_minute: int, burst: int, render: Render) -> Callable[[ASGIApp], ASGIApp]:
    # One set of buckets for the app: Litestar builds a route's middleware once per route, and a
    # caller's rate is the same on every route.
    buckets = TokenBuckets(per_minute, burst) if per_minute > 0 else None

    def factory(app: ASGIApp) -> ASGIApp:
        if buckets is None:
            return app

        async def middleware(scope, receive, send):
            if scope["type"] != "http" or scope.get("path") == "/healthz":
                return await app(scope, receive, send)
            wait = buckets.take(_caller(scope))
            if wait <= 0:
                return await app(scope, receive, send)
            retry_after = str(max(1, math.ceil(wait)))
            status, body, headers = render(scope.get("path", ""), RateLimited(
                "Too many requests", f"Rate limit exceeded; retry after {retry_after} seconds", headers={"retry-after": retry_after}))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return middleware

    return factory


# -- slow clients ----------------------------------------------------------------------------------

def _timeout(what: str, seconds: float) -> Problem:
    return Problem("Request timeout", f"The request {what} did not arrive within {seconds:g} seconds", http_status=408)


def body_deadline(seconds: float, min_rate: int, render: Render) -> Callable[[ASGIApp], ASGIApp]:
    """A request's body must arrive within ``seconds``, plus one second for every ``min_rate`` bytes
    received (so a large upload on a slow link still finishes, as Apache's mod_reqtimeout does);
    past it the answer is 408 and the connection closes. A client trickling a body byte by byte
    would otherwise hold its connection, and the handler waiting on it, for as long as it likes."""

    def factory(app: ASGIApp) -> ASGIApp:
        if seconds <= 0:
            return app

        async def middleware(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            loop = asyncio.get_running_loop()
            state = {"deadline": loop.time() + seconds, "reading": True, "expired": False, "started": False}

            async def timed_receive():
                if not state["reading"]:  # the body is in; later receives wait for a disconnect
                    return await receive()
                if state["expired"]:
                    return {"type": "http.disconnect"}
                try:
                    async with asyncio.timeout_at(state["deadline"]):  # a timer, not a task per receive
                        message = await receive()
                except TimeoutError:
                    state["expired"] = True
                    if not state["started"]:
                        state["started"] = True
                        status, body, headers = render(scope.get("path", ""), _timeout("body", seconds))
                        await send({"type": "http.response.start", "status": status,
                                    "headers": [*headers, (b"connection", b"close")]})
                        await send({"type": "http.response.body", "body": body})
                    return {"type": "http.disconnect"}  # the handler stops as if the client had gone
                if message["type"] != "http.request" or not message.get("more_body", False):
                    state["reading"] = False
                elif min_rate > 0:
                    state["deadline"] += len(message.get("body", b"")) / min_rate
                return message

            async def guarded_send(message):
                if state["expired"]:
                    return  # the 408 was the answer
                if message["type"] == "http.response.start":
                    state["started"] = True
                await send(message)

            await app(scope, timed_receive, guarded_send)

        return middleware

    return factory


class _HeaderDeadline:
    """The header timer of ``header_deadline``, mixed in before uvicorn's protocol (``super()`` is that protocol)."""
    _header_seconds: float
    _header_timer: asyncio.TimerHandle | None = None
    _partial = False

    def connection_made(self, transport):  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = asyncio.get_running_loop().call_later(self._header_seconds, self._headers_late)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers():
            self._partial = True
            if self._header_timer is None:
                self._header_timer = asyncio.get_running_loop().call_later(self._header_seconds, self._headers_late)
        super().data_received(data)
        # headers complete, or the connection became a websocket (another protocol now)
        if not self._awaiting_headers() or self.transport.get_protocol() is not self:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is None or cycle.response_complete

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._partial = False

    def _headers_late(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self or not self._awaiting_headers():
            return
        if self._partial:  # no path to tell the surface by yet: the common shape
            body = json.dumps(common_body(_timeout("headers", self._header_seconds))).encode()
            transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        transport.close()


def header_deadline(base: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's HTTP protocol) closing connections whose request headers take longer than
    ``seconds``, counted from connecting or from the first byte of a next request on a kept-alive
    connection. Neither h11 nor httptools limits this time, and the ASGI app never sees a request
    before its headers are complete, so only the protocol can: a client sending one byte a second
    would otherwise hold a connection forever. A client that sent part of a request gets a 408."""
    if seconds <= 0:
        return base

    class HeaderDeadline(_HeaderDeadline, base):  # type: ignore[misc, valid-type]
        _header_seconds = seconds

    HeaderDeadline.__name__ = HeaderDeadline.__qualname__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline
