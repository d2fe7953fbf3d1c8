"""One agent chat turn: parse the request, run the model with tools, store the turn atomically,
and shape the documented response. The HTTP layer (``api.py``) only calls these functions."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..db import Tx
from ..errors import ContextTooLong, ModelError, NoCredits, Problem, Unavailable, error
from ..ids import iso, new_id, short_id
from ..models import ChatRequest, ChatResult, ToolCall, ToolSpec, generate
from ..models.base import message_text
from ..models.worker import ModelCrashed
from ..orgs import Principal
from ..services import Services
from ..surfaces import common_body
from ..usage import credits_for, has_credits, open_run, record_run
from ..validation import invalid, is_text
from . import store as agents_store
from .callbacks import on_run_finished
from .tools import Tool, ToolContext, context_providers, tools_for_agent

MAX_TOOL_ROUNDS = 4
ROLES = ("user", "assistant", "system")


@dataclass
class ChatInput:
    agent_id: str
    messages: list[dict[str, Any]]
    thread_id: str | None = None
    callback_url: str | None = None


def parse_chat_body(body: Any, agent_id: str | None, max_chars: int, max_messages: int) -> ChatInput:
    """The three documented shapes of ``messages``; every problem is a 400 naming the field.
    ``max_messages`` (0 = no limit) bounds the work one request can ask for before any is done."""
    if not isinstance(body, dict):
        raise error(400, "Invalid JSON body", "The request body must be a JSON object.")
    if agent_id is None:  # legacy: agent_id in the body
        agent_id = body.get("agent_id")
    if not is_text(agent_id, required=True):
        raise error(400, "agent_id is required and must be a non-empty string")
    raw = body.get("messages")
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    elif isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise invalid("\"messages\" is required: a string, a message object or a non-empty array of message objects.")
    if max_messages and len(raw) > max_messages:
        raise invalid(f"\"messages\" holds {len(raw)} messages; at most {max_messages} are accepted in one request.")
    messages = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise invalid(f"messages[{index}] must be an object with \"role\" and \"content\".")
        role, content = item.get("role", "user"), item.get("content")
        if role not in ROLES:
            raise invalid(f"messages[{index}].role must be one of: {', '.join(ROLES)}.")
        if isinstance(content, list):  # content parts: keep the text parts
            if not all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in content):
                raise invalid(f"messages[{index}].content parts must be objects with a \"text\" string.")
            content = "".join(p.get("text", "") for p in content if p.get("type", "text") == "text")
        if not is_text(content, required=True):
            raise invalid(f"messages[{index}].content must be a non-empty string of valid Unicode text.")
        if len(content) > max_chars:
            raise invalid(f"messages[{index}].content must be {max_chars} characters or less.")
        messages.append({"role": role, "content": content, "id": short_id("msg")})
    if messages[-1]["role"] == "system":
        raise invalid("The last message must be from the user or the assistant.")
    thread_id = body.get("thread_id")
    if thread_id is not None and not agents_store.valid_thread_id(thread_id):
        raise invalid(f"\"thread_id\" must be a string of {agents_store.THREAD_ID_RULE}.")
    callback_url = body.get("callback_url")
    if callback_url is not None:
        if not is_text(callback_url, 2048) or not callback_url.startswith(("http://", "https://")):
            raise invalid("\"callback_url\" must be an http:// or https:// URL.")
    return ChatInput(agent_id.strip(), messages, thread_id, callback_url)


async def load_agent_for(services: Services, principal: Principal, agent_id: str) -> dict:
    agent = await agents_store.get_agent(services.store, agent_id)
    if agent is None:
        raise error(404, "Agent not found", "No agent exists with this ID")
    if agent["org_id"] != principal.org_id:
        raise error(403, "Access denied", "This agent does not belong to your organisation")
    return agent


async def check_thread(services: Services, principal: Principal, agent_id: str, thread_id: str | None) -> None:
    if thread_id is None:
        return
    thread = await agents_store.get_thread(services.store, agent_id, thread_id)
    if thread is None or thread["org_id"] != principal.org_id or thread["agent_id"] != agent_id:
        raise error(404, "Thread not found", "No thread with this ID exists for this agent")


def failure_body(problem: Problem, agent_id: str) -> dict[str, Any]:
    """A failed chat as the chat endpoints document it (answers, stream ``error`` events, async
    runs' callbacks): no credits and an unavailable model in the ``{statusCode, body}`` shape that
    names the agent; any other problem in the common shape."""
    if isinstance(problem, (NoCredits, Unavailable)):
        return {"statusCode": problem.status, "body": {"agent_id": agent_id, "message": problem.title, "error": problem.text}}
    return common_body(problem)


async def prepare(services: Services, principal: Principal, chat: ChatInput) -> dict:
    """All checks that must pass before a chat is accepted (sync or async). Returns the agent."""
    agent = await load_agent_for(services, principal, chat.agent_id)
    if not await has_credits(services.store, principal.org_id):
        raise NoCredits("No credits available", "No credits available")
    if not services.models.knows(agent["model"]):
        raise Unavailable("Service temporarily unavailable", f"Model {agent['model']!r} is not configured")
    return agent


# -- the turn ---------------------------------------------------------------------------------

def to_model_messages(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored Agents-API messages → OpenAI-shaped messages for a backend."""
    out: list[dict[str, Any]] = []
    for message in history:
        content = message["content"]
        if message["role"] == "tool":
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "tool-result":
                    out.append({"role": "tool", "tool_call_id": part["toolCallId"], "name": part["toolName"],
                                "content": json.dumps(part["result"])})
            continue
        if isinstance(content, list):
            text = message_text(content)
            calls = [{"id": p["toolCallId"], "name": p["toolName"], "arguments": p.get("args") or {}}
                     for p in content if p.get("type") == "tool-call"]
            entry: dict[str, Any] = {"role": message["role"], "content": text}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        else:
            out.append({"role": message["role"], "content": content})
    return out


GROW_TRIES = 8  # exact counts spent taking back messages a cautious estimate dropped (it errs by a few tokens)


def fit_context(backend, system: list[dict], history: list[dict], max_tokens: int) -> list[dict]:
    """The system messages and the longest suffix of ``history`` that leaves room for the reply.

    Linear: each message is counted once, alone (less the template's fixed part), newest first
    until the budget is spent; one exact count of the chosen prompt then corrects the estimate.
    Re-counting the whole prompt per dropped message made a long history quadratic. Blocking
    (it tokenizes): run it off the event loop."""
    budget = backend.n_ctx - max_tokens
    last = len(history) - 1
    if last <= 0:
        return system + history
    fixed = _fixed_tokens(backend)
    cost: dict[int, int] = {}

    def cost_of(index: int) -> int:
        if index not in cost:
            cost[index] = _message_tokens(backend, history[index], fixed)
        return cost[index]

    start, used = last, backend.count_tokens(system + history[last:])
    while start > 0 and used + cost_of(start - 1) <= budget:
        start -= 1
        used += cost[start]
    start = _past_tool_results(history, start)
    while start < last:
        excess = backend.count_tokens(system + history[start:]) - budget
        if excess <= 0:
            break
        while excess > 0 and start < last:  # the estimate fell short: drop what covers the difference
            excess -= cost_of(start)
            start += 1
        start = _past_tool_results(history, start)
    for _ in range(GROW_TRIES):  # the estimate was cautious: take back what still fits
        earlier = start - 1
        while earlier > 0 and history[earlier]["role"] == "tool":
            earlier -= 1  # a tool result comes back with its call
        if earlier < 0 or history[earlier]["role"] == "tool" or backend.count_tokens(system + history[earlier:]) > budget:
            break
        start = earlier
    return system + history[start:]


def _past_tool_results(history: list[dict], start: int) -> int:
    while start < len(history) - 1 and history[start]["role"] == "tool":
        start += 1  # never start on a tool result without its call
    return start


_PROBE_USER, _PROBE_ASSISTANT = {"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}
_fixed_by_backend: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def _fixed_tokens(backend) -> int:
    """The tokens a prompt has whatever its messages (a default system prompt, the reply's header):
    one message's count less what a message adds to a longer prompt. Measured once per backend."""
    if backend not in _fixed_by_backend:
        try:
            one = backend.count_tokens([_PROBE_USER])
            added = backend.count_tokens([_PROBE_USER, _PROBE_ASSISTANT, _PROBE_USER]) - backend.count_tokens([_PROBE_USER, _PROBE_ASSISTANT])
            fixed = max(0, one - added)
        except Exception:  # a template that refuses the probe: estimates err on the long side
            fixed = 0
        _fixed_by_backend[backend] = fixed
    return _fixed_by_backend[backend]


def _message_tokens(backend, message: dict, fixed: int) -> int:
    try:
        return max(1, backend.count_tokens([message]) - fixed)
    except Exception:  # a template that refuses a lone message (strict role order): a rough count
        return len(json.dumps(message)) // 3 + 1


@dataclass
class TurnResult:
    text: str
    new_messages: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    finish_reason: str = "stop"
    caller_calls: list[ToolCall] = field(default_factory=list)  # calls of caller_tools, for the caller to run


def _call_part(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool-call", "toolCallId": call.id, "toolName": call.name, "args": call.arguments}


async def _record_tool_round(result: TurnResult, text: str, done: list[tuple[ToolCall, Any]], on_tool) -> None:
    """One assistant message with the calls and one tool message with their results."""
    call_parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    result_parts = []
    for call, value in done:
        call_parts.append(_call_part(call))
        result_parts.append({"type": "tool-result", "toolCallId": call.id, "toolName": call.name, "result": value})
        record = {"toolCallId": call.id, "toolName": call.name, "args": call.arguments, "result": value}
        result.tool_calls.append(record)
        if on_tool is not None:
            await on_tool(record)
    result.new_messages.append({"role": "assistant", "content": call_parts, "id": short_id("msg")})
    result.new_messages.append({"role": "tool", "content": result_parts, "id": short_id("msg")})


async def run_turn(
    services: Services,
    agent: dict,
    history: list[dict[str, Any]],
    incoming: list[dict[str, Any]],
    on_text: Callable[[str], Awaitable[None]] | None = None,
    on_tool: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    caller_tools: list[ToolSpec] | tuple = (),
) -> TurnResult:
    """Runs the model (and its tools) on a thread's history plus the incoming messages.
    ``caller_tools`` (the OpenAI-compatible API) are offered too, but a call to one ends the turn:
    it is returned in ``caller_calls`` for the caller to run and answer in a next turn."""
    backend = await services.models.get(agent["model"])
    ctx = ToolContext(services.store, agent["org_id"], agent["id"], services)
    tools: dict[str, Tool] = {t.name: t for t in await tools_for_agent(ctx, agent)}
    max_tokens = agent["max_tokens"] or services.config.default_max_tokens
    system = [{"role": "system", "content": agent["instructions"]}] if agent["instructions"].strip() else []
    result = TurnResult(text="", new_messages=[])
    recent = history[-services.config.max_messages:]  # a long thread: only its recent messages can fit anyway
    await _add_context(ctx, agent, incoming, result, on_tool)
    for round_no in range(MAX_TOOL_ROUNDS + 1):
        messages = await asyncio.to_thread(fit_context, backend, system, to_model_messages(recent + incoming + result.new_messages), max_tokens)
        request = ChatRequest(
            messages=messages, max_tokens=max_tokens, temperature=agent["temperature"],
            tools=[t.spec for t in tools.values()] + list(caller_tools), tool_choice="auto" if round_no < MAX_TOOL_ROUNDS else "none",
        )
        try:
            out = await generate(backend, request, key=agent["org_id"], on_text=on_text)
        except ContextTooLong as exc:
            raise invalid(str(exc)) from exc
        _count_round(result, out)
        if not out.tool_calls:
            return _answer(result, out)
        theirs = {t.name for t in caller_tools}
        if any(call.name in theirs for call in out.tool_calls):
            return _hand_to_caller(result, out, theirs)
        done = await _run_tools(tools, ctx, out.tool_calls)
        await _record_tool_round(result, out.text.strip(), done, on_tool)
    raise AssertionError("unreachable: the last round runs without tools")


async def _add_context(ctx: ToolContext, agent: dict, incoming: list[dict[str, Any]], result: TurnResult,
                       on_tool: Callable[[dict[str, Any]], Awaitable[None]] | None) -> None:
    """What the context providers find for the last user message (e.g. knowledge retrieved for
    the agent), recorded as tool rounds before the model runs."""
    user_text = next((m["content"] for m in reversed(incoming) if m["role"] == "user" and isinstance(m["content"], str)), "")
    for provider in context_providers(ctx):
        done = [(ToolCall(short_id("call"), name, args), value) for name, args, value in await provider(ctx, agent, user_text)]
        if done:
            await _record_tool_round(result, "", done, on_tool)


def _count_round(result: TurnResult, out: ChatResult) -> None:
    """Tokens add up over the rounds; the model and finish reason are the last round's."""
    result.prompt_tokens += out.prompt_tokens
    result.completion_tokens += out.completion_tokens
    result.model = out.model
    result.finish_reason = out.finish_reason


def _answer(result: TurnResult, out: ChatResult) -> TurnResult:
    """A round without tool calls ends the turn with its text."""
    result.text = out.text.strip()
    result.new_messages.append({"role": "assistant", "content": result.text, "id": short_id("msg")})
    return result


def _hand_to_caller(result: TurnResult, out: ChatResult, theirs: set[str]) -> TurnResult:
    """A call of a caller's tool ends the turn: those calls go back for the caller to run."""
    result.text = out.text.strip()
    result.caller_calls = [call for call in out.tool_calls if call.name in theirs]
    text_part = [{"type": "text", "text": result.text}] if result.text else []
    result.new_messages.append({"role": "assistant", "content": text_part + [_call_part(c) for c in result.caller_calls], "id": short_id("msg")})
    return result


async def _run_tools(tools: dict[str, Tool], ctx: ToolContext, calls: list[ToolCall]) -> list[tuple[ToolCall, Any]]:
    """Runs the called tools in order; an unknown tool is an error value for the model to read."""
    done = []
    for call in calls:
        tool = tools.get(call.name)
        if tool is None:
            value: Any = {"error": f"unknown tool {call.name}"}
        else:
            try:
                value = await tool.run(call.arguments, ctx)
            except Exception as exc:  # a tool's failure is the model's to read, not a 500
                value = {"error": f"{type(exc).__name__}: {exc}"}
        done.append((call, value))
    return done


async def chat(
    services: Services,
    principal: Principal,
    chat_input: ChatInput,
    agent: dict,
    *,
    run_id: str | None = None,
    on_text: Callable[[str], Awaitable[None]] | None = None,
    on_tool: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    in_tx: Callable[[Tx, dict[str, Any]], Awaitable[None]] | None = None,
    caller_tools: list[ToolSpec] | tuple = (),
) -> dict[str, Any]:
    """A whole turn. Returns the pieces of the documented response (see ``response_body``).

    The thread, the incoming messages, the replies and the usage row are written in one
    transaction after the model has answered: a failed or interrupted turn leaves no trace.
    ``in_tx(tx, outcome)`` runs inside that transaction, for writes that must commit with the turn.
    """
    started = time.perf_counter()
    history = await agents_store.thread_messages(services.store, agent["id"], chat_input.thread_id) if chat_input.thread_id else []
    try:
        turn = await run_turn(services, agent, history, chat_input.messages, on_text=on_text, on_tool=on_tool, caller_tools=caller_tools)
    except ModelError as exc:
        raise Unavailable("Service temporarily unavailable", "AI provider is currently experiencing high traffic") from exc
    elapsed = time.perf_counter() - started
    credits = credits_for(turn.prompt_tokens, turn.completion_tokens, services.config)
    run_id = run_id or new_id()
    timestamp = iso()
    async with services.store.write() as tx:
        thread_id = await agents_store.ensure_thread(tx, principal.org_id, agent["id"], chat_input.thread_id)  # a new id starts a thread
        await agents_store.append_messages(tx, agent["id"], thread_id, chat_input.messages + turn.new_messages)
        await record_run(tx, run_id=run_id, org_id=principal.org_id, agent_id=agent["id"], thread_id=thread_id, model=turn.model,
                         prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens, credits=credits, timestamp=timestamp)
        history = await agents_store.thread_messages(tx, agent["id"], thread_id)
        outcome = {
            "agent_id": agent["id"],
            "conversation_history": history,
            "run_id": run_id,
            "model": turn.model,
            "timestamp": timestamp,
            "tool_calls": turn.tool_calls,
            "execution_seconds": elapsed,
            "used_credits": credits,
            "thread_id": thread_id,
            "text": turn.text,
            "usage": {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens},
            "finish_reason": turn.finish_reason,
            "caller_tool_calls": turn.caller_calls,
        }
        if in_tx is not None:
            await in_tx(tx, outcome)
    return outcome


def response_body(outcome: dict[str, Any], legacy: bool = False) -> dict[str, Any]:
    """The documented success shape. The legacy endpoint differs only where its document does:
    ``tool_calls`` is a list and ``execution_time`` is seconds as a string."""
    if legacy:
        tool_calls: Any = outcome["tool_calls"]
        execution_time: Any = f"{outcome['execution_seconds']:.2f}"
    else:
        tool_calls = {c["toolCallId"]: {k: v for k, v in c.items() if k != "toolCallId"} for c in outcome["tool_calls"]}
        execution_time = round(outcome["execution_seconds"] * 1000)
    return {
        "statusCode": 200,
        "body": {
            "agent_id": outcome["agent_id"],
            "conversation_history": outcome["conversation_history"],
            "metadata": {
                "id": outcome["run_id"],
                "model": outcome["model"],
                "timestamp": outcome["timestamp"],
                "tool_calls": tool_calls,
                "execution_time": execution_time,
                "used_credits": outcome["used_credits"],
                "thread_id": outcome["thread_id"],
            },
        },
    }


# -- asynchronous runs (callback_url) -------------------------------------------------------------

ASYNC_ACK = {"message": "Request accepted and being processed asynchronously", "status": "processing"}


async def accept_async(services: Services, principal: Principal, chat_input: ChatInput, legacy: bool) -> str:
    """Stores the accepted request first (so a restart resumes it), then runs it in the background."""
    run_id = new_id()
    request = {"agent_id": chat_input.agent_id, "messages": chat_input.messages, "thread_id": chat_input.thread_id, "legacy": legacy}
    async with services.store.write() as tx:
        await open_run(tx, run_id=run_id, org_id=principal.org_id, agent_id=chat_input.agent_id, thread_id=chat_input.thread_id,
                       callback_url=chat_input.callback_url, request=request)
    services.spawn(run_async(services, run_id), name=f"run-{run_id}")
    return run_id


MAX_RUN_ATTEMPTS = 2  # a run that stopped the model (or the server) this often is failed, not retried


async def _start_attempt(services: Services, run_id: str) -> dict | None:
    """Counts a start of a run still processing (before anything can crash); None if it is not."""
    async with services.store.write() as tx:
        await tx.execute("UPDATE runs SET attempts = attempts + 1 WHERE id = ? AND status = 'processing'", [run_id])
        row = await tx.fetchone("SELECT * FROM runs WHERE id = ? AND status = 'processing'", [run_id])
    return dict(row) if row is not None else None


def _stopped_too_often() -> Problem:
    return Unavailable("Service temporarily unavailable",
                       f"The model stopped while running this request {MAX_RUN_ATTEMPTS} times; it is not run again")


async def _fail_run(services: Services, run: dict, problem: Problem) -> dict:
    failure = failure_body(problem, run["agent_id"])
    body = failure if "statusCode" in failure else {"statusCode": problem.status, "body": failure}
    async with services.store.write() as tx:
        await tx.execute(
            "UPDATE runs SET status = 'error', error = ?, response = ?, finished_at = ? WHERE id = ?",
            [json.dumps(failure), json.dumps(body), iso(), run["id"]],
        )
    return body


async def run_async(services: Services, run_id: str) -> None:
    while (run := await _start_attempt(services, run_id)) is not None:
        if run["attempts"] > MAX_RUN_ATTEMPTS:  # it was running when the server stopped, each time
            body = await _fail_run(services, run, _stopped_too_often())
            break
        request = json.loads(run["request"])
        principal = Principal(org_id=run["org_id"], key_id="")
        chat_input = ChatInput(request["agent_id"], request["messages"], request["thread_id"], run["callback_url"])
        try:
            agent = await prepare(services, principal, chat_input)
            legacy = request.get("legacy", False)

            async def store_response(tx: Tx, outcome: dict[str, Any]) -> None:
                # with the turn, so a completed run always has the response its callback needs
                await tx.execute("UPDATE runs SET response = ? WHERE id = ?", [json.dumps(response_body(outcome, legacy=legacy)), run_id])

            outcome = await chat(services, principal, chat_input, agent, run_id=run_id, in_tx=store_response)
            body = response_body(outcome, legacy=legacy)
            break
        except Problem as exc:
            if isinstance(exc.__cause__, ModelCrashed) and run["attempts"] < MAX_RUN_ATTEMPTS:
                continue  # the model's worker restarts: one more try
            body = await _fail_run(services, run, _stopped_too_often() if isinstance(exc.__cause__, ModelCrashed) else exc)
            break
    else:
        return
    run = dict(await services.store.fetchone("SELECT * FROM runs WHERE id = ?", [run_id]))
    await on_run_finished(services, run, body)


async def resume_async_runs(services: Services) -> None:
    """At startup: runs accepted before a stop or crash are run now."""
    rows = await services.store.fetchall("SELECT id FROM runs WHERE status = 'processing' ORDER BY created_at")
    for row in rows:
        services.spawn(run_async(services, row["id"]), name=f"run-{row['id']}")
