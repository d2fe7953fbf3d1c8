"""The Agents API on a real server, real SQLite file and the real local model."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import create_agent

from flowbox import orgs

MISSING = {"error": "API key is required", "message": "Please provide an API key in the Authorization header"}
INVALID = {"error": "Invalid API key", "message": "The provided API key is not valid"}


def count_rows(server, table: str) -> int:
    async def go():
        row = await server.services.store.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
        return row["n"]

    return server.call(go())


@pytest.fixture
def agent(server):
    return create_agent(server.client(), name="helper", instructions="You are a helpful assistant. Answer in one short sentence.",
                        max_tokens=24, tools=["calculator", "datetime"])


def test_authentication_errors_are_the_documented_bodies(server, agent):
    for path, method in [("/api/public/agent", "GET"), (f"/api/public/agent/{agent['id']}/chat", "POST"), ("/agent", "POST")]:
        response = server.client(key="").request(method, path, json={"messages": "hi", "agent_id": agent["id"]})
        assert response.status_code == 401 and response.json() == MISSING
        response = server.client(key="fbx_not-a-key").request(method, path, json={"messages": "hi", "agent_id": agent["id"]})
        assert response.status_code == 401 and response.json() == INVALID
    # the raw key (documented) and a Bearer key both work
    assert server.client().get("/api/public/agent").status_code == 200
    assert server.client(key=f"Bearer {server.key}").get("/api/public/agent").status_code == 200


def test_revoked_key_stops_working(server, agent):
    async def make_and_revoke():
        key, record = await orgs.create_key(server.services.store, server.org_id, "temp")
        return key, record["id"]

    key, key_id = server.call(make_and_revoke())
    assert server.client(key=key).get("/api/public/agent").status_code == 200
    assert server.call(orgs.revoke_key(server.services.store, key_id))
    response = server.client(key=key).get("/api/public/agent")
    assert response.status_code == 401 and response.json() == INVALID


def test_list_agents(server, agent):
    body = server.client().get("/api/public/agent").json()
    assert [a["id"] for a in body["agents"]] == [agent["id"]]
    listed = body["agents"][0]
    assert listed["name"] == "helper" and listed["tools"] == ["calculator", "datetime"] and listed["model"] == "local"


def test_chat_response_shape_and_thread_continuation(server, agent):
    client = server.client()
    first = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hello, I have a question about my order"})
    assert first.status_code == 200, first.text
    payload = first.json()
    assert payload["statusCode"] == 200
    body = payload["body"]
    assert body["agent_id"] == agent["id"]
    history = body["conversation_history"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == "Hello, I have a question about my order"
    assert isinstance(history[1]["content"], str) and history[1]["content"]
    meta = body["metadata"]
    assert set(meta) == {"id", "model", "timestamp", "tool_calls", "execution_time", "used_credits", "thread_id"}
    assert meta["tool_calls"] == {} and isinstance(meta["execution_time"], int) and meta["used_credits"] >= 1
    assert meta["model"].startswith("SmolLM2")
    assert meta["timestamp"].endswith("Z")

    # the object form continues the thread: the history grows, the thread id stays
    second = client.post(f"/api/public/agent/{agent['id']}/chat",
                         json={"messages": {"role": "user", "content": "My order number is 42."}, "thread_id": meta["thread_id"]})
    body2 = second.json()["body"]
    assert body2["metadata"]["thread_id"] == meta["thread_id"]
    assert [m["role"] for m in body2["conversation_history"]] == ["user", "assistant", "user", "assistant"]
    assert body2["conversation_history"][:2] == history
    assert body2["conversation_history"][2]["content"] == "My order number is 42."
    # the array form, with an earlier assistant message, starts a new thread
    third = client.post(f"/api/public/agent/{agent['id']}/chat",
                        json={"messages": [{"role": "user", "content": "Hi there!"}, {"role": "assistant", "content": "Hello!"},
                                           {"role": "user", "content": "Say hi again."}]})
    body3 = third.json()["body"]
    assert body3["metadata"]["thread_id"] != meta["thread_id"]
    assert [m["role"] for m in body3["conversation_history"]] == ["user", "assistant", "user", "assistant"]
    # the stored thread reads back the same
    stored = client.get(f"/api/public/agent/{agent['id']}/threads/{meta['thread_id']}").json()
    assert stored["messages"] == body2["conversation_history"]


def test_tool_call_appears_in_history(server, agent):
    response = server.client().post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "What is 37 * 41?"})
    body = response.json()["body"]
    history = body["conversation_history"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    call = history[1]["content"][-1]
    assert call["type"] == "tool-call" and call["toolName"] == "calculator" and call["args"] == {"expression": "37 * 41"}
    result = history[2]["content"][0]
    assert result == {"type": "tool-result", "toolCallId": call["toolCallId"], "toolName": "calculator",
                      "result": {"expression": "37 * 41", "result": 1517}}
    assert body["metadata"]["tool_calls"] == {
        call["toolCallId"]: {"toolName": "calculator", "args": {"expression": "37 * 41"}, "result": {"expression": "37 * 41", "result": 1517}}
    }
    assert all(m["id"].startswith("msg-") for m in history)


def test_legacy_endpoint(server, agent):
    client = server.client()
    response = client.post("/agent", json={"agent_id": agent["id"], "messages": "What day is it today?"})
    assert response.status_code == 200, response.text
    body = response.json()["body"]
    meta = body["metadata"]
    assert isinstance(meta["execution_time"], str) and float(meta["execution_time"]) > 0
    assert isinstance(meta["tool_calls"], list)
    assert [c["toolName"] for c in meta["tool_calls"]] == ["datetime"]
    assert body["conversation_history"][1]["content"][0]["type"] == "tool-call"
    # agent_id missing or empty: the documented message
    for bad in ({"messages": "hi"}, {"agent_id": "", "messages": "hi"}, {"agent_id": 5, "messages": "hi"}):
        response = client.post("/agent", json=bad)
        assert response.status_code == 400
        assert response.json() == {"error": "agent_id is required and must be a non-empty string"}
    # continuing a thread through the legacy endpoint
    again = client.post("/agent", json={"agent_id": agent["id"], "messages": "Thanks!", "thread_id": meta["thread_id"]})
    assert len(again.json()["body"]["conversation_history"]) == len(body["conversation_history"]) + 2


def test_async_callback_ack_and_background_run(make_server):
    server = make_server(allow_private_outbound=True)  # the callback target is on loopback
    client = server.client()
    agent = create_agent(client, name="helper", max_tokens=16)
    before = count_rows(server, "messages")
    response = client.post(f"/api/public/agent/{agent['id']}/chat",
                           json={"messages": "Hello there", "callback_url": "http://127.0.0.1:9/hook"})
    assert response.status_code == 202
    assert response.json() == {"message": "Request accepted and being processed asynchronously", "status": "processing"}

    async def run_state():
        return await server.services.store.fetchall("SELECT status, thread_id, response FROM runs WHERE callback_url IS NOT NULL")

    deadline = time.time() + 60
    while time.time() < deadline:
        rows = server.call(run_state())
        if rows and rows[0]["status"] != "processing" and rows[0]["response"]:
            break
        time.sleep(0.2)
    assert rows[0]["status"] == "completed"
    assert count_rows(server, "messages") == before + 2
    stored = client.get(f"/api/public/agent/{agent['id']}/threads/{rows[0]['thread_id']}").json()
    assert stored["messages"][0]["content"] == "Hello there"


BAD_BODIES = [
    (b"{not json", 400, "Invalid JSON body"),
    (b"", 400, "Invalid JSON body"),
    (b"[1, 2]", 400, "Invalid JSON body"),
    (b'{"messages": ""}', 400, "Validation failed"),
    (b'{"messages": []}', 400, "Validation failed"),
    (b'{"messages": 42}', 400, "Validation failed"),
    (b'{"messages": {"role": "user"}}', 400, "Validation failed"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "Validation failed"),
    (b'{"messages": [{"role": "user", "content": {"a": 1}}]}', 400, "Validation failed"),
    (b'{"messages": "hi", "thread_id": 12}', 400, "Validation failed"),
    (b'{"messages": "hi", "callback_url": "ftp://example.com/x"}', 400, "Validation failed"),
    (b'{"messages": "half \\ud800 a character"}', 400, "Validation failed"),  # JSON carries it; UTF-8 cannot
    (b'{"messages": [{"role": "user", "content": "\\udfff"}]}', 400, "Validation failed"),
]


def test_bad_input_is_4xx_and_changes_nothing(server, agent):
    client = server.client()
    good = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hello"}).json()["body"]
    thread_id = good["metadata"]["thread_id"]
    messages_before = count_rows(server, "messages")
    url = f"/api/public/agent/{agent['id']}/chat"
    for raw, status, error in BAD_BODIES:
        response = client.post(url, content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == status, (raw, response.text)
        assert response.json()["error"] == error, (raw, response.text)
    # unknown agent, unknown thread, thread of another agent
    response = client.post("/api/public/agent/no-such-agent/chat", json={"messages": "hi"})
    assert response.status_code == 404 and response.json()["error"] == "Agent not found"
    response = client.post(url, json={"messages": "hi", "thread_id": "no-such-thread"})
    assert response.status_code == 404 and response.json()["error"] == "Thread not found"
    other = create_agent(client, name="other")
    response = client.post(f"/api/public/agent/{other['id']}/chat", json={"messages": "hi", "thread_id": thread_id})
    assert response.status_code == 404
    # over-long message and huge body
    response = client.post(url, json={"messages": "x" * (server.config.max_message_chars + 1)})
    assert response.status_code == 400
    response = client.post(url, content=b'{"messages": "' + b"x" * (server.config.max_body_bytes + 10) + b'"}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert count_rows(server, "messages") == messages_before
    # the thread is intact and still usable
    stored = client.get(f"/api/public/agent/{agent['id']}/threads/{thread_id}").json()
    assert stored["messages"] == good["conversation_history"]


def test_agent_admin_validation(server):
    client = server.client()
    for bad in ({}, {"name": ""}, {"name": "a", "model": "gpt-9"}, {"name": "a", "temperature": 5},
                {"name": "a", "tools": ["rm -rf"]}, {"name": "a", "max_tokens": 0}, {"name": "a", "colour": "red"}):
        response = client.post("/api/public/agent", json=bad)
        assert response.status_code == 400 and response.json()["error"] == "Validation failed", bad
    agent = create_agent(client, name="a")
    response = client.patch(f"/api/public/agent/{agent['id']}", json={"instructions": "Be terse.", "temperature": 0.5})
    assert response.status_code == 200 and response.json()["instructions"] == "Be terse."
    assert client.patch(f"/api/public/agent/{agent['id']}", json={"temperature": "hot"}).status_code == 400
    assert client.get(f"/api/public/agent/{agent['id']}").json()["temperature"] == 0.5
    assert client.delete(f"/api/public/agent/{agent['id']}").status_code == 200
    assert client.get(f"/api/public/agent/{agent['id']}").status_code == 404


def test_org_isolation(server, agent):
    _, other_key = server.new_org("other org")
    other = server.client(key=other_key)
    assert other.get("/api/public/agent").json() == {"agents": []}
    response = other.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hi"})
    assert response.status_code == 403
    assert response.json() == {"error": "Access denied", "message": "This agent does not belong to your organisation"}
    response = other.post("/agent", json={"agent_id": agent["id"], "messages": "hi"})
    assert response.status_code == 403
    assert other.patch(f"/api/public/agent/{agent['id']}", json={"name": "stolen"}).status_code == 403
    assert other.delete(f"/api/public/agent/{agent['id']}").status_code == 403
    # a thread of this org is not reachable with the other org's agent
    thread_id = server.client().post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hi"}).json()["body"]["metadata"]["thread_id"]
    mine = create_agent(other, name="mine")
    assert other.post(f"/api/public/agent/{mine['id']}/chat", json={"messages": "hi", "thread_id": thread_id}).status_code == 404
    assert server.client().get(f"/api/public/agent/{agent['id']}").json()["name"] == "helper"


def test_unknown_route_and_method_are_json_4xx(server):
    client = server.client()
    response = client.get("/api/public/nothing-here")
    assert response.status_code == 404 and "error" in response.json()
    response = client.put("/api/public/agent")
    assert response.status_code == 405 and "error" in response.json()


def test_cheap_get_stays_fast_while_generating(server):
    client = server.client()
    agent = create_agent(client, name="talker", max_tokens=200)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": server.key}, timeout=120) as chat_client:
        import threading

        done = threading.Event()

        def chat():
            chat_client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Write a long story about a dragon."})
            done.set()

        thread = threading.Thread(target=chat)
        thread.start()
        time.sleep(0.3)
        latencies = []
        while not done.is_set() and len(latencies) < 20:
            start = time.perf_counter()
            assert client.get("/api/public/agent").status_code == 200
            latencies.append(time.perf_counter() - start)
        thread.join()
    assert latencies, "the chat finished before any GET was made"
    # generous: the loop must not be blocked by the model (a blocked loop means seconds)
    assert max(latencies) < 0.5, latencies
