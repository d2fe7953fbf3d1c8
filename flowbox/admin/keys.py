"""API keys of the caller's org, over HTTP: the same functions ``flowbox keys`` calls, org-scoped.

An org key is an admin key (as the Agents API's admin calls are); a key may list, create and revoke
only its own org's keys, and the org's last active key cannot be revoked (that would lock it out).
"""

from typing import Any, TypedDict

from litestar import Request, delete, get, post
from litestar.params import FromPath

from .. import orgs
from ..apidoc import body_doc, doc, obj, string
from ..db import Store
from ..errors import error
from ..http import Caller, optional_json_body, services_of
from ..ids import iso
from ..revocation import api_key, streams_of
from ..validation import invalid, is_text

MAX_NAME = 100


class Key(TypedDict):
    id: str
    org_id: str
    name: str
    prefix: str  # the key's first characters, to recognise it; never enough to authenticate
    created_at: str
    revoked_at: str | None
    current: bool  # the key this request was made with


class KeyList(TypedDict):
    """The org's keys, oldest first, revoked ones included"""

    keys: list[Key]


class KeyCreated(TypedDict):
    """The new key: `key` is shown here once and never again"""

    id: str
    org_id: str
    name: str
    prefix: str
    created_at: str
    revoked_at: None
    key: str


class KeyRevoked(TypedDict):
    """Revoked"""

    id: str
    revoked: bool
    current: bool


@get("/api/admin/keys", summary="List the org's API keys (prefixes only, never the keys)",
     responses=doc(200, KeyList, 401))
async def list_keys(request: Request, principal: Caller) -> dict[str, Any]:
    rows = await orgs.list_keys(services_of(request).store, principal.org_id)
    return {"keys": [{**row, "current": row["id"] == principal.key_id} for row in rows]}


@post("/api/admin/keys", summary="Create an API key for the org (the key is in this response only)",
      status_code=201, responses=doc(201, KeyCreated, 400, 401),
      operation_class=body_doc(obj(name=string(MAX_NAME, description="Defaults to 'console'")), required=False))
async def create_key(request: Request, principal: Caller) -> dict[str, Any]:
    body = await optional_json_body(request)
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    name = body.get("name", "console")
    if not is_text(name, MAX_NAME, required=True):
        raise invalid(f"\"name\" must be a non-empty string of at most {MAX_NAME} characters.")
    key, record = await orgs.create_key(services_of(request).store, principal.org_id, name.strip())
    return {**record, "key": key}


@delete("/api/admin/keys/{key_id:str}", summary="Revoke one of the org's API keys (it stops working at once)",
        status_code=200, responses=doc(200, KeyRevoked, 401, 404, 409))
async def revoke_key(request: Request, principal: Caller, key_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    await revoke_unless_last(services.store, principal.org_id, key_id)
    streams_of(services).revoke(api_key(key_id))  # its open streams close now, not at their next request
    return {"id": key_id, "revoked": True, "current": key_id == principal.key_id}


async def revoke_unless_last(store: Store, org_id: str, key_id: str) -> None:
    """The check and the revocation in one transaction: two revocations at once cannot both pass
    the check and leave the org without a key."""
    async with store.write() as tx:
        rows = await tx.fetchall("SELECT id FROM api_keys WHERE org_id = ? AND revoked_at IS NULL", [org_id])
        active = {row["id"] for row in rows}
        if key_id not in active:
            raise error(404, "Key not found", "No active API key with this ID exists in your organisation")
        if len(active) == 1:
            raise error(409, "Last key", "This is the organisation's only active API key; create another before revoking it")
        await tx.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [iso(), key_id])
    orgs.forget_verified_keys()  # the key stops working at once, not when its cache entry expires


HANDLERS = [list_keys, create_key, revoke_key]
