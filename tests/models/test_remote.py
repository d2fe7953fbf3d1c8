"""The remote-model path against a real OpenAI-compatible server: llama_cpp.server on loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowbox.models.files import model_path
from tests.helpers import create_agent, free_port, wait_serving


@pytest.fixture(scope="module")
def openai_server(models_dir):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.llama_server", "--model", str(model_path(models_dir, "smollm2")),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "smol-remote", "--n_threads", "1", "--n_threads_batch", "1",
         "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"

    try:
        wait_serving(proc, f"{base}/models", "llama_cpp.server", timeout=120)
    except AssertionError:
        proc.kill()
        raise
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def test_agent_on_remote_model(openai_server, make_server, monkeypatch):
    monkeypatch.setenv("FLOWBOX_REMOTE_BASE_URL", openai_server)
    monkeypatch.setenv("FLOWBOX_REMOTE_MODEL", "smol-remote")
    monkeypatch.setenv("FLOWBOX_REMOTE_API_KEY", "sk-local-test")
    server = make_server(preload_model=False)
    client = server.client()
    agent = create_agent(client, name="remote agent", model="remote", instructions="Answer briefly.", max_tokens=20)
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Say hello."})
    assert response.status_code == 200, response.text
    body = response.json()["body"]
    assert body["metadata"]["model"] == "smol-remote"
    assert body["conversation_history"][-1]["role"] == "assistant" and body["conversation_history"][-1]["content"]
    # the thread continues on the remote model too
    again = client.post(f"/api/public/agent/{agent['id']}/chat",
                        json={"messages": "And goodbye.", "thread_id": body["metadata"]["thread_id"]})
    assert len(again.json()["body"]["conversation_history"]) == 4
    # usage was counted from the remote server's own token counts
    async def ledger():
        return await server.services.store.fetchall("SELECT prompt_tokens, completion_tokens FROM runs ORDER BY created_at")

    rows = server.call(ledger())
    assert len(rows) == 2 and all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in rows)


def test_unreachable_remote_is_the_documented_503(make_server, monkeypatch):
    monkeypatch.setenv("FLOWBOX_REMOTE_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("FLOWBOX_REMOTE_MODEL", "nothing")
    server = make_server(preload_model=False)
    client = server.client()
    agent = create_agent(client, name="remote agent", model="remote")
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hi"})
    assert response.status_code == 503
    assert response.json() == {"statusCode": 503, "body": {
        "agent_id": agent["id"], "message": "Service temporarily unavailable", "error": "AI provider is currently experiencing high traffic"}}
