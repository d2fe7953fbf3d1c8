"""The dialog engine: given a project's flows, a thread's state and one input, what happens.

``decide`` is a plain async function with no I/O of its own (the intent index may embed the
text): REST and sockets call it through ``conversation.handle`` and share one history.

Rules (README "Messaging: how flows run" says the same for authors):
- A thread is *in* a step after that step ran. An input is matched first against the
  children of that step (steps whose ``contexts`` name it), then against top-level steps
  (no contexts). A child intent needs less confidence than a top-level one, unless a
  top-level intent is more likely (``matcher.IntentIndex.best``).
- Text: the best INTENT above the threshold (an exact example match wins), else ANYTHING.
  ``Decision.matched`` is the step an input matched (for a SLOT's answer: the SLOT).
  Empty text: NOTHING. Events: the EVENT step whose title is the event name. Media: IMAGE,
  FILE, AUDIO, VIDEO, else ANYTHING; a location: LOCATION, else ANYTHING.
- Nothing matched (not for events or empty text): an UNKNOWN child of the current step, else
  the project's fallback agent when one is set, else a top-level UNKNOWN step. An UNKNOWN
  step without children of its own leaves the thread in the step it was in.
- After a step runs, its first unfilled SLOT child (or, following a filled one, its SLOT
  children and siblings) is asked: its actions are the question. A triggered SLOT is asked too. The next text fills the
  slot (validated by the slot's entity; re-asked while invalid unless the text matches a
  top-level intent, or skipped if OPTIONAL; a free-text answer yields only to a clear change of
  subject, ``matcher.ANSWER_MARGIN``); the value lands in ``params[label]`` and the
  same text is then matched against the slot step's own children (an ANYTHING child is the
  natural "thanks, got it").
- Actions: TEXT picks one of ``texts`` at random (``{{label}}`` is replaced by that param's
  value, or by nothing when it is not set: template syntax never reaches a user) with its
  quickReplies and delay; HANDOVER pauses the thread and tells the webhook.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from .common import BOT_ORIGINATOR
from .entities import FREE_TEXT, extract
from .matcher import IntentIndex, Match

MEDIA_STEPS = {"image": "IMAGE", "file": "FILE", "audio": "AUDIO", "video": "VIDEO"}
_PARAM = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")  # any {{...}}: one that names no param is removed too


@dataclass
class Input:
    kind: str                        # text, event, location, media, step, flow
    text: str = ""
    event: str = ""
    media_type: str = ""             # image, file, audio, video
    target: str = ""                 # stepId (kind "step") or flowId (kind "flow")
    reply_to: str | None = None      # what replies name in ``replyTo``
    params: dict[str, Any] = field(default_factory=dict)       # kept on the thread
    turn_params: dict[str, Any] = field(default_factory=dict)  # this turn only (event, media)


@dataclass
class Graph:
    """One project's enabled flows, indexed for the engine."""

    version: int
    steps: dict[str, dict[str, Any]]
    flow_of: dict[str, dict[str, str]]
    children: dict[str, list[dict[str, Any]]]
    top: list[dict[str, Any]]
    first_of_flow: dict[str, dict[str, Any]]
    index: IntentIndex


def build_graph(flows: list[dict[str, Any]], version: int) -> Graph:
    steps: dict[str, dict[str, Any]] = {}
    flow_of: dict[str, dict[str, str]] = {}
    children: dict[str, list[dict[str, Any]]] = {}
    top: list[dict[str, Any]] = []
    first_of_flow: dict[str, dict[str, Any]] = {}
    for flow in flows:
        if flow.get("disabled"):
            continue
        for step in flow["steps"]:
            steps[step["stepId"]] = step
            flow_of[step["stepId"]] = {"flowId": flow["flowId"], "title": flow["title"]}
            if not step["contexts"]:
                top.append(step)
                first_of_flow.setdefault(flow["flowId"], step)
            for parent in step["contexts"]:
                children.setdefault(parent, []).append(step)
    intents = [(s["stepId"], [e["query"] for e in s["intent"]["examples"]]) for s in steps.values() if s["type"] == "INTENT"]
    levels = [[s["stepId"] for s in level if s["type"] == "INTENT"] for level in (top, *children.values())]
    titles = [f["title"] for f in flows if not f.get("disabled")]  # what the business calls itself
    return Graph(version, steps, flow_of, children, top, first_of_flow, IntentIndex(intents, levels, titles))


@dataclass
class Decision:
    messages: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    intents: list[dict[str, Any]] = field(default_factory=list)   # matched for the user's message
    contexts: list[str] = field(default_factory=list)             # the thread's context on arrival
    matched: dict[str, Any] | None = None  # the step the input matched ({stepId, title, type}), SLOT answers too;
    # UNKNOWN with no stepId where nothing matched and no UNKNOWN step answers (or the fallback agent does)
    rule: str | None = None               # the rule that matched the intent in ``intents`` (matcher.RULES)
    agent: bool = False                   # UNKNOWN goes to the project's fallback agent
    unknown_step: dict[str, Any] | None = None   # answered when the agent cannot
    handover: dict[str, Any] | None = None


def _param_text(values: Any) -> str | None:
    if isinstance(values, list) and values and isinstance(values[0], dict):
        first = values[0]
        value = first.get("match", first.get("value"))
        return value if isinstance(value, str) else None if value is None else str(value)
    return None


class _Turn:
    def __init__(self, graph: Graph, state: dict[str, Any], inp: Input, threshold: float, rng: random.Random):
        self.graph, self.inp, self.threshold, self.rng = graph, inp, threshold, rng
        self.params: dict[str, Any] = {**(state.get("params") or {}), **inp.params}
        step = state.get("step")
        slot = state.get("slot")
        self.decision = Decision(state={
            "step": step if step in graph.steps else None,
            "slot": slot if slot in graph.steps and graph.steps[slot]["type"] == "SLOT" else None,
        })
        self.decision.contexts = [self.decision.state["step"]] if self.decision.state["step"] else []

    # -- matching --------------------------------------------------------------------------

    async def pick(self, level: list[dict[str, Any]], rivals: list[str] | None = None,
                   asker: str | None = None) -> dict[str, Any] | None:
        inp = self.inp
        if inp.kind == "event":
            named = [s for s in level if s["type"] == "EVENT"]
            return next((s for s in named if s["title"] == inp.event), None) or next(
                (s for s in named if s["title"].lower() == inp.event.lower()), None)
        if inp.kind == "text" and not inp.text.strip():
            return next((s for s in level if s["type"] == "NOTHING"), None)
        if inp.kind == "text":
            intents = [s["stepId"] for s in level if s["type"] == "INTENT"]
            best = await self.graph.index.best(inp.text, intents, self.threshold, rivals, asker=asker)
            if best is not None:
                return self.intent_matched(best)
        wanted = "LOCATION" if inp.kind == "location" else MEDIA_STEPS.get(inp.media_type) if inp.kind == "media" else None
        if wanted:
            step = next((s for s in level if s["type"] == wanted), None)
            if step:
                return step
        return next((s for s in level if s["type"] == "ANYTHING"), None)

    def intent_matched(self, match: Match) -> dict[str, Any]:
        """Records the intent the matcher matched (its confidence and rule) and returns its step."""
        step = self.graph.steps[match.step_id]
        self.decision.intents = [{"intentId": step["intent"]["intentId"], "title": step["intent"]["title"],
                                  "confidence": round(match.confidence, 4)}]
        self.decision.rule = match.rule
        return step

    def slot_children(self, step_id: str) -> list[dict[str, Any]]:
        return [s for s in self.graph.children.get(step_id, []) if s["type"] == "SLOT"]

    def next_slot(self, anchor: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The first unfilled slot after ``anchor`` (its SLOT children, down filled chains, then a
        filled slot's siblings), and the last filled step passed on the way."""
        seen: set[str] = set()
        todo = [anchor]
        last = anchor
        while todo:
            node = todo.pop(0)
            if node["stepId"] in seen:
                continue
            seen.add(node["stepId"])
            candidates = self.slot_children(node["stepId"])
            if node["type"] == "SLOT":
                candidates += [s for parent in node["contexts"] for s in self.slot_children(parent) if s["stepId"] != node["stepId"]]
            for slot in candidates:
                if slot["slot"]["label"] not in self.params:
                    return slot, last
            filled = [s for s in self.slot_children(node["stepId"]) if s["stepId"] not in seen]
            if filled:
                last = filled[0]
            todo.extend(filled)
        return None, last

    # -- running steps ---------------------------------------------------------------------

    def message(self, step: dict[str, Any]) -> None:
        responses, names, fallbacks = [], [], []
        for action in step["actions"]:
            payload = action["payload"]
            if action["type"] == "HANDOVER":
                names.append("handover")
                self.decision.handover = {"secondsToPause": payload["secondsToPause"], "stepId": step["stepId"]}
                continue
            text = _PARAM.sub(lambda m: _param_text(self.params.get(m[1])) or "", self.rng.choice(payload["texts"]))
            response: dict[str, Any] = {"type": "text", "payload": {"text": text}, "delay": payload["delay"]}
            if payload["quickReplies"]:
                response["payload"]["quickReplies"] = payload["quickReplies"]
            responses.append(response)
            fallbacks.append(text)
        if not responses and not names:
            return
        self.decision.messages.append({
            "fallback": " ".join(fallbacks),
            "silent": not responses,
            "replyTo": self.inp.reply_to,
            "originator": BOT_ORIGINATOR,
            "actions": names,
            "responses": responses,
            "flow": self.graph.flow_of[step["stepId"]],
            "step": {"stepId": step["stepId"], "title": step["title"], "type": step["type"]},
            "params": {**self.params, **self.inp.turn_params},
            "contexts": list(step["contexts"]),
            "intents": list(self.decision.intents) if step["type"] == "INTENT" else [],
        })

    def extract_entities(self, step: dict[str, Any]) -> None:
        wanted = {e["label"]: e["entityId"] for ex in step["intent"]["examples"] for e in ex["entities"]
                  if e.get("label") and e.get("entityId")}
        for label, entity_id in wanted.items():
            value = extract(entity_id, self.inp.text)
            if value is not None:
                self.params[label] = [value]

    def matched(self, step: dict[str, Any]) -> None:
        if self.decision.matched is None:
            self.decision.matched = {"stepId": step["stepId"], "title": step["title"], "type": step["type"]}

    def run(self, step: dict[str, Any]) -> None:
        self.matched(step)
        if step["type"] == "INTENT" and self.inp.kind == "text":
            self.extract_entities(step)
        self.message(step)
        if step["type"] == "UNKNOWN" and step["stepId"] not in self.graph.children:
            return  # a fallback answer leaves the thread where it was, so the user can try again
        self.decision.state.update(step=step["stepId"], slot=None)
        self.ask_next_slot(step)

    def ask_next_slot(self, anchor: dict[str, Any]) -> bool:
        slot, last = self.next_slot(anchor)
        if slot is None:
            self.decision.state["step"] = last["stepId"]
            return False
        self.ask(slot)
        return True

    def ask(self, slot: dict[str, Any]) -> None:
        """Asks ``slot``'s question: the next text answers it."""
        self.message(slot)
        self.decision.state.update(step=slot["stepId"], slot=slot["stepId"])

    async def fill_slot(self, slot_step: dict[str, Any]) -> bool:
        """True when the input was consumed by the pending slot."""
        slot = slot_step["slot"]
        value = extract(slot["entityId"], self.inp.text)
        if value is None or slot["entityId"] in FREE_TEXT:
            # The user may have changed the subject: a top-level intent (not the one that asked)
            # wins over an invalid answer; over a free-text answer only when the text reads as that
            # intent rather than as an answer to the question (matcher.ANSWER_MARGIN).
            top = [s["stepId"] for s in self.graph.top if s["type"] == "INTENT" and s["stepId"] not in slot_step["contexts"]]
            question = [t for a in slot_step["actions"] if a["type"] == "TEXT" for t in a["payload"]["texts"]]
            escape = await self.graph.index.best(self.inp.text, top, self.threshold,
                                                 question=question if value is not None else None)
            if escape is not None:
                self.run(self.intent_matched(escape))
                return True
        self.matched(slot_step)  # an answer to the question, if not a valid one
        if value is None:
            if slot["validation"] == "REQUIRED":
                self.message(slot_step)  # ask again
                return True
        else:
            self.params[slot["label"]] = [value]
        self.decision.state.update(step=slot_step["stepId"], slot=None)
        if self.ask_next_slot(slot_step):
            return True
        follow = await self.pick([s for s in self.graph.children.get(slot_step["stepId"], []) if s["type"] != "SLOT"])
        if follow is not None:
            self.run(follow)
        return True


async def decide(graph: Graph, state: dict[str, Any], inp: Input, *, threshold: float,
                 has_agent: bool = False, rng: random.Random | None = None) -> Decision:
    turn = _Turn(graph, state, inp, threshold, rng or random.Random())
    decision = turn.decision
    current, slot = decision.state["step"], decision.state["slot"]
    if inp.kind in ("step", "flow"):
        step = graph.steps.get(inp.target) if inp.kind == "step" else graph.first_of_flow.get(inp.target)
        if step is not None and step["type"] == "SLOT":
            turn.ask(step)  # a client that triggers a question gets it asked, as after its parent
        elif step is not None:
            turn.run(step)
    elif slot and inp.kind == "text" and inp.text.strip() and await turn.fill_slot(graph.steps[slot]):
        pass
    else:
        # Inside a step's question its answers compete with the top-level intents, but not with the
        # step that asked: "sure, cancel it" answers "Shall I cancel?" rather than asking again.
        rivals = [s["stepId"] for s in graph.top if s["type"] == "INTENT" and s["stepId"] != current]
        levels = ([(graph.children.get(current, []), rivals)] if current else []) + [(graph.top, None)]
        for level, rivals in levels:
            step = await turn.pick(level, rivals, current if rivals is not None else None)
            if step is not None:
                turn.run(step)
                break
        else:
            if inp.kind != "event" and not (inp.kind == "text" and not inp.text.strip()):
                contextual = next((s for s in graph.children.get(current, []) if s["type"] == "UNKNOWN"), None) if current else None
                fallback = next((s for s in graph.top if s["type"] == "UNKNOWN"), None)
                if contextual is not None:
                    turn.run(contextual)
                elif has_agent and inp.kind == "text":
                    decision.matched = {"stepId": fallback["stepId"] if fallback else None, "title": "UNKNOWN", "type": "UNKNOWN"}
                    decision.agent = True
                    decision.unknown_step = fallback
                elif fallback is not None:
                    turn.run(fallback)
                else:  # nothing answers, but the message is known not understood (history, webhooks, unmatched.py)
                    decision.matched = {"stepId": None, "title": "UNKNOWN", "type": "UNKNOWN"}
    decision.state["params"] = turn.params
    return decision


def unknown_reply(graph: Graph, step: dict[str, Any], state: dict[str, Any], inp: Input) -> Decision:
    """The UNKNOWN step's reply, for when the fallback agent could not answer."""
    turn = _Turn(graph, state, inp, 1.0, random.Random())
    turn.run(step)
    turn.decision.state["params"] = turn.params
    return turn.decision
