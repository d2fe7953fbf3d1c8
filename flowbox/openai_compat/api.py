"""The ``/v1`` routes: a thin layer over completions.py and embeddings.py, with OpenAI's auth
(``Authorization: Bearer <flowbox key>``) and error shapes."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.params import FromPath

from ..apidoc import body_doc, obj, string
from ..http import is_text, presented_key, services_of
from ..orgs import Principal, authenticate
from ..sse import EventStream
from . import completions, embeddings
from .errors import EXCEPTION_HANDLERS, OpenAIError, bad
from .params import ROLES, parse

_CONTENT = {"oneOf": [{"type": "string"}, {"type": "array", "items": obj(("type",), type=string(), text={"type": "string"})},
                      {"type": "null"}]}
COMPLETION_BODY = obj(
    ("model", "messages"),
    model=string(description="An agent id, or a raw model (see GET /v1/models)"),
    messages={"type": "array", "minItems": 1,
              "items": obj(("role",), role={"type": "string", "enum": list(ROLES)}, content=_CONTENT,
                           tool_calls={"type": "array", "items": {"type": "object"}}, tool_call_id={"type": "string"})},
    stream={"type": "boolean"}, stream_options=obj(include_usage={"type": "boolean"}),
    max_tokens={"type": "integer", "minimum": 1}, max_completion_tokens={"type": "integer", "minimum": 1},
    temperature={"type": "number", "minimum": 0, "maximum": 2}, seed={"type": "integer"},
    stop={"oneOf": [string(), {"type": "array", "maxItems": 4, "items": string()}]},
    tools={"type": "array", "items": {"type": "object"}}, tool_choice={"oneOf": [{"type": "string"}, {"type": "object"}]},
    response_format={"type": "object"}, metadata={"type": "object"},
)

THREAD_HEADER = "X-Flowbox-Thread"


async def _principal(request: Request) -> Principal:
    key = presented_key(request)
    if not key:
        raise OpenAIError(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                               "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    principal = await authenticate(services_of(request).store, key)
    if principal is None:
        raise OpenAIError(401, "Incorrect API key provided. Use a flowbox API key.", code="invalid_api_key")
    return principal


async def _body(request: Request) -> Any:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"We could not parse the JSON body of your request ({type(exc).__name__}: {exc}). "
                  "The API expects a JSON payload.", None, None) from None
    if not is_text(json.dumps(body, ensure_ascii=False)):  # every string reaches the tokenizer as UTF-8
        raise bad("The JSON body of your request contains a lone UTF-16 surrogate; send valid Unicode text.", None, None)
    return body


@get("/models", summary="List models: the organisation's agents and the raw models")
async def list_models(request: Request) -> dict[str, Any]:
    principal = await _principal(request)
    services = services_of(request)
    data = await completions.list_models(services, principal, embeddings.embedding_model_name(services.config))
    return {"object": "list", "data": data}


@get("/models/{model_id:str}", summary="Retrieve a model")
async def get_model(request: Request, model_id: FromPath[str]) -> dict[str, Any]:
    principal = await _principal(request)
    services = services_of(request)
    for model in await completions.list_models(services, principal, embeddings.embedding_model_name(services.config)):
        if model["id"] == model_id:
            return model
    raise completions.not_found(model_id)


@post("/chat/completions", summary="Chat completion on an agent or a raw model (stream: true for SSE)", status_code=200,
      operation_class=body_doc(COMPLETION_BODY))
async def chat_completions(request: Request) -> Response:
    principal = await _principal(request)
    services = services_of(request)
    body = await _body(request)
    params = parse(body, request.headers.get(THREAD_HEADER))
    job = await completions.prepare(services, principal, params, body.get("messages"))
    headers = {THREAD_HEADER: job.thread_id} if job.thread_id else {}
    if params.stream:
        return EventStream(completions.stream(job), headers=headers)
    return Response(completions.response(job, await completions.run(job)), headers=headers)


@post("/embeddings", summary="Embed texts with flowbox's embedding model", status_code=200)
async def create_embeddings(request: Request) -> dict[str, Any]:
    await _principal(request)
    return await embeddings.create(services_of(request), await _body(request))


ROUTES = [Router(path="/v1", route_handlers=[list_models, get_model, chat_completions, create_embeddings],
                 exception_handlers=EXCEPTION_HANDLERS)]
