"""Shared HTTP plumbing: the services of a request, JSON bodies, API-key auth, error responses."""

from __future__ import annotations

import json
import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from .errors import ApiError, error
from .orgs import Principal, authenticate
from .services import Services

log = logging.getLogger("flowbox")

MISSING_KEY = ("API key is required", "Please provide an API key in the Authorization header")
INVALID_KEY = ("Invalid API key", "The provided API key is not valid")


def is_text(value: Any) -> bool:
    """A string that can be stored, tokenized and embedded: JSON can carry lone UTF-16 surrogates
    (``"\\ud800"``), UTF-8 cannot."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def services_of(request: Request) -> Services:
    return request.app.state.services


async def json_body(request: Request) -> Any:
    """The parsed body, or the documented 400 for invalid JSON (never Litestar's own shape)."""
    raw = await request.body()
    if not raw.strip():
        raise error(400, "Invalid JSON body", "The request body is empty")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(400, "Invalid JSON body", f"{type(exc).__name__}: {exc}") from None


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: <key>`` (the Agents API), ``Authorization: Bearer <key>``
    or ``X-API-KEY`` (the Chats API)."""
    value = request.headers.get("authorization", "").strip()
    if value.lower().startswith("bearer "):
        value = value[7:].strip()
    return value or request.headers.get("x-api-key", "").strip() or None


async def require_key(request: Request) -> Principal:
    """Agents API authentication with its documented 401 bodies."""
    key = presented_key(request)
    if not key:
        raise error(401, *MISSING_KEY)
    principal = await authenticate(services_of(request).store, key)
    if principal is None:
        raise error(401, *INVALID_KEY)
    request.state.principal = principal
    return principal


def api_error_handler(request: Request, exc: ApiError) -> Response:
    return Response(exc.body, status_code=exc.status, headers=exc.headers or None)


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    """Litestar's own errors (unknown route, wrong method, body too large) in the common shape."""
    status = exc.status_code
    titles = {404: "Not found", 405: "Method not allowed", 413: "Request body too large", 400: "Bad request"}
    body = {"error": titles.get(status, "Request failed"), "message": str(exc.detail)}
    return Response(body, status_code=status, headers=getattr(exc, "headers", None) or None)


def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response({"error": "Internal server error"}, status_code=500)
