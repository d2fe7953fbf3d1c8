"""Knowledge items in SQLite: validation with the documented errors, and plain async functions
that the HTTP layer, the CLI and the agents' search tool all call.

An item, its links, its vectors and its FTS row are written in one transaction; the embedding
is computed before that transaction opens, so the single writer never waits on a model.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from ..agents.store import belongs_to, owned_agents
from ..db import Store
from ..embeddings import Embedder
from ..errors import error
from ..http import whole_number
from ..ids import iso, new_id
from ..models import answer_encoder
from ..validation import invalid, is_text
from . import index as idx
from . import second_reading

log = logging.getLogger(__name__)

MAX_CONTENT = 4000
MAX_NAME = 500
MAX_AGENT_IDS = 100
MAX_PAGE_SIZE = 100
MAX_PAGE = 1_000_000_000  # "a positive integer"; bounded so OFFSET stays within what SQLite binds
DEFAULT_PAGE_SIZE = 20

NOT_FOUND = {"error": "Knowledge item not found or access denied"}
CONTENT_REQUIRED = "content is required and must be a non-empty string"
AGENT_IDS_REQUIRED = "agent_ids is required and must be a non-empty string or array"
TOO_LONG = ("Content exceeds character limit", f"The content field must be {MAX_CONTENT} characters or less.")
FOREIGN_AGENTS = ("Access denied", "One or more agents do not belong to your organisation")
FOREIGN_AGENT = ("Access denied", "Agent does not belong to your organisation")
BAD_PAGE = ("Invalid pagination parameters", "Page must be a positive integer and limit must be between 1 and 100")
USAGE_LIMIT = (
    "Usage limit reached",
    "You have reached the maximum number of items in one of your knowledge bases. Please upgrade your plan to add more items.",
)
UNENCODABLE = '"content" must be valid Unicode text (it contains a lone surrogate).'
OUTPUT_FIELDS = ("id", "name", "created_at", "updated_at", "source")


def not_found():
    return error(404, NOT_FOUND["error"])


# -- validation ---------------------------------------------------------------------------------

def _agent_ids(value: Any) -> list[str] | None:
    """A string or a non-empty array of non-empty strings, deduplicated in order; else None."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_AGENT_IDS:
        return None
    if not all(is_text(v, required=True) for v in value):
        return None
    return list(dict.fromkeys(v.strip() for v in value))


def _optional_fields(body: dict, out: dict) -> None:
    if "name" in body and body["name"] is not None:
        name = body["name"]
        if not is_text(name, required=True):
            raise invalid('If provided, "name" must be a non-empty string.')
        if len(name) > MAX_NAME:
            raise invalid(f'"name" must be {MAX_NAME} characters or less.')
        out["name"] = name.strip()
    if "description_to_index_on" in body:
        description = body["description_to_index_on"]
        if description is not None and not is_text(description):
            raise invalid('If provided, "description_to_index_on" must be a string.')
        if description is not None and len(description) > MAX_CONTENT:
            raise invalid(f'"description_to_index_on" must be {MAX_CONTENT} characters or less.')
        out["description_to_index_on"] = (description or "").strip() or None


def validate_create(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise error(400, "Invalid JSON body", "The request body must be a JSON object.")
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise error(400, CONTENT_REQUIRED)
    if not is_text(content):
        raise invalid(UNENCODABLE)
    agent_ids = _agent_ids(body.get("agent_ids"))
    if agent_ids is None:
        raise error(400, AGENT_IDS_REQUIRED)
    if len(content) > MAX_CONTENT:
        raise error(400, *TOO_LONG)
    out: dict[str, Any] = {"content": content, "agent_ids": agent_ids, "name": None, "description_to_index_on": None}
    _optional_fields(body, out)
    return out


def validate_update(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise error(400, "Invalid JSON body", "The request body must be a JSON object.")
    out: dict[str, Any] = {}
    if "content" in body:
        content = body["content"]
        if not isinstance(content, str) or not content.strip():
            raise invalid('If provided, "content" must be a non-empty string.')
        if not is_text(content):
            raise invalid(UNENCODABLE)
        if len(content) > MAX_CONTENT:
            raise error(400, *TOO_LONG)
        out["content"] = content
    if "agent_ids" in body:
        agent_ids = _agent_ids(body["agent_ids"])
        if agent_ids is None:
            raise invalid('If provided, "agent_ids" must be a non-empty string or array.')
        out["agent_ids"] = agent_ids
    _optional_fields(body, out)
    if not out:
        raise invalid('Provide at least one of "name", "content", "agent_ids", "description_to_index_on".')
    return out


def page_params(page: Any, limit: Any) -> tuple[int, int]:
    """Query-string page and limit, or the documented 400."""
    page_no = 1 if page in (None, "") else whole_number(str(page), 1, MAX_PAGE)
    size = DEFAULT_PAGE_SIZE if limit in (None, "") else whole_number(str(limit), 1, MAX_PAGE_SIZE)
    if page_no is None or size is None:
        raise error(400, *BAD_PAGE)
    return page_no, size


# -- output -------------------------------------------------------------------------------------

def item_out(row, links: list[str], with_content: bool = False) -> dict[str, Any]:
    """The documented item shape (``content`` only where the document shows it: GET by id)."""
    fields = ("id", "name", "content", *OUTPUT_FIELDS[2:]) if with_content else OUTPUT_FIELDS
    return {**{key: row[key] for key in fields}, "linked_agents": links}


def links_of(conn, ns: Sequence[int]) -> dict[int, list[str]]:
    links: dict[int, list[str]] = {n: [] for n in ns}
    for start in range(0, len(ns), 500):
        part = list(ns[start:start + 500])
        for n, agent_id in conn.execute(
            f"SELECT item_n, agent_id FROM knowledge_links WHERE item_n IN ({','.join('?' * len(part))}) ORDER BY item_n, pos",
            part,
        ):
            links[n].append(agent_id)
    return links


# -- the one write path ---------------------------------------------------------------------------

def save_items(conn, model: str, dim: int, items: list[dict[str, Any]]) -> list[int]:
    """Inserts or updates items with their links, vectors and FTS rows (sync, on the writer,
    inside the caller's transaction). Each item: the ``knowledge_items`` columns (``n`` None for
    a new one), ``agent_ids`` (None: links unchanged) and ``vector`` (None: vectors unchanged)."""
    index = idx.ensure(conn, model, dim)
    columns = ("id", "org_id", "name", "content", "description_to_index_on", "source", "source_key", "created_at", "updated_at")
    ns = []
    for item in items:
        values = [item.get(c) for c in columns]
        if item.get("n") is None:
            n = conn.execute(
                f"INSERT INTO knowledge_items ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
            ).lastrowid
        else:
            n = item["n"]
            conn.execute(f"UPDATE knowledge_items SET {', '.join(c + ' = ?' for c in columns)} WHERE n = ?", [*values, n])
        ns.append(n)
        if item.get("agent_ids") is not None:
            conn.execute("DELETE FROM knowledge_links WHERE item_n = ?", [n])
            conn.executemany("INSERT INTO knowledge_links (item_n, agent_id, pos) VALUES (?, ?, ?)",
                             [(n, agent_id, pos) for pos, agent_id in enumerate(item["agent_ids"])])
    for org_id in dict.fromkeys(item["org_id"] for item in items):
        idx.write_fts(conn, org_id, [(n, item["name"], fts_body(item)) for n, item in zip(ns, items) if item["org_id"] == org_id])
    idx.write_vectors(conn, index, [
        (n, item["org_id"], idx.text_hash(idx.indexed_text(item)), item["vector"])
        for n, item in zip(ns, items) if item.get("vector") is not None
    ])
    return ns


def delete_items(conn, ns: Sequence[int]) -> None:
    """Removes items with everything indexed for them (sync, inside the caller's transaction)."""
    if not ns:
        return
    orgs = [tuple(r) for r in conn.execute(
        f"SELECT n, org_id FROM knowledge_items WHERE n IN ({','.join('?' * len(ns))})", list(ns))]
    index = idx.info(conn)
    if index is not None:
        idx.delete_vectors(conn, index, orgs)
    for org_id in dict.fromkeys(org for _, org in orgs):
        idx.delete_fts(conn, org_id, [n for n, org in orgs if org == org_id])
    conn.executemany("DELETE FROM knowledge_items WHERE n = ?", [(n,) for n in ns])


def fts_body(item: dict) -> str:
    """What BM25 indexes of an item besides its name: its content and description."""
    return "\n".join(t for t in (item["content"], item.get("description_to_index_on")) if t)


# -- checks -------------------------------------------------------------------------------------------

def _foreign_agents(conn, org_id: str, agent_ids: list[str]) -> bool:
    return not set(agent_ids) <= owned_agents(conn, org_id, agent_ids)


def check_limit(conn, org_id: str, max_items: int, adding: int = 1) -> None:
    if max_items > 0 and adding > 0:
        held = conn.execute("SELECT count(*) FROM knowledge_items WHERE org_id = ?", [org_id]).fetchone()[0]
        if held + adding > max_items:
            raise error(402, *USAGE_LIMIT, minimalPlan="unlimited")


async def check_agents(store: Store, org_id: str, agent_ids: list[str]) -> None:
    async with store.read() as tx:
        if await tx.run(_foreign_agents, org_id, agent_ids):
            raise error(403, *FOREIGN_AGENTS)


# -- operations --------------------------------------------------------------------------------------

async def create_item(store: Store, embedder: Embedder, org_id: str, body: Any, *,
                      source: str = "api", max_items: int = 0) -> dict[str, Any]:
    fields = validate_create(body)
    await check_agents(store, org_id, fields["agent_ids"])  # fail before spending an embedding
    async with store.read() as tx:
        await tx.run(check_limit, org_id, max_items)
    vector = (await embedder.embed([idx.indexed_text(fields)]))[0]
    now = iso()
    item = {**fields, "n": None, "id": new_id(), "org_id": org_id, "source": source, "source_key": None,
            "created_at": now, "updated_at": now, "vector": vector}

    def write(conn):
        # the authoritative checks, in the transaction that writes
        if _foreign_agents(conn, org_id, fields["agent_ids"]):
            raise error(403, *FOREIGN_AGENTS)
        check_limit(conn, org_id, max_items)
        save_items(conn, embedder.name, embedder.dim, [item])

    async with store.write() as tx:
        await tx.run(write)
    return item_out(item, fields["agent_ids"])


def _row(conn, org_id: str, item_id: str):
    return conn.execute("SELECT * FROM knowledge_items WHERE id = ? AND org_id = ?", [item_id, org_id]).fetchone()


async def get_item(store: Store, org_id: str, item_id: str) -> dict[str, Any]:
    def read(conn):
        row = _row(conn, org_id, item_id)
        if row is None:
            raise not_found()
        return item_out(row, links_of(conn, [row["n"]])[row["n"]], with_content=True)

    async with store.read() as tx:
        return await tx.run(read)


async def update_item(store: Store, embedder: Embedder, org_id: str, item_id: str, body: Any) -> dict[str, Any]:
    fields = validate_update(body)
    async with store.read() as tx:
        current = await tx.run(_row, org_id, item_id)
    if current is None:
        raise not_found()
    if "agent_ids" in fields:
        await check_agents(store, org_id, fields["agent_ids"])
    item = {**dict(current), **fields}
    if "content" in fields and "description_to_index_on" not in fields:
        item["description_to_index_on"] = None  # documented: a new content drops the description
    item["agent_ids"] = fields.get("agent_ids")
    item["updated_at"] = iso()
    changed = idx.indexed_text(item) != idx.indexed_text(dict(current))
    item["vector"] = (await embedder.embed([idx.indexed_text(item)]))[0] if changed else None

    def write(conn):
        row = _row(conn, org_id, item_id)
        if row is None:  # deleted meanwhile
            raise not_found()
        if fields.get("agent_ids") and _foreign_agents(conn, org_id, fields["agent_ids"]):
            raise error(403, *FOREIGN_AGENTS)
        if item["vector"] is None and idx.indexed_text(dict(row)) != idx.indexed_text(item):
            raise error(409, "Conflict", "The knowledge item changed during the update; try again.")
        save_items(conn, embedder.name, embedder.dim, [{**item, "n": row["n"]}])
        return item_out(_row(conn, org_id, item_id), links_of(conn, [row["n"]])[row["n"]])

    async with store.write() as tx:
        return await tx.run(write)


async def delete_item(store: Store, org_id: str, item_id: str) -> None:
    def write(conn):
        row = _row(conn, org_id, item_id)
        if row is None:
            raise not_found()
        delete_items(conn, [row["n"]])

    async with store.write() as tx:
        await tx.run(write)


async def check_agent(store: Store, org_id: str, agent_id: str) -> None:
    """An ``agent_id`` filter must name one of the org's agents (documented 403)."""
    if not await belongs_to(store, org_id, agent_id):
        raise error(403, *FOREIGN_AGENT)


async def list_items(store: Store, org_id: str, *, agent_id: str | None = None, page: int = 1,
                     limit: int = DEFAULT_PAGE_SIZE, source: str | None = "api") -> dict[str, Any]:
    """One page of the org's items, newest first, with the documented pagination object.
    The API lists the items created through the API (``source='api'``), as documented."""
    if agent_id is not None:
        await check_agent(store, org_id, agent_id)
    where, args = ["i.org_id = ?"], [org_id]
    if source is not None:
        where.append("i.source = ?")
        args.append(source)
    if agent_id is not None:
        where.append("EXISTS (SELECT 1 FROM knowledge_links l WHERE l.item_n = i.n AND l.agent_id = ?)")
        args.append(agent_id)
    condition = " AND ".join(where)

    def read(conn):
        total = conn.execute(f"SELECT count(*) FROM knowledge_items i WHERE {condition}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM knowledge_items i WHERE {condition} ORDER BY i.created_at DESC, i.n DESC LIMIT ? OFFSET ?",
            [*args, limit, (page - 1) * limit],
        ).fetchall()
        links = links_of(conn, [r["n"] for r in rows])
        return total, [item_out(r, links[r["n"]]) for r in rows]

    async with store.read() as tx:
        total, items = await tx.run(read)
    pages = math.ceil(total / limit)
    return {
        "knowledge_items": items,
        "pagination": {
            "current_page": page,
            "limit": limit,
            "total_count": total,
            "total_pages": pages,
            "has_next_page": page < pages,
            "has_previous_page": page > 1,
        },
    }


async def search(store: Store, embedder: Embedder | None, org_id: str, query: str, *, agent_id: str | None = None,
                 limit: int = 5, mode: str = "hybrid", answers: Embedder | None = None) -> list[dict[str, Any]]:
    """The org's items (or those linked to ``agent_id``) best matching ``query``, best first,
    each with ``score`` (what ``mode`` ranks by), ``similarity`` (cosine to the query) and
    ``relevance`` (0 to 1; below ``index.RELEVANCE_THRESHOLD``: nothing relevant). With ``answers`` (the
    answer encoder), a hybrid search unsure of its leader reads the question beside it (``second_reading``)."""
    found = await _search(store, embedder, org_id, query, agent_id=agent_id, limit=limit, mode=mode)
    if (answers is not None and mode == "hybrid" and found and second_reading.unsure(found[0]["relevance"])
            and answers.reads(query) is not False):  # what the model cannot read, it cannot judge
        leader = found[0]
        try:
            (vector,) = await answers.embed_queries([second_reading.pair_text(query, idx.indexed_text(leader))])
        except Exception as exc:  # noqa: BLE001 - the search's word stands
            log.warning("reading a question beside its leading result failed: %r", exc)
        else:
            answer = float(answer_encoder.score(np.asarray(vector)[None])[0])
            first = round(second_reading.relevance(leader["relevance"], answer), 6)
            # the runners-up, which the search put below the leader, never read as likelier answers than it
            found = [{**leader, "relevance": first}, *({**r, "relevance": min(r["relevance"], first)} for r in found[1:])]
    return found


async def _search(store: Store, embedder: Embedder | None, org_id: str, query: str, *, agent_id: str | None,
                  limit: int, mode: str) -> list[dict[str, Any]]:
    # A query the model reads nothing of (emoji, a script it lacks) is searched by its words alone: its vector
    # is [UNK]'s, close to short unrelated items (0.88 relevance to an item "x").
    readable = embedder is not None and mode != "keyword" and embedder.reads(query) is not False
    vector = await embedder.embed_query(query) if readable else None

    def read(conn):
        index = idx.info(conn)
        if index is not None and embedder is not None:
            idx.check(index, embedder.name)
        hits = idx.hybrid_search(conn, index, org_id, agent_id, query, vector, limit, mode)
        if not hits:
            return []
        rows = {r["n"]: r for r in conn.execute(
            f"SELECT * FROM knowledge_items WHERE n IN ({','.join('?' * len(hits))})", [h["n"] for h in hits]
        )}
        return [
            {"id": rows[h["n"]]["id"], "name": rows[h["n"]]["name"], "content": rows[h["n"]]["content"],
             "source": rows[h["n"]]["source"], "score": h["score"], "similarity": h["similarity"],
             "relevance": h["relevance"]}
            for h in hits if h["n"] in rows
        ]

    async with store.read() as tx:
        return await tx.run(read)
