"""Knowledge API routes (``agents-api.txt``, "Knowledge"): a thin layer over store.py, plus
``GET /api/public/knowledge/search`` (beyond the document; the console and tests use it)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator

from litestar import Request, delete, get, patch, post

from ..apidoc import body_doc, obj, string
from ..embeddings import Embedder, get_embedder
from ..errors import ModelError, StartupError, error
from ..http import is_text, json_body, require_key, services_of
from ..services import STARTUP_HOOKS, Services
from . import agent_tools  # noqa: F401  (registers the agents' knowledge tool and context)
from . import store as kb

_AGENT_IDS = {"oneOf": [string(), {"type": "array", "minItems": 1, "items": string()}],
              "description": "Agent ids to link the item to (one string or an array)"}
_OPTIONAL = {"name": string(kb.MAX_NAME, description="Display name"),
             "description_to_index_on": string(kb.MAX_CONTENT, min_length=0, description="Embedded instead of the content")}
CREATE_BODY = obj(("content", "agent_ids"), content=string(kb.MAX_CONTENT), agent_ids=_AGENT_IDS, **_OPTIONAL)
UPDATE_BODY = obj(content=string(kb.MAX_CONTENT, description="Replaces the content (re-embeds it)"), agent_ids=_AGENT_IDS, **_OPTIONAL)

SEARCH_MODES = ("hybrid", "vector", "keyword")
MAX_SEARCH_LIMIT = 50


@contextlib.asynccontextmanager
async def embedding_errors() -> AsyncIterator[None]:
    """An unavailable embedding model is a 503, not a 500."""
    try:
        yield
    except (ModelError, StartupError) as exc:
        raise error(503, "Service temporarily unavailable", f"The embedding model is unavailable: {exc}") from exc


async def _embedder(request: Request) -> Embedder:
    async with embedding_errors():
        return await get_embedder(services_of(request))


@post("/api/public/knowledge", summary="Add a knowledge item", status_code=200, operation_class=body_doc(CREATE_BODY))
async def add_knowledge(request: Request) -> dict[str, Any]:
    principal = await require_key(request)
    services = services_of(request)
    body = await json_body(request)
    kb.validate_create(body)  # the documented 400s come before any model loading
    embedder = await _embedder(request)
    async with embedding_errors():
        return await kb.create_item(services.store, embedder, principal.org_id, body,
                                    max_items=services.config.knowledge_max_items)


@get("/api/public/knowledge", summary="List knowledge items")
async def list_knowledge(request: Request) -> dict[str, Any]:
    principal = await require_key(request)
    params = request.query_params
    page, limit = kb.page_params(params.get("page"), params.get("limit"))
    agent_id = params.get("agent_id") or None
    return await kb.list_items(services_of(request).store, principal.org_id, agent_id=agent_id, page=page, limit=limit)


@get("/api/public/knowledge/search", summary="Hybrid search over knowledge items (flowbox extension)")
async def search_knowledge(request: Request) -> dict[str, Any]:
    principal = await require_key(request)
    services = services_of(request)
    params = request.query_params
    query = params.get("q") or ""
    if not is_text(query) or not query.strip():
        raise kb.invalid('"q" is required and must be a non-empty string.')
    if len(query) > kb.MAX_CONTENT:
        raise kb.invalid(f'"q" must be {kb.MAX_CONTENT} characters or less.')
    try:
        limit = int(params.get("limit") or 5)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise kb.invalid(f'"limit" must be an integer between 1 and {MAX_SEARCH_LIMIT}.')
    mode = params.get("mode") or "hybrid"
    if mode not in SEARCH_MODES:
        raise kb.invalid(f'"mode" must be one of: {", ".join(SEARCH_MODES)}.')
    agent_id = params.get("agent_id") or None
    if agent_id is not None:
        await kb.check_agent(services.store, principal.org_id, agent_id)
    embedder = await _embedder(request) if mode != "keyword" else None
    async with embedding_errors():
        results = await kb.search(services.store, embedder, principal.org_id, query.strip(),
                                  agent_id=agent_id, limit=limit, mode=mode)
    return {"query": query.strip(), "agent_id": agent_id, "results": results}


@get("/api/public/knowledge/{item_id:str}", summary="Get a knowledge item")
async def get_knowledge(request: Request, item_id: str) -> dict[str, Any]:
    principal = await require_key(request)
    return await kb.get_item(services_of(request).store, principal.org_id, item_id)


@patch("/api/public/knowledge/{item_id:str}", summary="Update a knowledge item", operation_class=body_doc(UPDATE_BODY))
async def update_knowledge(request: Request, item_id: str) -> dict[str, Any]:
    principal = await require_key(request)
    services = services_of(request)
    body = await json_body(request)
    kb.validate_update(body)
    embedder = await _embedder(request)
    async with embedding_errors():
        return await kb.update_item(services.store, embedder, principal.org_id, item_id, body)


@delete("/api/public/knowledge/{item_id:str}", summary="Delete a knowledge item", status_code=200)
async def delete_knowledge(request: Request, item_id: str) -> dict[str, Any]:
    principal = await require_key(request)
    await kb.delete_item(services_of(request).store, principal.org_id, item_id)
    return {"message": "Knowledge item deleted successfully"}


async def preload_embedder(services: Services) -> None:
    """Loads the embedding model at startup when there is knowledge to search, so the first search
    or chat does not wait for it."""
    if await services.store.fetchone("SELECT 1 FROM knowledge_items LIMIT 1"):
        try:
            await get_embedder(services)
        except (ModelError, StartupError) as exc:  # searches answer 503 until it is fixed
            logging.getLogger("flowbox").warning("embedding model not loaded: %s", exc)


STARTUP_HOOKS.append(preload_embedder)

ROUTES = [add_knowledge, list_knowledge, search_knowledge, get_knowledge, update_knowledge, delete_knowledge]
