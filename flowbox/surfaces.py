"""Which API a request speaks, told by its path, and the one renderer of each: every error leaves in
the documented shape of the surface it leaves by. A table of path prefixes, not exception handlers on
each area's Router, because some errors come before any route is chosen (Litestar's 404 and 405 see
only the app's handlers) or outside the app (the rate limiter's 429, the body deadline's 408).

A renderer turns a ``Problem`` into ``(status, body)``; the status may differ from the problem's
where a surface's clients expect another (OpenAI's ``insufficient_quota`` is a 429)."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from litestar import Request, Response
from litestar.exceptions import HTTPException

from .apidoc import ErrorBody
from .errors import ApiError, Problem
from .messaging.common import render as render_messaging
from .messaging.schemas import RestError
from .openai_compat.errors import render as render_openai
from .openai_compat.schemas import OpenAIErrorBody

log = logging.getLogger("flowbox")

Renderer = Callable[[Problem], tuple[int, Any]]


def common_body(problem: Problem) -> dict[str, Any]:
    """``{"error": title, "message": ...}`` (and any details): the Agents API's shape, which the
    Chats, Knowledge, WhatsApp-template and console APIs share."""
    body: dict[str, Any] = {"error": problem.title}
    if problem.message is not None:
        body["message"] = problem.message
    body.update(problem.extra)
    return body


def render_common(problem: Problem) -> tuple[int, Any]:
    return problem.status, common_body(problem)


# First match wins: the Messaging Management API's /v1/projects sits inside OpenAI's /v1/.
SURFACES: tuple[tuple[str, Renderer], ...] = (
    ("/v1/projects", render_messaging),
    ("/v1/", render_openai),
    ("/rest/", render_messaging),
    ("/socket.info", render_messaging),
    ("/thread.", render_messaging),
    ("/ws/", render_messaging),
)


def renderer_for(path: str) -> Renderer:
    return next((render for prefix, render in SURFACES if path.startswith(prefix)), render_common)


def documented_error(path: str) -> type:
    """The body type that documents errors on ``path`` (the statuses any operation may answer)."""
    return {render_messaging: RestError, render_openai: OpenAIErrorBody}.get(renderer_for(path), ErrorBody)


# Litestar's own errors: unknown route, wrong method, body too large, bad parameter or host.
_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 413: "Request body too large"}


def problem_of(exc: HTTPException) -> Problem:
    status = exc.status_code
    return Problem(_TITLES.get(status, "Request failed"), str(exc.detail), http_status=status, headers=dict(exc.headers or {}))


def _respond(request: Request, problem: Problem) -> Response:
    status, body = renderer_for(request.url.path)(problem)
    return Response(body, status_code=status, headers=problem.headers or None)


def problem_handler(request: Request, exc: Problem) -> Response:
    return _respond(request, exc)


def api_error_handler(request: Request, exc: ApiError) -> Response:
    """A body already in its API's shape."""
    return Response(exc.body, status_code=exc.status, headers=exc.headers or None)


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    return _respond(request, problem_of(exc))


def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _respond(request, Problem("Internal server error", http_status=500))


EXCEPTION_HANDLERS = {Problem: problem_handler, ApiError: api_error_handler, HTTPException: http_exception_handler,
                      Exception: internal_error_handler}


def rendered(path: str, problem: Problem) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """For ASGI middleware answering on its own: the status, JSON body and headers (content type,
    length and the problem's own)."""
    status, body = renderer_for(path)(problem)
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in problem.headers.items()]
    return status, data, headers
