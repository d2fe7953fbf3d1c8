"""The Agents API on a real server, real SQLite file and the real local model."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from flowbox import orgs
from tests.helpers import create_agent, eventually

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)

SERVER_OPTIONS = {"allow_private_outbound": True}  # a callback target on loopback
MISSING = {"error": "API key is required", "message": "Please provide an API key in the Authorization header"}
INVALID = {"error": "Invalid API key", "message": "The provided API key is not valid"}


def count_rows(server, table: str, *agent_ids: str) -> int:
    """Rows of ``table``, of the given agents only when some are named (the server is shared by the module)."""
    where = f" WHERE agent_id IN ({', '.join('?' * len(agent_ids))})" if agent_ids else ""

    async def go():
        row = await server.services.store.fetchone(f"SELECT COUNT(*) AS n FROM {table}{where}", list(agent_ids))
        return row["n"]

    return server.call(go())


@pytest.fixture
def server(org_server):
    """One server for the module (the model loads once); each test works in an org of its own."""
    return org_server


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


def test_client_chosen_thread_ids_start_and_continue_threads_of_their_agent(server):
    client = server.client()
    agent = create_agent(client, name="brief", max_tokens=8)  # short replies: the turns are what is tested
    url = f"/api/public/agent/{agent['id']}/chat"
    # the document's example: a thread id the client chose starts a thread with that id...
    first = client.post(url, json={"messages": "Hello, I have a question about my order", "thread_id": "thread_123456"})
    assert first.status_code == 200, first.text
    body = first.json()["body"]
    assert body["metadata"]["thread_id"] == "thread_123456"
    assert [m["role"] for m in body["conversation_history"]] == ["user", "assistant"]
    # ...and continues it
    second = client.post(url, json={"messages": {"role": "user", "content": "My order number is 42."}, "thread_id": "thread_123456"})
    history = second.json()["body"]["conversation_history"]
    assert second.json()["body"]["metadata"]["thread_id"] == "thread_123456"
    assert history[:2] == body["conversation_history"] and [m["role"] for m in history] == ["user", "assistant"] * 2
    stored = client.get(f"/api/public/agent/{agent['id']}/threads/thread_123456").json()
    assert stored == {"thread_id": "thread_123456", "agent_id": agent["id"], "messages": history}

    # the same id for another agent of the org, and for another org's agent (legacy endpoint), is each one's own thread
    other = create_agent(client, name="other", max_tokens=8)
    _, key = server.new_org("another org")
    theirs = create_agent(server.client(key=key), name="theirs", max_tokens=8)
    for agent_id, caller, path, extra in ((other["id"], client, f"/api/public/agent/{other['id']}/chat", {}),
                                          (theirs["id"], server.client(key=key), "/agent", {"agent_id": theirs["id"]})):
        response = caller.post(path, json={"messages": f"Hi, this is {agent_id}", "thread_id": "thread_123456", **extra})
        assert response.status_code == 200, response.text
        own = response.json()["body"]
        assert own["metadata"]["thread_id"] == "thread_123456"
        assert [m["content"] for m in own["conversation_history"]][0] == f"Hi, this is {agent_id}"
        assert len(own["conversation_history"]) == 2
        assert caller.get(f"/api/public/agent/{agent_id}/threads/thread_123456").json()["messages"] == own["conversation_history"]
    assert client.get(f"/api/public/agent/{agent['id']}/threads/thread_123456").json()["messages"] == history
    assert count_rows(server, "threads", agent["id"], other["id"], theirs["id"]) == 3

    # the legacy document's example id (a UUID) is a thread id too
    uuid_id = "123e4567-e89b-12d3-a456-426614174000"
    response = client.post("/agent", json={"agent_id": agent["id"], "messages": "Hi", "thread_id": uuid_id})
    assert response.status_code == 200 and response.json()["body"]["metadata"]["thread_id"] == uuid_id


def test_two_first_turns_on_one_new_thread_id_make_one_thread(server):
    agent = create_agent(server.client(), name="brief", max_tokens=8)
    url = f"{server.base_url}/api/public/agent/{agent['id']}/chat"
    answers: list[httpx.Response] = []

    def send(text: str) -> None:  # answers are checked in the test's thread
        answers.append(httpx.post(url, headers={"Authorization": server.key}, timeout=300,
                                  json={"messages": text, "thread_id": "both-at-once"}))

    senders = [threading.Thread(target=send, args=(text,)) for text in ("first question", "second question")]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    stored = server.client().get(f"/api/public/agent/{agent['id']}/threads/both-at-once").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"] * 2
    assert {stored[0]["content"], stored[2]["content"]} == {"first question", "second question"}
    assert count_rows(server, "threads", agent["id"]) == 1


def test_threads_of_a_database_from_before_per_agent_thread_ids_are_kept(tmp_path, make_server):
    import sqlite_utils

    from flowbox.db import connect, migration_sets

    path = tmp_path / "data" / "flowbox.db"  # where the server fixture's data dir keeps it
    path.parent.mkdir(parents=True)
    conn = connect(path)
    migration_sets()[0].apply(sqlite_utils.Database(conn), stop_before="m003_threads_per_agent")
    conn.executescript("""
        INSERT INTO orgs (id, name, created_at) VALUES ('org-1', 'old', '2025-01-01T00:00:00.000Z');
        INSERT INTO agents (id, org_id, name, created_at, updated_at)
            VALUES ('agent-1', 'org-1', 'old agent', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z');
        INSERT INTO threads (id, org_id, agent_id, created_at, updated_at)
            VALUES ('thread-1', 'org-1', 'agent-1', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z');
        INSERT INTO messages (id, thread_id, seq, role, content, created_at) VALUES
            ('msg-1', 'thread-1', 1, 'user', '"My name is Ada."', '2025-01-01T00:00:00.000Z'),
            ('msg-2', 'thread-1', 2, 'assistant', '"Hello Ada!"', '2025-01-01T00:00:00.000Z');
    """)
    conn.close()
    server = make_server()
    key, _ = server.call(orgs.create_key(server.services.store, "org-1", "old"))
    client = server.client(key=key)
    old = [{"role": "user", "content": "My name is Ada.", "id": "msg-1"}, {"role": "assistant", "content": "Hello Ada!", "id": "msg-2"}]
    assert client.get("/api/public/agent/agent-1/threads/thread-1").json()["messages"] == old
    response = client.post("/api/public/agent/agent-1/chat", json={"messages": "What is my name?", "thread_id": "thread-1"})
    assert response.status_code == 200, response.text
    assert response.json()["body"]["conversation_history"][:2] == old
    assert len(response.json()["body"]["conversation_history"]) == 4


def test_async_callback_ack_and_background_run(server):
    client = server.client()
    agent = create_agent(client, name="helper", max_tokens=16)
    before = count_rows(server, "messages", agent["id"])
    response = client.post(f"/api/public/agent/{agent['id']}/chat",  # a thread id of the client's, new
                           json={"messages": "Hello there", "callback_url": "http://127.0.0.1:9/hook", "thread_id": "callback-1"})
    assert response.status_code == 202
    assert response.json() == {"message": "Request accepted and being processed asynchronously", "status": "processing"}

    async def run_state():
        return await server.services.store.fetchall("SELECT status, thread_id, response FROM runs WHERE agent_id = ?", [agent["id"]])

    rows = eventually(lambda: (r := server.call(run_state())) and r[0]["status"] != "processing" and r[0]["response"] and r,
                      "the async run finished", interval=0.1)
    assert rows[0]["status"] == "completed" and rows[0]["thread_id"] == "callback-1"
    assert count_rows(server, "messages", agent["id"]) == before + 2
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
    (b'{"messages": "hi", "thread_id": ""}', 400, "Validation failed"),
    (b'{"messages": "hi", "thread_id": "a/b"}', 400, "Validation failed"),  # thread ids are path segments
    (b'{"messages": "hi", "thread_id": ".."}', 400, "Validation failed"),
    (b'{"messages": "hi", "thread_id": "my thread"}', 400, "Validation failed"),
    (b'{"messages": "hi", "thread_id": "t\\u00ebst"}', 400, "Validation failed"),
    (b'{"messages": "hi", "thread_id": "line\\n"}', 400, "Validation failed"),
    (b'{"messages": "hi", "thread_id": "' + b"x" * 129 + b'"}', 400, "Validation failed"),
    (b'{"messages": "hi", "callback_url": "ftp://example.com/x"}', 400, "Validation failed"),
    (b'{"messages": "half \\ud800 a character"}', 400, "Validation failed"),  # JSON carries it; UTF-8 cannot
    (b'{"messages": [{"role": "user", "content": "\\udfff"}]}', 400, "Validation failed"),
]


def test_bad_input_is_4xx_and_changes_nothing(server, agent):
    client = server.client()
    good = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hello"}).json()["body"]
    thread_id = good["metadata"]["thread_id"]
    messages_before = count_rows(server, "messages", agent["id"])
    url = f"/api/public/agent/{agent['id']}/chat"
    for raw, status, error in BAD_BODIES:
        response = client.post(url, content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == status, (raw, response.text)
        assert response.json()["error"] == error, (raw, response.text)
    # unknown agent; reading a thread that was never started
    response = client.post("/api/public/agent/no-such-agent/chat", json={"messages": "hi"})
    assert response.status_code == 404 and response.json()["error"] == "Agent not found"
    response = client.get(f"/api/public/agent/{agent['id']}/threads/no-such-thread")
    assert response.status_code == 404 and response.json()["error"] == "Thread not found"
    # over-long message and huge body
    response = client.post(url, json={"messages": "x" * (server.config.max_message_chars + 1)})
    assert response.status_code == 400
    response = client.post(url, content=b'{"messages": "' + b"x" * (server.config.max_body_bytes + 10) + b'"}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert count_rows(server, "messages", agent["id"]) == messages_before
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
    # a thread of this org is not reachable with the other org's agent: the same id is that agent's own thread
    ours = server.client().post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hi"}).json()["body"]
    thread_id = ours["metadata"]["thread_id"]
    mine = create_agent(other, name="mine", max_tokens=8)
    theirs = other.post(f"/api/public/agent/{mine['id']}/chat", json={"messages": "hello", "thread_id": thread_id})
    assert theirs.status_code == 200, theirs.text
    assert [m["content"] for m in theirs.json()["body"]["conversation_history"]][:1] == ["hello"]
    assert len(theirs.json()["body"]["conversation_history"]) == 2
    assert other.get(f"/api/public/agent/{agent['id']}/threads/{thread_id}").status_code == 403
    assert server.client().get(f"/api/public/agent/{agent['id']}/threads/{thread_id}").json()["messages"] == ours["conversation_history"]
    assert server.client().get(f"/api/public/agent/{agent['id']}").json()["name"] == "helper"


def test_unknown_route_and_method_are_json_4xx(server):
    client = server.client()
    response = client.get("/api/public/nothing-here")
    assert response.status_code == 404 and "error" in response.json()
    response = client.put("/api/public/agent")
    assert response.status_code == 405 and "error" in response.json()


def test_cheap_get_stays_fast_while_generating(server):
    client = server.client()
    agent = create_agent(client, name="talker", max_tokens=100)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": server.key}, timeout=120) as chat_client:
        done, took = threading.Event(), []

        def chat():
            started = time.perf_counter()
            chat_client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Write a long story about a dragon."})
            took.append(time.perf_counter() - started)
            done.set()

        thread = threading.Thread(target=chat)
        thread.start()
        eventually(lambda: server.local_model().scheduler.busy, "the model generating")
        latencies = []
        while not done.is_set() and len(latencies) < 20:
            start = time.perf_counter()
            assert client.get("/api/public/agent").status_code == 200
            latencies.append(time.perf_counter() - start)
        thread.join()
    assert latencies, "the chat finished before any GET was made"
    # the loop must not be blocked by the model: a blocked loop holds a GET for much of the generation. The
    # bound grows with the generation's own time, so a slow machine (which slows both) does not fail it.
    assert max(latencies) < max(0.5, took[0] / 4), (took, latencies)
