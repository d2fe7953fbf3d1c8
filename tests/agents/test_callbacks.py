"""callback_url: async chat results posted through the outbox in the chat endpoint's own shape."""

from __future__ import annotations

import json
import time

from flowbox import outbox
from flowbox.agents import callbacks
from flowbox.ids import iso
from tests.helpers import create_agent


def test_async_chat_posts_its_result_to_the_callback(make_server, receiver):
    server = make_server(allow_private_outbound=True)
    client = server.client()
    agent = create_agent(client, instructions="Answer in one word.", max_tokens=8)
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi", "callback_url": receiver.url("/cb")})
    assert response.status_code == 202
    assert response.json() == {"message": "Request accepted and being processed asynchronously", "status": "processing"}
    request = receiver.wait_for(1, timeout=60)[0]
    body = json.loads(request["body"])
    assert body["statusCode"] == 200
    result = body["body"]
    assert result["agent_id"] == agent["id"]
    assert [m["role"] for m in result["conversation_history"]] == ["user", "assistant"]
    assert result["conversation_history"][0]["content"] == "Hi"
    metadata = result["metadata"]
    assert set(metadata) == {"id", "model", "timestamp", "tool_calls", "execution_time", "used_credits", "thread_id"}
    run = server.call(server.services.store.fetchone("SELECT * FROM runs WHERE id = ?", [metadata["id"]]))
    assert run["status"] == "completed" and metadata["used_credits"] == run["credits"] >= 1
    assert request["headers"]["x-flowbox-run-id"] == metadata["id"]
    secret = server.call(outbox.org_secret(server.services.store, server.org_id))
    assert request["headers"]["x-flowbox-signature"] == outbox.sign(secret, request["body"])
    # the thread it created continues synchronously
    follow = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Again", "thread_id": metadata["thread_id"]})
    assert follow.status_code == 200 and len(follow.json()["body"]["conversation_history"]) == 4
    time.sleep(0.2)
    assert len(receiver.requests) == 1


def test_callback_urls_are_guarded_at_request_time(server):
    """The default config refuses loopback and private callbacks; metadata and link-local are
    refused whatever the config. Nothing is accepted, stored or charged."""
    client = server.client()
    agent = create_agent(client, max_tokens=4)
    cases = {
        "http://127.0.0.1:9/cb": "loopback address 127.0.0.1 is not allowed (set allow_private_outbound to allow it)",
        "http://localhost/cb": "loopback host localhost is not allowed (set allow_private_outbound to allow it)",
        "http://192.168.1.5/cb": "private address 192.168.1.5 is not allowed (set allow_private_outbound to allow it)",
        "http://169.254.169.254/latest": "metadata address 169.254.169.254 is not allowed",
        "http://[fe80::1]/": "link-local address fe80::1 is not allowed",
    }
    for url, reason in cases.items():
        response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi", "callback_url": url})
        assert response.status_code == 400, url
        assert response.json() == {"error": "Validation failed", "message": f"\"callback_url\" is not allowed: {reason}."}
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi", "callback_url": "ftp://example.com/x"})
    assert response.status_code == 400 and response.json()["error"] == "Validation failed"
    assert server.call(server.services.store.fetchone("SELECT COUNT(*) AS n FROM runs"))["n"] == 0


def test_metadata_is_refused_even_when_private_is_allowed(make_server):
    server = make_server(preload_model=False, allow_private_outbound=True)
    client = server.client()
    agent = create_agent(client, max_tokens=4)
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi", "callback_url": "http://169.254.169.254/"})
    assert response.status_code == 400


def test_a_finished_run_whose_callback_was_never_queued_is_queued_once_at_startup(make_server, receiver):
    """What a crash between a run's last write and the enqueue leaves behind."""
    server = make_server(preload_model=False, allow_private_outbound=True, outbox_poll_ms=100)
    response_body = {"statusCode": 402, "body": {"agent_id": "a1", "message": "No credits available", "error": "No credits available"}}

    async def leftover():
        async with server.services.store.write() as tx:
            await tx.execute(
                "INSERT INTO runs (id, org_id, agent_id, status, callback_url, request, response, error, created_at, finished_at) "
                "VALUES ('run-1', ?, 'a1', 'error', ?, '{}', ?, '{}', ?, ?)",
                [server.org_id, receiver.url("/late"), json.dumps(response_body), iso(), iso()],
            )

    server.call(leftover())
    server.call(callbacks.queue_missed(server.services))
    server.call(callbacks.queue_missed(server.services))  # a second startup queues nothing more
    request = receiver.wait_for(1)[0]
    assert json.loads(request["body"]) == response_body
    assert request["headers"]["x-flowbox-run-id"] == "run-1"
    time.sleep(0.3)
    assert len(receiver.requests) == 1
    assert server.call(outbox.counts(server.services.store))["delivered"] == 1
