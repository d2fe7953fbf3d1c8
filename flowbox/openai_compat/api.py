"""The ``/v1`` routes: a thin layer over completions.py and embeddings.py, with OpenAI's auth
(``Authorization: Bearer <flowbox key>``) and error shapes."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath

from ..apidoc import body_doc, doc
from ..http import BadJSON, Caller, authenticated, decode_json_async, presented_key, services_of
from ..orgs import Principal, authenticate
from ..revocation import REVOKED_MESSAGE, api_key, streams_of
from ..sse import EventStream, event, until_revoked
from . import completions, embeddings
from .errors import OpenAIError, bad
from .params import parse
from .schemas import COMPLETION_BODY, EMBEDDINGS_BODY, ChatCompletion, EmbeddingList, Model, ModelList, OpenAIErrorBody

THREAD_HEADER = "X-Flowbox-Thread"


def errors(*statuses: int) -> list:
    """Errors in OpenAI's shape (the rate limit's 429 too: ``flowbox/surfaces.py``)."""
    items: list = []
    for status in statuses:
        items += [status, OpenAIErrorBody]
    return items


async def openai_principal(request: Request) -> Principal:
    """The caller's key, or OpenAI's 401 bodies."""
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
        return await decode_json_async(await request.body())
    except BadJSON as exc:
        if not exc.syntax:
            raise bad(f"The JSON body of your request holds a value we cannot take: {exc}", None, None) from None
        raise bad(f"We could not parse the JSON body of your request ({exc}). "
                  "The API expects a JSON payload.", None, None) from None


@get("/models", summary="List models: the organisation's agents and the raw models",
     responses=doc(200, ModelList, *errors(400, 401, 429)))
async def list_models(request: Request, principal: Caller) -> dict[str, Any]:
    services = services_of(request)
    data = await completions.list_models(services, principal, embeddings.embedding_model_name(services.config))
    return {"object": "list", "data": data}


@get("/models/{model_id:str}", summary="Retrieve a model", responses=doc(200, Model, *errors(400, 401, 404, 429)))
async def get_model(request: Request, principal: Caller, model_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    for model in await completions.list_models(services, principal, embeddings.embedding_model_name(services.config)):
        if model["id"] == model_id:
            return model
    raise completions.not_found(model_id)


@post("/chat/completions", summary="Chat completion on an agent or a raw model (stream: true for SSE)", status_code=200,
      responses=doc(200, ChatCompletion, *errors(400, 401, 403, 404, 413, 429, 503)),
      operation_class=body_doc(COMPLETION_BODY, streams=True))
async def chat_completions(request: Request, principal: Caller) -> Response:
    services = services_of(request)
    body = await _body(request)
    params = parse(body, request.headers.get(THREAD_HEADER))
    job = await completions.prepare(services, principal, params, body.get("messages"))
    headers = {THREAD_HEADER: job.thread_id} if job.thread_id else {}
    if params.stream:
        farewell = event(OpenAIError(401, REVOKED_MESSAGE, code="invalid_api_key").body) + "data: [DONE]\n\n"
        holder = streams_of(services).holder(api_key(principal.key_id))
        return EventStream(until_revoked(completions.stream(job), holder, farewell), headers=headers)
    return Response(completions.response(job, await completions.run(job)), headers=headers)


@post("/embeddings", summary="Embed texts with flowbox's embedding model", status_code=200,
      responses=doc(200, EmbeddingList, *errors(400, 401, 404, 413, 429, 503)), operation_class=body_doc(EMBEDDINGS_BODY))
async def create_embeddings(request: Request, principal: Caller) -> dict[str, Any]:
    return await embeddings.create(services_of(request), await _body(request))


ROUTER = authenticated([list_models, get_model, chat_completions, create_embeddings], openai_principal, path="/v1")
