"""Re-embedding every item, for a new embedding model or text format (``flowbox knowledge reembed``).

The new vectors go into a new index version beside the current one, in batches, while the
server keeps answering from the current one; the switch is one transaction that first catches
up on items written meanwhile, then names the new version current and drops the old tables.
An interrupted run resumes where it stopped (vectors already made for the same text are kept).
"""

from __future__ import annotations

from typing import Any, Callable

from ..db import Store
from ..embeddings import Embedder
from . import index as idx

BATCH = 64


def _begin(conn, embedder: Embedder) -> tuple[idx.IndexInfo | None, idx.IndexInfo]:
    current = idx.info(conn)
    new = idx.IndexInfo(embedder.name, embedder.dim, current.version + 1 if current else 1)
    idx.create_tables(conn, new)  # kept if an interrupted run left them: it resumes
    return current, new


def _stale(conn, new: idx.IndexInfo, after: int | None, limit: int | None) -> list[dict[str, Any]]:
    """Items (ordered by n, after ``after``) whose vector in ``new`` is missing or for another text."""
    sql = (f"SELECT i.n, i.org_id, i.name, i.content, i.description_to_index_on, v.hash FROM knowledge_items i "
           f"LEFT JOIN {new.table('vectors')} v ON v.n = i.n")
    args: list[Any] = []
    if after is not None:
        sql += " WHERE i.n > ?"
        args.append(after)
    sql += " ORDER BY i.n" + (" LIMIT ?" if limit else "")
    rows = [dict(r) for r in conn.execute(sql, args + ([limit] if limit else []))]
    for row in rows:
        row["stale"] = row["hash"] != idx.text_hash(idx.indexed_text(row))
    return rows


def _write(conn, new: idx.IndexInfo, rows: list[dict], vectors: list[list[float]]) -> None:
    idx.write_vectors(conn, new, [
        (r["n"], r["org_id"], idx.text_hash(idx.indexed_text(r)), v) for r, v in zip(rows, vectors)
    ])


def _finish(conn, embedder: Embedder, current: idx.IndexInfo | None, new: idx.IndexInfo) -> int:
    """In the switching transaction: embed what changed meanwhile, drop vectors of deleted
    items, make ``new`` current. Returns the number of items caught up."""
    late = [r for r in _stale(conn, new, None, None) if r["stale"]]
    if late:
        _write(conn, new, late, embedder.embed_sync([idx.indexed_text(r) for r in late]))
    gone = [tuple(r) for r in conn.execute(
        f"SELECT n, org_id FROM {new.table('bits')} WHERE n NOT IN (SELECT n FROM knowledge_items)"
    )]
    idx.delete_vectors(conn, new, gone)
    idx.set_info(conn, new)
    if current is not None and current.version != new.version:
        idx.drop_tables(conn, current)
    return len(late)


async def reembed(store: Store, embedder: Embedder, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Embeds every item with ``embedder`` into a new index version and switches to it."""
    async with store.write() as tx:
        current, new = await tx.run(_begin, embedder)
    total = (await store.fetchone("SELECT count(*) AS c FROM knowledge_items"))["c"]
    embedded, after = 0, None
    while True:
        async with store.read() as tx:
            rows = await tx.run(_stale, new, after, BATCH)
        if not rows:
            break
        after = rows[-1]["n"]
        todo = [r for r in rows if r["stale"]]
        if todo:
            vectors = await embedder.embed([idx.indexed_text(r) for r in todo])
            async with store.write() as tx:
                await tx.run(_write, new, todo, vectors)
            embedded += len(todo)
        if progress is not None:
            progress(len(rows))
    async with store.write() as tx:
        embedded += await tx.run(_finish, embedder, current, new)
    return {"items": total, "embedded": embedded, "model": new.model, "dim": new.dim, "version": new.version}
