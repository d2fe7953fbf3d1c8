"""WhatsApp connections (per org, optionally per agent) and the send log: plain functions over SQLite."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from .. import netguard
from ..agents.store import belongs_to
from ..db import Store
from ..errors import error
from ..ids import iso, new_id
from ..redact import mask
from ..validation import NOT_BLANK, invalid, typed

PHONE_NUMBER_ID = r"[A-Za-z0-9_-]{1,64}"
API_VERSION = r"v[0-9]{1,3}(\.[0-9]{1,3})?"


class Connection(msgspec.Struct, forbid_unknown_fields=True):
    phone_number_id: Annotated[str, Meta(pattern=rf"\A{PHONE_NUMBER_ID}\Z")]
    access_token: Annotated[str, Meta(max_length=4096, pattern=NOT_BLANK)]
    api_base_url: Any = None  # checked by netguard, which says what is wrong with it
    api_version: Annotated[str, Meta(pattern=rf"\A{API_VERSION}\Z")] | None = None
    agent_id: str | None = None


_MESSAGES = {
    "phone_number_id": "\"phone_number_id\" is required: the WhatsApp Business phone number id (letters, digits, - and _).",
    "access_token": "\"access_token\" is required: the Cloud API access token.",
    "api_version": "\"api_version\" must look like v21.0.",
    "agent_id": "\"agent_id\" must be a string.",
}


def _check_base_url(url: Any) -> None:
    if url is not None:
        try:
            netguard.check_url(url, allow_private=True)  # private ranges are checked at send time, against the config
        except netguard.URLRefused as exc:
            raise invalid(f"\"api_base_url\" {exc}.") from None


def validate_connection(body: Any) -> dict[str, Any]:
    """The connection's columns; else a 400 ``Validation failed`` naming the field."""
    fields = typed(body, Connection, _MESSAGES, checks={"api_base_url": _check_base_url})
    return {"phone_number_id": fields.phone_number_id, "access_token": fields.access_token.strip(),
            "api_base_url": fields.api_base_url.strip().rstrip("/") if fields.api_base_url is not None else None,
            "api_version": fields.api_version, "agent_id": (fields.agent_id or "").strip()}


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
            if not await belongs_to(tx, org_id, conn["agent_id"]):
                raise error(403, "Access denied", "This agent does not belong to your organisation")
        await tx.execute(
            "INSERT INTO whatsapp_connections "
            "(id, org_id, agent_id, phone_number_id, access_token, api_base_url, api_version, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, agent_id) DO UPDATE SET phone_number_id = excluded.phone_number_id, "
            "access_token = excluded.access_token, api_base_url = excluded.api_base_url, api_version = excluded.api_version, "
            "updated_at = excluded.updated_at",
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
