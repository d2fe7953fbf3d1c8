"""What agents linked to knowledge get: the ``knowledge_search`` tool, and retrieved context.

Retrieval is scoped twice: to the agent's org and to the items linked to that agent.

Retrieved context is a ``knowledge_search`` call made for the agent before the model runs (for a
message of two words or more), stored in the thread like the model's own calls, so
``conversation_history`` shows what the answer was based on. A tiny local model rarely decides to
search by itself; this way it always sees the relevant entries, and a larger model can still call
the tool for more. When the best result's ``relevance`` reaches the documented threshold, it is passed
on with the runners-up (``index.handed_on``); when it does not, the result says so (``NOTHING_RELEVANT``)
instead of offering unrelated entries.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..agents.tools import Tool, ToolContext
from ..embeddings import answer_reader, get_embedder
from ..models import ToolSpec
from . import index as idx
from . import store as kb

log = logging.getLogger("flowbox.knowledge")

TOOL_NAME = "knowledge_search"
TOOL_RESULTS = 3
MAX_QUERY = 500
NOTHING_RELEVANT = "No relevant entry was found in the knowledge base."


def _query_of(text: str) -> str:
    return " ".join(text.split())[:MAX_QUERY]


async def has_knowledge(store, agent_id: str) -> bool:
    return await store.fetchone("SELECT 1 FROM knowledge_links WHERE agent_id = ? LIMIT 1", [agent_id]) is not None


def _asks(text: str) -> bool:
    """Worth a search: two words or more ("hi" is not a question for the knowledge base)."""
    return len(re.findall(r"\w+", text)) >= 2


async def _search(ctx: ToolContext, query: str, limit: int) -> dict[str, Any]:
    """The tool's result: the relevant entries, or a message saying there are none (unrelated
    entries would only give a small model something wrong to repeat)."""
    embedder = await get_embedder(ctx.services, knowledge=True)
    results = await kb.search(ctx.store, embedder, ctx.org_id, query, agent_id=ctx.agent_id, limit=limit,
                              answers=await answer_reader(ctx.services))
    relevant = [{"id": r["id"], "name": r["name"], "content": r["content"], "similarity": r["similarity"],
                 "relevance": r["relevance"]} for r in idx.handed_on(results, limit)]
    return {"query": query, "results": relevant, **({} if relevant else {"message": NOTHING_RELEVANT})}


async def _run(args: dict[str, Any], ctx: ToolContext) -> Any:
    query = _query_of(str(args.get("query") or ""))
    if not query:
        return {"error": "query is required"}
    return await _search(ctx, query, TOOL_RESULTS)


SEARCH_TOOL = Tool(
    ToolSpec(
        name=TOOL_NAME,
        description="Searches this organisation's knowledge base (documents, policies, product facts) for the passages that answer a question.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY}},
            "required": ["query"],
            "additionalProperties": False,
        },
        examples=(("What is your refund policy?", {"query": "What is your refund policy?"}),
                  ("which plans include phone support", {"query": "which plans include phone support"})),
        # the user's own words are the best query, and a small model copies them reliably
        candidates=lambda text: {"query": [_query_of(text)]},
        applies=_asks,
    ),
    _run,
)


async def knowledge_tools(ctx: ToolContext, agent: dict) -> list[Tool]:
    return [SEARCH_TOOL] if await has_knowledge(ctx.store, agent["id"]) else []


async def retrieved_context(ctx: ToolContext, agent: dict, user_text: str) -> list[tuple[str, dict, Any]]:
    """The search made for the agent before it answers, when it has linked knowledge: the relevant
    entries, or the message that none is."""
    limit = ctx.services.config.knowledge_context_items if ctx.services is not None else 0
    query = _query_of(user_text)
    if limit <= 0 or not _asks(query) or not await has_knowledge(ctx.store, agent["id"]):
        return []
    try:
        result = await _search(ctx, query, limit)
    except Exception as exc:  # retrieval must never fail the chat; the tool stays available
        log.warning("knowledge retrieval for agent %s failed: %r", agent["id"], exc)
        return []
    return [(TOOL_NAME, {"query": query}, result)]
