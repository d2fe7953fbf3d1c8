"""WhatsApp connections (per org, optionally per agent) and the send log: plain functions over SQLite."""

from __future__ import annotations

import re
from typing import Any

from .. import netguard
from ..db import Store
from ..errors import error
from ..ids import iso, new_id
from ..redact import mask

FIELDS = ("phone_number_id", "access_token", "api_base_url", "api_version", "agent_id")
PHONE_NUMBER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
API_VERSION = re.compile(r"v[0-9]{1,3}(\.[0-9]{1,3})?")


def validate_connection(fields: Any) -> dict[str, Any]:
    """Checks connection fields; raises a 400 ``Validation failed`` naming the field."""

    def bad(message: str):
        return error(400, "Validation failed", message)

    if not isinstance(fields, dict):
        raise bad("The request body must be a JSON object.")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise bad(f"Unknown field \"{unknown[0]}\".")
    phone_number_id, token = fields.get("phone_number_id"), fields.get("access_token")
    if not isinstance(phone_number_id, str) or not PHONE_NUMBER_ID.fullmatch(phone_number_id):
        raise bad("\"phone_number_id\" is required: the WhatsApp Business phone number id (letters, digits, - and _).")
    if not isinstance(token, str) or not token.strip() or len(token) > 4096:
        raise bad("\"access_token\" is required: the Cloud API access token.")
    out = {"phone_number_id": phone_number_id, "access_token": token.strip(), "api_base_url": None, "api_version": None, "agent_id": ""}
    base = fields.get("api_base_url")
    if base is not None:
        try:
            netguard.check_url(base, allow_private=True)  # private ranges are checked at send time, against the config
        except netguard.URLRefused as exc:
            raise bad(f"\"api_base_url\" {exc}.") from None
        out["api_base_url"] = base.strip().rstrip("/")
    version = fields.get("api_version")
    if version is not None:
        if not isinstance(version, str) or not API_VERSION.fullmatch(version):
            raise bad("\"api_version\" must look like v21.0.")
        out["api_version"] = version
    agent_id = fields.get("agent_id")
    if agent_id is not None:
        if not isinstance(agent_id, str):
            raise bad("\"agent_id\" must be a string.")
        out["agent_id"] = agent_id.strip()
    return out


def public(row) -> dict[str, Any]:
    """A connection as shown: the token masked to its last four characters."""
    record = dict(row)
    record["access_token"] = mask(record["access_token"])
    record["agent_id"] = record["agent_id"] or None
    return record


async def save_connection(store: Store, org_id: str, fields: Any) -> dict[str, Any]:
    """Creates or replaces the org's connection (or one agent's, with ``agent_id``)."""
    conn = validate_connection(fields)
    now = iso()
    async with store.write() as tx:
        if conn["agent_id"]:
            row = await tx.fetchone("SELECT org_id FROM agents WHERE id = ?", [conn["agent_id"]])
            if row is None or row["org_id"] != org_id:
                raise error(403, "Access denied", "This agent does not belong to your organisation")
        await tx.execute(
            "INSERT INTO whatsapp_connections (id, org_id, agent_id, phone_number_id, access_token, api_base_url, api_version, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, agent_id) DO UPDATE SET phone_number_id = excluded.phone_number_id, "
            "access_token = excluded.access_token, api_base_url = excluded.api_base_url, api_version = excluded.api_version, updated_at = excluded.updated_at",
            [new_id(), org_id, conn["agent_id"], conn["phone_number_id"], conn["access_token"], conn["api_base_url"], conn["api_version"], now, now],
        )
        row = await tx.fetchone("SELECT * FROM whatsapp_connections WHERE org_id = ? AND agent_id = ?", [org_id, conn["agent_id"]])
    return public(row)


async def list_connections(store: Store, org_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM whatsapp_connections" + (" WHERE org_id = ?" if org_id else "") + " ORDER BY org_id, agent_id"
    return [public(r) for r in await store.fetchall(sql, [org_id] if org_id else [])]


async def delete_connection(store: Store, org_id: str, agent_id: str | None = None) -> bool:
    async with store.write() as tx:
        return await tx.execute("DELETE FROM whatsapp_connections WHERE org_id = ? AND agent_id = ?", [org_id, agent_id or ""]) > 0


async def connection_for(store: Store, org_id: str, agent_id: str) -> dict[str, Any] | None:
    """The agent's own connection, else the org's."""
    row = await store.fetchone(
        "SELECT * FROM whatsapp_connections WHERE org_id = ? AND agent_id IN (?, '') ORDER BY agent_id = '' LIMIT 1", [org_id, agent_id]
    )
    return dict(row) if row else None


async def log_send(store: Store, **record: Any) -> None:
    record = {"id": new_id(), "created_at": iso(), **record}
    columns = ", ".join(record)
    async with store.write() as tx:
        await tx.execute(f"INSERT INTO whatsapp_sends ({columns}) VALUES ({', '.join('?' * len(record))})", list(record.values()))


async def list_sends(store: Store, org_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    sql = "SELECT * FROM whatsapp_sends" + (" WHERE org_id = ?" if org_id else "") + " ORDER BY created_at DESC LIMIT ?"
    return [dict(r) for r in await store.fetchall(sql, [org_id, limit] if org_id else [limit])]
