"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``. Errors raised by the
shared code this package reuses (Agents-API shapes) are translated at this router's edge."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from ..errors import ApiError, ContextTooLong

log = logging.getLogger("flowbox")

INVALID = "invalid_request_error"


class OpenAIError(ApiError):
    def __init__(self, status: int, message: str, *, type: str = INVALID, param: str | None = None,
                 code: str | None = None):
        super().__init__(status, {"error": {"message": message, "type": type, "param": param, "code": code}})


def bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def unsupported(param: str, why: str = "") -> OpenAIError:
    return bad(f"Unsupported parameter: '{param}' is not supported by flowbox{why}.", param, "unsupported_parameter")


def context_too_long(n_ctx: int, n_messages: int, n_completion: int | None = None) -> OpenAIError:
    if n_completion:
        detail = (f"However, you requested {n_messages + n_completion} tokens ({n_messages} in the messages, "
                  f"{n_completion} in the completion). Please reduce the length of the messages or completion.")
    else:
        detail = f"However, your messages resulted in {n_messages} tokens. Please reduce the length of the messages."
    return bad(f"This model's maximum context length is {n_ctx} tokens. {detail}", "messages", "context_length_exceeded")


def translate(exc: ApiError) -> OpenAIError:
    """An Agents-API-shaped error (from the shared chat code) as the OpenAI shape, same status
    except where OpenAI clients expect another (no credits: 429 ``insufficient_quota``)."""
    if isinstance(exc, OpenAIError):
        return exc
    cause = exc.__cause__
    if isinstance(cause, ContextTooLong):
        return context_too_long(cause.n_ctx, cause.n_tokens)
    body: Any = exc.body
    if isinstance(body, dict) and isinstance(body.get("body"), dict):  # {statusCode, body}
        body = body["body"]
    message = str(body.get("message") or body.get("error")) if isinstance(body, dict) else str(body)
    if exc.status == 402:
        return OpenAIError(429, message, type="insufficient_quota", code="insufficient_quota")
    if exc.status >= 500:
        return OpenAIError(exc.status, message, type="server_error", code="service_unavailable")
    codes = {401: "invalid_api_key", 403: "permission_denied", 404: "not_found"}
    return OpenAIError(exc.status, message, code=codes.get(exc.status))


def _respond(exc: OpenAIError) -> Response:
    return Response(exc.body, status_code=exc.status, headers=exc.headers or None)


def api_error_handler(request: Request, exc: ApiError) -> Response:
    return _respond(translate(exc))


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    """Litestar's own (body too large, wrong method) in the OpenAI shape."""
    code = {413: "request_too_large", 405: "method_not_allowed"}.get(exc.status_code)
    return _respond(OpenAIError(exc.status_code, str(exc.detail), code=code))


def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _respond(OpenAIError(500, "The server had an error while processing your request.", type="server_error"))


EXCEPTION_HANDLERS = {ApiError: api_error_handler, HTTPException: http_exception_handler, Exception: internal_error_handler}
