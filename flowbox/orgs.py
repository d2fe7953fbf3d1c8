"""Organisations and their API keys. Keys are random, shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from .db import Store
from .ids import iso, new_id

KEY_PREFIX = "fbx_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    org_id: str
    key_id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


async def create_org(store: Store, name: str) -> dict:
    org = {"id": new_id(), "name": name, "credits": None, "created_at": iso()}
    async with store.write() as tx:
        await tx.execute("INSERT INTO orgs (id, name, credits, created_at) VALUES (:id, :name, :credits, :created_at)", org)
    return org


async def list_orgs(store: Store) -> list[dict]:
    return [dict(r) for r in await store.fetchall("SELECT * FROM orgs ORDER BY created_at")]


async def get_org(store: Store, org_id: str) -> dict | None:
    row = await store.fetchone("SELECT * FROM orgs WHERE id = ?", [org_id])
    return dict(row) if row else None


async def default_org(store: Store) -> dict | None:
    row = await store.fetchone("SELECT * FROM orgs ORDER BY created_at LIMIT 1")
    return dict(row) if row else None


async def create_key(store: Store, org_id: str, name: str = "default") -> tuple[str, dict]:
    """Returns (the key itself, its stored record). The key is never stored or shown again."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = {
        "id": new_id(),
        "org_id": org_id,
        "name": name,
        "prefix": key[:10],
        "key_hash": hash_key(key),
        "created_at": iso(),
        "revoked_at": None,
    }
    async with store.write() as tx:
        if not await tx.fetchone("SELECT 1 FROM orgs WHERE id = ?", [org_id]):
            raise LookupError(f"no org with id {org_id}")
        await tx.execute(
            "INSERT INTO api_keys (id, org_id, name, prefix, key_hash, created_at, revoked_at) "
            "VALUES (:id, :org_id, :name, :prefix, :key_hash, :created_at, :revoked_at)",
            record,
        )
    return key, _public(record)


def _public(record) -> dict:
    return {k: record[k] for k in ("id", "org_id", "name", "prefix", "created_at", "revoked_at")}


async def list_keys(store: Store, org_id: str | None = None) -> list[dict]:
    sql = "SELECT * FROM api_keys" + (" WHERE org_id = ?" if org_id else "") + " ORDER BY created_at"
    return [_public(r) for r in await store.fetchall(sql, [org_id] if org_id else [])]


async def revoke_key(store: Store, key_id: str, org_id: str | None = None) -> bool:
    sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
    params = [iso(), key_id]
    if org_id:
        sql += " AND org_id = ?"
        params.append(org_id)
    async with store.write() as tx:
        revoked = await tx.execute(sql, params) > 0
    forget_verified_keys()
    return revoked


# Recently verified keys (digest -> (principal, monotonic expiry)): saves a database round trip on
# every authenticated request. Revocations in this process clear it at once; a key revoked by
# another process (the CLI) stops working within AUTH_CACHE_SECONDS.
AUTH_CACHE_SECONDS = 1.0
_auth_cache: dict[str, tuple[Principal, float]] = {}
_forgotten = 0  # counts the clears: a lookup that began before one does not fill the cache after it


def forget_verified_keys() -> None:
    global _forgotten
    _forgotten += 1
    _auth_cache.clear()


async def authenticate(store: Store, key: str) -> Principal | None:
    """The principal for a key, or None. The lookup is by hash; the final compare is constant-time."""
    digest = hash_key(key)
    cached = _auth_cache.get(digest)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    began = _forgotten
    rows = await store.lookup("SELECT id, org_id, key_hash, revoked_at FROM api_keys WHERE key_hash = ?", [digest])
    row = rows[0] if rows else None
    if row is None or row["revoked_at"] is not None or not hmac.compare_digest(row["key_hash"], digest):
        _auth_cache.pop(digest, None)
        return None
    principal = Principal(org_id=row["org_id"], key_id=row["id"])
    if began != _forgotten:  # a revocation committed meanwhile: this answer may predate it
        return principal
    if len(_auth_cache) > 10_000:
        _auth_cache.clear()
    _auth_cache[digest] = (principal, time.monotonic() + AUTH_CACHE_SECONDS)
    return principal


async def ensure_default_org(store: Store, with_key: bool = True) -> tuple[dict, str | None]:
    """On first run: a default org and (unless asked not to) a first key, returned once.
    Later: (org, None)."""
    org = await default_org(store)
    if org is not None:
        return org, None
    org = await create_org(store, "default")
    if not with_key:
        return org, None
    key, _ = await create_key(store, org["id"], "first key")
    return org, key
