"""How well knowledge search finds the right entry for a builder's own questions
(``POST /api/public/knowledge/evaluate``, beyond the document, like search).

Each case is a question and the id of the item that answers it, or null for a question the knowledge
base should have no answer to. Every question is searched as an agent's search tool searches (hybrid,
the org's items or an agent's), and nothing is stored. The answer gives, for the answerable questions,
how often their item comes first (hit@1) or in the first five (hit@5) and the mean reciprocal rank of
the first ten (MRR@10); for the others, how often the best result falls below the "no answer" line
(``index.RELEVANCE_THRESHOLD``), beside how often an answerable question's best result stays above it.
These are the measures ``scripts/eval/knowledge.py`` reports for flowbox itself.
"""

from __future__ import annotations

from typing import Any

from ..db import Store
from ..embeddings import Embedder
from ..validation import invalid, is_text
from . import index as idx
from . import store as kb

MAX_CASES = 500
RANKED = 10  # the results looked at per question (MRR@10)


def cases_of(body: Any) -> list[dict[str, Any]]:
    """The cases of a request body (``{"cases": [{"query", "expected"}]}``); a 400 naming the first problem."""
    cases = body.get("cases") if isinstance(body, dict) else None
    if not isinstance(cases, list) or not 1 <= len(cases) <= MAX_CASES:
        raise invalid(f'"cases" is required: a list of 1 to {MAX_CASES} objects with "query" and "expected".')
    checked = []
    for n, case in enumerate(cases):
        query, expected = (case.get("query"), case.get("expected")) if isinstance(case, dict) else (None, None)
        if not is_text(query, kb.MAX_CONTENT, required=True):
            raise invalid(f'"cases[{n}].query" must be a non-empty string of at most {kb.MAX_CONTENT} characters.')
        # Absent is not null: a misspelt key would otherwise count silently as a question with no answer.
        if "expected" not in case or (expected is not None and not isinstance(expected, str)):
            raise invalid(f'"cases[{n}].expected" must be the id of the item that answers it, or null.')
        checked.append({"query": query.strip(), "expected": expected})
    return checked


async def evaluate(store: Store, embedder: Embedder, org_id: str, cases: list[dict[str, Any]],
                   agent_id: str | None = None, answers: Embedder | None = None) -> dict[str, Any]:
    """``cases`` (from ``cases_of``) searched and scored; a 400 when one names no item of the org."""
    named = {c["expected"] for c in cases if c["expected"] is not None}
    if named:
        rows = await store.fetchall(f"SELECT id FROM knowledge_items WHERE org_id = ? AND id IN ({','.join('?' * len(named))})",
                                    [org_id, *named])
        if unknown := sorted(named - {r["id"] for r in rows}):
            raise invalid(f'"expected" names no knowledge item of this organization: {", ".join(unknown[:5])}.')
    results = []
    for case in cases:
        found = await kb.search(store, embedder, org_id, case["query"], agent_id=agent_id, limit=RANKED, answers=answers)
        ids = [r["id"] for r in found]
        top = found[0] if found else None
        results.append({**case, "rank": ids.index(case["expected"]) + 1 if case["expected"] in ids else None,
                        "top": {"id": top["id"], "name": top["name"], "relevance": top["relevance"]} if top else None,
                        "answered": top is not None and top["relevance"] >= idx.RELEVANCE_THRESHOLD})
    answerable = [r for r in results if r["expected"] is not None]
    unanswerable = [r for r in results if r["expected"] is None]
    return {"cases": len(results), "threshold": idx.RELEVANCE_THRESHOLD, "agent_id": agent_id,
            "answerable": {"cases": len(answerable), "hit1": _share(answerable, lambda r: r["rank"] == 1),
                           "hit5": _share(answerable, lambda r: r["rank"] is not None and r["rank"] <= 5),
                           "mrr10": round(sum(1 / r["rank"] for r in answerable if r["rank"]) / len(answerable), 4) if answerable else None,
                           "aboveThreshold": _share(answerable, lambda r: r["answered"])},
            "unanswerable": {"cases": len(unanswerable), "belowThreshold": _share(unanswerable, lambda r: not r["answered"])},
            "results": results}


def _share(results: list[dict[str, Any]], right) -> float | None:
    return round(sum(1 for r in results if right(r)) / len(results), 4) if results else None
