"""The group-chat loop (AutoGen's GroupChatManager), run in the background, one step at a time.

Every step is stored before the next begins: the speaker's message, the round counter and the
last speaker are written in one transaction. So a chat's whole state is in SQLite, and:

- a chat waiting for human input holds no task: ``give_input`` starts a new one;
- after a restart, chats left ``running`` continue from their last stored step (or go to
  ``error`` with the reason once a run has been interrupted too often);
- deleting a chat cancels its task, which stops the model at the next token.

Model calls go through ``agents.chat.run_turn`` (assistants that are Agents-API agents keep
their tools) and ``models.generate``; both run the model off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ..agents import store as agents_store
from ..agents.chat import run_turn
from ..errors import Conflict, ModelError, Problem, error
from ..models import ChatRequest, generate
from ..models.grammar import schema_text
from ..services import Services
from ..usage import charge, credits_for, has_credits
from . import store as chats_store
from .flows import ASSISTANT, USER_PROXY
from .live import Hub
from .store import COMPLETED, ERROR, RUNNING, STARTABLE, WAITING

log = logging.getLogger("flowbox.chats")

MAX_RESUMES = 3          # restarts one run may survive before it goes to 'error'
EXIT_WORDS = ("exit",)   # AutoGen's word for "end the chat" at a human-input prompt
MANAGER_WINDOW = 8       # recent messages the manager model reads
MANAGER_EXCERPT = 300    # characters of each


class StepFailed(Exception):
    """A step cannot run (a missing agent or model); the message is the chat's error reason."""


@dataclass
class Runtime:
    hub: Hub = field(default_factory=Hub)
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)


def runtime(services: Services) -> Runtime:
    return services.state(Runtime)


# -- starting, steering, stopping -----------------------------------------------------------------

def user_proxy(flow: dict[str, Any]) -> dict[str, Any] | None:
    return next((a for a in flow["agents"] if a["type"] == USER_PROXY), None)


async def _check_credits(services: Services, org_id: str) -> None:
    if not await has_credits(services.store, org_id):
        raise error(402, "No credits available", "This organisation has no credits left")


async def start_conversation(services: Services, chat: dict[str, Any], text: str) -> dict[str, Any]:
    """``POST /chats/{id}/messages``: the human's message opens a new conversation (from
    ``ready``, ``completed`` or ``error``; earlier messages stay as context)."""
    await _check_credits(services, chat["org_id"])
    proxy = user_proxy(chat["flow"])
    sender = proxy["name"] if proxy else "user"
    async with services.store.write() as tx:
        started = await chats_store.update_chat(
            tx, chat["id"], expect=STARTABLE, status=RUNNING, error=None, round=0, resumes=0,
            last_speaker=sender if proxy else None, waiting_for=None, waiting_reason=None,
        )
        if not started:
            raise await _conflict(tx, chat["id"], "message")
        message = await chats_store.append_message(tx, chat["id"], "user", sender, text)
        public = await chats_store.get_chat(tx, chat["id"])
    _announce(services, public, message)
    spawn_run(services, chat["id"])
    return message


async def give_input(services: Services, chat: dict[str, Any], text: str) -> dict[str, Any] | None:
    """``POST /chats/{id}/input``: the human's answer while the chat waits. ``exit`` (or an empty
    answer to the termination prompt) ends the chat; an empty answer at a turn passes the turn."""
    await _check_credits(services, chat["org_id"])
    chat_id, word = chat["id"], text.strip()
    async with services.store.write() as tx:
        current = await chats_store.get_chat_row(tx, chat_id)
        if current is None or current["status"] != WAITING:
            raise await _conflict(tx, chat_id, "input")
        agent, at_end = current["waiting_for"], current["waiting_reason"] == "termination"
        leaving = word.lower() in EXIT_WORDS
        ends = leaving or (at_end and not word) or _terminates(current["flow"], word)
        message = await chats_store.append_message(tx, chat_id, "user", agent, text) if word and not leaving else None
        await chats_store.update_chat(
            tx, chat_id, expect=(WAITING,), status=COMPLETED if ends else RUNNING, waiting_for=None,
            waiting_reason=None, last_speaker=agent, round=0 if at_end else current["round"] + 1, resumes=0,
        )
        public = await chats_store.get_chat(tx, chat_id)
    _announce(services, public, message)
    if not ends:
        spawn_run(services, chat_id)
    return message


async def _conflict(tx, chat_id: str, what: str) -> Problem:
    chat = await chats_store.get_chat(tx, chat_id)
    if chat is None:
        return chats_store.not_found(chat_id)
    status = chat["status"]
    if what == "input":
        title, message = "Chat is not waiting for human input", f"The chat's status is {status!r}; input is accepted only in 'wait_for_human_input'."
    else:
        hint = "answer it with POST /chats/{chat_id}/input" if status == WAITING else "wait until it is completed"
        title, message = "Chat is busy", (f"The chat's status is {status!r}; a message starts a new conversation only in "
                                          f"'ready', 'completed' or 'error': {hint}.")
    return Conflict(title, message, status=status)


def spawn_run(services: Services, chat_id: str) -> asyncio.Task:
    """Runs the chat in the background; never two runs of one chat at once."""
    rt = runtime(services)
    previous = rt.tasks.get(chat_id)

    async def run() -> None:
        if previous is not None and not previous.done():
            with contextlib.suppress(BaseException):
                await previous
        await run_chat(services, chat_id)

    task = services.spawn(run(), name=f"chat-{chat_id}")
    rt.tasks[chat_id] = task
    task.add_done_callback(lambda t: rt.tasks.pop(chat_id, None) if rt.tasks.get(chat_id) is t else None)
    return task


async def stop_and_delete(services: Services, chat_id: str) -> None:
    """Deletes a chat; a running one is stopped first (its model call ends at the next token)."""
    task = runtime(services).tasks.get(chat_id)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=30)
    await chats_store.delete_chat(services.store, chat_id)
    runtime(services).hub.deleted(chat_id)


async def resume_chats(services: Services) -> None:
    """At startup: chats a stop or crash left ``running`` continue; a run interrupted too often
    goes to ``error`` with the reason."""
    for chat_id in await chats_store.chats_with_status(services.store, RUNNING):
        async with services.store.write() as tx:
            row = await tx.fetchone("SELECT resumes FROM chats WHERE id = ?", [chat_id])
            resumes = row["resumes"] + 1
            give_up = resumes > MAX_RESUMES
            reason = f"The run was interrupted by {resumes - 1} server restarts; it was not resumed again."
            fields = {"status": ERROR, "error": reason} if give_up else {}
            await chats_store.update_chat(tx, chat_id, expect=(RUNNING,), resumes=resumes, **fields)
        if give_up:
            log.warning("chat %s: %s", chat_id, reason)
        else:
            log.info("chat %s: resuming its run after a restart", chat_id)
            spawn_run(services, chat_id)



# -- the loop ------------------------------------------------------------------------------------------

async def run_chat(services: Services, chat_id: str) -> None:
    try:
        while await _step(services, chat_id):
            pass
    except asyncio.CancelledError:
        raise  # deleted, or the server is stopping: the chat stays as stored
    except Exception as exc:  # the reason goes to the chat; nothing stored is lost
        reason = _reason(exc)
        if not isinstance(exc, (StepFailed, ModelError, Problem)):
            log.exception("chat %s failed", chat_id)
        await _set_status(services, chat_id, status=ERROR, error=reason)


def _reason(exc: Exception) -> str:
    if isinstance(exc, Problem):
        return exc.text
    if isinstance(exc, ModelError):
        return f"The model failed: {exc}"
    return str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"


async def _step(services: Services, chat_id: str) -> bool:
    """One speaker turn. Returns whether the loop goes on."""
    chat = await chats_store.get_chat_row(services.store, chat_id)
    if chat is None or chat["status"] != RUNNING:
        return False
    flow = chat["flow"]
    if chat["round"] >= flow["max_rounds"]:
        await _set_status(services, chat_id, status=COMPLETED)
        return False
    history = await chats_store.messages_after(services.store, chat_id)
    usage = [0, 0]
    speaker = await _next_speaker(services, chat, history, usage)
    if speaker["type"] == USER_PROXY:
        if speaker["human_input_mode"] == "ALWAYS":
            await _set_status(services, chat_id, status=WAITING, waiting_for=speaker["name"], waiting_reason="turn")
            return False
        return await _record(services, chat, speaker, speaker["auto_reply"] or None, usage) is not None
    text = await _assistant_reply(services, chat, speaker, history, usage)
    message = await _record(services, chat, speaker, text, usage)
    if message is None:
        return False
    if _terminates(flow, text):
        proxy = user_proxy(flow)
        if proxy is not None and proxy["human_input_mode"] in ("ALWAYS", "TERMINATE"):
            await _set_status(services, chat_id, status=WAITING, waiting_for=proxy["name"], waiting_reason="termination")
        else:
            await _set_status(services, chat_id, status=COMPLETED)
        return False
    return True


def _terminates(flow: dict[str, Any], text: str) -> bool:
    keyword = flow.get("termination_keyword")
    return bool(keyword) and keyword in text


async def _record(services: Services, chat: dict, speaker: dict, text: str | None, usage: list[int]) -> dict | None:
    """Stores one turn (its message, if any, the round and the credits) in one transaction.
    Returns the message ({} for a silent turn), or None when the chat stopped meanwhile."""
    async with services.store.write() as tx:
        if not await chats_store.update_chat(tx, chat["id"], expect=(RUNNING,), round=chat["round"] + 1, last_speaker=speaker["name"]):
            return None
        message = await chats_store.append_message(tx, chat["id"], "assistant", speaker["name"], text) if text is not None else None
        if usage[0] or usage[1]:
            await charge(tx, chat["org_id"], credits_for(*usage, services.config))
        public = await chats_store.get_chat(tx, chat["id"])
    _announce(services, public, message)
    return message or {}


async def _set_status(services: Services, chat_id: str, **fields: Any) -> None:
    """Moves a running chat on (to waiting, completed or error) and tells the streams."""
    fields.setdefault("waiting_for", None)
    fields.setdefault("waiting_reason", None)
    async with services.store.write() as tx:
        if not await chats_store.update_chat(tx, chat_id, expect=(RUNNING,), **fields):
            return
        public = await chats_store.get_chat(tx, chat_id)
    _announce(services, public)


def _announce(services: Services, chat: dict[str, Any], message: dict[str, Any] | None = None) -> None:
    """Publishes what a transaction just committed (no await between the two)."""
    hub = runtime(services).hub
    if message:
        hub.message(message)
    hub.status(chat)


# -- speakers ---------------------------------------------------------------------------------------

async def _next_speaker(services: Services, chat: dict, history: list[dict], usage: list[int]) -> dict[str, Any]:
    agents = chat["flow"]["agents"]
    names = [a["name"] for a in agents]
    last = chat["last_speaker"]
    following = agents[(names.index(last) + 1) % len(agents)] if last in names else agents[0]
    if chat["flow"]["speaker_selection"] != "auto":
        return following
    candidates = [a for a in agents if a["name"] != last] or agents
    if len(candidates) == 1:
        return candidates[0]
    choice = await _ask_manager(services, chat, candidates, history, usage)
    return next((a for a in candidates if a["name"] == choice), following)


async def _ask_manager(services: Services, chat: dict, candidates: list[dict], history: list[dict], usage: list[int]) -> str | None:
    """The manager model names the next speaker; on the local model a grammar allows only the
    candidates' names, so even a tiny model answers with one of them."""
    flow = chat["flow"]
    backend = await _backend(services, flow["manager_model"], "the manager")
    roster = "\n".join(f"- {a['name']}: {_role_of(a)}" for a in candidates)
    transcript = "\n".join(f"{m['sender']}: {m['content'][:MANAGER_EXCERPT]}" for m in history[-MANAGER_WINDOW:])
    names = [a["name"] for a in candidates]
    request = ChatRequest(
        messages=[
            {"role": "system", "content": f"You choose who speaks next in a group chat. Participants:\n{roster}"},
            {"role": "user", "content": f"{transcript}\n\nWho should speak next? Answer with one name: {', '.join(names)}."},
        ],
        max_tokens=32, temperature=0.0, seed=0, json_schema={"enum": [schema_text(n) for n in names]},
    )
    result = await generate(backend, request, key=chat["org_id"])
    usage[0] += result.prompt_tokens
    usage[1] += result.completion_tokens
    with contextlib.suppress(json.JSONDecodeError):
        answer = json.loads(result.text)
        if (match := next((n for n in names if schema_text(n) == answer), None)) is not None:
            return match
    return next((n for n in names if n in result.text), None)  # a remote model may not obey


def _role_of(agent: dict) -> str:
    if agent["type"] == USER_PROXY:
        return agent["description"] or "the human user"
    return agent["description"] or (agent.get("instructions") or "an assistant")[:200]


async def _backend(services: Services, model: str, who: str):
    try:
        return await services.models.get(model)
    except KeyError:
        raise StepFailed(f"Model {model!r} used by {who} is not configured.") from None


async def _assistant_reply(services: Services, chat: dict, speaker: dict, history: list[dict], usage: list[int]) -> str:
    agent = await _agent_for(services, chat, speaker)
    await _backend(services, agent["model"], f"agent {speaker['name']!r}")
    others = [a["name"] for a in chat["flow"]["agents"] if a["name"] != speaker["name"]]
    agent["instructions"] = (
        f"You are {speaker['name']} in a group chat with {', '.join(others)}. {agent['instructions']}".strip()
    )
    view = [
        {"role": "assistant", "content": m["content"]} if m["sender"] == speaker["name"]
        else {"role": "user", "content": f"{m['sender']}: {m['content']}"}
        for m in history
    ]
    turn = await run_turn(services, agent, view, [])
    usage[0] += turn.prompt_tokens
    usage[1] += turn.completion_tokens
    # Small models imitate the transcript's "name: " prefixes; the sender is recorded anyway.
    return re.sub(rf"^\s*{re.escape(speaker['name'])}\s*:\s*", "", turn.text)


async def _agent_for(services: Services, chat: dict, speaker: dict) -> dict[str, Any]:
    """The agent record ``run_turn`` takes: an Agents-API agent, or the flow's inline one."""
    if "agent_id" in speaker:
        agent = await agents_store.get_agent(services.store, speaker["agent_id"])
        if agent is None or agent["org_id"] != chat["org_id"]:
            raise StepFailed(f"Agent {speaker['name']!r} refers to agent_id {speaker['agent_id']!r}, which no longer exists.")
        return agent
    assert speaker["type"] == ASSISTANT
    return {
        "id": f"chat:{chat['id']}:{speaker['name']}", "org_id": chat["org_id"], "model": speaker["model"],
        "instructions": speaker["instructions"], "temperature": speaker["temperature"],
        "max_tokens": speaker["max_tokens"], "tools": [],
    }
