"""Chats API routes (``chats-api.md``) and the flows they start from: a thin layer over
flows.py, store.py and engine.py. Lists are JSON arrays; errors are ``{"error", "message"}``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator

from litestar import Request, Response, WebSocket, delete, get, patch, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage

from ..apidoc import EventStream, body_doc, doc, query
from ..errors import Problem
from ..http import Caller, json_body, services_of, whole_number
from ..orgs import Principal
from ..revocation import api_key, streams_of
from ..surfaces import common_body
from ..validation import invalid, is_text
from . import engine, live
from . import flows as flows_mod
from . import store as chats_store
from .auth import require_principal
from .schemas import (
    CHAT_BODY,
    FLOW_BODY,
    FLOW_UPDATE_BODY,
    IMPORT_BODY,
    INPUT_BODY,
    MESSAGE_BODY,
    Accepted,
    Busy,
    Chat,
    ChatMessage,
    Deleted,
    Flow,
    FlowExport,
)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


# -- flows ---------------------------------------------------------------------------------------------

@get("/chatflows", summary="List flows", responses=doc(200, list[Flow], 401))
async def list_flows(request: Request, principal: Caller) -> list[dict[str, Any]]:
    return await flows_mod.list_flows(services_of(request).store, principal.org_id)


@post("/chatflows", summary="Create a flow", status_code=201, responses=doc(201, Flow, 400, 401),
      operation_class=body_doc(FLOW_BODY))
async def create_flow(request: Request, principal: Caller) -> dict[str, Any]:
    services = services_of(request)
    return await flows_mod.create_flow(services.store, principal.org_id, await json_body(request), services.models.names())


@post("/chatflows/import", summary="Import a flow exported by GET /chatflows/{flow_id}/export", status_code=201,
      responses=doc(201, Flow, 400, 401), operation_class=body_doc(IMPORT_BODY))
async def import_flow(request: Request, principal: Caller) -> dict[str, Any]:
    services = services_of(request)
    fields = flows_mod.import_fields(await json_body(request))
    return await flows_mod.create_flow(services.store, principal.org_id, fields, services.models.names())


@get("/chatflows/{flow_id:str}", summary="Get a flow", responses=doc(200, Flow, 401, 404))
async def get_flow(request: Request, principal: Caller, flow_id: FromPath[str]) -> dict[str, Any]:
    flow = await flows_mod.require_flow(services_of(request).store, principal.org_id, flow_id)
    return {k: v for k, v in flow.items() if k != "org_id"}


@get("/chatflows/{flow_id:str}/export", summary="Export a flow as a portable JSON document", responses=doc(200, FlowExport, 401, 404))
async def export_flow(request: Request, principal: Caller, flow_id: FromPath[str]) -> dict[str, Any]:
    return flows_mod.export_document(await flows_mod.require_flow(services_of(request).store, principal.org_id, flow_id))


@patch("/chatflows/{flow_id:str}", summary="Change a flow (chats already created keep their definition)",
       responses=doc(200, Flow, 400, 401, 404), operation_class=body_doc(FLOW_UPDATE_BODY))
async def update_flow(request: Request, principal: Caller, flow_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    return await flows_mod.update_flow(services.store, principal.org_id, flow_id, await json_body(request), services.models.names())


@delete("/chatflows/{flow_id:str}", summary="Delete a flow", status_code=200, responses=doc(200, Deleted, 401, 404))
async def delete_flow(request: Request, principal: Caller, flow_id: FromPath[str]) -> dict[str, Any]:
    await flows_mod.delete_flow(services_of(request).store, principal.org_id, flow_id)
    return {"id": flow_id, "deleted": True}


# -- chats ---------------------------------------------------------------------------------------------

@get("/chats", summary="List chat sessions", responses=doc(200, list[Chat], 401))
async def list_chats(request: Request, principal: Caller) -> list[dict[str, Any]]:
    return await chats_store.list_chats(services_of(request).store, principal.org_id)


@post("/chats", summary="Start a chat session from a flow", status_code=201, responses=doc(201, Chat, 400, 401, 404),
      operation_class=body_doc(CHAT_BODY))
async def create_chat(request: Request, principal: Caller) -> dict[str, Any]:
    services = services_of(request)
    body = _object(await json_body(request))
    if body.get("from_type", "flow") != "flow":
        raise invalid("\"from_type\" must be \"flow\".")
    flow_id = body.get("from_flow")
    if not is_text(flow_id, required=True):
        raise invalid("\"from_flow\" is required: the id of a flow (see GET /chatflows).")
    flow = await flows_mod.require_flow(services.store, principal.org_id, flow_id.strip())
    name = body.get("name", flow["name"])
    if not is_text(name, 200, required=True):
        raise invalid("\"name\" must be a non-empty string of at most 200 characters.")
    # The flow must still be runnable: its models configured, its agents present.
    flows_mod.validate_flow({k: flow[k] for k in flows_mod.FLOW_FIELDS}, services.models.names())
    await flows_mod.check_agent_refs(services.store, principal.org_id, flow)
    return await chats_store.create_chat(services.store, principal.org_id, name.strip(), flow)


async def _own_chat(request: Request, principal: Principal, chat_id: str) -> dict[str, Any]:
    return await chats_store.require_chat(services_of(request).store, principal.org_id, chat_id)


@get("/chats/{chat_id:str}", summary="A chat session and its status", responses=doc(200, Chat, 401, 404))
async def get_chat(request: Request, principal: Caller, chat_id: FromPath[str]) -> dict[str, Any]:
    chat = await _own_chat(request, principal, chat_id)
    return await chats_store.get_chat(services_of(request).store, chat["id"])


@delete("/chats/{chat_id:str}", summary="Delete a chat session (a running one is stopped)", status_code=200,
        responses=doc(200, Deleted, 401, 404))
async def delete_chat(request: Request, principal: Caller, chat_id: FromPath[str]) -> dict[str, Any]:
    chat = await _own_chat(request, principal, chat_id)
    await engine.stop_and_delete(services_of(request), chat["id"])
    return {"id": chat_id, "deleted": True}


def _message_text(request: Request, body: Any, allow_empty: bool = False) -> str:
    text = _object(body).get("message")
    if not is_text(text, required=not allow_empty):
        raise invalid("\"message\" is required and must be a non-empty string."
                    if not allow_empty else "\"message\" is required and must be a string.")
    limit = services_of(request).config.max_message_chars
    if len(text) > limit:
        raise invalid(f"\"message\" must be {limit} characters or less.")
    return text


async def _accepted(request: Request, chat_id: str, message: dict | None) -> Response:
    chat = await chats_store.get_chat(services_of(request).store, chat_id)
    if chat is None:  # deleted in the meantime
        raise chats_store.not_found(chat_id)
    return Response({"chat": chat, "message": chats_store.message_out(message) if message else None}, status_code=202)


@post("/chats/{chat_id:str}/messages", summary="Send a message: starts a conversation of the chat's flow", status_code=202,
      responses=doc(202, Accepted, 400, 401, 402, 404, 409, Busy), operation_class=body_doc(MESSAGE_BODY))
async def post_message(request: Request, principal: Caller, chat_id: FromPath[str]) -> Response:
    chat = await _own_chat(request, principal, chat_id)
    text = _message_text(request, await json_body(request))
    message = await engine.start_conversation(services_of(request), chat, text)
    return await _accepted(request, chat["id"], message)


@post("/chats/{chat_id:str}/input", summary="Answer a chat that waits for human input ('exit' ends it)", status_code=202,
      responses=doc(202, Accepted, 400, 401, 402, 404, 409, Busy), operation_class=body_doc(INPUT_BODY))
async def post_input(request: Request, principal: Caller, chat_id: FromPath[str]) -> Response:
    chat = await _own_chat(request, principal, chat_id)
    text = _message_text(request, await json_body(request), allow_empty=True)
    message = await engine.give_input(services_of(request), chat, text)
    return await _accepted(request, chat["id"], message)


async def _after_seq(services, chat_id: str, message_id: str | None) -> int:
    if not message_id:
        return 0
    seq = await chats_store.seq_of(services.store, chat_id, message_id)
    if seq is None:
        raise invalid(f"\"after\" names no message of this chat: {message_id!r}.")
    return seq


@get("/chats/{chat_id:str}/messages", summary="A chat's messages in order (after=<message id>, limit=N)",
     responses=doc(200, list[ChatMessage], 400, 401, 404))
async def get_messages(request: Request, principal: Caller, chat_id: FromPath[str],
                       after: query("Only the messages after this message id") = None,
                       limit: query("At most this many, 1 to 1000") = None) -> list[dict[str, Any]]:
    chat = await _own_chat(request, principal, chat_id)
    services = services_of(request)
    after_seq = await _after_seq(services, chat["id"], after)
    count = whole_number(limit, 1, 1000)
    if limit is not None and count is None:
        raise invalid("\"limit\" must be an integer between 1 and 1000.")
    rows = await chats_store.messages_after(services.store, chat["id"], after_seq, count)
    return [chats_store.message_out(r) for r in rows]


# -- live streams ----------------------------------------------------------------------------------------

@get("/chats/{chat_id:str}/stream", summary="Server-Sent Events: the chat's messages and status changes",
     responses=doc(200, EventStream, 400, 401, 404))
async def stream_chat(request: Request, principal: Caller, chat_id: FromPath[str],
                      after: query("Start after this message id (or send Last-Event-ID)") = None) -> ServerSentEvent:
    """From the start, or after the message named by ``after`` or by the Last-Event-ID header
    (each message event's id is the message's id)."""
    chat = await _own_chat(request, principal, chat_id)
    services = services_of(request)
    after_seq = await _after_seq(services, chat["id"], request.headers.get("last-event-id") or after)

    hold = streams_of(services).holder(api_key(principal.key_id))

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        async for event in live.watch(engine.runtime(services).hub, services.store, chat["id"], after_seq, hold):
            if event.kind == "ping":
                yield ServerSentEventMessage(data=None, comment="ping")
                continue
            payload = live.public(event)
            yield ServerSentEventMessage(data=json.dumps(payload["data"]), event=event.kind, id=event.id)

    return ServerSentEvent(events(), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@websocket("/chats/{chat_id:str}/ws")
async def chat_socket(socket: WebSocket, chat_id: FromPath[str]) -> None:
    """WebSocket: JSON frames ``{"event": "message"|"status"|"deleted"|"ping", "data": ...}``, from
    the start or ``?after=<message id>``. Errors arrive as an ``error`` frame, then close 4000+status."""
    await socket.accept()
    services = services_of(socket)  # type: ignore[arg-type]
    try:
        principal = await require_principal(socket)  # type: ignore[arg-type]
        chat = await _own_chat(socket, principal, chat_id)  # type: ignore[arg-type]
        after = await _after_seq(services, chat["id"], socket.query_params.get("after"))
    except Problem as exc:
        await socket.send_json({"event": "error", "data": common_body(exc)})
        await socket.close(code=4000 + exc.status)
        return

    hold = streams_of(services).holder(api_key(principal.key_id))

    async def pump() -> None:
        async for event in live.watch(engine.runtime(services).hub, services.store, chat["id"], after, hold):
            await socket.send_json(live.public(event))
            if event is live.REVOKED:
                await socket.close(code=4401)

    async def until_disconnect() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await socket.receive_data("text")  # frames from the client are ignored

    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(until_disconnect())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if socket.connection_state != "disconnect":
        with contextlib.suppress(Exception):
            await socket.close()


# Routed by area.py, in a Router that authenticates the caller (an API key or an access token).
HANDLERS = [
    list_flows, create_flow, import_flow, get_flow, export_flow, update_flow, delete_flow,
    list_chats, create_chat, get_chat, delete_chat, post_message, post_input, get_messages, stream_chat,
]
