"""How well a project's flows match a bot builder's own test messages (``POST /v1/projects/:id/evaluate``).

Each case is a text and the step it should reach: an INTENT step's id, or ``UNKNOWN`` for a message the
flows should not take. It is matched as a new thread's message would be (or, with ``context``, as one on a
thread whose current step is that one: its children first), through the engine that answers messages,
and nothing is stored. The answer counts the cases matched right, in scope and out of scope apart, and
per intent expected, which intents it went to instead: what to add examples to, or what to split.

Messages the builder wrote apart from the examples say how the flow will do; the examples themselves say
little (an example matches itself exactly). The learned model is waited for (``LEARN_WAIT``), so the
answer is the one a message gets once the flow has been prepared.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections import Counter
from typing import Any

from ..services import Services
from ..validation import is_text
from .common import rest_error
from .conversation import graph_for, threshold_of
from .engine import Graph, decide
from .incoming import Incoming

MAX_CASES = 1000
MAX_TEXT = 1000
UNKNOWN = "UNKNOWN"
LEARN_WAIT = 60.0  # seconds: training takes well under a second for flows of a few hundred examples


def cases_of(body: Any, graph: Graph) -> list[dict[str, Any]]:
    """The cases of a request body (``{"cases": [{"text", "expected", "context"?}]}``), checked against the
    project's flows; a 400 naming the first problem otherwise."""
    cases = body.get("cases") if isinstance(body, dict) else None
    if not isinstance(cases, list) or not 1 <= len(cases) <= MAX_CASES:
        raise rest_error(400, f"cases is required: a list of 1 to {MAX_CASES} objects with text and expected")
    intents = {s["stepId"] for s in graph.steps.values() if s["type"] == "INTENT"}
    checked = []
    for n, case in enumerate(cases):
        if not isinstance(case, dict):
            raise rest_error(400, f"cases[{n}] must be an object with text and expected")
        text, expected, context = case.get("text"), case.get("expected"), case.get("context")
        if not is_text(text, MAX_TEXT, required=True):
            raise rest_error(400, f"cases[{n}].text must be a non-empty string of at most {MAX_TEXT} characters")
        if not isinstance(expected, str) or (expected != UNKNOWN and expected not in intents):
            raise rest_error(400, f"cases[{n}].expected must be {UNKNOWN!r} or the stepId of an INTENT step; {expected!r} is neither")
        if context is not None and not graph.children.get(context if isinstance(context, str) else ""):
            raise rest_error(400, f"cases[{n}].context must be the stepId of a step with child steps; {context!r} is not")
        checked.append({"text": text, "expected": expected, "context": context})
    return checked


async def evaluate(services: Services, project: dict[str, Any], body: Any) -> dict[str, Any]:
    graph = await graph_for(services, project)
    cases = cases_of(body, graph)
    if graph.index.learning is not None:  # past the wait, answered as messages are meanwhile: by the nearest example
        await asyncio.wait([graph.index.learning], timeout=LEARN_WAIT)
    threshold = threshold_of(services, project)
    has_agent = bool(project.get("agent_id"))
    results = []
    for case in cases:
        state = {"step": case["context"]} if case["context"] else {}
        inp = Incoming(kind="text", speech=case["text"]).engine_input()  # the flows, whatever the hour
        decision = await decide(graph, copy.deepcopy(state), inp, threshold=threshold, has_agent=has_agent,
                                rng=random.Random(0))
        matched = decision.matched
        step_id = matched["stepId"] if matched and matched["type"] == "INTENT" else UNKNOWN
        confidence = decision.intents[0]["confidence"] if decision.intents and step_id != UNKNOWN else None
        results.append({**case, "stepId": step_id, "confidence": confidence, "right": step_id == case["expected"]})
    return {**_share(results), "threshold": threshold, "method": graph.index.method,
            "inScope": _share([r for r in results if r["expected"] != UNKNOWN]),
            "outOfScope": _share([r for r in results if r["expected"] == UNKNOWN]),
            "intents": _by_intent(graph, results), "results": results}


def _share(results: list[dict[str, Any]]) -> dict[str, Any]:
    """How many of ``results`` there are, how many are right, and that share (None for no results)."""
    right = sum(r["right"] for r in results)
    return {"cases": len(results), "right": right, "accuracy": round(right / len(results), 4) if results else None}


def _by_intent(graph: Graph, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per intent expected (``UNKNOWN`` too): its cases, how many matched it, and where the others went;
    the worst first."""
    rows = []
    for expected in dict.fromkeys(r["expected"] for r in results):
        own = [r for r in results if r["expected"] == expected]
        went = Counter(r["stepId"] for r in own if not r["right"])
        rows.append({"stepId": expected, "title": graph.steps[expected]["title"] if expected in graph.steps else UNKNOWN,
                     **_share(own), "confusedWith": [{"stepId": s, "cases": n} for s, n in went.most_common()]})
    return sorted(rows, key=lambda row: (row["accuracy"], -row["cases"]))
