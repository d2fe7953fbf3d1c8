"""Credits: what an agent call costs, whether an org may spend, balances, and the usage ledger.

The ledger is the ``runs`` table: one row per agent call with the credits it was charged. Its rows
are written here only: ``open_run`` (an async run, accepted) and ``record_run`` (a finished call).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from .db import Store, Tx
from .ids import iso

DEFAULT_TOKENS_PER_CREDIT = 1000
DEFAULT_MIN_CREDITS = 1


def credits_for(prompt_tokens: int, completion_tokens: int, config: Any = None) -> int:
    """The configured rule: one credit per started ``tokens_per_credit`` tokens, at least
    ``min_credits_per_call`` (``tokens_per_credit = 0``: a flat ``min_credits_per_call``)."""
    per = getattr(config, "tokens_per_credit", DEFAULT_TOKENS_PER_CREDIT)
    least = getattr(config, "min_credits_per_call", DEFAULT_MIN_CREDITS)
    by_tokens = math.ceil((prompt_tokens + completion_tokens) / per) if per else 0
    return max(least, by_tokens)


async def has_credits(store: Store, org_id: str) -> bool:
    row = await store.fetchone("SELECT credits FROM orgs WHERE id = ?", [org_id])
    return row is not None and (row["credits"] is None or row["credits"] > 0)


async def charge(tx: Tx, org_id: str, credits: float) -> None:
    """Deducts from a limited balance (NULL means unlimited), inside the run's transaction."""
    await tx.execute("UPDATE orgs SET credits = MAX(credits - ?, 0) WHERE id = ? AND credits IS NOT NULL", [credits, org_id])


async def open_run(tx: Tx, *, run_id: str, org_id: str, agent_id: str, thread_id: str | None,
                   callback_url: str | None, request: dict[str, Any]) -> None:
    """An accepted async run, before it runs (so a restart resumes it); ``record_run`` completes it."""
    await tx.execute(
        "INSERT INTO runs (id, org_id, agent_id, thread_id, status, callback_url, request, created_at) VALUES (?, ?, ?, ?, 'processing', ?, ?, ?)",
        [run_id, org_id, agent_id, thread_id, callback_url, json.dumps(request), iso()],
    )


async def record_run(tx: Tx, *, run_id: str, org_id: str, agent_id: str, thread_id: str | None, model: str,
                     prompt_tokens: int, completion_tokens: int, credits: int, timestamp: str) -> None:
    """A finished agent or model call in the ledger, charged to the org, inside the caller's
    transaction. An async run's row (accepted as 'processing') is completed in place.
    ``agent_id`` is ``model:<name>`` for a bare model's call."""
    await tx.execute(
        "INSERT INTO runs (id, org_id, agent_id, thread_id, status, model, prompt_tokens, completion_tokens, credits, created_at, finished_at) "
        "VALUES (?, ?, ?, ?, 'completed', ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET status='completed', thread_id=excluded.thread_id, model=excluded.model, "
        "prompt_tokens=excluded.prompt_tokens, completion_tokens=excluded.completion_tokens, credits=excluded.credits, "
        "finished_at=excluded.finished_at",
        [run_id, org_id, agent_id, thread_id, model, prompt_tokens, completion_tokens, credits, timestamp, timestamp],
    )
    await charge(tx, org_id, credits)


def number(value: float | None) -> int | float | None:
    """Whole credits print as integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


async def balance(store: Store, org_id: str) -> dict:
    """The org's balance (``credits`` None = unlimited) and what it has spent."""
    row = await store.fetchone(
        "SELECT o.id, o.name, o.credits, (SELECT COALESCE(SUM(credits), 0) FROM runs WHERE org_id = o.id AND credits > 0) AS used "
        "FROM orgs o WHERE o.id = ?",
        [org_id],
    )
    if row is None:
        raise LookupError(f"no org with id {org_id}")
    return {"org_id": row["id"], "name": row["name"], "credits": number(row["credits"]),
            "unlimited": row["credits"] is None, "used_credits": number(float(row["used"]))}


async def set_credits(store: Store, org_id: str, credits: float | None, add: bool = False) -> dict:
    """Sets the balance (None: unlimited), or adds to it when ``add`` (to an unlimited balance: no change)."""
    if credits is not None and (not math.isfinite(credits) or (credits < 0 and not add)):
        raise ValueError("credits must be a finite number, at least 0")
    async with store.write() as tx:
        if add:
            changed = await tx.execute("UPDATE orgs SET credits = MAX(credits + ?, 0) WHERE id = ? AND credits IS NOT NULL", [credits, org_id])
            changed = changed or bool(await tx.fetchone("SELECT 1 FROM orgs WHERE id = ?", [org_id]))
        else:
            changed = await tx.execute("UPDATE orgs SET credits = ? WHERE id = ?", [credits, org_id])
        if not changed:
            raise LookupError(f"no org with id {org_id}")
    return await balance(store, org_id)


async def daily_credits(store: Store, agent_id: str, start: dt.date, end: dt.date, since: dt.date | None = None) -> dict[str, float]:
    """Credits charged per UTC day (``YYYY-MM-DD``) for an agent's calls from ``start`` to ``end``
    inclusive, counting only positive charges and only from ``since``; days without any are absent."""
    first = max(start, since) if since else start
    if first > end:
        return {}
    rows = await store.fetchall(
        "SELECT substr(created_at, 1, 10) AS day, SUM(credits) AS used FROM runs "
        "WHERE agent_id = ? AND credits > 0 AND created_at >= ? AND created_at < ? GROUP BY day",
        [agent_id, iso(_midnight(first)), iso(_midnight(end + dt.timedelta(days=1)))],
    )
    return {r["day"]: r["used"] for r in rows}


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
