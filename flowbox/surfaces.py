"""Which API a request speaks, told by its path, and the one renderer of each: every error leaves in
the documented shape of the surface it leaves by. Each area that has its own shape declares a
``Surface`` (``Area.errors``); paths no area claims answer in the common ``{"error", "message"}``.

A table of path prefixes rather than exception handlers on each area's Router, because some errors
come before any route is chosen (Litestar's 404 and 405 see only the app's handlers) or outside the
app (the rate limiter's 429, the body deadline's 408).

A renderer turns a ``Problem`` into ``(status, body)``; the status may differ from the problem's
where a surface's clients expect another (OpenAI's ``insufficient_quota`` is a 429)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from litestar import Request, Response
from litestar.exceptions import HTTPException

from .apidoc import ErrorBody
from .errors import ApiError, Problem

log = logging.getLogger("flowbox")

Renderer = Callable[[Problem], tuple[int, Any]]


@dataclass(frozen=True)
class Surface:
    """An API's error shape: the path prefixes it answers on, its renderer, and the body type that
    documents it in the OpenAPI document."""

    prefixes: tuple[str, ...]
    render: Renderer
    doc: type


def common_body(problem: Problem) -> dict[str, Any]:
    """``{"error": title, "message": ...}`` (and any details): the Agents API's shape, which the
    Chats, Knowledge, WhatsApp-template and console APIs share."""
    body: dict[str, Any] = {"error": problem.title}
    if problem.message is not None:
        body["message"] = problem.message
    body.update(problem.extra)
    return body


COMMON = Surface((), lambda problem: (problem.status, common_body(problem)), ErrorBody)

# Litestar's own errors: unknown route, wrong method, body too large, bad parameter or host.
_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 413: "Request body too large"}


def problem_of(exc: HTTPException) -> Problem:
    status = exc.status_code
    return Problem(_TITLES.get(status, "Request failed"), str(exc.detail), http_status=status, headers=dict(exc.headers or {}))


class Surfaces:
    def __init__(self, surfaces: Iterable[Surface]):
        # The longest prefix first: the Messaging Management API's /v1/projects sits inside OpenAI's /v1/.
        self._table = sorted(((prefix, s) for s in surfaces for prefix in s.prefixes), key=lambda item: -len(item[0]))

    def of(self, path: str) -> Surface:
        return next((surface for prefix, surface in self._table if path.startswith(prefix)), COMMON)

    def documented_error(self, path: str) -> type:
        return self.of(path).doc

    def rendered(self, path: str, problem: Problem) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """For ASGI middleware answering on its own: the status, JSON body and headers (content
        type, length and the problem's own)."""
        status, body = self.of(path).render(problem)
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in problem.headers.items()]
        return status, data, headers

    def exception_handlers(self) -> dict[type[Exception], Callable[[Request, Any], Response]]:
        def respond(request: Request, problem: Problem) -> Response:
            status, body = self.of(request.url.path).render(problem)
            return Response(body, status_code=status, headers=problem.headers or None)

        def api_error(request: Request, exc: ApiError) -> Response:  # a body already in its API's shape
            return Response(exc.body, status_code=exc.status, headers=exc.headers or None)

        def internal(request: Request, exc: Exception) -> Response:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return respond(request, Problem("Internal server error", http_status=500))

        return {Problem: respond, ApiError: api_error, HTTPException: lambda request, exc: respond(request, problem_of(exc)),
                Exception: internal}
