"""Chats and their messages in SQLite: plain async functions over the Store.

Status changes are compare-and-set (``update_chat(..., expect=...)``), so two requests racing
on one chat (input twice, delete during a turn) cannot both win.
"""

from __future__ import annotations

import json
from typing import Any

from ..db import Store, Tx
from ..errors import error
from ..ids import iso, new_id, short_id

READY, RUNNING, WAITING, COMPLETED, ERROR = "ready", "running", "wait_for_human_input", "completed", "error"
# A new conversation may start from these (the spec: completed "has not big difference with ready").
STARTABLE = (READY, COMPLETED, ERROR)


def chat_out(row) -> dict[str, Any]:
    waiting = {"agent": row["waiting_for"], "reason": row["waiting_reason"]} if row["waiting_for"] else None
    return {
        "id": row["id"], "name": row["name"], "from_type": row["from_type"], "from_flow": row["from_flow"],
        "status": row["status"], "error": row["error"], "waiting_for": waiting, "round": row["round"],
        "max_rounds": json.loads(row["flow"])["max_rounds"], "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def message_out(row) -> dict[str, Any]:
    return {"id": row["id"], "type": row["type"], "sender": row["sender"], "content": row["content"], "created_at": row["created_at"]}


def not_found(chat_id: str):
    return error(404, "Chat not found", f"No chat exists with id {chat_id!r}")


async def create_chat(store: Store, org_id: str, name: str, flow: dict[str, Any]) -> dict[str, Any]:
    now = iso()
    definition = {k: v for k, v in flow.items() if k not in ("id", "org_id", "created_at", "updated_at")}
    row = {
        "id": new_id(), "org_id": org_id, "name": name, "from_type": "flow", "from_flow": flow["id"],
        "flow": json.dumps(definition), "status": READY, "created_at": now, "updated_at": now,
    }
    async with store.write() as tx:
        await tx.execute(
            f"INSERT INTO chats ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row
        )
        return chat_out(await tx.fetchone("SELECT * FROM chats WHERE id = ?", [row["id"]]))


async def get_chat_row(store: Store | Tx, chat_id: str) -> dict[str, Any] | None:
    row = await store.fetchone("SELECT * FROM chats WHERE id = ?", [chat_id])
    if row is None:
        return None
    chat = dict(row)
    chat["flow"] = json.loads(chat["flow"])
    return chat


async def require_chat(store: Store, org_id: str, chat_id: str) -> dict[str, Any]:
    """The chat's row (flow parsed); another org's chat is as unknown as a missing one."""
    chat = await get_chat_row(store, chat_id)
    if chat is None or chat["org_id"] != org_id:
        raise not_found(chat_id)
    return chat


async def get_chat(store: Store | Tx, chat_id: str) -> dict[str, Any] | None:
    row = await store.fetchone("SELECT * FROM chats WHERE id = ?", [chat_id])
    return chat_out(row) if row else None


async def list_chats(store: Store, org_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM chats" + (" WHERE org_id = ?" if org_id else "") + " ORDER BY created_at, id"
    return [chat_out(r) for r in await store.fetchall(sql, [org_id] if org_id else [])]


async def chats_with_status(store: Store, status: str) -> list[str]:
    return [r["id"] for r in await store.fetchall("SELECT id FROM chats WHERE status = ? ORDER BY updated_at", [status])]


async def active_counts(store: Store) -> dict[str, int]:
    """How many chats are running and how many wait for human input (the index on status counts them)."""
    rows = await store.fetchall("SELECT status, COUNT(*) AS n FROM chats WHERE status IN (?, ?) GROUP BY status", [RUNNING, WAITING])
    return {RUNNING: 0, WAITING: 0, **{r["status"]: r["n"] for r in rows}}


async def delete_chat(store: Store, chat_id: str) -> bool:
    async with store.write() as tx:
        return await tx.execute("DELETE FROM chats WHERE id = ?", [chat_id]) > 0


async def update_chat(tx: Tx, chat_id: str, expect: tuple[str, ...] | None = None, **fields: Any) -> bool:
    """Sets fields (and updated_at) if the chat exists and its status is one of ``expect``."""
    fields["updated_at"] = iso()
    sql = f"UPDATE chats SET {', '.join(f'{k} = :{k}' for k in fields)} WHERE id = :chat_id"
    if expect:
        sql += f" AND status IN ({', '.join(repr(s) for s in expect)})"
    return await tx.execute(sql, {**fields, "chat_id": chat_id}) > 0


async def append_message(tx: Tx, chat_id: str, type_: str, sender: str, content: str) -> dict[str, Any]:
    """Appends a message inside the caller's transaction; returns it with its ``seq``."""
    row = await tx.fetchone("SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM chat_messages WHERE chat_id = ?", [chat_id])
    message = {"id": short_id("msg"), "chat_id": chat_id, "seq": row["seq"], "type": type_, "sender": sender,
               "content": content, "created_at": iso()}
    await tx.execute(
        "INSERT INTO chat_messages (id, chat_id, seq, type, sender, content, created_at) "
        "VALUES (:id, :chat_id, :seq, :type, :sender, :content, :created_at)", message,
    )
    return message


async def messages_after(store: Store | Tx, chat_id: str, after_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """Stored messages in order, with their ``seq`` (for streams and the model's history)."""
    sql = "SELECT * FROM chat_messages WHERE chat_id = ? AND seq > ? ORDER BY seq"
    params: list[Any] = [chat_id, after_seq]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [dict(r) for r in await store.fetchall(sql, params)]


async def seq_of(store: Store | Tx, chat_id: str, message_id: str) -> int | None:
    row = await store.fetchone("SELECT seq FROM chat_messages WHERE chat_id = ? AND id = ?", [chat_id, message_id])
    return row["seq"] if row else None
