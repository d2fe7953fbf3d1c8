"""Long conversations cannot freeze the server: the prompt is fitted to the context window in linear
time, off the event loop, and a request may send at most ``max_messages`` messages (a quick 400 in
each API's error shape)."""

from __future__ import annotations

import threading
import time

import pytest

from flowbox.agents.chat import fit_context
from tests.helpers import create_agent


@pytest.fixture
def server(org_server):
    """One server for the module (the model loads once); each test works in an org of its own."""
    return org_server


def words(n: int, last_role: str = "user") -> list[dict]:
    """``n`` one-word messages, alternating, the last from ``last_role``."""
    roles = ["user", "assistant"] if (n % 2 == 1) == (last_role == "user") else ["assistant", "user"]
    return [{"role": roles[i % 2], "content": f"word{i}"} for i in range(n)]


def test_fit_context_keeps_the_longest_suffix_that_fits_in_linear_time(server):
    backend = server.call(server.services.models.get("local"))
    system = [{"role": "system", "content": "You answer in one word."}]
    history = words(3000)
    budget = backend.n_ctx - 256
    started = time.perf_counter()
    fitted = fit_context(backend, system, history, 256)
    elapsed = time.perf_counter() - started
    kept = len(fitted) - len(system)
    assert fitted[:1] == system and fitted[1:] == history[-kept:]
    assert backend.count_tokens(fitted) <= budget
    assert backend.count_tokens(system + history[-kept - 1:]) > budget  # one more message would not fit
    assert 100 < kept < 3000
    # Dropping one message at a time and re-counting the rest took minutes for this history.
    assert elapsed < 15, f"fitting 3,000 messages took {elapsed:.1f}s"

    # A history that fits is kept whole; one message too long for any room is kept alone
    # (the model then answers the documented context-too-long error).
    assert fit_context(backend, system, history[-5:], 256) == system + history[-5:]
    huge = [{"role": "user", "content": "word " * 5000}]
    assert fit_context(backend, [], history[-5:] + huge, 256) == huge


def test_fit_context_never_starts_on_a_tool_result(server):
    backend = server.call(server.services.models.get("local"))
    call = {"role": "assistant", "content": "Let me look that up.", "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"q": "x"}}]}
    result = {"role": "tool", "tool_call_id": "c1", "name": "lookup", "content": "\"found\""}
    last = {"role": "user", "content": "and now?"}
    history = words(600, last_role="assistant") + [call, result, last]
    # Room for the tool result and the last message, not for the call: the result goes too.
    room = backend.count_tokens([result, last])
    assert fit_context(backend, [], history, backend.n_ctx - room) == [last]
    room = backend.count_tokens([call, result, last])
    assert fit_context(backend, [], history, backend.n_ctx - room) == [call, result, last]


def _healthz_latencies(server, busy: threading.Thread) -> list[float]:
    """/healthz round trips, measured from this thread, for as long as ``busy`` runs."""
    latencies = []
    with server.client(key="") as probe:
        while busy.is_alive():
            started = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            busy.join(0.05)
    return latencies


def test_a_chat_of_a_thousand_messages_answers_while_the_server_stays_responsive(make_server):
    # A small window and one model thread: the point is the event loop, not the model's speed on a
    # shared machine (the fitting itself is timed at full size above).
    server = make_server(n_ctx=1024, n_threads=1)
    client = server.client()
    agent = create_agent(client, instructions="Answer in one word.", max_tokens=4)
    limit = server.config.max_messages
    assert limit >= 1000
    answers: dict = {}

    def chat(name: str, body: dict) -> None:
        started = time.perf_counter()
        response = server.client().post(f"/api/public/agent/{agent['id']}/chat", json=body, timeout=300)
        answers[name] = (response, time.perf_counter() - started)

    first = threading.Thread(target=chat, args=("first", {"messages": words(1000)}))
    first.start()
    latencies = _healthz_latencies(server, first)
    response, elapsed = answers["first"]
    assert response.status_code == 200, response.text
    # A blocked loop would hold /healthz for much of the chat; the bound grows with the chat's own time,
    # so a slow machine (which slows both) does not fail it.
    assert latencies and max(latencies) < max(1.0, elapsed / 4), f"/healthz took up to {max(latencies):.2f}s of a {elapsed:.1f}s chat"
    thread_id = response.json()["body"]["metadata"]["thread_id"]

    # The thread now holds more than max_messages; continuing it still answers, prompted from the
    # thread's most recent messages.
    second = threading.Thread(target=chat, args=("second", {"messages": words(limit), "thread_id": thread_id}))
    second.start()
    latencies = _healthz_latencies(server, second)
    response, elapsed = answers["second"]
    assert response.status_code == 200, response.text
    assert max(latencies) < max(1.0, elapsed / 4), f"/healthz took up to {max(latencies):.2f}s of a {elapsed:.1f}s second chat"
    history = client.get(f"/api/public/agent/{agent['id']}/threads/{thread_id}").json()["messages"]
    assert len(history) == 2 * limit + 2


def test_too_many_messages_is_a_quick_400_in_each_api(server):
    client = server.client()
    agent = create_agent(client)
    many = words(20_000)
    limit = server.config.max_messages

    def post(path: str, body: dict, **headers):
        started = time.perf_counter()
        response = client.post(path, json=body, headers=headers)
        return response, time.perf_counter() - started

    response, elapsed = post(f"/api/public/agent/{agent['id']}/chat", {"messages": many})
    assert response.status_code == 400 and elapsed < 5
    assert response.json() == {"error": "Validation failed",
                               "message": f"\"messages\" holds 20000 messages; at most {limit} are accepted in one request."}
    response, elapsed = post("/agent", {"agent_id": agent["id"], "messages": many})  # the legacy form
    assert response.status_code == 400 and elapsed < 5 and "at most" in response.json()["message"]
    response, elapsed = post(f"/api/public/agent/{agent['id']}/chat", {"messages": many}, accept="text/event-stream")
    assert response.status_code == 400 and elapsed < 5

    for model in ("local", agent["id"]):
        response, elapsed = post("/v1/chat/completions", {"model": model, "messages": many})
        assert response.status_code == 400 and elapsed < 5
        assert response.json() == {"error": {
            "message": f"Invalid 'messages': array too long. Expected an array with maximum length {limit}, "
                       "but got an array with length 20000 instead.",
            "type": "invalid_request_error", "param": "messages", "code": "array_above_max_length"}}

    # Nothing was stored or charged, and the server answers as before.
    assert client.get("/healthz").status_code == 200
    assert server.call(server.services.store.fetchone("SELECT COUNT(*) AS n FROM runs WHERE org_id = ?", [server.org_id]))["n"] == 0


def test_message_limit_is_a_setting(make_server):
    server = make_server(max_messages=3, n_threads=1)
    client = server.client()
    agent = create_agent(client, max_tokens=2)
    refused = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": words(4)})
    assert refused.status_code == 400 and "at most 3" in refused.json()["message"]
    answered = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": words(3)})
    assert answered.status_code == 200, answered.text
