"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``: this package's own
(``OpenAIError``), and ``render`` for the problems the shared code it reuses raises."""

from __future__ import annotations

from typing import Any

from ..errors import ApiError, ContextTooLong, Problem

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


def render(problem: Problem) -> tuple[int, Any]:
    """This surface's renderer (``flowbox/surfaces.py``): a problem as the OpenAI shape, same status
    except where OpenAI clients expect another (no credits: 429 ``insufficient_quota``)."""
    cause = problem.__cause__
    if isinstance(cause, ContextTooLong):
        exc = context_too_long(cause.n_ctx, cause.n_tokens)
        return exc.status, exc.body
    status = problem.status
    if status == 402:
        exc = OpenAIError(429, problem.text, type="insufficient_quota", code="insufficient_quota")
    elif status == 500:
        exc = OpenAIError(500, "The server had an error while processing your request.", type="server_error")
    elif status > 500:  # the title ("Service temporarily unavailable"): what OpenAI clients show for a busy service
        exc = OpenAIError(status, problem.title, type="server_error", code="service_unavailable")
    else:
        exc = OpenAIError(status, problem.text, code=CODES.get(status))
    return exc.status, exc.body


CODES = {401: "invalid_api_key", 403: "permission_denied", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
