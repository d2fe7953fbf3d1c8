"""Knowledge API routes (``agents-api.txt``, "Knowledge"): a thin layer over store.py, plus
``GET /api/public/knowledge/search`` (beyond the document; the console and tests use it)."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

from litestar import Request, delete, get, patch, post
from litestar.params import FromPath

from ..apidoc import body_doc, doc, query
from ..embeddings import Embedder, answer_reader, get_embedder
from ..errors import ModelError, StartupError, error
from ..http import Caller, json_body, services_of, whole_number
from ..validation import is_text
from . import evaluation
from . import store as kb
from .schemas import (
    CREATE_BODY,
    UPDATE_BODY,
    Deleted,
    KnowledgeEvaluation,
    KnowledgeItem,
    KnowledgeItemWithContent,
    KnowledgePage,
    SearchResults,
    UsageLimit,
)

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
        return await get_embedder(services_of(request), knowledge=True)


@post("/api/public/knowledge", summary="Add a knowledge item", status_code=200,
      responses=doc(200, KnowledgeItem, 400, 401, 402, UsageLimit, 403, 503), operation_class=body_doc(CREATE_BODY))
async def add_knowledge(request: Request, principal: Caller) -> dict[str, Any]:
    services = services_of(request)
    body = await json_body(request)
    kb.validate_create(body)  # the documented 400s come before any model loading
    embedder = await _embedder(request)
    async with embedding_errors():
        return await kb.create_item(services.store, embedder, principal.org_id, body,
                                    max_items=services.config.knowledge_max_items)


@get("/api/public/knowledge", summary="List knowledge items", responses=doc(200, KnowledgePage, 400, 401, 403))
async def list_knowledge(request: Request, principal: Caller, page: query("Page number, from 1 (default 1)") = None,
                         limit: query("Items per page, 1 to 100 (default 20)") = None,
                         agent_id: query("Only the items linked to this agent") = None) -> dict[str, Any]:
    page_no, size = kb.page_params(page, limit)
    return await kb.list_items(services_of(request).store, principal.org_id, agent_id=agent_id or None, page=page_no, limit=size)


@get("/api/public/knowledge/search", summary="Hybrid search over knowledge items (flowbox extension)",
     responses=doc(200, SearchResults, 400, 401, 403, 503))
async def search_knowledge(request: Request, principal: Caller, q: query("The question or keywords (required)") = None,
                           limit: query(f"Results, 1 to {MAX_SEARCH_LIMIT} (default 5)") = None,
                           mode: query(f"One of: {', '.join(SEARCH_MODES)} (default hybrid)") = None,
                           agent_id: query("Only the items linked to this agent") = None) -> dict[str, Any]:
    services = services_of(request)
    text = q or ""
    if not is_text(text, required=True):
        raise kb.invalid('"q" is required and must be a non-empty string.')
    if len(text) > kb.MAX_CONTENT:
        raise kb.invalid(f'"q" must be {kb.MAX_CONTENT} characters or less.')
    count = whole_number(limit or "5", 1, MAX_SEARCH_LIMIT)
    if count is None:
        raise kb.invalid(f'"limit" must be an integer between 1 and {MAX_SEARCH_LIMIT}.')
    mode = mode or "hybrid"
    if mode not in SEARCH_MODES:
        raise kb.invalid(f'"mode" must be one of: {", ".join(SEARCH_MODES)}.')
    agent_id = agent_id or None
    if agent_id is not None:
        await kb.check_agent(services.store, principal.org_id, agent_id)
    embedder = await _embedder(request) if mode != "keyword" else None
    answers = await answer_reader(services) if mode == "hybrid" else None  # only a hybrid search is read again
    async with embedding_errors():
        results = await kb.search(services.store, embedder, principal.org_id, text.strip(),
                                  agent_id=agent_id, limit=count, mode=mode, answers=answers)
    return {"query": text.strip(), "agent_id": agent_id, "results": results}


EVALUATE_BODY = {
    "type": "object", "required": ["cases"],
    "properties": {
        "cases": {"type": "array", "minItems": 1, "maxItems": evaluation.MAX_CASES, "items": {
            "type": "object", "required": ["query", "expected"],
            "properties": {"query": {"type": "string", "maxLength": kb.MAX_CONTENT},
                           "expected": {"type": ["string", "null"], "description": "the id of the item that answers it; null: none does"}}}},
        "agent_id": {"type": ["string", "null"], "minLength": 1,
                     "description": "search only the items linked to this agent; null or absent: all of the org's items"}},
}


@post("/api/public/knowledge/evaluate", summary="How search ranks the items that answer test questions (flowbox extension)",
      status_code=200, responses=doc(200, KnowledgeEvaluation, 400, 401, 403, 503), operation_class=body_doc(EVALUATE_BODY))
async def evaluate_knowledge(request: Request, principal: Caller) -> dict[str, Any]:
    services = services_of(request)
    body = await json_body(request)
    cases = evaluation.cases_of(body)  # the 400s come before any model loading
    agent_id = body.get("agent_id")
    if agent_id is not None:
        if not isinstance(agent_id, str) or not agent_id:
            raise kb.invalid('If provided, "agent_id" must be a non-empty string.')
        await kb.check_agent(services.store, principal.org_id, agent_id)
    embedder = await _embedder(request)
    async with embedding_errors():
        return await evaluation.evaluate(services.store, embedder, principal.org_id, cases, agent_id,
                                         answers=await answer_reader(services))


@get("/api/public/knowledge/{item_id:str}", summary="Get a knowledge item", responses=doc(200, KnowledgeItemWithContent, 401, 404))
async def get_knowledge(request: Request, principal: Caller, item_id: FromPath[str]) -> dict[str, Any]:
    return await kb.get_item(services_of(request).store, principal.org_id, item_id)


@patch("/api/public/knowledge/{item_id:str}", summary="Update a knowledge item",
       responses=doc(200, KnowledgeItem, 400, 401, 403, 404, 409, 503), operation_class=body_doc(UPDATE_BODY))
async def update_knowledge(request: Request, principal: Caller, item_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    body = await json_body(request)
    kb.validate_update(body)
    embedder = await _embedder(request)
    async with embedding_errors():
        return await kb.update_item(services.store, embedder, principal.org_id, item_id, body)


@delete("/api/public/knowledge/{item_id:str}", summary="Delete a knowledge item", status_code=200, responses=doc(200, Deleted, 401, 404))
async def delete_knowledge(request: Request, principal: Caller, item_id: FromPath[str]) -> dict[str, Any]:
    await kb.delete_item(services_of(request).store, principal.org_id, item_id)
    return {"message": "Knowledge item deleted successfully"}


# Routed by area.py, in a Router that authenticates the caller's API key.
HANDLERS = [add_knowledge, list_knowledge, search_knowledge, evaluate_knowledge, get_knowledge, update_knowledge, delete_knowledge]
