"""One chat completion, on an agent or on a raw model, answered in OpenAI's shapes.

An agent runs through the Agents API's own turn (``agents.chat.chat``): its instructions, tools and
knowledge apply, its internal tool calls run server-side, and the turn is stored in a thread and
charged in the ``runs`` ledger exactly as an Agents-API call. A raw model ("local", a remote's
name) runs one generation and gets its own ledger row (``agent_id`` = ``model:<name>``, no thread).
Calls that fail or whose client disconnects are not stored and not charged, as in the Agents API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from ..agents import chat as chat_mod
from ..agents import store as agents_store
from ..errors import ApiError, ContextTooLong, ModelError, NotFound, Problem
from ..ids import from_iso, iso, new_id, short_id
from ..models import ChatRequest, ToolCall, generate
from ..models.local import router_schema
from ..orgs import Principal
from ..services import Services
from ..sse import event, pump
from ..usage import credits_for, has_credits, record_run
from .errors import OpenAIError, bad, context_too_long, render, unsupported
from .params import CompletionParams, check_grammar, parse_messages

log = logging.getLogger("flowbox")


@dataclass
class Target:
    agent: dict | None  # None: a raw model
    backend: str  # the model name the registry knows


@dataclass
class Completion:
    text: str
    tool_calls: list[ToolCall]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    flowbox: dict[str, Any] | None = None  # agent runs: thread, run id, credits, internal tool calls


@dataclass
class Job:
    """A checked request, ready to run: everything that can be refused has been refused."""

    services: Services
    principal: Principal
    params: CompletionParams
    target: Target
    thread_id: str | None = None  # agents: the thread the turn is stored in (new or continued)
    request: ChatRequest | None = None  # raw models
    forced: str | None = None  # raw local model: "required" or the tool name the reply must call
    id: str = field(default_factory=lambda: short_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))


def not_found(name: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{name}` does not exist or you do not have access to it.", code="model_not_found")


async def resolve(services: Services, principal: Principal, name: str) -> Target:
    """A raw model's name, else an agent of the org by id, else by name when only one has it."""
    if services.models.knows(name):
        return Target(None, name)
    agent = await agents_store.get_agent(services.store, name)
    if agent is None or agent["org_id"] != principal.org_id:
        rows = await services.store.fetchall("SELECT * FROM agents WHERE org_id = ? AND name = ? LIMIT 3",
                                             [principal.org_id, name])
        if len(rows) > 1:
            raise bad(f"The model `{name}` names several agents; use the agent's id (see GET /v1/models).", "model",
                      "model_ambiguous")
        if not rows:
            raise not_found(name)
        agent = agents_store.agent_out(rows[0])
    if not services.models.knows(agent["model"]):
        raise OpenAIError(503, f"The agent's model '{agent['model']}' is not configured.", type="server_error",
                          code="service_unavailable")
    return Target(agent, agent["model"])


def _seconds(timestamp: str) -> int:
    return int(from_iso(timestamp).timestamp())


async def list_models(services: Services, principal: Principal, embedding_model: str) -> list[dict[str, Any]]:
    agents = await agents_store.list_agents(services.store, principal.org_id)
    out = [{"id": a["id"], "object": "model", "created": _seconds(a["created_at"]), "owned_by": "flowbox-agent",
            "name": a["name"], "description": a["description"]} for a in agents]
    added = services.models.added()
    for name in [*services.models.names(), embedding_model]:
        created = _seconds(added[name].added_at) if name in added and name not in services.config.remotes else 0
        out.append({"id": name, "object": "model", "created": created, "owned_by": "flowbox"})
    return out


# -- checks before answering --------------------------------------------------------------------------

async def _count(backend, messages: list[dict[str, Any]]) -> int:
    # Rendering the template costs per message as well as per character (1,000 one-word messages: 0.3 s)
    if len(messages) <= 16 and sum(len(str(m.get("content"))) for m in messages) < 16_000:
        return backend.count_tokens(messages)
    return await asyncio.to_thread(backend.count_tokens, messages)  # long prompts: off the event loop


async def prepare(services: Services, principal: Principal, params: CompletionParams, raw_messages: Any) -> Job:
    limit = services.config.max_messages
    if limit and isinstance(raw_messages, list) and len(raw_messages) > limit:
        raise bad(f"Invalid 'messages': array too long. Expected an array with maximum length {limit}, "
                  f"but got an array with length {len(raw_messages)} instead.", "messages", "array_above_max_length")
    target = await resolve(services, principal, params.model)
    job = Job(services, principal, params, target)
    if not await has_credits(services.store, principal.org_id):
        raise OpenAIError(429, "No credits available", type="insufficient_quota", code="insufficient_quota")
    local = services.models.is_local(target.backend)
    if local:
        for index, spec in enumerate(params.tools):
            check_grammar(router_schema([spec], ""), f"tools[{index}].function.parameters", f"function '{spec.name}'")
        if params.json_schema:
            check_grammar(params.json_schema, "response_format", "response_format")
    try:
        backend = await services.models.get(target.backend)
    except ModelError as exc:
        raise OpenAIError(503, f"The model is unavailable: {exc}", type="server_error", code="service_unavailable") from exc
    if target.agent is not None:
        await _prepare_agent(job, raw_messages)
        minimal = chat_mod.to_model_messages(job.params.messages[-1:])
        if target.agent["instructions"].strip():
            minimal.insert(0, {"role": "system", "content": target.agent["instructions"]})
    else:
        _prepare_raw(job, raw_messages)
        minimal = job.request.messages
    if local:  # a remote model counts for itself
        n_tokens = await _count(backend, minimal)
        if n_tokens + 1 > backend.n_ctx:
            raise context_too_long(backend.n_ctx, n_tokens)
    return job


async def _prepare_agent(job: Job, raw_messages: Any) -> None:
    params, agent = job.params, job.target.agent
    for name in ("stop", "seed", "json_schema"):
        if getattr(params, name):
            raise unsupported("response_format" if name == "json_schema" else name, " with an agent model")
    if params.tool_choice not in (None, "auto", "none"):
        raise unsupported("tool_choice", " with an agent model (only 'auto' and 'none')")
    services = job.services
    ctx = chat_mod.ToolContext(services.store, agent["org_id"], agent["id"], services)
    own = {t.name for t in await chat_mod.tools_for_agent(ctx, agent)}
    for spec in params.tools:
        if spec.name in own:
            raise bad(f"Invalid 'tools': the agent has its own tool named '{spec.name}'.", "tools")
    known_calls: dict[str, str] = {}
    if params.thread_id:
        try:
            await chat_mod.check_thread(services, job.principal, agent["id"], params.thread_id)
        except NotFound as exc:
            raise OpenAIError(404, "No thread with this ID exists for this agent", param="metadata.thread_id",
                              code="thread_not_found") from exc
        for message in await agents_store.thread_messages(services.store, agent["id"], params.thread_id):
            if isinstance(message["content"], list):
                known_calls.update({p["toolCallId"]: p["toolName"] for p in message["content"] if p.get("type") == "tool-call"})
    params.messages = parse_messages(raw_messages, known_calls)
    job.thread_id = params.thread_id or new_id()  # known now, so a stream's headers can carry it


def _prepare_raw(job: Job, raw_messages: Any) -> None:
    params, config = job.params, job.services.config
    if params.thread_id:
        raise bad("Threads belong to agents: name an agent as the model to continue a thread.", "metadata.thread_id")
    params.messages = parse_messages(raw_messages)
    messages = chat_mod.to_model_messages(params.messages)
    tools, choice = params.tools, params.tool_choice or "auto"
    if choice not in ("auto", "none"):
        chosen = [t for t in tools if choice == "required" or t.name == choice]
        if job.services.models.is_local(job.target.backend):
            # The local router may always answer "none"; a forced call is the reply itself,
            # constrained to the tool's arguments (or to one of the tools and its arguments).
            job.forced = choice
            if choice == "required":
                hint, schema = "Call one of these tools; answer in JSON.", {"oneOf": router_schema(chosen, "")["oneOf"][1:]}
            else:
                hint, schema = f"Answer with the arguments of the {choice} tool ({chosen[0].description}) in JSON.", chosen[0].parameters
            job.request = ChatRequest(messages=messages + [{"role": "system", "content": hint}], json_schema=schema,
                                      max_tokens=params.max_tokens or config.default_max_tokens,
                                      temperature=0.0 if params.temperature is None else params.temperature)
            return
        tools, choice = chosen, "required"  # remote models call natively
    job.request = ChatRequest(
        messages=messages, tools=tools, tool_choice=choice, stop=params.stop, json_schema=params.json_schema,
        max_tokens=params.max_tokens or config.default_max_tokens,
        temperature=0.2 if params.temperature is None else params.temperature,
        seed=None if params.seed is None else params.seed % (1 << 32),
    )


# -- running -------------------------------------------------------------------------------------

OnText = Callable[[str], Awaitable[None]] | None


async def run(job: Job, on_text: OnText = None) -> Completion:
    if job.target.agent is not None:
        return await _run_agent(job, on_text)
    return await _run_raw(job, on_text)


async def _run_agent(job: Job, on_text: OnText) -> Completion:
    params = job.params
    agent = dict(job.target.agent)
    if params.max_tokens:
        agent["max_tokens"] = params.max_tokens
    if params.temperature is not None:
        agent["temperature"] = float(params.temperature)
    chat_input = chat_mod.ChatInput(agent["id"], params.messages, job.thread_id)
    caller_tools = params.tools if params.tool_choice != "none" else []
    outcome = await chat_mod.chat(job.services, job.principal, chat_input, agent, on_text=on_text, caller_tools=caller_tools)
    return Completion(
        text=outcome["text"], tool_calls=outcome["caller_tool_calls"], finish_reason=outcome["finish_reason"],
        prompt_tokens=outcome["usage"]["prompt_tokens"], completion_tokens=outcome["usage"]["completion_tokens"],
        flowbox={"thread_id": outcome["thread_id"], "run_id": outcome["run_id"], "used_credits": outcome["used_credits"],
                 "tool_calls": outcome["tool_calls"]},
    )


async def _run_raw(job: Job, on_text: OnText) -> Completion:
    services, backend_name = job.services, job.target.backend
    backend = await services.models.get(backend_name)
    try:
        result = await generate(backend, job.request, key=job.principal.org_id, on_text=None if job.forced else on_text)
    except ContextTooLong as exc:
        raise context_too_long(exc.n_ctx, exc.n_tokens) from exc
    except ModelError as exc:
        raise OpenAIError(503, "The model is overloaded or unavailable; retry shortly.", type="server_error",
                          code="service_unavailable") from exc
    completion = Completion(result.text, result.tool_calls, result.finish_reason, result.prompt_tokens, result.completion_tokens)
    if job.forced:
        completion = _forced_call(job.forced, completion)
    credits = credits_for(result.prompt_tokens, result.completion_tokens, services.config)
    timestamp = iso()
    async with services.store.write() as tx:
        await record_run(tx, run_id=new_id(), org_id=job.principal.org_id, agent_id=f"model:{backend_name}", thread_id=None,
                         model=result.model, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                         credits=credits, timestamp=timestamp)
    return completion


def _forced_call(choice: str, completion: Completion) -> Completion:
    """The constrained reply of a forced call as the call itself (cut short by max_tokens: the text)."""
    try:
        value = json.loads(completion.text)
    except json.JSONDecodeError:
        return completion
    if not isinstance(value, dict):
        return completion
    name, arguments = (value.get("tool"), value.get("arguments") or {}) if choice == "required" else (choice, value)
    completion.tool_calls = [ToolCall(id=short_id("call"), name=name, arguments=arguments)]
    completion.text = ""
    return completion


# -- answers -----------------------------------------------------------------------------------------

def _finish(completion: Completion) -> str:
    if completion.tool_calls:
        return "tool_calls"
    return "length" if completion.finish_reason == "length" else "stop"


def _wire_calls(calls: list[ToolCall], streamed: bool = False) -> list[dict[str, Any]]:
    out = []
    for index, call in enumerate(calls):
        wire = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
        out.append({"index": index, **wire} if streamed else wire)
    return out


def _usage(completion: Completion) -> dict[str, int]:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def response(job: Job, completion: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.text or None, "refusal": None}
    if completion.tool_calls:
        message["tool_calls"] = _wire_calls(completion.tool_calls)
    elif message["content"] is None:
        message["content"] = ""
    body = {
        "id": job.id, "object": "chat.completion", "created": job.created, "model": job.params.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(completion)}],
        "usage": _usage(completion), "system_fingerprint": None,
    }
    if completion.flowbox is not None:
        body["flowbox"] = completion.flowbox
    return body


def _chunk(job: Job, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    body = {"id": job.id, "object": "chat.completion.chunk", "created": job.created, "model": job.params.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
    if job.params.include_usage:
        body.setdefault("usage", None)
    return event(body)


async def stream(job: Job) -> AsyncIterator[str]:
    """The SSE chunks: the role at once, each text delta as the model makes it, the caller's tool
    calls, the finish reason, usage when asked, ``[DONE]``. An error after the start is an error event."""
    yield _chunk(job, {"role": "assistant", "content": ""})

    async def work(emit: Callable[[str], None]) -> Completion:
        async def on_text(text: str) -> None:
            emit(text)

        return await run(job, on_text)

    try:
        async with contextlib.aclosing(pump(work)) as events:
            async for done, item in events:
                if not done:
                    yield _chunk(job, {"content": item})
                    continue
                if item.tool_calls:
                    yield _chunk(job, {"tool_calls": _wire_calls(item.tool_calls, streamed=True)})
                extra = {"flowbox": item.flowbox} if item.flowbox is not None else {}
                yield _chunk(job, {}, _finish(item), **extra)
                if job.params.include_usage:
                    yield event({"id": job.id, "object": "chat.completion.chunk", "created": job.created,
                                 "model": job.params.model, "system_fingerprint": None, "choices": [], "usage": _usage(item)})
    except ApiError as exc:
        yield event(exc.body)
    except Problem as problem:
        yield event(render(problem)[1])
    except Exception:
        log.exception("streamed completion failed")
        yield event(OpenAIError(500, "The server had an error while processing your request.", type="server_error").body)
    yield "data: [DONE]\n\n"
