"""The admin routes: who the caller is, what agents may use, and the org's keys (``keys.py``).
The console with the API docs (``console.py``) is public."""

from typing import Any, TypedDict

from litestar import Request, get

from .. import usage
from ..agents.tools import BUILTIN_TOOLS
from ..apidoc import doc
from ..http import Caller, services_of
from . import keys


class OrgInfo(TypedDict):
    """The org (`credits` null: unlimited)"""

    org_id: str
    name: str
    credits: float | None
    unlimited: bool
    used_credits: float
    key_id: str


class Options(TypedDict):
    """What an agent may be given: model names and built-in tool names"""

    models: list[str]
    tools: list[str]


@get("/api/admin/org", summary="The caller's org: name, credit balance and credits used", responses=doc(200, OrgInfo, 401))
async def org_info(request: Request, principal: Caller) -> dict[str, Any]:
    return {**await usage.balance(services_of(request).store, principal.org_id), "key_id": principal.key_id}


@get("/api/admin/options", summary="The model names and built-in tools agents may use", responses=doc(200, Options, 401))
async def options(request: Request, principal: Caller) -> dict[str, Any]:
    return {"models": services_of(request).models.names(), "tools": list(BUILTIN_TOOLS)}


# Routed by area.py, in a Router that authenticates the caller's API key (the console's routes are public).
HANDLERS = [org_info, options, *keys.HANDLERS]
