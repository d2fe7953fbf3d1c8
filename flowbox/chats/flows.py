"""Flows: named groups of agents that talk to each other (AutoGen's GroupChat), stored as JSON.

A flow's agents are assistants (instructions and a model, or ``agent_id``: an agent of the Agents
API) and at most one user proxy, the human's seat, with AutoGen's ``human_input_mode``:
``ALWAYS`` (asked at each of its turns), ``TERMINATE`` (asked only when the chat would end on the
termination keyword) or ``NEVER``. The next speaker is chosen round robin or by a manager model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..agents.store import agents_of_org
from ..db import Store, Tx
from ..errors import error
from ..ids import iso, new_id
from ..validation import invalid, is_number, is_text

ASSISTANT, USER_PROXY = "assistant", "user_proxy"
HUMAN_INPUT_MODES = ("ALWAYS", "TERMINATE", "NEVER")
SPEAKER_SELECTION = ("round_robin", "auto")
MAX_AGENTS = 12
MAX_ROUNDS = 100
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EXPORT_FORMAT = "flowbox.chatflow"

FLOW_FIELDS = ("name", "description", "agents", "speaker_selection", "manager_model", "max_rounds", "termination_keyword")
DEFAULTS: dict[str, Any] = {
    "description": "", "speaker_selection": "round_robin", "manager_model": "local", "max_rounds": 10,
    "termination_keyword": "TERMINATE",
}
ASSISTANT_FIELDS = ("name", "type", "description", "instructions", "model", "temperature", "max_tokens", "agent_id")
PROXY_FIELDS = ("name", "type", "description", "human_input_mode", "auto_reply")
READ_ONLY = ("id", "created_at", "updated_at")


def _string(value: Any, where: str, limit: int, required: bool = False) -> str:
    if not is_text(value, limit, required=required):
        raise invalid(f"\"{where}\" must be a {'non-empty ' if required else ''}string of at most {limit} characters.")
    return value.strip() if required else value


def _agent(raw: Any, index: int, model_names: list[str]) -> dict[str, Any]:
    where = f"agents[{index}]"
    if not isinstance(raw, dict):
        raise invalid(f"{where} must be an object.")
    kind = raw.get("type", ASSISTANT)
    if kind not in (ASSISTANT, USER_PROXY):
        raise invalid(f"{where}.type must be \"{ASSISTANT}\" or \"{USER_PROXY}\".")
    allowed = ASSISTANT_FIELDS if kind == ASSISTANT else PROXY_FIELDS
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise invalid(f"Unknown field \"{where}.{unknown[0]}\" for a {kind} agent.")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise invalid(f"{where}.name must be 1-64 letters, digits, '_' or '-'.")
    agent: dict[str, Any] = {"name": name, "type": kind, "description": _string(raw.get("description", ""), f"{where}.description", 2000)}
    if kind == USER_PROXY:
        mode = raw.get("human_input_mode", "ALWAYS")
        if not isinstance(mode, str) or mode.upper() not in HUMAN_INPUT_MODES:
            raise invalid(f"{where}.human_input_mode must be one of: {', '.join(HUMAN_INPUT_MODES)}.")
        agent["human_input_mode"] = mode.upper()
        agent["auto_reply"] = _string(raw.get("auto_reply", ""), f"{where}.auto_reply", 2000)
        return agent
    if "agent_id" in raw:
        mixed = sorted(set(raw) & {"instructions", "model", "temperature", "max_tokens"})
        if mixed:
            raise invalid(f"{where} has \"agent_id\": its \"{mixed[0]}\" comes from that agent and cannot be set here.")
        agent["agent_id"] = _string(raw["agent_id"], f"{where}.agent_id", 200, required=True)
        return agent
    agent["instructions"] = _string(raw.get("instructions", ""), f"{where}.instructions", 20_000)
    model = raw.get("model", "local")
    if model not in model_names:
        raise invalid(f"{where}.model must be one of: {', '.join(model_names)}.")
    agent["model"] = model
    temperature = raw.get("temperature", 0.2)
    if not is_number(temperature, 0, 2):
        raise invalid(f"{where}.temperature must be a number between 0 and 2.")
    agent["temperature"] = float(temperature)
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and not is_number(max_tokens, 1, 8192, integer=True):
        raise invalid(f"{where}.max_tokens must be an integer between 1 and 8192, or null.")
    agent["max_tokens"] = max_tokens
    return agent


def validate_flow(fields: Any, model_names: list[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete, normalised definition from ``fields`` (over ``base`` for an update).
    Raises a 400 ``Validation failed`` naming the field."""
    if not isinstance(fields, dict):
        raise invalid("The request body must be a JSON object.")
    unknown = sorted(set(fields) - set(FLOW_FIELDS) - set(READ_ONLY))
    if unknown:
        raise invalid(f"Unknown field \"{unknown[0]}\".")
    merged = {**DEFAULTS, **(base or {}), **{k: v for k, v in fields.items() if k in FLOW_FIELDS}}
    flow: dict[str, Any] = {
        "name": _string(merged.get("name"), "name", 200, required=True),
        "description": _string(merged["description"], "description", 2000),
    }
    raw_agents = merged.get("agents")
    if not isinstance(raw_agents, list) or not 1 <= len(raw_agents) <= MAX_AGENTS:
        raise invalid(f"\"agents\" must be a list of 1 to {MAX_AGENTS} agents.")
    agents = [_agent(raw, i, model_names) for i, raw in enumerate(raw_agents)]
    names = [a["name"] for a in agents]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise invalid(f"Agent names must be unique; \"{duplicate}\" is used twice.")
    if not any(a["type"] == ASSISTANT for a in agents):
        raise invalid("A flow needs at least one agent of type \"assistant\".")
    if sum(a["type"] == USER_PROXY for a in agents) > 1:
        raise invalid("A flow has at most one agent of type \"user_proxy\" (the human's seat).")
    flow["agents"] = agents
    if merged["speaker_selection"] not in SPEAKER_SELECTION:
        raise invalid(f"\"speaker_selection\" must be one of: {', '.join(SPEAKER_SELECTION)}.")
    flow["speaker_selection"] = merged["speaker_selection"]
    if merged["manager_model"] not in model_names:
        raise invalid(f"\"manager_model\" must be one of: {', '.join(model_names)}.")
    flow["manager_model"] = merged["manager_model"]
    rounds = merged["max_rounds"]
    if not is_number(rounds, 1, MAX_ROUNDS, integer=True):
        raise invalid(f"\"max_rounds\" must be an integer between 1 and {MAX_ROUNDS}.")
    flow["max_rounds"] = rounds
    keyword = merged["termination_keyword"]
    if keyword is not None and not is_text(keyword, 100):
        raise invalid("\"termination_keyword\" must be a string of at most 100 characters, or null.")
    flow["termination_keyword"] = (keyword.strip() or None) if keyword else None
    return flow


async def missing_agent_refs(store: Store | Tx, org_id: str, flow: dict[str, Any]) -> list[dict]:
    """The flow's agents whose ``agent_id`` names no agent of this org."""
    owned = await agents_of_org(store, org_id, [agent["agent_id"] for agent in flow["agents"] if "agent_id" in agent])
    return [agent for agent in flow["agents"] if "agent_id" in agent and agent["agent_id"] not in owned]


async def check_agent_refs(store: Store | Tx, org_id: str, flow: dict[str, Any]) -> None:
    missing = await missing_agent_refs(store, org_id, flow)
    if missing:
        agent = missing[0]
        raise invalid(f"Agent \"{agent['name']}\" refers to agent_id {agent['agent_id']!r}, which does not exist.")


def flow_out(row) -> dict[str, Any]:
    return {"id": row["id"], **json.loads(row["definition"]), "created_at": row["created_at"], "updated_at": row["updated_at"]}


async def create_flow(store: Store, org_id: str, fields: Any, model_names: list[str]) -> dict[str, Any]:
    flow = validate_flow(fields, model_names)
    await check_agent_refs(store, org_id, flow)
    now = iso()
    row = {"id": new_id(), "org_id": org_id, "name": flow["name"], "definition": json.dumps(flow), "created_at": now, "updated_at": now}
    async with store.write() as tx:
        await tx.execute(
            "INSERT INTO chat_flows (id, org_id, name, definition, created_at, updated_at) "
            "VALUES (:id, :org_id, :name, :definition, :created_at, :updated_at)", row,
        )
    return flow_out(row)


async def get_flow(store: Store | Tx, org_id: str | None, flow_id: str) -> dict[str, Any] | None:
    """The flow, if it exists and (when ``org_id`` is given) belongs to that org."""
    row = await store.fetchone("SELECT * FROM chat_flows WHERE id = ?", [flow_id])
    if row is None or (org_id is not None and row["org_id"] != org_id):
        return None
    return {**flow_out(row), "org_id": row["org_id"]}


def not_found(flow_id: str):
    return error(404, "Flow not found", f"No flow exists with id {flow_id!r}")


async def require_flow(store: Store, org_id: str | None, flow_id: Any) -> dict[str, Any]:
    flow = await get_flow(store, org_id, flow_id) if isinstance(flow_id, str) else None
    if flow is None:
        raise not_found(str(flow_id))
    return flow


async def list_flows(store: Store, org_id: str) -> list[dict[str, Any]]:
    rows = await store.fetchall("SELECT * FROM chat_flows WHERE org_id = ? ORDER BY created_at, id", [org_id])
    return [flow_out(r) for r in rows]


async def update_flow(store: Store, org_id: str | None, flow_id: str, fields: Any, model_names: list[str]) -> dict[str, Any]:
    """Changes the given top-level fields (``agents`` is replaced as a whole). Chats already
    created from the flow keep the definition they started with."""
    current = await require_flow(store, org_id, flow_id)
    flow = validate_flow(fields, model_names, base={k: current[k] for k in FLOW_FIELDS})
    await check_agent_refs(store, current["org_id"], flow)
    async with store.write() as tx:
        await tx.execute(
            "UPDATE chat_flows SET name = ?, definition = ?, updated_at = ? WHERE id = ?",
            [flow["name"], json.dumps(flow), iso(), flow_id],
        )
        return flow_out(await tx.fetchone("SELECT * FROM chat_flows WHERE id = ?", [flow_id]))


async def delete_flow(store: Store, org_id: str | None, flow_id: str) -> None:
    await require_flow(store, org_id, flow_id)
    async with store.write() as tx:
        await tx.execute("DELETE FROM chat_flows WHERE id = ?", [flow_id])


def export_document(flow: dict[str, Any]) -> dict[str, Any]:
    """A portable document: the definition without ids or timestamps."""
    return {"format": EXPORT_FORMAT, "version": 1, "flow": {k: flow[k] for k in FLOW_FIELDS}}


def import_fields(document: Any) -> Any:
    """The definition inside an exported document (a bare definition is accepted too)."""
    if isinstance(document, dict) and "format" in document:
        if document.get("format") != EXPORT_FORMAT or document.get("version") != 1:
            raise invalid(f"Unsupported document: expected \"format\": \"{EXPORT_FORMAT}\" with \"version\": 1.")
        return document.get("flow")
    return document
