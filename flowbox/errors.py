"""One error family. ``ApiError`` carries the exact JSON body a spec documents and its status;
one exception handler (in ``app.py``) turns it into the response."""

from __future__ import annotations

from typing import Any

from .redact import scrub


class FlowboxError(Exception):
    """Base class for errors flowbox raises on purpose."""


class StartupError(FlowboxError):
    """Flowbox cannot start or run a command; the message says what to do (one line)."""


class ApiError(FlowboxError):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def error(status: int, error: str, message: str | None = None, **extra: Any) -> ApiError:
    """The common ``{"error": ..., "message": ...}`` shape of the Agents API."""
    body: dict[str, Any] = {"error": error}
    if message is not None:
        body["message"] = message
    body.update(extra)
    return ApiError(status, body)


class ModelError(FlowboxError):
    """A model failed or is unavailable (maps to the documented 503)."""


def upstream_refusal(what: str, status: int, body: str, credential: str = "") -> ModelError:
    """An upstream server's error answer: the start of its body helps whoever reads the error, but
    some servers echo the credential they were sent, so that never passes through (replaced before
    the body is cut, so no part of it is left either)."""
    return ModelError(f"{what} answered {status}: {scrub(body, credential)[:300]}")


class ModelBusy(ModelError):
    """Too many requests are waiting for the model."""


class ContextTooLong(FlowboxError):
    def __init__(self, n_tokens: int, n_ctx: int):
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens. "
            f"However, your messages resulted in {n_tokens} tokens."
        )
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx
