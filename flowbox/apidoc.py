"""OpenAPI documentation for handlers that return hand-shaped JSON (plain dicts, exact spec bodies).

``responses=doc(200, Agent, 401, 404)``: each status code, optionally followed by the TypedDict of
its body; a code without one has the common ``{"error", "message"}`` body. The documented success
body replaces the one Litestar would infer from ``-> dict[str, Any]``.
"""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from http import HTTPStatus
from typing import Any, NotRequired, TypedDict

from litestar.openapi.datastructures import ResponseSpec


class ErrorBody(TypedDict):
    """The common error shape: ``error`` always, ``message`` when there is more to say."""

    error: str
    message: NotRequired[str]


DESCRIPTIONS = {
    400: "Invalid request (bad JSON or a field that fails validation)",
    401: "Missing or invalid API key",
    402: "No credits available",
    403: "The resource belongs to another organisation",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    429: "Too many requests",
    503: "Model unavailable or busy",
}


def doc(*items: Any) -> dict[int, ResponseSpec]:
    responses: dict[int, ResponseSpec] = {}
    items_list = list(items)
    while items_list:
        status = items_list.pop(0)
        if not isinstance(status, int):
            raise TypeError(f"expected a status code, got {status!r}")
        body: Any = ErrorBody
        if items_list and not isinstance(items_list[0], int):
            body = items_list.pop(0)
        # Errors are described by their status; a success by its body type's docstring.
        description = DESCRIPTIONS.get(status) if status >= 400 else None
        description = description or (body.__doc__ or HTTPStatus(status).phrase).strip().splitlines()[0]
        responses[status] = ResponseSpec(data_container=body, generate_examples=False, description=description)
    return responses
