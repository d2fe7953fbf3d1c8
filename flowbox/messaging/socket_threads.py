"""Who may use a thread over the socket channel, and what its user has seen.

The document's protocol names a thread by its ``threadId`` alone; the published JS SDK adds a
per-browser ``secret`` (``x-flowai-secret``, the ``nonce`` of ``message.send``) so that history is
served only to the browser that started the thread. Rules:

- A thread *owned* by a secret (its first socket user was an SDK client with that secret) is
  served only to that secret, or to a socket opened with the project's API token.
- A new thread used by an SDK client becomes owned by its secret (``claimed``).
- Any other thread (started over REST or by a document-protocol client) stays *open* to socket
  clients, as the document has it; its history is not served on the SDK's ``thread.history``.
"""

from __future__ import annotations

import secrets
from typing import Literal

from ..db import Store
from ..ids import iso
from ..orgs import hash_key

Access = Literal["owner", "claimed", "open", "denied"]


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def secret_hash(secret: str | None) -> str | None:
    return hash_key(secret) if secret else None


async def authorize(store: Store, project_id: str, thread_id: str, secret_sha: str | None, claim: bool = True) -> Access:
    """``owner``: the secret owns the thread; ``claimed``: it does now (a new thread, ``claim``);
    ``open``: no owner; ``denied``: another secret owns it."""
    key = [project_id, thread_id]
    row = await store.fetchone("SELECT secret_hash FROM msg_socket_threads WHERE project_id = ? AND thread_id = ?", key)
    if row is not None and row["secret_hash"]:
        return "owner" if secret_sha == row["secret_hash"] else "denied"
    if secret_sha is None or not claim:
        return "open"
    async with store.write() as tx:  # re-read inside the write: two first messages race for the claim
        row = await tx.fetchone("SELECT secret_hash FROM msg_socket_threads WHERE project_id = ? AND thread_id = ?", key)
        if row is not None and row["secret_hash"]:
            return "owner" if secret_sha == row["secret_hash"] else "denied"
        if await tx.fetchone("SELECT 1 FROM msg_messages WHERE project_id = ? AND thread_id = ? LIMIT 1", key):
            return "open"  # started elsewhere: not claimable (a pause alone, before any message, starts nothing)
        await tx.execute(
            "INSERT INTO msg_socket_threads (project_id, thread_id, secret_hash, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (project_id, thread_id) DO UPDATE SET secret_hash = excluded.secret_hash",
            [project_id, thread_id, secret_sha, iso()],
        )
    return "claimed"


async def secret_known(store: Store, secret_sha: str, project_id: str | None = None) -> bool:
    """Whether a thread (of ``project_id``, when given) is owned by this secret: uploads are refused
    before a byte is read without one, and after their message is read without one of its project."""
    sql = "SELECT 1 FROM msg_socket_threads WHERE secret_hash = ?" + (" AND project_id = ?" if project_id else "") + " LIMIT 1"
    return await store.fetchone(sql, [secret_sha, project_id] if project_id else [secret_sha]) is not None


async def mark_noticed(store: Store, project_id: str, thread_id: str) -> None:
    """``thread.noticed``: the user has seen every message stored so far."""
    async with store.write() as tx:
        await tx.execute(
            "INSERT INTO msg_socket_threads (project_id, thread_id, noticed_seq, created_at) "
            "VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) FROM msg_messages WHERE project_id = ?1 AND thread_id = ?2), ?3) "
            "ON CONFLICT (project_id, thread_id) DO UPDATE SET noticed_seq = excluded.noticed_seq",
            [project_id, thread_id, iso()],
        )


async def unnoticed(store: Store, project_id: str, thread_id: str) -> bool:
    """Whether a reply (from the bot or a human agent) came after the last ``thread.noticed``."""
    row = await store.fetchone(
        "SELECT EXISTS (SELECT 1 FROM msg_messages WHERE project_id = ?1 AND thread_id = ?2 AND sender != 'user' AND seq > "
        "COALESCE((SELECT noticed_seq FROM msg_socket_threads WHERE project_id = ?1 AND thread_id = ?2), 0)) AS n",
        [project_id, thread_id],
    )
    return bool(row["n"])
