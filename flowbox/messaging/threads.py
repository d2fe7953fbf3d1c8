"""Threads of a project: engine state, pause state and the message history.

A thread is keyed by (project, threadId), the id the client chose (a user id, a phone number);
it exists from its first message, or from a pause or resume that came first. One that does
not exist yet is simply new: not paused, with an empty history. Every message, whoever sent
it (the user, the bot or a human agent), is one row in ``msg_messages`` holding a documented
message object; history pages are built from them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from ..db import Batch, Store, Tx
from ..ids import from_iso, iso, sortable_id
from .common import BOT_ORIGINATOR

HISTORY_PAGE = 20  # documented: one history request returns at most 20 entries
MAX_HISTORY_PAGE = 1_000_000  # far past any thread; keeps OFFSET arithmetic small


def _thread(row) -> dict[str, Any] | None:
    if row is None:
        return None
    thread = dict(row)
    thread["state"] = json.loads(thread["state"])
    thread["originator"] = json.loads(thread["originator"])
    return thread


async def get_thread(store: Store | Tx, project_id: str, thread_id: str) -> dict[str, Any] | None:
    sql, args = "SELECT * FROM msg_threads WHERE project_id = ? AND thread_id = ?", [project_id, thread_id]
    if isinstance(store, Store):  # one row by its key: read on the event loop's own connection
        rows = await store.lookup(sql, args)
        return _thread(rows[0] if rows else None)
    return _thread(await store.fetchone(sql, args))


async def ensure_thread(tx: Tx | Batch, project_id: str, thread_id: str) -> None:
    now = iso()
    await tx.execute(
        "INSERT INTO msg_threads (project_id, thread_id, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [project_id, thread_id, now, now],
    )


async def save_state(tx: Tx | Batch, project_id: str, thread_id: str, state: dict[str, Any], originator: dict[str, Any] | None = None) -> None:
    sql = "UPDATE msg_threads SET state = ?, updated_at = ?" + (", originator = ?" if originator is not None else "")
    params: list[Any] = [json.dumps(state), iso()] + ([json.dumps(originator)] if originator is not None else [])
    await tx.execute(sql + " WHERE project_id = ? AND thread_id = ?", params + [project_id, thread_id])


def paused_now(thread: dict[str, Any] | None, now: dt.datetime | None = None) -> bool:
    """Paused, and not past ``paused_until`` (a timed pause ends by itself)."""
    if not thread or not thread["paused"]:
        return False
    if thread["paused_until"] is None:
        return True
    now = now or dt.datetime.now(dt.timezone.utc)
    return from_iso(thread["paused_until"]) > now


async def set_paused(tx: Tx | Batch, project_id: str, thread_id: str, paused: bool, seconds: int | None = None) -> None:
    until = iso(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)) if paused and seconds else None
    await tx.execute(
        "UPDATE msg_threads SET paused = ?, paused_until = ?, updated_at = ? WHERE project_id = ? AND thread_id = ?",
        [int(paused), until, iso(), project_id, thread_id],
    )


async def append(tx: Tx | Batch, project_id: str, thread_id: str, sender: str, originator: dict[str, Any],
                 message: dict[str, Any], trace_id: Any = None) -> dict[str, Any]:
    """Stores one message (inside the caller's transaction, numbered after the thread's last
    one); returns it with ``createdAt``."""
    created = iso()
    await tx.execute(
        "INSERT INTO msg_messages (id, project_id, thread_id, seq, sender, trace_id, originator, message, created_at) "
        "SELECT ?, ?, ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM msg_messages WHERE project_id = ? AND thread_id = ?",
        [sortable_id(), project_id, thread_id, sender, None if trace_id is None else json.dumps(trace_id),
         json.dumps(originator), json.dumps(message), created, project_id, thread_id],
    )
    return {**message, "createdAt": created}


def history_originator(sender: str, originator: dict[str, Any]) -> dict[str, Any]:
    """How history names a sender: the bot as itself, people with the role the document shows."""
    if sender == "bot":
        return BOT_ORIGINATOR
    out = {k: originator[k] for k in ("userId", "name") if k in originator}
    out.setdefault("name", "Anonymous" if sender == "user" else "agent")
    out["role"] = "user" if sender == "user" else "moderator"
    out["profile"] = originator.get("profile") or {}
    return out


async def messages(store: Store, project_id: str, thread_id: str, limit: int = HISTORY_PAGE, offset_from_newest: int = 0) -> list[dict[str, Any]]:
    """Stored messages, oldest first, ``limit`` of them ending ``offset_from_newest`` before the newest."""
    rows = await store.fetchall(
        "SELECT * FROM (SELECT * FROM msg_messages WHERE project_id = ? AND thread_id = ? ORDER BY seq DESC LIMIT ? OFFSET ?) ORDER BY seq",
        [project_id, thread_id, limit, offset_from_newest],
    )
    return [{
        "seq": r["seq"], "sender": r["sender"], "originator": json.loads(r["originator"]),
        "traceId": None if r["trace_id"] is None else json.loads(r["trace_id"]),
        "message": {**json.loads(r["message"]), "createdAt": r["created_at"]},
    } for r in rows]


async def history_page(store: Store, project_id: str, thread_id: str, page: int) -> dict[str, Any]:
    """The documented ``result``: page 1 holds the newest 20 messages; each page lists its
    messages oldest first, grouped into runs by the same originator."""
    row = await store.fetchone("SELECT COUNT(*) AS n FROM msg_messages WHERE project_id = ? AND thread_id = ?", [project_id, thread_id])
    pages = math.ceil(row["n"] / HISTORY_PAGE)
    history: list[dict[str, Any]] = []
    for item in await messages(store, project_id, thread_id, HISTORY_PAGE, (page - 1) * HISTORY_PAGE):
        originator = history_originator(item["sender"], item["originator"])
        message = item["message"]
        entry = {
            "fallback": message.get("fallback", ""), "replyTo": message.get("replyTo"),
            "contexts": message.get("contexts", []), "params": message.get("params", {}),
            "intents": message.get("intents", []), "createdAt": message["createdAt"],
            "responses": message.get("responses", []),
        }
        if message.get("step"):  # the step a user's message matched, or the step a reply came from
            entry["step"] = message["step"]
        if history and history[-1]["originator"] == originator:
            history[-1]["messages"].append(entry)
        else:
            history.append({"originator": originator, "messages": [entry]})
    return {"history": history, "threadId": thread_id, "page": page, "pages": pages}
