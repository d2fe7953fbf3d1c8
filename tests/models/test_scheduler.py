"""The model's fair queue, with real asyncio tasks: turns go round-robin across orgs, and one org's
burst 503s only that org while another org's request still gets a place to wait."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flowbox.errors import ModelBusy
from flowbox.models.scheduler import FairScheduler
from tests.helpers import create_agent, eventually


async def _hold(scheduler: FairScheduler, key: str, order: list[str], release: asyncio.Event) -> str:
    async with scheduler.slot(key):
        order.append(key)
        await release.wait()
    return key


async def _until(predicate, deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        assert loop.time() < end, "state not reached"
        await asyncio.sleep(0)


def test_turns_go_round_robin_across_orgs():
    async def go():
        scheduler = FairScheduler(max_waiting=16)
        order: list[str] = []
        release = asyncio.Event()
        release.set()
        first = asyncio.Event()
        holder = asyncio.ensure_future(_hold(scheduler, "x", order, first))
        await _until(lambda: scheduler.busy)
        tasks = [asyncio.ensure_future(_hold(scheduler, key, order, release)) for key in ["a", "a", "a", "b", "b", "c"]]
        await _until(lambda: scheduler.waiting == 6)
        first.set()
        await asyncio.gather(holder, *tasks)
        assert order == ["x", "a", "b", "c", "a", "b", "a"]
        assert not scheduler.busy and scheduler.waiting == 0

    asyncio.run(go())


def test_one_orgs_burst_does_not_refuse_another_org():
    async def go():
        scheduler = FairScheduler(max_waiting=8)
        order: list[str] = []
        gate = asyncio.Event()
        holder = asyncio.ensure_future(_hold(scheduler, "busy", order, gate))
        await _until(lambda: scheduler.busy)
        burst = [asyncio.ensure_future(_hold(scheduler, "busy", order, gate)) for _ in range(8)]
        await _until(lambda: scheduler.waiting == 8)
        # The queue is full of one org: its next request is refused...
        with pytest.raises(ModelBusy):
            async with scheduler.slot("busy"):
                pass
        # ...but another org's request still gets a place, displacing the burst's newest.
        quiet = asyncio.ensure_future(_hold(scheduler, "quiet", order, gate))
        await _until(lambda: scheduler.waiting_for("quiet") == 1)
        await _until(lambda: burst[-1].done())
        with pytest.raises(ModelBusy):
            burst[-1].result()
        assert scheduler.waiting == 8
        # Orgs share the room: the quiet org gets about half, never the burst's whole queue.
        more = [asyncio.ensure_future(_hold(scheduler, "quiet", order, gate)) for _ in range(6)]
        await _until(lambda: sum(t.done() for t in burst + more) == 7)
        assert scheduler.waiting == 8
        assert scheduler.waiting_for("quiet") == 4 and scheduler.waiting_for("busy") == 4
        refused_quiet = [t for t in more if t.done()]
        assert len(refused_quiet) == 3  # once it held its share, its own requests were the ones refused
        for task in refused_quiet:
            with pytest.raises(ModelBusy):
                task.result()
        gate.set()
        done = await asyncio.gather(holder, *burst, quiet, *more, return_exceptions=True)
        served = [d for d in done if isinstance(d, str)]
        assert served.count("quiet") == 4 and served.count("busy") == 5  # the holder and four of the burst
        assert order[1:3] in (["busy", "quiet"], ["quiet", "busy"])  # turns alternate once both wait
        assert not scheduler.busy and scheduler.waiting == 0

    asyncio.run(go())


def test_a_cancelled_waiter_gives_up_its_place():
    async def go():
        scheduler = FairScheduler(max_waiting=2)
        order: list[str] = []
        gate = asyncio.Event()
        holder = asyncio.ensure_future(_hold(scheduler, "a", order, gate))
        await _until(lambda: scheduler.busy)
        waiters = [asyncio.ensure_future(_hold(scheduler, "a", order, gate)) for _ in range(2)]
        await _until(lambda: scheduler.waiting == 2)
        waiters[0].cancel()
        await _until(lambda: scheduler.waiting == 1)
        late = asyncio.ensure_future(_hold(scheduler, "a", order, gate))
        await _until(lambda: scheduler.waiting == 2)
        gate.set()
        results = await asyncio.gather(holder, *waiters, late, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert order == ["a", "a", "a"]
        assert not scheduler.busy and scheduler.waiting == 0

    asyncio.run(go())


def test_a_full_queue_of_equal_shares_refuses_the_newcomer():
    async def go():
        scheduler = FairScheduler(max_waiting=1)
        order: list[str] = []
        gate = asyncio.Event()
        holder = asyncio.ensure_future(_hold(scheduler, "x", order, gate))
        await _until(lambda: scheduler.busy)
        a1 = asyncio.ensure_future(_hold(scheduler, "a", order, gate))
        await _until(lambda: scheduler.waiting == 1)
        # Full with one waiter: no org holds more than a newcomer would, so the newcomer is refused.
        with pytest.raises(ModelBusy):
            async with scheduler.slot("b"):
                pass
        gate.set()
        await asyncio.gather(holder, a1)
        assert order == ["x", "a"]
        assert not scheduler.busy and scheduler.waiting == 0

    asyncio.run(go())


def test_slots_run_together_and_a_capped_org_waits_while_others_run():
    """Three slots, at most two per org: an org's third request waits even with a slot free (it is
    not refused), another org's request takes the free slot, and the capped one runs as soon as
    its own org's generation ends, ahead of later requests of other orgs."""
    async def go():
        scheduler = FairScheduler(max_waiting=4, slots=3, max_per_key=2)
        order: list[str] = []
        gates = {name: asyncio.Event() for name in ["a1", "a2", "a3", "b1", "b2", "c1"]}

        async def hold(name: str) -> str:
            async with scheduler.slot(name[0]):
                order.append(name)
                await gates[name].wait()
            return name

        tasks = {name: asyncio.ensure_future(hold(name)) for name in ["a1", "a2", "a3"]}
        await _until(lambda: scheduler.running == 2 and scheduler.waiting == 1)
        assert order == ["a1", "a2"] and scheduler.waiting_for("a") == 1  # a slot is free, but a3 waits
        tasks["b1"] = asyncio.ensure_future(hold("b1"))
        await _until(lambda: "b1" in order)
        assert scheduler.running == 3 and scheduler.running_for("a") == 2
        for name in ["b2", "c1"]:  # all slots taken: these wait their turn
            tasks[name] = asyncio.ensure_future(hold(name))
        await _until(lambda: scheduler.waiting == 3)
        gates["b1"].set()  # a3 is first in the round but capped: b2's org is next
        await _until(lambda: "b2" in order)
        assert scheduler.waiting_for("a") == 1 and scheduler.running == 3
        gates["a1"].set()  # now a3 may run, and it comes before c1
        await _until(lambda: "a3" in order)
        assert scheduler.running == 3 and scheduler.waiting_for("c") == 1
        for gate in gates.values():
            gate.set()
        assert sorted(await asyncio.gather(*tasks.values())) == sorted(gates)
        assert order == ["a1", "a2", "b1", "b2", "a3", "c1"]
        assert not scheduler.busy and scheduler.running == 0 and scheduler.waiting == 0

    asyncio.run(go())


def test_a_burst_of_one_org_leaves_room_for_another_end_to_end(make_server):
    """Through the Agents API on a real server: the model is held busy, org A fills the queue, and
    org B's chat still gets a place (A's newest waiting chat is the one answered 503)."""
    server = make_server(max_queue=2, n_threads=1, n_ctx=512, parallel_sequences=2, max_generations_per_org=1)
    other_org, other_key = server.new_org("quiet")
    agent_a = create_agent(server.client(), instructions="Answer in one word.", max_tokens=2)
    agent_b = create_agent(server.client(other_key), instructions="Answer in one word.", max_tokens=2)
    backend = server.call(server.services.models.get("local"))
    scheduler = backend.scheduler
    assert (scheduler.slots, scheduler.max_per_key) == (2, 1)  # as configured
    release = asyncio.Event()
    held = threading.Event()

    async def hold():
        async def one(key: str):
            async with scheduler.slot(key):
                await release.wait()

        tasks = [asyncio.ensure_future(one(f"someone{i}")) for i in range(scheduler.slots)]  # every slot taken
        await _until(lambda: scheduler.running == scheduler.slots)
        held.set()
        await asyncio.gather(*tasks)

    holder = asyncio.run_coroutine_threadsafe(hold(), server.loop)
    assert held.wait(30)
    answers: dict[str, object] = {}

    def chat(name: str, key: str, agent: dict) -> threading.Thread:
        def go():
            answers[name] = server.client(key).post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi"}, timeout=300)

        thread = threading.Thread(target=go)
        thread.start()
        return thread

    a1 = chat("a1", server.key, agent_a)
    eventually(lambda: scheduler.waiting_for(server.org_id) == 1, "a1 waits")
    a2 = chat("a2", server.key, agent_a)
    eventually(lambda: scheduler.waiting_for(server.org_id) == 2, "a2 waits")
    a3 = chat("a3", server.key, agent_a)
    a3.join(60)
    assert answers["a3"].status_code == 503  # the queue is full, all of it A's: A's own request is refused
    b1 = chat("b1", other_key, agent_b)
    a2.join(60)  # displaced by B's request
    assert answers["a2"].status_code == 503
    assert answers["a2"].json()["body"]["message"] == "Service temporarily unavailable"
    eventually(lambda: scheduler.waiting_for(other_org) == 1, "b1 waits")
    server.loop.call_soon_threadsafe(release.set)
    holder.result(30)
    for thread in (a1, b1):
        thread.join(300)
    assert answers["a1"].status_code == 200 and answers["b1"].status_code == 200
    assert scheduler.waiting == 0
