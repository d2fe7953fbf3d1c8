"""Agents, threads and their messages in SQLite: plain async functions over the Store."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Iterable, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ..db import Store, Tx, sqlite3
from ..ids import iso, new_id
from ..validation import NOT_BLANK, given, typed
from .tools import BUILTIN_TOOLS

AGENT_FIELDS = ("name", "description", "instructions", "model", "temperature", "max_tokens", "tools")
MAX_INSTRUCTIONS = 20_000


def agent_out(row) -> dict[str, Any]:
    agent = dict(row)
    agent["tools"] = json.loads(agent["tools"])
    return agent


class AgentFields(msgspec.Struct, forbid_unknown_fields=True):
    """An agent create or update body; the read-only fields a client may send back are ignored."""

    name: Annotated[str, Meta(max_length=200, pattern=NOT_BLANK)] | UnsetType = UNSET
    description: Annotated[str, Meta(max_length=2000)] | UnsetType = UNSET
    instructions: Annotated[str, Meta(max_length=MAX_INSTRUCTIONS)] | UnsetType = UNSET
    model: str | UnsetType = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType = UNSET
    max_tokens: Annotated[int, Meta(ge=1, le=8192)] | None | UnsetType = UNSET
    tools: list[Literal[tuple(BUILTIN_TOOLS)]] | UnsetType = UNSET  # type: ignore[valid-type]
    id: Any = UNSET
    org_id: Any = UNSET
    created_at: Any = UNSET
    updated_at: Any = UNSET


_AGENT_MESSAGES = {
    "name": "\"name\" must be a non-empty string of at most 200 characters.",
    "description": "\"description\" must be a string of at most 2000 characters.",
    "instructions": f"\"instructions\" must be a string of at most {MAX_INSTRUCTIONS} characters.",
    "temperature": "\"temperature\" must be a number between 0 and 2.",
    "max_tokens": "\"max_tokens\" must be an integer between 1 and 8192, or null.",
    "tools": f"\"tools\" must be a list of tool names from: {', '.join(BUILTIN_TOOLS)}.",
}


def validate_agent(body: Any, model_names: list[str], partial: bool = False) -> dict[str, Any]:
    """The agent columns a create (or, ``partial``, an update) body sets; else a 400 ``Validation failed``
    naming the field."""
    fields = typed(body, AgentFields, {**_AGENT_MESSAGES, "model": f"\"model\" must be one of: {', '.join(model_names)}."},
                   require=() if partial else ("name",), checks={"model": lambda model: model in model_names})
    out = {k: v for k, v in given(fields).items() if k in AGENT_FIELDS}
    if "name" in out:
        out["name"] = out["name"].strip()
    if "tools" in out:
        out["tools"] = json.dumps(list(dict.fromkeys(out["tools"])))
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


def owned_agents(conn: sqlite3.Connection, org_id: str, agent_ids: Iterable[str]) -> set[str]:
    """Which of these ids name agents of this org (an id of another org's agent, or of none, is
    left out): the one answer to "do these agents belong to this org". On a plain connection, so a
    write can check inside its transaction (``tx.run``); ``agents_of_org`` is the async form."""
    ids = list(dict.fromkeys(agent_ids))
    owned: set[str] = set()
    for start in range(0, len(ids), 500):  # within SQLite's limit on parameters
        chunk = ids[start:start + 500]
        rows = conn.execute(f"SELECT id FROM agents WHERE org_id = ? AND id IN ({', '.join('?' * len(chunk))})", [org_id, *chunk])
        owned.update(row[0] for row in rows)
    return owned


async def agents_of_org(db: Store | Tx, org_id: str, agent_ids: Iterable[str]) -> set[str]:
    ids = list(agent_ids)
    if isinstance(db, Tx):
        return await db.run(owned_agents, org_id, ids)
    async with db.read() as tx:
        return await tx.run(owned_agents, org_id, ids)


async def belongs_to(db: Store | Tx, org_id: str, agent_id: str) -> bool:
    return agent_id in await agents_of_org(db, org_id, [agent_id])


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
