"""Native model code cannot take the server down: user text never reaches a grammar unchecked,
and the local model runs in a supervised worker process, so a crash costs the requests in flight
(the documented 503) and the worker restarts. Real server, real model, real process kills."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time

import httpx
import pytest

from flowbox.models.grammar import InvalidSchema, schema_grammar, schema_text
from tests.helpers import create_agent, eventually, start_server

SERVER_OPTIONS = {"allow_private_outbound": True, "outbox_retry_base_ms": 200}


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server


def alive(srv) -> None:
    response = httpx.get(f"{srv.base_url}/healthz", timeout=10)
    assert response.status_code == 200


# -- grammars ------------------------------------------------------------------------------------

def test_schema_with_nul_or_lone_surrogate_or_remote_ref_is_refused():
    for schema in ({"enum": ["a\x00b"]}, {"const": "\udfff"}, {"$ref": "http://127.0.0.1:9/x.json"}):
        with pytest.raises(InvalidSchema):
            schema_grammar(schema)
    nested: dict = {}
    node = nested
    for _ in range(100):
        node["items"] = {}
        node = node["items"]
    with pytest.raises(InvalidSchema, match="deeply"):
        schema_grammar(nested)


def test_control_characters_reach_the_parser_only_as_escapes():
    for schema in ({"enum": ["tab\there", "bell\x07", "del\x7f"]}, {"type": "string", "pattern": "^a\tb\x07$"}):
        grammar = schema_grammar(schema)
        assert not any(ch in grammar for ch in "\t\x07\x7f"), grammar
    assert schema_text("a\x00b\udfffc\x1b") == "a b c "


def test_characters_beyond_the_bmp_are_one_character_in_the_grammar():
    """The converter JSON-escapes them as surrogate pairs; llama.cpp would read two unwritable characters."""
    grammar = schema_grammar({"enum": ["\U000ddcb8\U000c4a4e\u00e1&\u00fe)", "\U0001F600"]})
    assert "\\U000DDCB8\\U000C4A4E" in grammar and "\\U0001F600" in grammar and "\\ud" not in grammar.lower()


def test_grammar_with_escaped_controls_generates(srv):
    """What the escapes make is a grammar llama.cpp parses and follows, in the worker."""
    model = srv.local_model()
    grammar = schema_grammar({"enum": ["yes\x01", "no", "\U0001F600"]})
    tokens = model._tokens(model.render([{"role": "user", "content": "Answer no."}]))
    text, _, _ = srv.call(model._generate(tokens, max_tokens=8, temperature=0.0, grammar=grammar, stop=[], seed=0))
    assert json.loads(text) in ("yes\x01", "no", "\U0001F600")
    alive(srv)


# -- the attacks of the issue, end to end ------------------------------------------------------------

def test_nul_in_a_caller_tool_enum_is_a_400_and_the_server_lives(srv):
    body = {"model": "local", "messages": [{"role": "user", "content": "pick"}], "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "pick", "parameters": {
                "type": "object", "properties": {"x": {"enum": ["a\u0000b"]}}}}}]}
    response = srv.client().post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith("tools[0]") and "NUL" in error["message"]
    body["tools"] = []
    body.pop("tool_choice")
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": ["\u0000"]}}}
    response = srv.client().post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "response_format"
    alive(srv)


def test_nul_in_a_message_to_an_agent_with_knowledge_is_answered(srv):
    client = srv.client()
    agent = create_agent(client, name="kb", instructions="Answer in one short sentence.", max_tokens=8)
    response = client.post("/api/public/knowledge", json={"content": "The Zephyr drone flies for 40 minutes.",
                                                            "agent_ids": [agent["id"]]})
    assert response.status_code == 200, response.text
    for text in ("a\u0000b", "drone \udfff flight \u001b time"):
        response = client.post(f"/api/public/agent/{agent['id']}/chat", content=json.dumps({"messages": text}),
                               headers={"Content-Type": "application/json"})  # JSON escapes: lone surrogates too
        assert response.status_code in (200, 400), response.text
    alive(srv)


# -- the worker process ------------------------------------------------------------------------

def test_a_worker_crash_costs_the_request_in_flight_a_503_and_the_worker_restarts(srv):
    client = srv.client()
    agent = create_agent(client, name="long", instructions="Write a long story.", max_tokens=400)
    model = srv.local_model()
    first_pid = model.worker.pid
    crashes = model.worker.crashes
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.post, f"/api/public/agent/{agent['id']}/chat",
                             json={"messages": "Tell me a long story about a lighthouse keeper."})
        eventually(lambda: model.scheduler.busy, "the model to start generating")
        time.sleep(0.2)  # into the generation proper (a kill at any point must give the same answer)
        os.kill(first_pid, signal.SIGKILL)  # as llama.cpp's abort() would
        response = future.result(timeout=120)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["statusCode"] == 503 and body["body"]["message"] == "Service temporarily unavailable"
    assert model.worker.crashes == crashes + 1
    alive(srv)
    # the next request starts a fresh worker and is answered
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Say hi.", "max_tokens": 4})
    assert response.status_code == 200, response.text
    assert model.worker.pid not in (None, first_pid)


def test_a_run_that_crashed_the_worker_twice_is_failed_not_resumed(srv, tmp_path):
    from tests.helpers import Receiver

    client = srv.client()
    agent = create_agent(client, name="cb", instructions="Write a long story.", max_tokens=400)
    model = srv.local_model()
    receiver = Receiver()
    try:
        response = client.post(f"/api/public/agent/{agent['id']}/chat",
                               json={"messages": "Tell me a long story about a lighthouse.", "callback_url": receiver.url()})
        assert response.status_code == 202, response.text
        run_id = eventually(lambda: srv.call(srv.services.store.fetchone(
            "SELECT id FROM runs WHERE agent_id = ? ORDER BY created_at DESC", [agent["id"]])), "the run")["id"]

        def attempts() -> int:
            return srv.call(srv.services.store.fetchone("SELECT attempts FROM runs WHERE id = ?", [run_id]))["attempts"]

        for attempt in (1, 2):
            eventually(lambda: attempts() == attempt and model.scheduler.busy and model.worker.pid, f"attempt {attempt} to generate")
            os.kill(model.worker.pid, signal.SIGKILL)
        run = eventually(lambda: (row := srv.call(srv.services.store.fetchone("SELECT * FROM runs WHERE id = ?", [run_id])))
                       and row["status"] != "processing" and dict(row), "the run to end")
        assert run["status"] == "error" and run["attempts"] == 2
        delivered = receiver.wait_for(1, timeout=60)
        assert json.loads(delivered[0]["body"])["statusCode"] == 503
    finally:
        receiver.stop()
    alive(srv)


def test_a_run_started_twice_by_a_dying_server_is_failed_at_the_next_start(tmp_path, models_dir):
    """A run that was running each of the last two times the server stopped is not resumed a third time."""
    server = start_server(tmp_path, data_dir=str(tmp_path / "data"), models_dir=str(models_dir))
    try:
        agent = create_agent(server.client(), name="x", max_tokens=4)
        run_id = "run_resumed_twice"

        async def accepted_twice():
            async with server.services.store.write() as tx:
                await tx.execute(
                    "INSERT INTO runs (id, org_id, agent_id, status, request, attempts, created_at) "
                    "VALUES (?, ?, ?, 'processing', ?, 2, '2026-01-01T00:00:00Z')",
                    [run_id, server.org_id, agent["id"],
                     json.dumps({"agent_id": agent["id"], "messages": "hi", "thread_id": None})])

        server.call(accepted_twice())
        from flowbox.agents.chat import resume_async_runs

        server.call(resume_async_runs(server.services))
        run = eventually(lambda: (row := server.call(server.services.store.fetchone("SELECT * FROM runs WHERE id = ?", [run_id])))
                       and row["status"] != "processing" and dict(row), "the run to be failed")
        assert run["status"] == "error" and run["attempts"] == 3
        assert json.loads(run["response"])["statusCode"] == 503
    finally:
        server.stop()


def test_closing_the_model_stops_its_worker(tmp_path, models_dir):
    from flowbox.models.files import model_path
    from flowbox.models.local import LocalChatModel

    model = LocalChatModel(model_path(models_dir, "smollm2"), name="local", n_ctx=512, cache_bytes=0)
    proc = model.worker._proc
    assert proc.is_alive()
    model.close()
    assert not proc.is_alive() and model.worker.crashes == 0
    threading.Event().wait(0)  # nothing left running
