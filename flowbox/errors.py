"""One error family. A ``Problem`` says what went wrong in words that belong to no API (not found,
invalid field, no credits, conflict, unavailable); each surface renders it in its own documented shape
(``flowbox/surfaces.py``), so code shared by several APIs raises problems and never takes a body apart.
An ``ApiError`` carries a body already in one API's shape, for the few answers that exist in one API only."""

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


class Problem(FlowboxError):
    """``title``: what happened, briefly (the Agents API's ``error``); ``message``: the sentence a
    client or operator acts on; ``extra``: details a surface's body may carry (a flow's ``errors``).
    ``headers`` go with any rendering (``Retry-After``, ``Allow``, ``WWW-Authenticate``)."""

    status = 400

    def __init__(self, title: str, message: str | None = None, *, http_status: int | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message or title)
        self.title = title
        self.message = message
        self.extra = extra
        self.headers = headers or {}
        if http_status is not None:  # a status no kind below names (405, 408, 502)
            self.status = http_status

    @property
    def text(self) -> str:
        """The one sentence to show: the message, else the title."""
        return self.message if self.message is not None else self.title


class InvalidRequest(Problem):
    """A body, field or parameter the request got wrong."""
    status = 400


class Unauthorized(Problem):
    status = 401


class NoCredits(Problem):
    status = 402


class Forbidden(Problem):
    """The resource exists but belongs to another organisation, project or client."""
    status = 403


class NotFound(Problem):
    status = 404


class Conflict(Problem):
    """The resource's current state does not allow the request."""
    status = 409


class TooLarge(Problem):
    status = 413


class RateLimited(Problem):
    status = 429


class Unavailable(Problem):
    """A model (or another service flowbox needs) is busy, crashed or not configured."""
    status = 503


_KINDS: dict[int, type[Problem]] = {kind.status: kind for kind in
                                    (InvalidRequest, Unauthorized, NoCredits, Forbidden, NotFound, Conflict, TooLarge, RateLimited, Unavailable)}


def error(status: int, title: str, message: str | None = None, **extra: Any) -> Problem:
    """The problem its status names (``error(404, "Agent not found", "No agent exists with this ID")``)."""
    kind = _KINDS.get(status)
    return kind(title, message, **extra) if kind else Problem(title, message, http_status=status, **extra)


class ModelError(FlowboxError):
    """A model failed or is unavailable (maps to the documented 503)."""


def upstream_refusal(what: str, status: int, body: str, credential: str = "") -> ModelError:
    """An upstream server's error answer: the start of its body helps whoever reads the error, but
    some servers echo the credential they were sent, so that never passes through (replaced before
    the body is cut, so no part of it is left either)."""
    return ModelError(f"{what} answered {status}: {scrub(body, credential)[:300]}")


class ModelBusy(ModelError):
    """Too many requests are waiting for the model."""


class ReplyBroken(ModelError):
    """A model's reply broke off after it began (a remote server died mid-stream). Asking again is
    safe only while none of its text reached the caller (``models.generate`` does)."""


class ContextTooLong(FlowboxError):
    def __init__(self, n_tokens: int, n_ctx: int):
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens. "
            f"However, your messages resulted in {n_tokens} tokens."
        )
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx
