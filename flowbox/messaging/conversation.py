"""One incoming message end to end; the entry point every channel (REST now, sockets next) calls.

``handle(services, project, thread_id, incoming)``: under a per-thread lock, run the engine
(unless the thread is paused or the sender is a human agent), then store the user's message,
the replies, the new thread state and the webhook events in one transaction, then publish the
same events on the hub. A reply that needs the fallback agent (an LLM) is produced in the
background and goes out the same way when it is ready.

A socket subscribed to the thread (``hub_of(services).subscribe(project_id, thread_id)``) gets
every event of this call and of any other channel; the returned ``Outcome`` serves a caller that
is not subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..ids import short_id
from ..orgs import Principal
from ..services import Services
from . import threads, webhooks
from .common import BOT_ORIGINATOR
from .engine import Decision, Graph, Input, build_graph, decide, unknown_reply
from .flows import list_flows
from .hours import is_open
from .hub import hub_of
from .incoming import Incoming
from .matcher import embeddings_of

log = logging.getLogger("flowbox.messaging")
_AGENT_THREAD_NS = uuid.UUID("0b8f61a2-3c1e-4b8e-9a57-8d2b6f0e4c11")
_RNG = random.Random()  # picks among a step's texts; one for all (seeding one per message costs more than deciding)


@dataclass
class Outcome:
    """What one message led to (the socket channel answers from it)."""

    delivered: dict[str, Any]
    reply: dict[str, Any] | None = None     # the message.received payload, if the engine answered now
    paused: bool = False
    agent_pending: bool = False             # the fallback agent's answer follows later
    step: dict[str, Any] | None = None      # the step the message matched (stored with it in the history)
    events: list[dict[str, Any]] = field(default_factory=list)


# -- per-thread locks and compiled flows -------------------------------------------------------

@dataclass
class _Turn:
    """A message waiting for its thread's turn."""
    project: dict[str, Any]
    incoming: Incoming
    future: asyncio.Future


class ThreadLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], list] = {}
        self.turns: dict[tuple[str, str], list[_Turn]] = {}  # messages queued for a thread's drain

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                self._locks.pop(key, None)


def thread_lock(services: Services, project_id: str, thread_id: str):
    """What changes a thread (its messages, pauses, a human agent's replies) happens one at a
    time; user messages are handled in arrival order (``handle``)."""
    return services.state(ThreadLocks).hold((project_id, thread_id))


@dataclass
class CompiledFlows:
    """Each project's flows compiled for the engine, and a lock per project so that one request
    compiles them while the others wait."""
    graphs: dict[str, Graph] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)


async def graph_for(services: Services, project: dict[str, Any]) -> Graph:
    """The project's flows compiled for the engine, cached per flow version."""
    compiled = services.state(CompiledFlows)
    cache = compiled.graphs
    graph = cache.get(project["id"])
    if graph is None or graph.version != project["flows_version"]:
        async with compiled.locks.setdefault(project["id"], asyncio.Lock()):
            row = await services.store.fetchone("SELECT flows_version FROM msg_projects WHERE id = ?", [project["id"]])
            version = row["flows_version"] if row else project["flows_version"]
            graph = cache.get(project["id"])
            if graph is None or graph.version != version:
                graph = build_graph(await list_flows(services.store, project["id"]), version)
                await graph.index.attach(embeddings_of(services))
                cache[project["id"]] = graph
    elif graph.index.matrix is None and graph.index.texts:
        await graph.index.attach(embeddings_of(services))  # the embedder was unavailable; retried at most once a minute
    graph.index.learn_in_background(services, project["id"])  # messages meanwhile are matched without the model
    return graph


async def prepare(services: Services, project: dict[str, Any]) -> Graph | None:
    """Compiles the project's flows and starts learning their intent model ahead of any message (at
    start, ``warmup``; after a flow changes, ``prepare_soon``), so that the first message neither waits
    for the examples' embeddings nor meets a model still being learned. None when that failed (logged):
    the first message tries again, and answers the error if there is one."""
    try:
        return await graph_for(services, project)
    except Exception as exc:  # noqa: BLE001 - background work: the next message retries
        log.warning("preparing the flows of project %s failed: %r", project["id"], exc)
        return None


def prepare_soon(services: Services, project: dict[str, Any]) -> None:
    """After a flow change: ``prepare`` in the background (the request that changed it does not wait)."""
    async def changed() -> None:
        # the version the change made (``project`` was read before it); none for a project deleted meanwhile
        row = await services.store.fetchone("SELECT id, flows_version FROM msg_projects WHERE id = ?", [project["id"]])
        if row is not None:
            await prepare(services, dict(row))

    services.spawn(changed(), name=f"messaging-prepare-{project['id']}")


# A flow saved by another process (``flowbox flows import`` beside a running server) is noticed by a look at
# the projects' flow versions every WATCH_SECONDS and prepared as a change over the API is (``prepare_soon``),
# rather than by its first message. Changes over the API are prepared at once; these lag by up to this.
WATCH_SECONDS = 2.0


async def start_watching(services: Services) -> None:
    services.spawn(_watch_flows(services), name="messaging-flow-watch")


async def _watch_flows(services: Services) -> None:
    seen: dict[str, int] | None = None  # project id -> its flow version when last looked at (at start: warmup's)
    compiled = services.state(CompiledFlows).graphs
    while True:
        try:
            versions = {row["id"]: row["flows_version"] for row in await services.store.fetchall(
                "SELECT id, flows_version FROM msg_projects")}
        except Exception:  # noqa: BLE001 - a busy or closing database: look again next time
            log.warning("looking for changed flows failed", exc_info=True)
            versions = seen
        if seen is not None and versions is not None:
            for project_id, version in versions.items():
                graph = compiled.get(project_id)
                if seen.get(project_id) != version and (graph is None or graph.version != version):
                    await prepare(services, {"id": project_id, "flows_version": version})
            for project_id in set(compiled) - set(versions):  # deleted by another process
                forget(services, project_id)
        seen = versions
        await asyncio.sleep(WATCH_SECONDS)


async def intents_ready(services: Services, project: dict[str, Any]) -> bool:
    """Whether the project's current flows have their learned intent model (or need none)."""
    index = (await graph_for(services, project)).index
    return index.ready or not index.texts


def forget(services: Services, project_id: str) -> None:
    """Drops a deleted project's compiled flows."""
    services.state(CompiledFlows).graphs.pop(project_id, None)


def threshold_of(services: Services, project: dict[str, Any]) -> float:
    value = project.get("intent_threshold")
    return value if value is not None else services.config.messaging_intent_threshold / 100


def reply_payload(thread_id: str, messages: list[dict[str, Any]], trace_id: Any, originator: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``message.received`` (socket) / ``message.reply`` (webhook) payload."""
    payload: dict[str, Any] = {"threadId": thread_id, "messages": messages, "originator": originator or BOT_ORIGINATOR}
    if trace_id is not None:
        payload["traceId"] = trace_id
    return payload


class _Events:
    """Webhook events queued in the transaction, and the same events for the hub after it."""

    def __init__(self, tx, project: dict[str, Any]):
        self.tx, self.project = tx, project
        self.hub: list[dict[str, Any]] = []

    async def add(self, hub_type: str, webhook_type: str, payload: dict[str, Any]) -> None:
        await webhooks.emit(self.tx, self.project, webhook_type, payload)
        self.hub.append({"type": hub_type, "payload": payload})


def _publish(services: Services, project: dict[str, Any], thread_id: str, events: list[dict[str, Any]]) -> None:
    if project.get("webhook_url"):  # events were queued for it: deliver now (a wake costs the outbox two reads)
        webhooks.wake(services)
    hub = hub_of(services)
    for event in events:
        hub.publish(project["id"], thread_id, event)


async def _pause_events(events: _Events, thread_id: str, paused: bool, seconds: int | None = None, reason: str = "api") -> None:
    if paused:
        await events.add("control.pause", "control.pause",
                         {"threadId": thread_id, "isPaused": True, "secondsToPause": seconds or 0, "reason": reason})
    else:
        await events.add("control.resume", "control.resume", {"threadId": thread_id, "isPaused": False, "reason": reason})


# -- the message path -------------------------------------------------------------------------

def engine_input(project: dict[str, Any], incoming: Incoming) -> Input:
    inp = incoming.engine_input()
    event = project.get("outside_hours_event")
    if event and incoming.kind in ("text", "location", "media") and not is_open(project["business_hours"]):
        # Outside business hours the configured event answers instead of the flows.
        inp = Input(kind="event", event=event, reply_to=inp.reply_to, params=inp.params,
                    turn_params={**inp.turn_params, "event": [{"type": "custom", "value": {"name": event}}],
                                 "businessHours": [{"value": "closed"}]})
    return inp


GROUP_MAX = 32  # messages of one thread decided together and written in one transaction


async def handle(services: Services, project: dict[str, Any], thread_id: str, incoming: Incoming) -> Outcome:
    """Decides and stores the message under its thread's lock, in arrival order. A message that
    finds its thread idle is handled in its caller's task (a task started for it would first wait
    for a turn of a busy event loop). Messages that arrive while one is handled queue on the
    thread; its drain (one at a time per thread) then decides every message waiting and writes
    them in one transaction: they share each wait of a busy loop instead of queueing one behind
    another."""
    if incoming.from_moderator:
        return await moderator_reply(services, project, thread_id, incoming)
    locks = services.state(ThreadLocks)
    key = (project["id"], thread_id)
    turn = _Turn(project, incoming, asyncio.get_running_loop().create_future())
    if key in locks.turns:  # being handled: the drain takes this one
        locks.turns[key].append(turn)
        return await turn.future
    locks.turns[key] = []
    try:
        async with locks.hold(key):
            await _handle_group(services, thread_id, [turn])  # one message: nothing is left for later
    except Exception as exc:  # noqa: BLE001 - reading the thread failed: this message fails
        _fail(turn, exc)
    finally:
        if locks.turns[key]:  # arrived meanwhile: their drain goes on even if this caller is gone
            services.spawn(_drain(services, key), name=f"messaging-thread-{thread_id}")
        else:
            del locks.turns[key]
    return await turn.future


async def _drain(services: Services, key: tuple[str, str]) -> None:
    locks = services.state(ThreadLocks)
    waiting = locks.turns[key]
    group: list[_Turn] = []
    try:
        while waiting:
            # The lock is taken per round: a pause or a human agent's reply that came in meanwhile
            # (waiting for the lock) goes before the messages that arrived after it.
            async with locks.hold(key):
                group = [t for t in waiting[:GROUP_MAX] if not t.future.done()]  # done: its caller gave up
                del waiting[:GROUP_MAX]
                try:
                    waiting[:0] = await _handle_group(services, key[1], group) if group else []
                except Exception as exc:  # noqa: BLE001 - reading the thread failed: these messages fail
                    for turn in group:
                        _fail(turn, exc)
    finally:
        locks.turns.pop(key, None)
        for turn in [*group, *waiting]:  # only when cancelled (shutdown)
            turn.future.cancel()


def _fail(turn: _Turn, exc: BaseException) -> None:
    if not turn.future.done():
        turn.future.set_exception(exc)


async def _handle_group(services: Services, thread_id: str, group: list[_Turn]) -> list[_Turn]:
    """Decides and stores ``group``'s messages in order (one transaction); returns the ones left
    for the next round: after a message that pauses the thread or waits for the fallback agent,
    the rest start from the thread as stored."""
    store = services.store
    thread = await threads.get_thread(store, group[0].project["id"], thread_id)
    done: list[tuple[_Turn, Outcome, Decision | None]] = []
    rest: list[_Turn] = []
    try:
        async with store.batch() as tx:  # writes only, committed together when the block ends
            for i, turn in enumerate(group):
                mark = len(tx.statements)
                try:
                    outcome, decision = await _decide_and_store(services, turn.project, thread_id, thread, turn.incoming, tx)
                except Exception as exc:  # this message fails alone
                    del tx.statements[mark:]
                    _fail(turn, exc)
                    continue
                done.append((turn, outcome, decision))
                if decision is None or decision.handover is not None or decision.agent:
                    rest = group[i + 1:]
                    break
                # what the next message sees (as read back from the thread's row)
                thread = {**(thread or {}), "state": json.loads(json.dumps(decision.state)), "paused": 0, "paused_until": None}
    except Exception as exc:  # the transaction failed: every message in it
        for turn, _, _ in done:
            _fail(turn, exc)
        return rest
    for turn, outcome, decision in done:
        _publish(services, turn.project, thread_id, outcome.events)
        if decision is not None and decision.agent:
            outcome.agent_pending = True
            services.spawn(_agent_answer(services, turn.project, thread_id, turn.incoming, decision),
                           name=f"messaging-agent-{thread_id}")
        if not turn.future.done():  # its caller may have gone
            turn.future.set_result(outcome)
    return rest


async def _decide_and_store(services: Services, project: dict[str, Any], thread_id: str, thread: dict[str, Any] | None,
                            incoming: Incoming, tx) -> tuple[Outcome, Decision | None]:
    """One message: the engine's decision from ``thread`` as it stands, its rows queued in ``tx``."""
    paused = threads.paused_now(thread)
    decision: Decision | None = None
    if not paused:
        graph = await graph_for(services, project)
        decision = await decide(graph, thread["state"] if thread else {}, engine_input(project, incoming),
                                threshold=threshold_of(services, project), has_agent=bool(project.get("agent_id")), rng=_RNG)
    outcome = Outcome(delivered=incoming.delivered(thread_id), paused=paused, step=decision.matched if decision else None)
    stored = incoming.stored(decision.contexts if decision else None, decision.intents if decision else None)
    if outcome.step is not None:  # what the message matched, for the webhook and the history too
        stored["step"] = outcome.delivered["step"] = outcome.step
    events = _Events(tx, project)
    if thread is None:  # its first message (a later one in this batch sees the row as written)
        await threads.ensure_thread(tx, project["id"], thread_id)
    if thread and thread["paused"] and not paused:  # a timed pause ran out
        await threads.set_paused(tx, project["id"], thread_id, False)
        await _pause_events(events, thread_id, False, reason="timeout")
    await threads.append(tx, project["id"], thread_id, "user", incoming.originator, stored, incoming.trace_id)
    await events.add("message.delivered", "message.delivered", outcome.delivered)
    if decision is None:
        await threads.save_state(tx, project["id"], thread_id, thread["state"], incoming.originator)
    else:
        await threads.save_state(tx, project["id"], thread_id, decision.state, incoming.originator)
        await _store_replies(events, project, thread_id, decision, incoming.trace_id, outcome)
    outcome.events = events.hub
    return outcome, decision


async def _store_replies(events: _Events, project: dict[str, Any], thread_id: str, decision: Decision,
                         trace_id: Any, outcome: Outcome | None = None) -> None:
    tx = events.tx
    stored = [await threads.append(tx, project["id"], thread_id, "bot", BOT_ORIGINATOR, m, trace_id) for m in decision.messages]
    if stored:
        payload = reply_payload(thread_id, stored, trace_id)
        await events.add("message.received", "message.reply", payload)
        if outcome is not None:
            outcome.reply = payload
    if decision.handover is not None:
        seconds = decision.handover["secondsToPause"] or None
        await threads.set_paused(tx, project["id"], thread_id, True, seconds)
        await events.add("control.handover", "control.handover",
                         {"threadId": thread_id, "stepId": decision.handover["stepId"], "secondsToPause": seconds or 0})
        await _pause_events(events, thread_id, True, seconds, reason="handover")


async def moderator_reply(services: Services, project: dict[str, Any], thread_id: str, incoming: Incoming) -> Outcome:
    """A human agent's message (originator role ``moderator``): stored and sent to the user as a
    reply, whether or not the bot is paused; the engine never sees it."""
    fallback, responses = incoming.content()
    originator = {**incoming.originator, "role": "moderator"}
    message = {"fallback": fallback, "silent": False, "replyTo": None, "originator": originator, "actions": [],
               "responses": responses, "params": incoming.params, "contexts": [], "intents": []}
    async with thread_lock(services, project["id"], thread_id):
        async with services.store.batch() as tx:
            events = _Events(tx, project)
            await threads.ensure_thread(tx, project["id"], thread_id)
            stored = await threads.append(tx, project["id"], thread_id, "moderator", originator, message, incoming.trace_id)
            payload = reply_payload(thread_id, [stored], incoming.trace_id, originator)
            await events.add("message.received", "message.reply", payload)
        _publish(services, project, thread_id, events.hub)
    return Outcome(delivered=incoming.delivered(thread_id), reply=payload, events=events.hub)


# -- the fallback agent -----------------------------------------------------------------------

async def _agent_answer(services: Services, project: dict[str, Any], thread_id: str, incoming: Incoming, decision: Decision) -> None:
    """Asks the project's agent (Agents API, its own thread per messaging thread, usage and
    credits as any agent call) and sends its answer; when it cannot answer, the UNKNOWN step does."""
    from ..agents import chat as chat_mod

    agent_thread = str(uuid.uuid5(_AGENT_THREAD_NS, f"{project['id']}|{thread_id}|{project['agent_id']}"))
    principal = Principal(org_id=project["org_id"], key_id="")
    chat_input = chat_mod.ChatInput(project["agent_id"], [{"role": "user", "content": incoming.speech, "id": short_id("msg")}])
    hub_events: list[dict[str, Any]] = []
    silent = {"paused": False}

    async def in_tx(tx, outcome: dict[str, Any]) -> None:
        thread = await threads.get_thread(tx, project["id"], thread_id)
        if threads.paused_now(thread):
            silent["paused"] = True  # a human took over meanwhile: the bot stays silent
            return
        text = (outcome["text"] or "").strip()
        if not text:
            return
        message = {
            "fallback": text, "silent": False, "replyTo": incoming.speech, "originator": BOT_ORIGINATOR,
            "actions": [], "responses": [{"type": "text", "payload": {"text": text}, "delay": 0}],
            "flow": None, "step": {"stepId": None, "title": "UNKNOWN", "type": "UNKNOWN"},
            "params": decision.state.get("params", {}), "contexts": [], "intents": [],
            "agent": {"agentId": project["agent_id"], "runId": outcome["run_id"]},
        }
        stored = await threads.append(tx, project["id"], thread_id, "bot", BOT_ORIGINATOR, message, incoming.trace_id)
        events = _Events(tx, project)
        await events.add("message.received", "message.reply", reply_payload(thread_id, [stored], incoming.trace_id))
        hub_events.extend(events.hub)

    try:
        agent = await chat_mod.prepare(services, principal, chat_input)
        chat_input.thread_id = agent_thread  # chat() creates it on first use; later turns continue it
        await chat_mod.chat(services, principal, chat_input, agent, in_tx=in_tx)
    except Exception as exc:  # any failure (model, credits, agent gone) falls back to the flow's UNKNOWN
        log.warning("fallback agent %s failed for thread %s: %r", project.get("agent_id"), thread_id, exc)
        hub_events.clear()
    if not hub_events and not silent["paused"]:  # no answer (an error, or empty text)
        if decision.unknown_step is not None:
            await _unknown_instead(services, project, thread_id, incoming, decision)
        return
    _publish(services, project, thread_id, hub_events)


async def _unknown_instead(services: Services, project: dict[str, Any], thread_id: str, incoming: Incoming, decision: Decision) -> None:
    async with thread_lock(services, project["id"], thread_id):
        thread = await threads.get_thread(services.store, project["id"], thread_id)
        if threads.paused_now(thread):
            return
        graph = await graph_for(services, project)
        if decision.unknown_step["stepId"] not in graph.steps:
            return
        fallback = unknown_reply(graph, graph.steps[decision.unknown_step["stepId"]], thread["state"], incoming.engine_input())
        async with services.store.batch() as tx:
            events = _Events(tx, project)
            await threads.save_state(tx, project["id"], thread_id, fallback.state)
            await _store_replies(events, project, thread_id, fallback, incoming.trace_id)
        _publish(services, project, thread_id, events.hub)


# -- pause and resume -------------------------------------------------------------------------

async def set_paused(services: Services, project: dict[str, Any], thread_id: str, paused: bool, seconds: int | None = None) -> None:
    """Pauses (optionally for ``seconds``) or resumes the bot on a thread; tells the webhook
    and the hub. A thread that has sent nothing yet starts here (a human agent took it first)."""
    async with thread_lock(services, project["id"], thread_id):
        async with services.store.write() as tx:
            await threads.ensure_thread(tx, project["id"], thread_id)
            events = _Events(tx, project)
            await threads.set_paused(tx, project["id"], thread_id, paused, seconds)
            await _pause_events(events, thread_id, paused, seconds)
        _publish(services, project, thread_id, events.hub)
