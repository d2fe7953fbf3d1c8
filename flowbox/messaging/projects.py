"""Messaging projects: the unit that owns flows, threads and settings, inside an org.

A project has a ``clientId`` (what socket clients present), one bearer token for the REST
and Management APIs (random, shown once, stored hashed like org keys), and its settings:
webhook URL + verify token, business hours, an optional fallback agent for UNKNOWN, the
event fired outside business hours and the intent-match threshold.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from .. import netguard
from ..agents.store import belongs_to
from ..db import Store
from ..ids import iso, new_id
from ..orgs import hash_key
from ..redact import mask
from ..validation import NOT_BLANK, given, typed
from .common import rest_error
from .hours import validate_business_hours

TOKEN_PREFIX = "fbm_"


class Settings(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A project's settings as the HTTP API and ``flowbox projects`` name them (camelCase; the
    columns are their snake_case names). Each is optional: an update sets those it names."""

    name: Annotated[str, Meta(max_length=200, pattern=NOT_BLANK)] | UnsetType = UNSET
    webhook_url: Any = UNSET  # None or "" clears it; netguard says what is wrong with another
    webhook_verify_token: Annotated[str, Meta(max_length=200)] | None | UnsetType = UNSET
    agent_id: Any = UNSET  # None or "" clears it; else one of the org's agents
    business_hours: Any = UNSET  # hours.validate_business_hours names what is wrong in it
    outside_hours_event: Annotated[str, Meta(max_length=255, pattern=r"\A\Z|\S")] | None | UnsetType = UNSET
    intent_threshold: Annotated[float, Meta(gt=0, le=1)] | None | UnsetType = UNSET


SETTINGS = Settings.__struct_encode_fields__
_MESSAGES = {
    "name": "\"name\" must be a non-empty string of at most 200 characters",
    "webhookVerifyToken": "\"webhookVerifyToken\" must be a string of at most 200 characters",
    "agentId": "\"agentId\" must be the id of an agent of this project's organisation",
    "outsideHoursEvent": "\"outsideHoursEvent\" must be an event name (a string) or null",
    "intentThreshold": "\"intentThreshold\" must be a number greater than 0 and at most 1, or null",
}


def _row(row) -> dict[str, Any] | None:
    if row is None:
        return None
    project = dict(row)
    project["business_hours"] = json.loads(project["business_hours"])
    return project


def public(project: dict[str, Any]) -> dict[str, Any]:
    """A project as the API and CLI show it (never its token; its webhook verify token masked)."""
    return {
        "projectId": project["id"],
        "orgId": project["org_id"],
        "name": project["name"],
        "clientId": project["client_id"],
        "tokenPrefix": project["token_prefix"],
        "webhookUrl": project["webhook_url"],
        "webhookVerifyToken": mask(project["webhook_verify_token"]),  # a webhook secret: set, never shown
        "agentId": project["agent_id"],
        "businessHours": project["business_hours"],
        "outsideHoursEvent": project["outside_hours_event"],
        "intentThreshold": project["intent_threshold"],
        "createdAt": project["created_at"],
        "updatedAt": project["updated_at"],
    }


async def validate_settings(store: Store, org_id: str, body: Any, allow_private: bool = True) -> dict[str, Any]:
    """Checks settings given by their API names; returns column -> stored value.
    Every problem is a 400 naming the field. ``allow_private``: the server's
    ``allow_private_outbound``, so a webhook it would refuse is refused now."""
    agent_id = body.get("agentId") if isinstance(body, dict) else None
    known_agent = agent_id in (None, "") or (isinstance(agent_id, str) and await belongs_to(store, org_id, agent_id))

    def check_url(url: Any) -> None:
        if url not in (None, ""):
            try:
                netguard.check_url(url, allow_private=allow_private)
            except netguard.URLRefused as exc:
                raise rest_error(400, f"\"webhookUrl\" {exc}") from None

    fields = given(typed(body, Settings, _MESSAGES, lambda message: rest_error(400, message),
                         not_object="The request body must be a JSON object",
                         unknown=f"Unknown field \"{{field}}\"; known fields: {', '.join(SETTINGS)}",
                         checks={"webhookUrl": check_url, "agentId": lambda _: known_agent,
                                 "businessHours": validate_business_hours}))
    for column in ("name", "webhook_url"):
        if fields.get(column):
            fields[column] = fields[column].strip()
    for column in ("webhook_url", "webhook_verify_token", "agent_id", "outside_hours_event"):
        if column in fields:
            fields[column] = fields[column] or None  # "" clears a setting, as null does
    if "business_hours" in fields:  # checked above; normalised here
        fields["business_hours"] = json.dumps(validate_business_hours(fields["business_hours"]))
    return fields


def new_client_id() -> str:
    """Base64 of ``<random>|<channel>``, the shape the published JS SDK decodes to name new threads
    (``<uuid>|<channel>``); hex around the fixed ``|`` always encodes to letters and digits only."""
    return base64.b64encode(f"{secrets.token_hex(8)}|{secrets.token_hex(8)}".encode()).decode()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_project(store: Store, org_id: str, name: Any, settings: dict[str, Any] | None = None,
                         allow_private: bool = True) -> tuple[dict, str]:
    """Returns (the project, its bearer token). The token is shown once and stored hashed."""
    values = await validate_settings(store, org_id, {**(settings or {}), "name": name}, allow_private)
    token = _new_token()
    now = iso()
    row = {
        "id": new_id(), "org_id": org_id, "client_id": new_client_id(),
        "token_hash": hash_key(token), "token_prefix": token[:10], "created_at": now, "updated_at": now,
        "business_hours": "[]", **values,
    }
    async with store.write() as tx:
        if not await tx.fetchone("SELECT 1 FROM orgs WHERE id = ?", [org_id]):
            raise LookupError(f"no org with id {org_id}")
        await tx.execute(f"INSERT INTO msg_projects ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row)
        project = _row(await tx.fetchone("SELECT * FROM msg_projects WHERE id = ?", [row["id"]]))
    return project, token


async def get_project(store: Store, project_id: str) -> dict[str, Any] | None:
    return _row(await store.fetchone("SELECT * FROM msg_projects WHERE id = ?", [project_id]))


async def project_by_client_id(store: Store, client_id: str) -> dict[str, Any] | None:
    return _row(await store.fetchone("SELECT * FROM msg_projects WHERE client_id = ?", [client_id]))


async def list_projects(store: Store, org_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM msg_projects" + (" WHERE org_id = ?" if org_id else "") + " ORDER BY created_at, id"
    return [_row(r) for r in await store.fetchall(sql, [org_id] if org_id else [])]


async def update_project(store: Store, project_id: str, fields: Any, allow_private: bool = True) -> dict[str, Any] | None:
    project = await get_project(store, project_id)
    if project is None:
        return None
    values = await validate_settings(store, project["org_id"], fields, allow_private)
    if not values:
        return project
    values["updated_at"] = iso()
    async with store.write() as tx:
        await tx.execute(
            f"UPDATE msg_projects SET {', '.join(f'{k} = :{k}' for k in values)} WHERE id = :id", {**values, "id": project_id}
        )
        return _row(await tx.fetchone("SELECT * FROM msg_projects WHERE id = ?", [project_id]))


async def rotate_token(store: Store, project_id: str) -> str | None:
    """A new bearer token; the old one stops working at once."""
    token = _new_token()
    async with store.write() as tx:
        changed = await tx.execute(
            "UPDATE msg_projects SET token_hash = ?, token_prefix = ?, updated_at = ? WHERE id = ?",
            [hash_key(token), token[:10], iso(), project_id],
        )
    return token if changed else None


async def delete_project(store: Store, project_id: str) -> bool:
    """Deletes a project with its flows, threads and history."""
    async with store.write() as tx:  # threads and messages go by ON DELETE CASCADE
        return await tx.execute("DELETE FROM msg_projects WHERE id = ?", [project_id]) > 0


async def by_token(store: Store, token: str) -> dict[str, Any] | None:
    """The project a bearer token belongs to (lookup by hash, like org keys; on every REST call)."""
    rows = await store.lookup("SELECT * FROM msg_projects WHERE token_hash = ?", [hash_key(token)])
    return _row(rows[0] if rows else None)
