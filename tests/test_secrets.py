"""Secrets (issue 11, point 6): API keys, project tokens, webhook verify tokens, WhatsApp access tokens
and remote-model keys never appear in logs, error answers or exports — not even when an upstream
server echoes the credential it was sent back in its error, as some do."""

from __future__ import annotations

import json
import logging

from tests.helpers import Receiver, create_agent, eventually

REMOTE_KEY = "sk-remote-" + "7" * 24
VERIFY_TOKEN = "whsec-" + "5" * 24
WHATSAPP_TOKEN = "EAAG" + "3" * 40


def echoing_upstream(record: dict):
    """An OpenAI-compatible server refusing the key, quoting the whole Authorization header back."""
    return 401, {"error": {"message": f"Incorrect API key provided: {record['headers'].get('authorization')}"}}


def test_no_secret_in_answers_logs_or_exports(make_server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    upstream = Receiver(echoing_upstream)
    monkeypatch.setenv("FLOWBOX_REMOTE_BASE_URL", upstream.url("/v1"))
    monkeypatch.setenv("FLOWBOX_REMOTE_MODEL", "gpt-x")
    monkeypatch.setenv("FLOWBOX_REMOTE_API_KEY", REMOTE_KEY)
    server = make_server(preload_model=False)
    client = server.client()
    answers: list[str] = []

    def call(method: str, path: str, **kwargs) -> dict | list:
        response = client.request(method, path, **kwargs)
        answers.append(f"{method} {path} {response.status_code} {response.headers} {response.text}")
        return response.json() if response.headers.get("content-type", "").startswith("application/json") else {}

    try:
        # Secrets handed to flowbox: a new API key, a project's token, a verify token, a WhatsApp token.
        new_key = client.post("/api/admin/keys", json={"name": "second"}).json()["key"]
        project = client.post("/v1/projects", json={"name": "shop", "webhookVerifyToken": VERIFY_TOKEN}).json()
        project_token = project["token"]
        call("PUT", "/api/public/waba/connection", json={"phone_number_id": "12345", "access_token": WHATSAPP_TOKEN})

        # The remote model refuses, echoing the key: every surface that runs a model says so without it.
        agent = create_agent(client, name="remote", model="remote", max_tokens=8)
        call("POST", f"/api/public/agent/{agent['id']}/chat", json={"messages": "hi"})
        call("POST", "/agent", json={"agent_id": agent["id"], "messages": "hi"})
        call("POST", "/v1/chat/completions", json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
        flow = call("POST", "/chatflows", json={"name": "f", "agents": [{"name": "a", "instructions": "Hi.", "model": "remote"}]})
        chat = call("POST", "/chats", json={"from_flow": flow["id"]})
        call("POST", f"/chats/{chat['id']}/messages", json={"message": "hello"})
        failed = eventually(lambda: (c := call("GET", f"/chats/{chat['id']}"))["status"] in ("error", "failed") and c,
                            "the chat failed on the remote model's refusal", interval=0.1)
        assert "401" in json.dumps(failed) and "[redacted]" in json.dumps(failed), failed  # the reason is kept, the key is not
        assert len(upstream.requests) >= 3 and upstream.requests[0]["headers"]["authorization"] == f"Bearer {REMOTE_KEY}"

        # Reads and exports of everything that holds a secret.
        for path in ("/api/admin/keys", "/api/admin/org", "/api/admin/options", "/api/public/waba/connection", "/v1/models",
                     "/v1/projects", f"/v1/projects/{project['projectId']}", f"/v1/projects/{project['projectId']}/flows/export",
                     f"/chatflows/{flow['id']}/export", f"/chats/{chat['id']}/messages", "/schema/openapi.json"):
            call("GET", path)
        # A key in the wrong place is refused without being repeated.
        call("GET", "/api/public/agent", headers={"Authorization": REMOTE_KEY})
        call("GET", "/rest/v1/businesshours", headers={"Authorization": f"Bearer {new_key}x"})
    finally:
        upstream.stop()

    shown = "\n".join(answers)
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for name, secret in {"org key": server.key, "new key": new_key, "project token": project_token,
                         "remote-model key": REMOTE_KEY, "verify token": VERIFY_TOKEN, "WhatsApp token": WHATSAPP_TOKEN}.items():
        assert secret not in shown, f"{name} shown in an answer"
        assert secret not in logged, f"{name} logged"
    # Masked secrets still tell which one is set.
    assert f"****{VERIFY_TOKEN[-4:]}" in shown and f"****{WHATSAPP_TOKEN[-4:]}" in shown
