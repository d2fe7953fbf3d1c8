"""Agents, threads and their messages in SQLite: plain async functions over the Store."""

from __future__ import annotations

import json
import re
from typing import Any

from ..db import Store, Tx
from ..errors import error
from ..http import is_text
from ..ids import iso, new_id
from .tools import BUILTIN_TOOLS

AGENT_FIELDS = ("name", "description", "instructions", "model", "temperature", "max_tokens", "tools")
MAX_INSTRUCTIONS = 20_000


def agent_out(row) -> dict[str, Any]:
    agent = dict(row)
    agent["tools"] = json.loads(agent["tools"])
    return agent


def validate_agent(fields: dict[str, Any], model_names: list[str], partial: bool = False) -> dict[str, Any]:
    """Checks agent fields; raises a 400 ``Validation failed`` naming the field."""

    def bad(message: str):
        return error(400, "Validation failed", message)

    if not isinstance(fields, dict):
        raise bad("The request body must be a JSON object.")
    unknown = sorted(set(fields) - set(AGENT_FIELDS) - {"id", "created_at", "updated_at", "org_id"})
    if unknown:
        raise bad(f"Unknown field \"{unknown[0]}\".")
    out: dict[str, Any] = {}
    if "name" in fields or not partial:
        name = fields.get("name")
        if not is_text(name) or not name.strip() or len(name) > 200:
            raise bad("\"name\" must be a non-empty string of at most 200 characters.")
        out["name"] = name.strip()
    for key, limit in (("description", 2000), ("instructions", MAX_INSTRUCTIONS)):
        if key in fields:
            value = fields[key]
            if not is_text(value) or len(value) > limit:
                raise bad(f"\"{key}\" must be a string of at most {limit} characters.")
            out[key] = value
    if "model" in fields:
        if fields["model"] not in model_names:
            raise bad(f"\"model\" must be one of: {', '.join(model_names)}.")
        out["model"] = fields["model"]
    if "temperature" in fields:
        value = fields["temperature"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
            raise bad("\"temperature\" must be a number between 0 and 2.")
        out["temperature"] = float(value)
    if "max_tokens" in fields:
        value = fields["max_tokens"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8192):
            raise bad("\"max_tokens\" must be an integer between 1 and 8192, or null.")
        out["max_tokens"] = value
    if "tools" in fields:
        value = fields["tools"]
        if not isinstance(value, list) or not all(isinstance(t, str) and t in BUILTIN_TOOLS for t in value):
            raise bad(f"\"tools\" must be a list of tool names from: {', '.join(BUILTIN_TOOLS)}.")
        out["tools"] = json.dumps(list(dict.fromkeys(value)))
    return out


async def create_agent(store: Store, org_id: str, fields: dict[str, Any], model_names: list[str]) -> dict:
    values = validate_agent(fields, model_names)
    now = iso()
    row = {
        "id": new_id(), "org_id": org_id, "description": "", "instructions": "", "model": "local",
        "temperature": 0.2, "max_tokens": None, "tools": "[]", "created_at": now, "updated_at": now, **values,
    }
    async with store.write() as tx:
        await tx.execute(
            f"INSERT INTO agents ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row
        )
    return agent_out(row)


async def get_agent(store: Store | Tx, agent_id: str) -> dict | None:
    row = await store.fetchone("SELECT * FROM agents WHERE id = ?", [agent_id])
    return agent_out(row) if row else None


async def list_agents(store: Store, org_id: str) -> list[dict]:
    rows = await store.lookup("SELECT * FROM agents WHERE org_id = ? ORDER BY created_at, id", [org_id])
    return [agent_out(r) for r in rows]


async def update_agent(store: Store, org_id: str, agent_id: str, fields: dict[str, Any], model_names: list[str]) -> dict | None:
    values = validate_agent(fields, model_names, partial=True)
    values["updated_at"] = iso()
    async with store.write() as tx:
        changed = await tx.execute(
            f"UPDATE agents SET {', '.join(f'{k} = :{k}' for k in values)} WHERE id = :id AND org_id = :org_id",
            {**values, "id": agent_id, "org_id": org_id},
        )
        if not changed:
            return None
        return agent_out(await tx.fetchone("SELECT * FROM agents WHERE id = ?", [agent_id]))


async def delete_agent(store: Store, org_id: str, agent_id: str) -> bool:
    async with store.write() as tx:
        return await tx.execute("DELETE FROM agents WHERE id = ? AND org_id = ?", [agent_id, org_id]) > 0


# -- threads and messages -------------------------------------------------------------------
# A thread is named by its agent and its id: the client may choose the id (as the document's
# example does), so the same id under two agents is two threads.

THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
THREAD_ID_RULE = "1 to 128 letters, digits or . _ : @ + -, starting with a letter or digit"


def valid_thread_id(value: Any) -> bool:
    """Client-chosen ids are path segments and log fields: UUIDs, ``thread_123456``, user ids."""
    return isinstance(value, str) and THREAD_ID.fullmatch(value) is not None


def message_out(row) -> dict[str, Any]:
    return {"role": row["role"], "content": json.loads(row["content"]), "id": row["id"]}


async def get_thread(store: Store | Tx, agent_id: str, thread_id: str) -> dict | None:
    row = await store.fetchone("SELECT * FROM threads WHERE agent_id = ? AND id = ?", [agent_id, thread_id])
    return dict(row) if row else None


async def thread_messages(store: Store | Tx, agent_id: str, thread_id: str) -> list[dict[str, Any]]:
    rows = await store.fetchall("SELECT * FROM messages WHERE agent_id = ? AND thread_id = ? ORDER BY seq", [agent_id, thread_id])
    return [message_out(r) for r in rows]


async def append_messages(tx: Tx, agent_id: str, thread_id: str, messages: list[dict[str, Any]]) -> None:
    """Appends Agents-API-shaped messages (each with an id) to a thread, inside the caller's transaction."""
    row = await tx.fetchone("SELECT COALESCE(MAX(seq), 0) AS seq FROM messages WHERE agent_id = ? AND thread_id = ?", [agent_id, thread_id])
    seq = row["seq"]
    now = iso()
    rows = []
    for message in messages:
        seq += 1
        rows.append((message["id"], agent_id, thread_id, seq, message["role"], json.dumps(message["content"]), now))
    await tx.executemany(
        "INSERT INTO messages (id, agent_id, thread_id, seq, role, content, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
    )
    await tx.execute("UPDATE threads SET updated_at = ? WHERE agent_id = ? AND id = ?", [now, agent_id, thread_id])


async def ensure_thread(tx: Tx, org_id: str, agent_id: str, thread_id: str | None) -> str:
    """The agent's thread ``thread_id``, started if it does not exist yet (with a new id when None).
    Inside the writer's transaction, so two first turns on one new id make one thread."""
    if thread_id is not None and await get_thread(tx, agent_id, thread_id):
        return thread_id
    thread_id = thread_id or new_id()
    now = iso()
    await tx.execute(
        "INSERT INTO threads (id, org_id, agent_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        [thread_id, org_id, agent_id, now, now],
    )
    return thread_id
