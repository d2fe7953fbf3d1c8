"""What a project's customers wrote that its flows did not understand (``GET /v1/projects/:id/unmatched``,
``flowbox projects unmatched``): the user texts an UNKNOWN step answered (or none did, in flows without one:
``engine.Decision.matched``), the same text (as an exact match reads it: case, punctuation, spaces and chat
shorthand aside) to the same UNKNOWN step (the top-level one, one under a step's question: "not yes or no", or
none) counted once with how often and on how many threads it came, the
most frequent first.

This is what a bot builder reads to improve a flow: a text that keeps coming and belongs to an intent is an
example to add (the flow is learned again in the background); one the business does not serve may be what
the UNKNOWN step's answer should mention. So that the builder can tell the two apart, each text comes with
the step it matches now where it came (a flow changed since may take it), the intent its matcher finds likeliest
there (under a question, that step's children first), and the off-topic phrasing that puts it out of scope, if one
does (``suggest``: ``inbox.reading``, as ``explain`` reads a text).
Events, locations and media an UNKNOWN step answered are not listed: no example would match them.

Its twin, ``unsure`` (``GET /v1/projects/:id/unsure``, ``flowbox projects unsure``), lists the texts an intent matched
with a confidence below ``UNSURE``, grouped by the step they matched: where the flows most likely misunderstood
what they answered. Each comes with ``suggest``'s reading too, and ``alternative``: the likeliest other intent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
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
# Matches below this confidence are listed as unsure. On scripts/eval/intents.py's flows, a top-level match below it
# was wrong (another intent's, or out of scope) 7 to 12 times as often as one above it: tuned dev half, 0.265 of 147
# matches against 0.037 of 1,889 (0.218 and 0.027 at 0.95, which lists twice as many); its 16 untuned flows, test
# half, 0.434 of 83 against 0.035 of 849. With the judge's bar at 0.4 (acceptance.BAR), 0.239 of 138 against 0.036
# and 0.403 of 77 against 0.035. An exact example match is 1.0, and so never listed.
UNSURE = 0.9

# The project's user texts since a time, newest first, that ``where`` (a condition on the stored message) picks
_TEXTS = """
SELECT thread_id, json_extract(message, '$.fallback') AS text, json_extract(message, '$.step.stepId') AS step_id,
       json_extract(message, '$.step.title') AS title, json_extract(message, '$.intents[0].confidence') AS confidence, created_at
FROM msg_messages
WHERE project_id = ? AND sender = 'user' AND created_at >= ? AND json_extract(message, '$.responses[0].type') = 'text'
  AND {where}
ORDER BY created_at DESC LIMIT ?
"""
_UNMATCHED = _TEXTS.format(where="json_extract(message, '$.step.type') = 'UNKNOWN'")
_UNSURE = _TEXTS.format(where="json_extract(message, '$.step.type') = 'INTENT' AND json_extract(message, '$.intents[0].confidence') < ?")


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
    texts, distinct = await asyncio.to_thread(_grouped, rows, limit, lambda row, step_id: {"unknownStepId": step_id})
    return {"since": since, "messages": len(rows), "distinct": distinct, "texts": texts}


async def unsure(store: Store, project: dict[str, Any], since: str, limit: int) -> dict[str, Any]:
    """The project's user texts an intent matched with a confidence below ``UNSURE`` since ``since``, one per
    step matched and ``key_of``, as ``unmatched`` lists them; each with the step (stepId, title) and the
    confidence of its latest match. ``below`` says the line, so that a client need not hard-code it."""
    rows = await store.fetchall(_UNSURE, [project["id"], since, UNSURE, SCANNED])
    texts, distinct = await asyncio.to_thread(_grouped, rows, limit, lambda row, step_id: {
        "matched": {"stepId": step_id, "title": row["title"]}, "confidence": row["confidence"]})
    return {"since": since, "below": UNSURE, "messages": len(rows), "distinct": distinct, "texts": texts}


def _grouped(rows: list[Any], limit: int, fields: Callable[[Any, str | None], dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The ``limit`` most frequent texts of ``rows`` (newest first) by step and ``key_of``, and how many there were;
    each with ``fields`` of its latest row (and its step). 10,000 texts read as an exact match: 0.1 s of CPU (run off the event loop)."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        text = row["text"].strip() if isinstance(row["text"], str) else ""
        if not text:
            continue
        step_id = row["step_id"] if isinstance(row["step_id"], str) else None
        group = groups.setdefault(f"{step_id}\n{key_of(text)}", {"text": text, **fields(row, step_id), "count": 0,
                                                                  "threads": set(), "lastAt": row["created_at"]})
        group["count"] += 1
        group["threads"].add(row["thread_id"])
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], -len(g["threads"])))  # stable: the most recent first among equals
    return [{**g, "threads": len(g["threads"])} for g in ranked[:limit]], len(groups)


async def suggest(services: Services, project: dict[str, Any], texts: list[dict[str, Any]]) -> None:
    """Adds to each of ``texts`` (``unmatched``'s or ``unsure``'s) what the flows make of it now, where it came:
    ``context`` (the step whose question it answered, when the step that took it, UNKNOWN or matched, is that step's
    child: stepId, title, type; else None), ``now`` (the step it matches there: stepId, title, type; None when nothing
    does), ``suggestion`` (the intent the matcher finds likeliest there, that step's children first: stepId, title,
    confidence, its closest example and that similarity; None without intents) and ``offTopic`` (at the top level, the
    off-topic phrasing that puts it out of scope, or None); to ``unsure``'s, ``alternative``: the likeliest intent
    other than the one it matched, as ``suggestion``."""
    graph = await graph_for(services, project)
    threshold = threshold_of(services, project)
    for item in texts:
        matched = item.get("matched")
        took = graph.steps.get((matched["stepId"] if matched else item["unknownStepId"]) or "")
        parent = graph.steps.get((took.get("contexts") or [""])[0]) if took else None
        inp = Incoming(kind="text", speech=item["text"]).engine_input()  # the flows, whatever the hour
        decision, context, scores = await reading(graph, project, {"step": parent["stepId"]} if parent else {}, inp,
                                                  item["text"], threshold)
        likeliest = [_intent(i) for i in scores["intents"]]
        off = scores.get("offTopic")
        item["context"] = {k: context[k] for k in ("stepId", "title", "type")} if context else None
        item["now"] = decision.matched
        item["suggestion"] = likeliest[0] if likeliest else None
        item["offTopic"] = off["phrasing"] if off and not context else None
        if matched:
            item["alternative"] = next((i for i in likeliest if i["stepId"] != matched["stepId"]), None)


def _intent(scored: dict[str, Any]) -> dict[str, Any]:
    return {k: scored[k] for k in ("stepId", "title", "confidence", "example", "similarity")}
