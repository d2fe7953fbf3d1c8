"""WhatsApp routes: the documented template send, and admin endpoints for the connection."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post, put
from litestar.params import FromPath

from ..agents.usage_api import owned_agent, require_agent_id
from ..apidoc import body_doc, doc, query
from ..errors import Problem, error
from ..http import Caller, json_body, services_of
from . import cloud
from . import store as wa_store
from .schemas import CONNECTION_BODY, SEND_BODY, Connection, Connections, Deleted, TemplateSent, WhatsAppError

NOT_CONNECTED = ("WhatsApp connection not found", "No WhatsApp connection found for this agent")


@post("/api/public/agent/{agent_id:str}/waba", summary="Send a WhatsApp template message", status_code=200,
      responses=doc(200, TemplateSent, 400, 401, 403, 404, 502, WhatsAppError), operation_class=body_doc(SEND_BODY))
async def send_template(request: Request, principal: Caller, agent_id: FromPath[str]) -> Response:
    agent_id = require_agent_id(agent_id)
    services = services_of(request)
    message = cloud.parse_send(await json_body(request))
    await owned_agent(services, principal, agent_id)
    connection = await wa_store.connection_for(services.store, principal.org_id, agent_id)
    if connection is None:
        raise error(404, *NOT_CONNECTED)
    record = {"org_id": principal.org_id, "agent_id": agent_id, "connection_id": connection["id"], "recipient": message.recipient,
              "customer_name": message.customer_name, "template_name": message.template_name, "language": message.language}
    try:
        status, reply = await cloud.send(services.config, connection, message)
    except Problem as exc:
        await wa_store.log_send(services.store, **record, status="failed", http_status=exc.status, error=exc.message)
        raise
    ids = [m.get("id") for m in reply.get("messages") or [] if isinstance(m, dict)]
    await wa_store.log_send(services.store, **record, status="sent", http_status=status, message_id=ids[0] if ids else None)
    return Response(reply, status_code=200)


@post("/api/public/agent/waba", include_in_schema=False)
async def send_template_without_id(principal: Caller) -> Response:
    """``/api/public/agent//waba`` (an empty agent_id) arrives here once the path is normalised."""
    require_agent_id("")
    raise AssertionError("unreachable")


@get("/api/public/waba/connection", summary="The organisation's WhatsApp connections (admin; tokens masked)",
     responses=doc(200, Connections, 401))
async def get_connections(request: Request, principal: Caller) -> dict[str, Any]:
    return {"connections": await wa_store.list_connections(services_of(request).store, principal.org_id)}


@put("/api/public/waba/connection", summary="Create or replace a WhatsApp connection (admin)",
     responses=doc(200, Connection, 400, 401, 403), operation_class=body_doc(CONNECTION_BODY))
async def put_connection(request: Request, principal: Caller) -> dict[str, Any]:
    return await wa_store.save_connection(services_of(request).store, principal.org_id, await json_body(request))


@delete("/api/public/waba/connection", summary="Remove a WhatsApp connection (admin; ?agent_id= for an agent's own)", status_code=200,
        responses=doc(200, Deleted, 401, 404))
async def delete_connection(request: Request, principal: Caller,
                            agent_id: query("The agent whose own connection to remove") = None) -> dict[str, Any]:
    if not await wa_store.delete_connection(services_of(request).store, principal.org_id, agent_id):
        raise error(404, *NOT_CONNECTED)
    return {"message": "WhatsApp connection deleted successfully"}


# Routed by area.py, in a Router that authenticates the caller's API key.
HANDLERS = [send_template, send_template_without_id, get_connections, put_connection, delete_connection]
