"""Credits: what an agent call costs, and whether an org may spend."""

from __future__ import annotations

import math

from .db import Store, Tx

TOKENS_PER_CREDIT = 1000


def credits_for(prompt_tokens: int, completion_tokens: int) -> int:
    """One credit per started 1,000 tokens, at least one per call."""
    return max(1, math.ceil((prompt_tokens + completion_tokens) / TOKENS_PER_CREDIT))


async def has_credits(store: Store, org_id: str) -> bool:
    row = await store.fetchone("SELECT credits FROM orgs WHERE id = ?", [org_id])
    return row is not None and (row["credits"] is None or row["credits"] > 0)


async def charge(tx: Tx, org_id: str, credits: float) -> None:
    """Deducts from a limited balance (NULL means unlimited), inside the run's transaction."""
    await tx.execute("UPDATE orgs SET credits = MAX(credits - ?, 0) WHERE id = ? AND credits IS NOT NULL", [credits, org_id])
