"""Agents API routes (``agents-api.txt``, ``agents-api-legacy.txt``): a thin layer over chat.py and store.py."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator

from litestar import Request, Response, delete, get, patch, post
from litestar.params import FromPath

from ..apidoc import body_doc, doc
from ..errors import Problem, Unauthorized, error
from ..http import INVALID_KEY, Caller, json_body, services_of
from ..orgs import Principal
from ..revocation import REVOKED_MESSAGE, api_key, streams_of
from ..services import Services
from ..sse import EventStream, event, pump, until_revoked, wants_event_stream
from ..surfaces import common_body
from . import chat as chat_mod
from . import store as agents_store
from .callbacks import check_callback_url
from .schemas import (
    AGENT_CREATE_BODY,
    AGENT_UPDATE_BODY,
    CHAT_BODY,
    LEGACY_CHAT_BODY,
    Agent,
    AgentList,
    AsyncAccepted,
    ChatError,
    ChatResponse,
    Deleted,
    LegacyChatResponse,
    Thread,
)


@get("/api/public/agent", summary="List the organisation's agents", responses=doc(200, AgentList, 401))
async def list_agents(request: Request, principal: Caller) -> dict[str, Any]:
    return {"agents": await agents_store.list_agents(services_of(request).store, principal.org_id)}


@post("/api/public/agent", summary="Create an agent (admin)", status_code=201, responses=doc(201, Agent, 400, 401),
      operation_class=body_doc(AGENT_CREATE_BODY))
async def create_agent(request: Request, principal: Caller) -> dict[str, Any]:
    services = services_of(request)
    body = await json_body(request)
    return await agents_store.create_agent(services.store, principal.org_id, body, services.models.names())


async def _own_agent(request: Request, principal: Principal, agent_id: str) -> dict:
    return await chat_mod.load_agent_for(services_of(request), principal, agent_id)


@get("/api/public/agent/{agent_id:str}", summary="Get an agent", responses=doc(200, Agent, 401, 403, 404))
async def get_agent(request: Request, principal: Caller, agent_id: FromPath[str]) -> dict[str, Any]:
    return await _own_agent(request, principal, agent_id)


@patch("/api/public/agent/{agent_id:str}", summary="Update an agent (admin)", responses=doc(200, Agent, 400, 401, 403, 404),
       operation_class=body_doc(AGENT_UPDATE_BODY))
async def update_agent(request: Request, principal: Caller, agent_id: FromPath[str]) -> dict[str, Any]:
    agent = await _own_agent(request, principal, agent_id)
    services = services_of(request)
    body = await json_body(request)
    updated = await agents_store.update_agent(services.store, agent["org_id"], agent_id, body, services.models.names())
    if updated is None:
        raise error(404, "Agent not found", "No agent exists with this ID")
    return updated


@delete("/api/public/agent/{agent_id:str}", summary="Delete an agent (admin)", status_code=200, responses=doc(200, Deleted, 401, 403, 404))
async def delete_agent(request: Request, principal: Caller, agent_id: FromPath[str]) -> dict[str, Any]:
    agent = await _own_agent(request, principal, agent_id)
    await agents_store.delete_agent(services_of(request).store, agent["org_id"], agent_id)
    return {"message": "Agent deleted successfully"}


@get("/api/public/agent/{agent_id:str}/threads/{thread_id:str}", summary="A thread's messages", responses=doc(200, Thread, 401, 403, 404))
async def get_thread(request: Request, principal: Caller, agent_id: FromPath[str], thread_id: FromPath[str]) -> dict[str, Any]:
    agent = await _own_agent(request, principal, agent_id)
    services = services_of(request)
    await chat_mod.check_thread(services, principal, agent["id"], thread_id)
    messages = await agents_store.thread_messages(services.store, agent["id"], thread_id)
    return {"thread_id": thread_id, "agent_id": agent_id, "messages": messages}


async def _chat_events(services: Services, principal: Principal, chat_input: chat_mod.ChatInput, agent: dict,
                       legacy: bool) -> AsyncIterator[str]:
    """The opt-in stream (``Accept: text/event-stream``): ``delta`` events ``{"text"}`` as the reply is
    generated, a ``tool`` event per tool call (its ``metadata.tool_calls`` record, after it ran), then
    ``done`` carrying the exact response body, or ``error`` carrying the documented error body."""

    async def work(emit):
        async def on_text(text: str) -> None:
            emit(event({"text": text}, "delta"))

        async def on_tool(record: dict[str, Any]) -> None:
            emit(event(record, "tool"))

        return await chat_mod.chat(services, principal, chat_input, agent, on_text=on_text, on_tool=on_tool)

    try:
        async with contextlib.aclosing(pump(work)) as events:  # closed with us: the turn stops at once
            async for done, item in events:
                yield event(chat_mod.response_body(item, legacy=legacy), "done") if done else item
    except Problem as exc:
        yield event(chat_mod.failure_body(exc, agent["id"]), "error")
    except Exception:
        logging.getLogger("flowbox").exception("streamed chat failed")
        yield event({"statusCode": 500, "body": {"error": "An unexpected error occurred while processing your request"}}, "error")


async def _chat(request: Request, principal: Principal, agent_id: str | None, legacy: bool) -> Response:
    services = services_of(request)
    body = await json_body(request)
    chat_input = chat_mod.parse_chat_body(body, agent_id, services.config.max_message_chars, services.config.max_messages)
    if chat_input.callback_url:
        check_callback_url(services.config, chat_input.callback_url)
    try:
        agent = await chat_mod.prepare(services, principal, chat_input)
        if chat_input.callback_url:
            await chat_mod.accept_async(services, principal, chat_input, legacy)
            return Response(chat_mod.ASYNC_ACK, status_code=202)
        if wants_event_stream(request.headers.get("accept", "")):
            farewell = event(common_body(Unauthorized(INVALID_KEY[0], REVOKED_MESSAGE)), "error")
            holder = streams_of(services).holder(api_key(principal.key_id))
            return EventStream(until_revoked(_chat_events(services, principal, chat_input, agent, legacy), holder, farewell))
        outcome = await chat_mod.chat(services, principal, chat_input, agent)
    except Problem as problem:
        return Response(chat_mod.failure_body(problem, chat_input.agent_id), status_code=problem.status, headers=problem.headers or None)
    return Response(chat_mod.response_body(outcome, legacy=legacy), status_code=200)


@post("/api/public/agent/{agent_id:str}/chat", summary="Chat with an agent", status_code=200,
      responses=doc(200, ChatResponse, 202, AsyncAccepted, 400, 401, 402, ChatError, 403, 404, 503, ChatError),
      operation_class=body_doc(CHAT_BODY, streams=True))
async def agent_chat(request: Request, principal: Caller, agent_id: FromPath[str]) -> Response:
    return await _chat(request, principal, agent_id, legacy=False)


@post("/agent", summary="Chat with an agent (legacy form, agent_id in the body)", status_code=200,
      responses=doc(200, LegacyChatResponse, 202, AsyncAccepted, 400, 401, 402, ChatError, 403, 404, 503, ChatError),
      operation_class=body_doc(LEGACY_CHAT_BODY, streams=True))
async def legacy_chat(request: Request, principal: Caller) -> Response:
    return await _chat(request, principal, None, legacy=True)


# Routed by area.py, in a Router that authenticates the caller's API key.
HANDLERS = [list_agents, create_agent, get_agent, update_agent, delete_agent, get_thread, agent_chat, legacy_chat]
