"""The inbox: a project's threads as human agents see them (paused, handed over, written outside
business hours), one thread with its history, and why the engine answers a text as it does (the
console's test chat). Plain functions under the Management API's thread routes (``api.py``).

A thread is *handed over* while it is paused and the bot's latest message came from a HANDOVER
action; it was written *outside business hours* when its user's latest message arrived while the
project's business hours were closed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

from ..db import Store
from ..ids import from_iso, iso
from ..services import Services
from . import acceptance, common_phrasings, threads
from .conversation import engine_input, graph_for, threshold_of
from .engine import Decision, Graph, Input, decide
from .hours import is_open
from .incoming import Incoming
from .intents import MIN_HELD_OUT, expand
from .matcher import LEARNED_LEAST, LEARNED_MAX

FILTERS = ("paused", "handover", "outsideHours")
ROLES = {"user": "user", "bot": "bot", "moderator": "moderator"}
# said of a judge's probability where the message was read again beside its candidates' examples (second_reading)
READ_AGAIN = " when it reads the text beside the intents' examples, as it does when unsure"

_LAST = "SELECT {what} FROM msg_messages m WHERE m.project_id = t.project_id AND m.thread_id = t.thread_id {also} ORDER BY m.seq DESC LIMIT 1"
_THREADS = f"""
SELECT * FROM (
  SELECT t.thread_id, t.paused, t.paused_until, t.originator, t.state, t.created_at, t.updated_at,
    (SELECT COUNT(*) FROM msg_messages m WHERE m.project_id = t.project_id AND m.thread_id = t.thread_id) AS messages,
    ({_LAST.format(what="m.sender", also="")}) AS last_sender,
    ({_LAST.format(what="m.message", also="")}) AS last_message,
    ({_LAST.format(what="m.created_at", also="")}) AS last_at,
    ({_LAST.format(what="m.message", also="AND m.sender = 'bot'")}) AS last_bot,
    ({_LAST.format(what="m.created_at", also="AND m.sender = 'user'")}) AS last_user_at
  FROM msg_threads t WHERE t.project_id = ? {{where}}
) ORDER BY COALESCE(last_at, updated_at) DESC, thread_id LIMIT ? OFFSET ?
"""
_PAUSED = "AND t.paused = 1 AND (t.paused_until IS NULL OR t.paused_until > ?)"  # threads.paused_now, in SQL
SUMMARIES_INLINE = 500  # more rows than this are summarised off the event loop


def _summary(row: Any, project: dict[str, Any]) -> dict[str, Any]:
    paused = threads.paused_now(row)
    last_bot = json.loads(row["last_bot"]) if row["last_bot"] else {}
    last = json.loads(row["last_message"]) if row["last_message"] else None
    originator = json.loads(row["originator"] or "{}")
    state = json.loads(row["state"] or "{}")
    return {
        "threadId": row["thread_id"],
        "paused": paused,
        "pausedUntil": row["paused_until"] if paused else None,
        "handover": paused and "handover" in (last_bot.get("actions") or []),
        "outsideHours": bool(row["last_user_at"]) and not is_open(project["business_hours"], from_iso(row["last_user_at"])),
        "user": {k: originator[k] for k in ("name", "userId") if isinstance(originator.get(k), str)},
        "messages": row["messages"],
        "lastMessage": None if last is None else {
            "role": ROLES.get(row["last_sender"], "user"), "text": last.get("fallback", ""), "createdAt": row["last_at"]},
        "stepId": state.get("step"),
        "params": state.get("params") or {},
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


async def list_threads(store: Store, project: dict[str, Any], only: str | None = None, limit: int = 50, skip: int = 0) -> list[dict[str, Any]]:
    """The project's threads, the most recently active first; ``only`` one of ``FILTERS``. All
    threads and paused ones are paged in SQL; handover and outsideHours are told from each
    thread's messages, so those are read whole and paged here."""
    where, args = (_PAUSED, [iso()]) if only in ("paused", "handover") else ("", [])
    in_sql = only in (None, "paused")
    rows = await store.fetchall(_THREADS.format(where=where), [project["id"], *args, *((limit, skip) if in_sql else (-1, 0))])

    def summaries() -> list[dict[str, Any]]:
        items = [_summary(r, project) for r in rows]
        return items if in_sql else [i for i in items if i[only]][skip:skip + limit]

    return await asyncio.to_thread(summaries) if len(rows) > SUMMARIES_INLINE else summaries()


async def thread_view(store: Store, project: dict[str, Any], thread_id: str, page: int = 1) -> dict[str, Any]:
    """One thread's summary and a page of its history (the REST history's ``result``). Threads are
    the client's keys: one that has sent nothing is not paused and has no messages."""
    rows = await store.fetchall(_THREADS.format(where="AND t.thread_id = ?"), [project["id"], thread_id, 1, 0])
    summary = _summary(rows[0], project) if rows else {
        "threadId": thread_id, "paused": False, "pausedUntil": None, "handover": False, "outsideHours": False, "user": {},
        "messages": 0, "lastMessage": None, "stepId": None, "params": {}, "createdAt": None, "updatedAt": None}
    return {**summary, "history": await threads.history_page(store, project["id"], thread_id, page)}


# -- why a text matches what it matches --------------------------------------------------------

async def explain(services: Services, project: dict[str, Any], thread_id: str | None, text: str) -> dict[str, Any]:
    """What the engine would do with ``text`` on the thread as it stands (nothing is stored): the
    step it matches, with what confidence, the matcher's reasons in words and its scores for the
    intents it weighed, and the params the thread would hold afterwards."""
    graph = await graph_for(services, project)
    thread = await threads.get_thread(services.store, project["id"], thread_id) if thread_id else None
    state = copy.deepcopy(thread["state"]) if thread else {}
    threshold = threshold_of(services, project)
    inp = engine_input(project, Incoming(kind="text", speech=text))
    decision, current, scores = await reading(graph, project, state, inp, text, threshold)
    matched = decision.matched
    item = next((i for i in scores["intents"] if matched and i["stepId"] == matched["stepId"]), None)
    confidence = decision.intents[0]["confidence"] if decision.intents else item["confidence"] if item else None
    if matched and matched["type"] == "INTENT" and confidence is None and item:
        confidence = item["similarity"]
    return {
        "threadId": thread_id, "text": text, "paused": threads.paused_now(thread),
        "context": {"stepId": current["stepId"], "title": current["title"], "type": current["type"]} if current else None,
        "step": matched, "flow": graph.flow_of.get(matched["stepId"]) if matched and matched["stepId"] else None,
        "confidence": confidence, "threshold": threshold, "method": scores["method"], "rule": decision.rule,
        "explanation": _why(graph, state, inp, decision, current, item, scores, threshold),
        "intents": scores["intents"][:5], "offTopic": scores.get("offTopic"), "judged": scores.get("judged"),
        "params": decision.state.get("params") or {},
        "replies": [m["fallback"] for m in decision.messages], "handover": decision.handover is not None,
    }


async def reading(graph: Graph, project: dict[str, Any], state: dict[str, Any], inp: Input, text: str,
                  threshold: float) -> tuple[Decision, dict[str, Any] | None, dict[str, Any]]:
    """What the engine makes of ``inp`` (``text``, or the event the business hours put in its place) on a thread in
    ``state``, storing nothing: its decision, the step the thread is in, and the matcher's scores
    (``IntentIndex.scores``, each intent with its title) for the intents it weighs there, that step's children
    first, then the top level's. ``explain`` and ``unmatched.suggest`` read a text so."""
    decision = await decide(graph, copy.deepcopy(state), inp, threshold=threshold,
                            has_agent=bool(project.get("agent_id")), rng=random.Random(0))
    current = graph.steps.get(state.get("step") or "")
    weighed = [s["stepId"] for s in (graph.children.get(current["stepId"], []) if current else []) if s["type"] == "INTENT"]
    weighed += [s["stepId"] for s in graph.top if s["type"] == "INTENT" and s["stepId"] not in weighed]
    scores = await graph.index.scores(text, weighed) if inp.kind == "text" else {"method": "exact", "intents": []}
    for item in scores["intents"]:
        item["title"] = graph.steps[item["stepId"]]["title"]
    return decision, current, scores


def _why(graph, state, inp, decision, current, item, scores, threshold) -> str:
    matched = decision.matched
    top = scores["intents"][0] if scores["intents"] else None
    closest = (f" (closest: “{top['title']}” at {(top['confidence'] if top['confidence'] is not None else top['similarity']):.2f})"
               if top and (top["confidence"] is not None or top["similarity"] is not None) else "")
    unmatched = f"no intent reached the threshold {threshold:.2f}{closest}"
    judged = scores.get("judged")
    if judged and judged["probability"] < judged["bar"] and not acceptance.shared(judged["probability"], judged["together"]):
        # IntentIndex._best_learned: at the top level the judge (acceptance) has the last word
        unmatched = (f"the judge finds the likeliest intent, “{graph.steps[judged['stepId']]['title']}”, right with "
                     f"probability {judged['probability']:.2f}{READ_AGAIN * judged['readAgain']}, below its bar {judged['bar']:.2f}")
    elif judged and judged["similarity"] < judged["floor"]:
        unmatched = (f"the judge's likeliest intent, “{graph.steps[judged['stepId']]['title']}”, has no example as close as "
                     f"{judged['floor']:.2f} (its closest is at {judged['similarity']:.2f})")
    if (off := scores.get("offTopic")) and (matched is None or matched["type"] in ("UNKNOWN", "ANYTHING")):
        # out of scope whatever the learned model gave an intent (IntentIndex._best_learned)
        unmatched = (f"the text reads as a request of another kind, close to “{off['phrasing']}” (similarity "
                     f"{off['similarity']:.2f}) and further from every example (closest: “{off['example']}” at "
                     f"{off['exampleSimilarity']:.2f})")
    opening = unmatched[:1].upper() + unmatched[1:]  # the same reason, opening a sentence
    if inp.kind == "event":
        found = f"its EVENT step “{matched['title']}” answers" if matched else "no EVENT step has that name"
        return f"Outside business hours the project's event “{inp.event}” takes the place of the flows: {found}."
    if matched is None or matched["stepId"] is None or decision.agent:  # no step of the flows answers
        if decision.agent:
            return f"{opening}: the project's fallback agent answers."
        return f"Nothing matched: {unmatched}, and no ANYTHING or UNKNOWN step takes the text."
    kind = matched["type"]
    if kind == "SLOT":
        slot = graph.steps[matched["stepId"]]["slot"]
        label, entity = slot["label"], slot["entityId"]
        if decision.state.get("slot") == matched["stepId"]:
            return f"An answer to the question of “{matched['title']}”, but not a valid {entity}: the question is asked again."
        if label in (decision.state.get("params") or {}):
            return f"An answer to the question of “{matched['title']}”: {entity} takes it as params.{label}."
        return f"An answer to the question of “{matched['title']}”, not a valid {entity}; the slot is optional, so it is skipped."
    if kind == "INTENT" and item is not None:
        move = f"a common way to {common_phrasings.DOES[item['move']]}, which its examples do" if item.get("move") else ""
        child = current is not None and matched["stepId"] in {s["stepId"] for s in graph.children.get(current["stepId"], [])}
        rule = decision.rule  # which of the matcher's rules matched it (matcher.RULES)
        if rule == "exact":
            reason = (f"The text is {move} (case, punctuation, spaces and chat shorthand aside): confidence 1.00." if item.get("commonExact") else
                      "The text is one of its examples (case, punctuation, spaces and chat shorthand aside): confidence 1.00.")
        elif rule == "respelt exact":
            reason = ("With a misspelt word corrected, or one typo put right, the text is one of its examples or of the "
                      f"common phrasings it borrows (case, punctuation, spaces and chat shorthand aside): confidence {LEARNED_MAX}.")
        elif rule == "leading answer":
            leading = common_phrasings.leading_answer(expand(inp.text or ""))
            return (f"The text starts with a {leading}, {move}: it answers the question of “{current['title']}”, "
                    "whatever follows.")
        elif rule == "unnegated":
            return (f"The text came closest to the question's “no” answer, but it negates nothing and has the words of one "
                    f"of this intent's examples, or asks again for what “{current['title']}” does: it says yes to its question.")
        elif rule == "answer phrasing":
            return (f"The text is close to “{item['phrasing']}” (similarity {item['phrasingSimilarity']:.2f}), {move}: it "
                    f"answers the question of “{current['title']}”.")
        elif rule == "social":
            return (f"The text starts with {move.replace('a common way', 'one of the common ways', 1)}, and a word or two "
                    "follow: nothing else matched, so it makes that move.")
        elif rule == "addressed":
            return (f"The text is {move.replace('a common way', 'one of the common ways', 1)}, said to the business by name "
                    "or to whoever reads, or a greeting that offers a question and asks nothing yet: it makes that move.")
        elif rule == "clause":
            return (f"Nothing matched the message as a whole, but one of its clauses matches this intent surely "
                    f"(confidence {decision.intents[0]['confidence']:.2f}).")
        elif rule == "request":
            return (f"The message greets or thanks around a request, and the request alone matches this intent "
                    f"(confidence {decision.intents[0]['confidence']:.2f}).")
        elif rule == "closing":
            return "The text ends with a common way to say goodbye, which its examples do: nothing else matched, so it says goodbye."
        elif rule == "common phrasing":
            matcher = "The learned model" if scores["method"] == "learned" else "The nearest example"
            reason = (f"{matcher} matched no intent (below the threshold {threshold:.2f} or off its topic), but the "
                      f"text is close to “{item['phrasing']}” (similarity {item['phrasingSimilarity']:.2f}), {move}.")
        elif rule in ("learned", "judge"):
            reason = (f"The learned model gives it {item['confidence']:.2f} (threshold {threshold:.2f}); "
                      f"its closest example is “{item['example']}” (similarity {item['similarity']:.2f}).")
            if rule == "judge" and judged and judged["stepId"] == item["stepId"]:
                reason += (f" The judge finds it right with probability {judged['probability']:.2f}{READ_AGAIN * judged['readAgain']}"
                           f" (bar {judged['bar']:.2f}).")
                if judged["probability"] < judged["bar"]:
                    reason += (f" It and the other intent the judge weighed are right {judged['together']:.2f} together (from "
                               f"{judged['togetherBar']:.2f}, the likelier from {judged['shared']:.2f}): the message asks for one of "
                               "them, and this one is the likelier.")
                matched_confidence = decision.intents[0]["confidence"] if decision.intents else None
                if None not in (item["confidence"], matched_confidence) and matched_confidence > item["confidence"]:
                    reason += f" That is sure enough ({judged['sure']:.2f} or more) to count as its confidence."
        else:  # "nearest example"
            # a bot builder reads this in the console's test chat: whether to wait, or to write more examples
            if not graph.index.ready:
                model = "the learned model is not ready yet (it is learned in the background after a flow changes)"
            elif graph.index.too_few_examples():
                model = (f"this flow learns no model: it has too few examples (a model needs at least {LEARNED_LEAST} per "
                         f"intent on average and {MIN_HELD_OUT} in intents of two or more)")
            else:  # one intent, more than MAX_LEARNED_EXAMPLES, or a training that failed (logged)
                model = "this flow has no learned model"
            reason = (f"Its closest example “{item['example']}” has similarity {item['similarity']:.2f}, "
                      f"confidence {item['confidence']:.2f} for this flow's examples per intent (threshold {threshold:.2f}); "
                      f"{model}.")
        if child:
            reason += f" As a child of “{current['title']}”, the step the thread is in, it was tried first, at half the threshold."
        elif state.get("slot") and state.get("slot") in graph.steps:
            reason += f" It leaves the question of “{graph.steps[state['slot']]['title']}”: a change of subject."
        return reason
    if kind == "NOTHING":
        return "An empty text: the NOTHING step answers."
    if kind == "ANYTHING":
        return f"{opening}: the ANYTHING step takes any text."
    if kind == "UNKNOWN":
        return f"{opening}: the UNKNOWN step answers what nothing else matched."
    return f"The {kind} step “{matched['title']}” answers."
