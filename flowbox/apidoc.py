"""OpenAPI documentation for handlers that return hand-shaped JSON (plain dicts, exact spec bodies).

``responses=doc(200, Agent, 401, 404)``: each status code, optionally followed by the TypedDict of
its body; a code without one has the common ``{"error", "message"}`` body. The documented success
body replaces the one Litestar would infer from ``-> dict[str, Any]``.

``operation_class=body_doc(obj(("name",), name=string(200)))``: the JSON request body a handler reads
with ``json_body`` and checks itself (so bad bodies keep their documented 400s).
"""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Callable, Iterator, NotRequired, TypedDict, get_args, get_origin

from litestar import Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import Parameter


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
    408: "The request's body arrived too slowly (request_body_timeout_ms); the connection is closed",
    409: "Conflicts with the current state",
    413: "Request body too large",
    429: "Too many requests",
    503: "Model unavailable or busy",
}


class EventStream:
    """Server-Sent Events (`text/event-stream`)"""


def doc(*items: Any) -> dict[int, ResponseSpec]:
    """``EventStream`` as a body: the status answers ``text/event-stream``."""
    responses: dict[int, ResponseSpec] = {}
    items_list = list(items)
    while items_list:
        status = items_list.pop(0)
        if not isinstance(status, int):
            raise TypeError(f"expected a status code, got {status!r}")
        body: Any = ErrorBody
        if items_list and not isinstance(items_list[0], int):
            body = items_list.pop(0)
        # Errors are described by their status; a success by its body type's docstring (a list's by its items').
        item = get_args(body)[0] if get_origin(body) is list else None
        description = DESCRIPTIONS.get(status) if status >= 400 else None
        if not description and item is not None:
            description = "A list: " + ((item.__doc__ or "items").strip().splitlines()[0])
        description = description or (body.__doc__ or HTTPStatus(status).phrase).strip().splitlines()[0]
        if body is EventStream:
            responses[status] = ResponseSpec(data_container=str, generate_examples=False, description=description,
                                             media_type="text/event-stream")
            continue
        responses[status] = ResponseSpec(data_container=body, generate_examples=False, description=description)
    return responses


def _http_handlers(routes: list[Any]) -> Iterator[tuple[str, HTTPRouteHandler]]:
    """Each HTTP handler with its full path; a Router's own copies of its handlers (the app copies
    the Router, with them, when it registers it)."""
    for item in routes:
        if isinstance(item, Router):
            for route in item.routes:
                for handler in getattr(route, "route_handlers", ()):
                    if isinstance(handler, HTTPRouteHandler):
                        yield route.path, handler
        elif isinstance(item, HTTPRouteHandler):
            yield next(iter(item.paths)), item


def document_common(routes: list[Any], error_body: Callable[[str], type]) -> None:
    """Statuses any operation may answer, documented where a handler says nothing of its own:
    400 (Litestar documents its own ``status_code``/``detail`` body for handlers with parameters, but
    flowbox reshapes Litestar's errors, so the shape flowbox does answer), 429 (the per-key rate
    limit, in front of every route), and 413 (``max_body_bytes``) and 408 (a body sent too slowly) for
    methods that take a body. ``error_body(path)``: the error shape of the surface a path belongs to.
    ``routes``: handlers and Routers, as the app gets them."""

    def spec(status: int, body: Any) -> ResponseSpec:
        return ResponseSpec(data_container=body, generate_examples=False, description=DESCRIPTIONS[status])

    for path, handler in _http_handlers(routes):
        if not handler.include_in_schema:
            continue
        responses = dict(handler.responses or {})
        body = error_body(path)
        extra = {400: spec(400, body), 429: spec(429, body)}
        if set(handler.http_methods) & {"POST", "PUT", "PATCH"}:
            extra[413] = spec(413, body)
            extra[408] = spec(408, body)
        handler.responses = dict(sorted({**extra, **responses}.items()))


def body_doc(schema: dict[str, Any], media_types: tuple[str, ...] = ("application/json",), required: bool = True,
             streams: bool = False, form: dict[str, Any] | None = None, succeeds: bool = True) -> type[Operation]:
    """``@post(..., operation_class=body_doc(schema))``: documents the JSON body a handler parses itself
    (``json_body``), as a plain JSON-schema dict. Documentation only: the handler still checks the body
    and answers its own 400s (Litestar has no ``request_body=`` and would validate a ``data`` parameter).
    ``streams``: the 200 may also be ``text/event-stream`` (when the body or Accept asks for a stream);
    ``form``: the schema of a ``multipart/form-data`` body the handler also takes (uploads);
    ``succeeds=False``: drop the 200 Litestar infers for every handler (one that always refuses)."""
    content = {media_type: OpenAPIMediaType(schema=schema) for media_type in media_types}  # type: ignore[arg-type]
    if form is not None:
        content["multipart/form-data"] = OpenAPIMediaType(schema=form)  # type: ignore[arg-type]
    request_body = RequestBody(content=content, required=required)

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = request_body
            if not succeeds and self.responses:
                self.responses.pop("200", None)
            success = (self.responses or {}).get("200")
            if streams and success is not None and success.content is not None:  # type: ignore[union-attr]
                success.content["text/event-stream"] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))  # type: ignore[union-attr]

    return WithBody


def query(description: str) -> Any:
    """A query parameter the handler checks itself, documented: ``page: query("From 1") = None``.
    Typed as a plain string, which Litestar never refuses, so the handler's own 400s stay."""
    return Annotated[str | None, Parameter(description=description)]


def string(max_length: int | None = None, min_length: int = 1, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, **({"maxLength": max_length} if max_length else {}), **extra}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or null (which the handler takes as absent)."""
    return {**schema, "type": [schema["type"], "null"]}


def obj(required: tuple[str, ...] = (), closed: bool = False, **properties: Any) -> dict[str, Any]:
    """A JSON object; ``closed`` where the handler rejects unknown fields."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema
