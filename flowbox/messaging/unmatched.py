"""What a project's customers wrote that its flows did not understand (``GET /v1/projects/:id/unmatched``,
``flowbox projects unmatched``): the user texts an UNKNOWN step answered, the same text (as an exact match
reads it: case, punctuation, spaces and chat shorthand aside) to the same UNKNOWN step (the top-level one, or
one under a step's question: "not yes or no") counted once with how often and on how many threads it came, the
most frequent first.

This is what a bot builder reads to improve a flow: a text that keeps coming and belongs to an intent is an
example to add (the flow is learned again in the background); one the business does not serve may be what
the UNKNOWN step's answer should mention. So that the builder can tell the two apart, each text comes with
the step it matches now where it came (a flow changed since may take it), the intent its matcher finds likeliest
there (under a question, that step's children first), and the off-topic phrasing that puts it out of scope, if one
does (``suggest``: ``inbox.reading``, as ``explain`` reads a text).
Events, locations and media an UNKNOWN step answered are not listed: no example would match them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from ..db import Store
from ..ids import iso, now
from ..services import Services
from .conversation import graph_for, threshold_of
from .inbox import reading
from .incoming import Incoming
from .matcher import compact, normalize, plain

DAYS = 30          # the window read when no ``since`` is given
MAX_LIMIT = 100    # texts answered at most (each is read by the matcher again)
SCANNED = 10_000   # the most recent unmatched messages in the window that are counted

_UNMATCHED = """
SELECT thread_id, json_extract(message, '$.fallback') AS text, json_extract(message, '$.step.stepId') AS step_id, created_at
FROM msg_messages
WHERE project_id = ? AND sender = 'user' AND created_at >= ? AND json_extract(message, '$.step.type') = 'UNKNOWN'
  AND json_extract(message, '$.responses[0].type') = 'text'
ORDER BY created_at DESC LIMIT ?
"""


def default_since() -> str:
    return iso(now() - dt.timedelta(days=DAYS))


def key_of(text: str) -> str:
    """One key for the texts an exact match reads as one ("Cancel my order!", "cancel  my order")."""
    text = plain(text)
    return compact(text) or normalize(text) or text.strip()


async def unmatched(store: Store, project: dict[str, Any], since: str, limit: int) -> dict[str, Any]:
    """The project's user texts an UNKNOWN step answered since ``since`` (ISO 8601), one per UNKNOWN step and
    ``key_of``: the ``limit`` most frequent (then the most recent), each worded as it came last."""
    rows = await store.fetchall(_UNMATCHED, [project["id"], since, SCANNED])
    texts, distinct = await asyncio.to_thread(_grouped, rows, limit)  # 10,000 texts read as an exact match: 0.1 s of CPU
    return {"since": since, "messages": len(rows), "distinct": distinct, "texts": texts}


def _grouped(rows: list[Any], limit: int) -> tuple[list[dict[str, Any]], int]:
    """The ``limit`` most frequent texts of ``rows`` (newest first) by UNKNOWN step and ``key_of``, and how many there were."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        text = row["text"].strip() if isinstance(row["text"], str) else ""
        if not text:
            continue
        step_id = row["step_id"] if isinstance(row["step_id"], str) else None
        group = groups.setdefault(f"{step_id}\n{key_of(text)}", {"text": text, "unknownStepId": step_id, "count": 0,
                                                                  "threads": set(), "lastAt": row["created_at"]})
        group["count"] += 1
        group["threads"].add(row["thread_id"])
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], -len(g["threads"])))  # stable: the most recent first among equals
    return [{**g, "threads": len(g["threads"])} for g in ranked[:limit]], len(groups)


async def suggest(services: Services, project: dict[str, Any], texts: list[dict[str, Any]]) -> None:
    """Adds to each of ``texts`` what the flows make of it now, where it came: ``context`` (the step whose question it
    answered, when the UNKNOWN step that took it is that step's child: stepId, title, type; else None), ``now`` (the
    step it matches there: stepId, title, type; None when nothing does), ``suggestion`` (the intent the matcher finds
    likeliest there, that step's children first: stepId, title, confidence, its closest example and that similarity;
    None without intents) and ``offTopic`` (at the top level, the off-topic phrasing that puts it out of scope, or None)."""
    graph = await graph_for(services, project)
    threshold = threshold_of(services, project)
    for item in texts:
        unknown = graph.steps.get(item["unknownStepId"] or "")
        parent = graph.steps.get((unknown.get("contexts") or [""])[0]) if unknown else None
        inp = Incoming(kind="text", speech=item["text"]).engine_input()  # the flows, whatever the hour
        decision, context, scores = await reading(graph, project, {"step": parent["stepId"]} if parent else {}, inp,
                                                  item["text"], threshold)
        likeliest = scores["intents"][0] if scores["intents"] else None
        off = scores.get("offTopic")
        item["context"] = {k: context[k] for k in ("stepId", "title", "type")} if context else None
        item["now"] = decision.matched
        item["suggestion"] = None if likeliest is None else {
            k: likeliest[k] for k in ("stepId", "title", "confidence", "example", "similarity")}
        item["offTopic"] = off["phrasing"] if off and not context else None
