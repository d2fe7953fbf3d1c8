"""The Knowledge API's request and response bodies, for the OpenAPI document at `/schema` (`api.py`
returns plain dicts and checks bodies itself; the fuzz test checks real responses against these)."""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from typing import Any, TypedDict

from ..apidoc import obj, string
from .store import MAX_CONTENT, MAX_NAME


class KnowledgeItem(TypedDict):
    """The knowledge item"""

    id: str
    name: str | None
    created_at: str
    updated_at: str
    source: str  # api, cli or import
    linked_agents: list[str]


class KnowledgeItemWithContent(KnowledgeItem):
    """The knowledge item with its content"""

    content: str


class Pagination(TypedDict):
    current_page: int
    limit: int
    total_count: int
    total_pages: int
    has_next_page: bool
    has_previous_page: bool


class KnowledgePage(TypedDict):
    """One page of the organisation's items created through the API, newest first"""

    knowledge_items: list[KnowledgeItem]
    pagination: Pagination


class SearchHit(TypedDict):
    id: str
    name: str | None
    content: str
    source: str
    score: float  # what the mode ranks by: hybrid, the fused score; vector, cosine; keyword, BM25
    similarity: float  # cosine to the query
    relevance: float  # 0 to 1: how likely this result answers the query; below index.RELEVANCE_THRESHOLD, nothing relevant


class SearchResults(TypedDict):
    """The best matches, best first"""

    query: str
    agent_id: str | None
    results: list[SearchHit]


class KnowledgeEvaluation(TypedDict):
    """How search ranks the items that answer the questions given; nothing is stored"""

    cases: int
    threshold: float                 # the "no answer" line of relevance
    agent_id: str | None
    answerable: dict[str, Any]       # cases, hit1, hit5, mrr10, aboveThreshold (shares; None without cases)
    unanswerable: dict[str, Any]     # cases, belowThreshold
    results: list[dict[str, Any]]    # per case: query, expected, rank (1 to 10, or None), top (id, name, relevance), answered


class Deleted(TypedDict):
    """Deleted"""

    message: str


class UsageLimit(TypedDict):
    """The organisation has `knowledge_max_items` items"""

    error: str
    message: str
    minimalPlan: str


_AGENT_IDS = {"oneOf": [string(), {"type": "array", "minItems": 1, "items": string()}],
              "description": "Agent ids to link the item to (one string or an array)"}
_OPTIONAL = {"name": string(MAX_NAME, description="Display name"),
             "description_to_index_on": string(MAX_CONTENT, min_length=0, description="Embedded instead of the content")}
CREATE_BODY = obj(("content", "agent_ids"), content=string(MAX_CONTENT), agent_ids=_AGENT_IDS, **_OPTIONAL)
UPDATE_BODY = obj(content=string(MAX_CONTENT, description="Replaces the content (re-embeds it)"), agent_ids=_AGENT_IDS, **_OPTIONAL)
