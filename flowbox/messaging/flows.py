"""Flows: the Management API's Flow documents, validated, stored and listed.

A Flow is stored as one JSON document per row, normalised to the documented types (Flow,
Step, Intent with examples and entities, TEXT actions with texts, quickReplies, delay and
tags, Slot with validation, entityId and label). Validation collects every problem with its
path (``steps[2].contexts[0]: ...``) so an author can fix a file in one go. Every change bumps
the project's ``flows_version``, which the engine's caches key on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from typing import Any

from ..db import Store, Tx
from ..ids import iso, new_id
from ..validation import Problems, is_number, is_text
from .common import rest_error
from .entities import ENTITY_IDS

STEP_TYPES = ("INTENT", "EVENT", "UNKNOWN", "IMAGE", "FILE", "AUDIO", "VIDEO", "LOCATION", "NOTHING", "ANYTHING", "SLOT")
ACTION_TYPES = ("TEXT", "HANDOVER")
SLOT_VALIDATIONS = ("REQUIRED", "OPTIONAL")
MAX_STEPS = 2000
MAX_EXAMPLES = 2000
MAX_ACTIONS = 50
MAX_TEXT = 4096
MAX_QUERY = 1000
MAX_DELAY = 600
MAX_PAUSE_SECONDS = 30 * 24 * 3600
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_BRAIN_NS = uuid.UUID("5b0f3a52-8f5e-4b39-9d3c-5e6a8cf0b7a1")


def brain_id(project_id: str) -> str:
    """flowbox has one "brain" per project; its id is derived, so it is stable."""
    return str(uuid.uuid5(_BRAIN_NS, project_id))


def action_id(step_id: str, index: int) -> str:
    """Actions carry no id of their own; the list view shows a stable one per position."""
    return hashlib.sha1(f"{step_id}:{index}".encode()).hexdigest()[:24]


def _raise_if_any(problems: Problems, prefix: str) -> None:
    if problems.items:
        message, errors = problems.summary(prefix)
        raise rest_error(400, f"Invalid flow: {message}", errors=errors)


def _id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.strip() == value


def _timestamp(value: Any) -> str:
    if isinstance(value, str):
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
        except ValueError:
            pass
    return iso()


def _action(raw: Any, path: str, problems: Problems) -> dict[str, Any] | None:
    """One action of a step, checked and normalized; None (with its problems added) when it is invalid."""
    if not isinstance(raw, dict):
        problems.add(path, "must be an action object {type, payload} (action ids, as the list view shows them, cannot be stored)")
        return None
    kind = raw.get("type")
    payload = raw.get("payload") if raw.get("payload") is not None else {}
    if kind not in ACTION_TYPES:
        problems.add(f"{path}.type", f"must be one of {', '.join(ACTION_TYPES)}")
        return None
    if not isinstance(payload, dict):
        problems.add(f"{path}.payload", "must be an object")
        return None
    if kind == "HANDOVER":
        return _handover_action(payload, f"{path}.payload", problems)
    return _text_action(payload, f"{path}.payload", problems)


def _handover_action(payload: dict[str, Any], path: str, problems: Problems) -> dict[str, Any] | None:
    seconds = payload.get("secondsToPause", 0)
    if not is_number(seconds, 0, MAX_PAUSE_SECONDS, integer=True):
        problems.add(f"{path}.secondsToPause", f"must be a whole number of seconds up to {MAX_PAUSE_SECONDS} (0: until resumed)")
        return None
    return {"type": "HANDOVER", "payload": {"secondsToPause": seconds}}


def _text_action(payload: dict[str, Any], path: str, problems: Problems) -> dict[str, Any] | None:
    """A TEXT action: its texts must be valid; an invalid delay, tags or quick reply is reported and left out."""
    texts = payload.get("texts")
    if texts is None and isinstance(payload.get("text"), str):  # one text, as "text"
        texts = [payload["text"]]
    if not isinstance(texts, list) or not texts or not all(is_text(t, MAX_TEXT, required=True) for t in texts):
        problems.add(f"{path}.texts", f"must be a non-empty list of non-empty strings of at most {MAX_TEXT} characters")
        return None
    quick_replies = _quick_replies(payload.get("quickReplies") or [], f"{path}.quickReplies", problems)
    delay = payload.get("delay", 0)
    if not is_number(delay, 0, MAX_DELAY):
        problems.add(f"{path}.delay", f"must be a number of seconds between 0 and {MAX_DELAY}")
        delay = 0
    tags = payload.get("tags") or []
    if not isinstance(tags, list) or not all(is_text(t, 100, required=True) for t in tags):
        problems.add(f"{path}.tags", "must be a list of strings")
        tags = []
    return {"type": "TEXT", "payload": {"texts": list(texts), "quickReplies": quick_replies, "delay": delay, "tags": list(tags)}}


def _quick_replies(raw_replies: Any, path: str, problems: Problems) -> list[dict[str, Any]]:
    if not isinstance(raw_replies, list) or len(raw_replies) > 20:
        problems.add(path, "must be a list of at most 20 quick replies")
        return []
    quick_replies = []
    for k, reply in enumerate(raw_replies):
        checked = _quick_reply(reply, f"{path}[{k}]", problems)
        if checked is not None:
            quick_replies.append(checked)
    return quick_replies


def _quick_reply(reply: Any, where: str, problems: Problems) -> dict[str, Any] | None:
    """A quick reply: an object with a label (a plain string is taken as one); value and type have defaults."""
    if isinstance(reply, str):
        reply = {"label": reply}
    if not isinstance(reply, dict) or not is_text(reply.get("label"), 100, required=True):
        problems.add(where, "must have a non-empty \"label\" of at most 100 characters")
        return None
    value = reply.get("value", reply["label"])
    if not is_text(value, MAX_QUERY):
        problems.add(f"{where}.value", f"must be a string of at most {MAX_QUERY} characters")
        return None
    kind = reply.get("type", "text")
    if not is_text(kind, 50, required=True):
        problems.add(f"{where}.type", "must be a string such as \"text\"")
        return None
    return {"label": reply["label"], "value": value, "type": kind}


def _intent(raw: Any, step_title: str, path: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.add(path, "is required for an INTENT step: an object with \"examples\"")
        return None
    examples = raw.get("examples")
    if not isinstance(examples, list) or len(examples) > MAX_EXAMPLES:
        problems.add(f"{path}.examples", f"must be a list of at most {MAX_EXAMPLES} examples")
        return None
    out = []
    for k, example in enumerate(examples):
        where = f"{path}.examples[{k}]"
        if isinstance(example, str):  # authoring shorthand
            example = {"query": example}
        if not isinstance(example, dict) or not is_text(example.get("query"), MAX_QUERY, required=True):
            problems.add(where, f"must have a non-empty \"query\" of at most {MAX_QUERY} characters")
            continue
        entities = example.get("entities") or []
        if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
            problems.add(f"{where}.entities", "must be a list of entity objects")
            continue
        for e_index, entity in enumerate(entities):
            if "entityId" in entity and entity["entityId"] not in ENTITY_IDS:
                problems.add(f"{where}.entities[{e_index}].entityId", f"must be one of {', '.join(ENTITY_IDS)}")
            if "label" in entity and not (isinstance(entity["label"], str) and _LABEL.match(entity["label"])):
                problems.add(f"{where}.entities[{e_index}].label", "must be a name like \"city\" (letters, digits, _ . -)")
        out.append({"entities": entities, "query": example["query"]})
    if not out and not problems.under(f"{path}.examples["):
        problems.add(f"{path}.examples", "is empty: an intent needs at least one example")
    intent_id = raw.get("intentId") or new_id()
    if not _id(intent_id):
        problems.add(f"{path}.intentId", "must be a string of at most 100 characters")
    title = raw.get("title", step_title)
    if not is_text(title, 255):
        problems.add(f"{path}.title", "must be a string of at most 255 characters")
    return {"intentId": intent_id, "title": title, "createdAt": _timestamp(raw.get("createdAt")), "examples": out}


def _slot(raw: Any, path: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.add(path, "is required for a SLOT step: an object with validation, entityId and label")
        return None
    validation = raw.get("validation", "REQUIRED")
    if validation not in SLOT_VALIDATIONS:
        problems.add(f"{path}.validation", f"must be one of {', '.join(SLOT_VALIDATIONS)}")
    if raw.get("entityId") not in ENTITY_IDS:
        problems.add(f"{path}.entityId", f"must be one of {', '.join(ENTITY_IDS)}")
    label = raw.get("label")
    if not (isinstance(label, str) and _LABEL.match(label)):
        problems.add(f"{path}.label", "must be a param name like \"city\" (letters, digits, _ . -; at most 64)")
    return {"validation": validation, "entityId": raw.get("entityId"), "label": label}


def _step(raw: Any, path: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.add(path, "must be a Step object")
        return None
    kind = raw.get("type")
    if kind not in STEP_TYPES:
        problems.add(f"{path}.type", f"must be one of {', '.join(STEP_TYPES)}")
        return None
    step_id = raw.get("stepId") or new_id()
    if not _id(step_id):
        problems.add(f"{path}.stepId", "must be a string of at most 100 characters")
    title = raw.get("title", "")
    if not is_text(title, 255, required=kind == "EVENT"):
        problems.add(f"{path}.title",
                     "must be a string of at most 255 characters" + (" (an EVENT step's title is the event name)" if kind == "EVENT" else ""))
    contexts = raw.get("contexts") or []
    if not isinstance(contexts, list) or not all(_id(c) for c in contexts) or len(set(contexts)) != len(contexts):
        problems.add(f"{path}.contexts", "must be a list of distinct stepIds")
        contexts = []
    actions_raw = raw.get("actions") or []
    if not isinstance(actions_raw, list) or len(actions_raw) > MAX_ACTIONS:
        problems.add(f"{path}.actions", f"must be a list of at most {MAX_ACTIONS} actions")
        actions_raw = []
    actions = [a for a in (_action(a, f"{path}.actions[{j}]", problems) for j, a in enumerate(actions_raw)) if a]
    step: dict[str, Any] = {"stepId": step_id, "title": title, "type": kind, "contexts": list(contexts), "actions": actions}
    if kind == "INTENT":
        step["intent"] = _intent(raw.get("intent"), title, f"{path}.intent", problems)
    elif raw.get("intent") is not None:
        problems.add(f"{path}.intent", "is only allowed on INTENT steps")
    if kind == "SLOT":
        step["slot"] = _slot(raw.get("slot"), f"{path}.slot", problems)
        if not contexts:
            problems.add(f"{path}.contexts", "a SLOT step is asked after another step: give it a context")
    elif raw.get("slot") is not None:
        problems.add(f"{path}.slot", "is only allowed on SLOT steps")
    return step


def _check_graph(steps: list[dict[str, Any]], problems: Problems) -> None:
    """Contexts name steps of this flow; every step is reachable from a top-level step (a
    cycle with no way in is an error); SLOT steps do not chain into a cycle (asking would loop)."""
    index = {s["stepId"]: i for i, s in enumerate(steps)}
    children: dict[str, list[str]] = {s["stepId"]: [] for s in steps}
    for i, step in enumerate(steps):
        for j, parent in enumerate(step["contexts"]):
            if parent not in index:
                problems.add(f"steps[{i}].contexts[{j}]", f"unknown step id \"{parent}\" (contexts name steps of the same flow)")
            elif parent == step["stepId"]:
                problems.add(f"steps[{i}].contexts[{j}]", "a step cannot be in its own contexts")
            else:
                children[parent].append(step["stepId"])
    reached = set()
    todo = [s["stepId"] for s in steps if not s["contexts"]]
    while todo:
        current = todo.pop()
        if current not in reached:
            reached.add(current)
            todo.extend(children[current])
    stranded = [s["stepId"] for s in steps if s["stepId"] not in reached]
    if stranded:
        i = index[stranded[0]]
        problems.add(f"steps[{i}].contexts", f"steps {', '.join(stranded[:5])} form a cycle with no top-level step leading into it")
    slots = {s["stepId"] for s in steps if s["type"] == "SLOT"}
    state: dict[str, int] = {}

    def visit(step_id: str, trail: list[str]) -> None:  # depth-first over SLOT -> SLOT edges
        state[step_id] = 1
        for child in children[step_id]:
            if child in slots:
                if state.get(child) == 1:
                    problems.add(f"steps[{index[child]}].contexts", f"SLOT steps {' -> '.join(trail + [child])} form a cycle")
                elif child not in state:
                    visit(child, trail + [child])
        state[step_id] = 2

    for slot in slots:
        if slot not in state:
            visit(slot, [slot])


def normalize_flow(raw: Any, project_id: str, prefix: str = "") -> dict[str, Any]:
    """A validated, normalised Flow document; a 400 listing every problem otherwise."""
    problems = Problems()
    if not isinstance(raw, dict):
        problems.add("flow", "must be a Flow object")
        _raise_if_any(problems, prefix)
    flow_id = raw.get("flowId") or new_id()
    if not _id(flow_id):
        problems.add("flowId", "must be a string of at most 100 characters")
    if not is_text(raw.get("title"), 255, required=True):
        problems.add("title", "is required: a non-empty string of at most 255 characters")
    group = raw.get("group") if raw.get("group") is not None else ""
    if not is_text(group, 255):
        problems.add("group", "must be a string of at most 255 characters")
    disabled = raw.get("disabled", False)
    if not isinstance(disabled, bool):
        problems.add("disabled", "must be true or false")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw or len(steps_raw) > MAX_STEPS:
        problems.add("steps", f"must be a non-empty list of at most {MAX_STEPS} Step objects")
        steps_raw = []
    steps = [s for s in (_step(s, f"steps[{i}]", problems) for i, s in enumerate(steps_raw)) if s]
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step["stepId"] in seen:
            problems.add(f"steps[{i}].stepId", f"duplicate step id \"{step['stepId']}\" (also steps[{seen[step['stepId']]}])")
        seen.setdefault(step["stepId"], i)
    if len(steps) == len(steps_raw):  # with every step readable, the graph can be checked too
        _check_graph(steps, problems)
    _raise_if_any(problems, prefix)
    return {
        "flowId": flow_id, "projectId": project_id, "brainId": brain_id(project_id), "title": raw["title"],
        "group": group, "createdAt": _timestamp(raw.get("createdAt")), "disabled": disabled, "steps": steps,
    }


def list_view(flow: dict[str, Any]) -> dict[str, Any]:
    """The documented list shape: steps name their actions and intent by id."""
    steps = []
    for step in flow["steps"]:
        item = {"stepId": step["stepId"], "type": step["type"], "title": step["title"], "contexts": step["contexts"],
                "actions": [action_id(step["stepId"], i) for i in range(len(step["actions"]))]}
        if step.get("intent"):
            item["intent"] = step["intent"]["intentId"]
        if step.get("slot"):
            item["slot"] = step["slot"]
        steps.append(item)
    return {**flow, "steps": steps}


# -- storage ----------------------------------------------------------------------------------

async def list_flows(store: Store | Tx, project_id: str, limit: int | None = None, skip: int = 0) -> list[dict[str, Any]]:
    rows = await store.fetchall(  # in creation order (for an import: the file's order)
        "SELECT doc FROM msg_flows WHERE project_id = ? ORDER BY rowid LIMIT ? OFFSET ?",
        [project_id, -1 if limit is None else limit, skip],
    )
    return [json.loads(r["doc"]) for r in rows]


async def get_flow(store: Store | Tx, project_id: str, flow_id: str) -> dict[str, Any] | None:
    row = await store.fetchone("SELECT doc FROM msg_flows WHERE id = ? AND project_id = ?", [flow_id, project_id])
    return json.loads(row["doc"]) if row else None


async def _check_ids(tx: Tx, project_id: str, flows: list[dict[str, Any]]) -> None:
    """Flow ids and step ids are unique within a project (contexts refer to steps); another
    project's ids are never looked at, so nothing here tells whether they exist."""
    incoming = {f["flowId"] for f in flows}
    others = [f for f in await list_flows(tx, project_id) if f["flowId"] not in incoming]
    taken = {s["stepId"]: f["title"] for f in others for s in f["steps"]}
    for i, flow in enumerate(flows):
        prefix = f"flows[{i}]." if len(flows) > 1 else ""
        for j, step in enumerate(flow["steps"]):
            if step["stepId"] in taken:
                raise rest_error(409, f"Invalid flow: {prefix}steps[{j}].stepId: \"{step['stepId']}\" "
                                      f"is already used by flow \"{taken[step['stepId']]}\"")
            taken[step["stepId"]] = flow["title"]


async def _save(tx: Tx, flow: dict[str, Any]) -> None:
    await tx.execute(
        "INSERT INTO msg_flows (id, project_id, title, doc, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(project_id, id) DO UPDATE SET title = excluded.title, doc = excluded.doc, updated_at = excluded.updated_at",
        [flow["flowId"], flow["projectId"], flow["title"], json.dumps(flow), flow["createdAt"], iso()],
    )


async def _bump(tx: Tx, project_id: str) -> None:
    await tx.execute("UPDATE msg_projects SET flows_version = flows_version + 1, updated_at = ? WHERE id = ?", [iso(), project_id])


async def create_flow(store: Store, project_id: str, raw: Any) -> dict[str, Any]:
    flow = normalize_flow(raw, project_id)
    async with store.write() as tx:
        if await tx.fetchone("SELECT 1 FROM msg_flows WHERE project_id = ? AND id = ?", [project_id, flow["flowId"]]):
            raise rest_error(409, f"A flow with flowId \"{flow['flowId']}\" already exists; update it with PUT")
        await _check_ids(tx, project_id, [flow])
        await _save(tx, flow)
        await _bump(tx, project_id)
    return flow


async def replace_flow(store: Store, project_id: str, flow_id: str, raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        raise rest_error(400, "Invalid flow: flow: must be a Flow object")
    if raw.get("flowId", flow_id) != flow_id:
        raise rest_error(400, "Invalid flow: flowId: does not match the flow in the URL")
    async with store.write() as tx:
        existing = await get_flow(tx, project_id, flow_id)
        if existing is None:
            return None
        flow = normalize_flow({"createdAt": existing["createdAt"], **raw, "flowId": flow_id}, project_id)
        await _check_ids(tx, project_id, [flow])
        await _save(tx, flow)
        await _bump(tx, project_id)
    return flow


async def delete_flow(store: Store, project_id: str, flow_id: str) -> bool:
    async with store.write() as tx:
        deleted = await tx.execute("DELETE FROM msg_flows WHERE id = ? AND project_id = ?", [flow_id, project_id]) > 0
        if deleted:
            await _bump(tx, project_id)
    return deleted


def flows_in(document: Any) -> list[Any]:
    """What an import file may hold: one Flow, a list of Flows, or ``{"flows": [...]}`` (the export)."""
    if isinstance(document, dict) and isinstance(document.get("flows"), list):
        return document["flows"]
    if isinstance(document, list):
        return document
    return [document]


async def import_flows(store: Store, project_id: str, document: Any, replace: bool = False) -> dict[str, Any]:
    """Creates or updates (by flowId) every flow in ``document``, all or nothing. With
    ``replace``, flows of the project that the document does not hold are deleted."""
    raws = flows_in(document)
    if not raws:
        raise rest_error(400, "Invalid flow: the document holds no flows")
    prefix = (lambda i: f"flows[{i}].") if len(raws) > 1 else (lambda i: "")
    flows = [normalize_flow(raw, project_id, prefix(i)) for i, raw in enumerate(raws)]
    ids = [f["flowId"] for f in flows]
    if len(set(ids)) != len(ids):
        raise rest_error(400, "Invalid flow: the document holds the same flowId twice")
    async with store.write() as tx:
        existing = {r["id"] for r in await tx.fetchall("SELECT id FROM msg_flows WHERE project_id = ?", [project_id])}
        removed = sorted(existing - set(ids)) if replace else []
        for flow_id in removed:
            await tx.execute("DELETE FROM msg_flows WHERE project_id = ? AND id = ?", [project_id, flow_id])
        await _check_ids(tx, project_id, flows)
        for flow in flows:
            await _save(tx, flow)
        await _bump(tx, project_id)
    return {
        "created": [f["flowId"] for f in flows if f["flowId"] not in existing],
        "updated": [f["flowId"] for f in flows if f["flowId"] in existing],
        "deleted": removed,
    }


async def export_flows(store: Store, project_id: str) -> dict[str, Any]:
    """Every flow of a project, complete, in the form ``import_flows`` reads back."""
    return {"flows": await list_flows(store, project_id)}
