"""Messaging flows: the Management API and CLI (authoring, validation, import/export) and the
engine's rules, run on real flows (exact matches; no embedding model needed)."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbox.cli.main import cli
from flowbox.messaging import projects
from flowbox.messaging.engine import Input, build_graph, decide
from flowbox.messaging.flows import normalize_flow

FLOW = json.loads((Path(__file__).parent / "messaging_flow.json").read_text())


def authoring(server) -> tuple:
    """(server, a new project's id, a client with its token)."""
    project, token = server.call(projects.create_project(server.services.store, server.org_id, "authoring"))
    return server, project["id"], server.client(f"Bearer {token}")


@pytest.fixture
def mgmt(org_server):
    """A project of this test's own org on the module's server."""
    return authoring(org_server)


def test_flows_crud_list_view_and_auth(mgmt):
    server, pid, client = mgmt
    base = f"/v1/projects/{pid}/flows"
    assert client.get(base).json() == []
    created = client.post(base, json=FLOW)
    assert created.status_code == 201
    flow = created.json()
    assert flow["projectId"] == pid and flow["brainId"] and flow["createdAt"] and flow["disabled"] is False
    assert flow["steps"][1]["intent"]["examples"][0] == {"entities": [], "query": "what is the weather like"}
    assert client.post(base, json=FLOW).status_code == 409

    # the documented list shape: actions and intent by id, slots expanded; limit and skip
    second = client.post(base, json={"title": "Second", "steps": [{"type": "EVENT", "title": "PING", "actions": [
        {"type": "TEXT", "payload": {"texts": ["pong"]}}]}]}).json()
    listed = client.get(base).json()
    assert [f["flowId"] for f in listed] == [FLOW["flowId"], second["flowId"]]
    step = listed[0]["steps"][0]
    assert set(step) == {"stepId", "type", "title", "contexts", "actions", "intent"}
    assert step["intent"] == flow["steps"][0]["intent"]["intentId"] and len(step["actions"][0]) == 24
    assert listed[0]["steps"][2]["slot"] == {"validation": "REQUIRED", "entityId": "system.query", "label": "city"}
    assert [f["title"] for f in client.get(base, params={"limit": 1, "skip": 1}).json()] == ["Second"]
    assert client.get(base, params={"limit": 0}).status_code == 400
    assert client.get(base, params={"skip": "x"}).status_code == 400

    # get, replace, delete
    one = f"{base}/{second['flowId']}"
    assert client.get(one).json() == second
    changed = client.put(one, json={**second, "title": "Renamed", "disabled": True}).json()
    assert changed["title"] == "Renamed" and changed["createdAt"] == second["createdAt"]
    assert client.put(f"{base}/nope", json={k: v for k, v in second.items() if k != "flowId"}).status_code == 404
    assert client.put(one, json={**second, "flowId": "other"}).status_code == 400
    assert client.delete(one).json() == {"status": "ok"}
    assert client.get(one).status_code == 404 and client.delete(one).status_code == 404

    # step ids are unique within a project
    clash = {"title": "Clash", "steps": [{"stepId": "greet", "type": "UNKNOWN"}]}
    response = client.post(base, json=clash)
    assert response.status_code == 409 and "greet" in response.json()["message"]

    # auth: none, wrong, another project's token, an org key (own org: ok; other org: 404)
    bare = server.client("")
    assert bare.get(base).status_code == 401
    assert server.client("Bearer nope").get(base).status_code == 401
    _, other_token = server.call(projects.create_project(server.services.store, server.org_id, "other"))
    assert server.client(f"Bearer {other_token}").get(base).status_code == 403
    assert server.client(server.key).get(base).status_code == 200
    _, stranger = server.new_org()
    assert server.client(stranger).get(base).status_code == 404
    assert server.client(server.key).get("/v1/projects/nope/flows").status_code == 404


def problems(response) -> list[str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == "error" and body["message"].startswith("Invalid flow: ")
    return [f"{p['path']}: {p['message']}" for p in body["errors"]]


def test_flow_validation_errors(mgmt):
    _, pid, client = mgmt
    base = f"/v1/projects/{pid}/flows"
    bad = copy.deepcopy(FLOW)
    bad["steps"][3]["contexts"] = ["no-such-step"]
    bad["steps"][1]["intent"]["examples"] = []
    bad["steps"][0]["actions"][0]["type"] = "CAROUSEL"
    bad["steps"][2]["slot"]["entityId"] = "system.zodiac"
    found = problems(client.post(base, json=bad))
    assert any(p.startswith("steps[3].contexts[0]: unknown step id \"no-such-step\"") for p in found)
    assert any(p.startswith("steps[1].intent.examples: is empty") for p in found)
    assert any(p.startswith("steps[0].actions[0].type: must be one of TEXT, HANDOVER") for p in found)
    assert any(p.startswith("steps[2].slot.entityId") for p in found)

    cycle = {"title": "Loop", "steps": [
        {"stepId": "a", "type": "EVENT", "title": "A", "contexts": ["b"]},
        {"stepId": "b", "type": "EVENT", "title": "B", "contexts": ["a"]},
    ]}
    assert any("form a cycle with no top-level step" in p for p in problems(client.post(base, json=cycle)))
    slot_loop = {"title": "Slots", "steps": [
        {"stepId": "top", "type": "EVENT", "title": "GO"},
        {"stepId": "s1", "type": "SLOT", "contexts": ["top", "s2"], "slot": {"entityId": "system.query", "label": "x"}},
        {"stepId": "s2", "type": "SLOT", "contexts": ["s1"], "slot": {"entityId": "system.query", "label": "y"}},
    ]}
    assert any("SLOT steps" in p and "form a cycle" in p for p in problems(client.post(base, json=slot_loop)))
    for body, fragment in (
        ({"steps": []}, "title: is required"),
        ({"title": "x", "steps": []}, "steps: must be a non-empty list"),
        ({"title": "x", "steps": [{"type": "TELEPATHY"}]}, "steps[0].type: must be one of"),
        ({"title": "x", "steps": [{"type": "SLOT", "slot": {"entityId": "system.query", "label": "a"}}]}, "give it a context"),
        ({"title": "x", "steps": [{"type": "EVENT"}]}, "steps[0].title"),
        ({"title": "x", "steps": [{"stepId": "s", "type": "EVENT", "title": "E", "contexts": ["s"]}]}, "own contexts"),
        ({"title": "x", "steps": [{"type": "UNKNOWN", "actions": ["5bd014ef0838670032b1aa11"]}]}, "action ids"),
        ({"title": "x", "steps": [{"type": "UNKNOWN", "intent": {"examples": ["hi"]}}]}, "only allowed on INTENT"),
        ([1, 2], "must be a Flow object"),
    ):
        assert any(fragment in p for p in problems(client.post(base, json=body))), (body, fragment)
    response = client.post(base, content=b"{\"title\": ", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["status"] == "error"
    assert client.get(base).json() == []  # nothing half-stored


def test_import_export_over_http_and_cli(make_server, tmp_path):
    server, pid, client = authoring(make_server())  # a server of its own: the CLI part stops it
    base = f"/v1/projects/{pid}/flows"
    extra = {"flowId": "f2", "title": "Extra", "steps": [{"stepId": "e1", "type": "EVENT", "title": "E",
                                                          "actions": [{"type": "TEXT", "payload": {"texts": ["e"]}}]}]}
    result = client.post(f"{base}/import", json=[FLOW, extra]).json()
    assert result == {"status": "ok", "created": [FLOW["flowId"], "f2"], "updated": [], "deleted": []}
    exported = client.get(f"{base}/export").json()
    assert [f["flowId"] for f in exported["flows"]] == [FLOW["flowId"], "f2"]
    # re-importing the export changes nothing but updates; replace drops what the file lacks
    assert client.post(f"{base}/import", json=exported).json()["updated"] == [FLOW["flowId"], "f2"]
    assert client.post(f"{base}/import", params={"replace": "true"}, json=FLOW).json()["deleted"] == ["f2"]
    # a bad flow in a batch stores nothing
    broken = {**extra, "flowId": "f3", "steps": [{"type": "INTENT", "intent": {"examples": []}}]}
    found = problems(client.post(f"{base}/import", json={"flows": [extra, broken]}))
    assert found[0].startswith("flows[1].steps[0].intent.examples")
    assert [f["flowId"] for f in client.get(base).json()] == [FLOW["flowId"]]

    # the CLI mirrors it, against the same database (the server is stopped first: one writer)
    data_dir = str(server.config.data_path)
    server.stop()
    runner = CliRunner()
    out = runner.invoke(cli, ["projects", "create", "cli project", "--json", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    made = json.loads(out.output)
    assert made["projectId"] and made["clientId"] and made["token"].startswith("fbm_")
    flow_file = tmp_path / "flows.json"
    flow_file.write_text(json.dumps({"flows": [FLOW | {"flowId": "cli-flow"}, extra | {"flowId": "cli-2"}]}))
    # step ids are per project, so the same file imports into the new project
    out = runner.invoke(cli, ["flows", "import", str(flow_file), "--project", made["projectId"], "--json", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["created"] == ["cli-flow", "cli-2"]
    out = runner.invoke(cli, ["flows", "export", "--project", made["projectId"], "--data-dir", data_dir])
    assert [f["flowId"] for f in json.loads(out.output)["flows"]] == ["cli-flow", "cli-2"]
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps({"title": "x", "steps": [{"type": "EVENT", "title": "A", "contexts": ["zz"]}]}))
    out = runner.invoke(cli, ["flows", "import", str(bad_file), "--project", made["projectId"], "--data-dir", data_dir])
    assert out.exit_code == 1 and "unknown step id" in out.output
    (tmp_path / "hours.json").write_text(json.dumps([{"weekdays": [{"weekday": "monday", "content": [{"from": "9:00", "to": "17:00"}]}],
                                                      "timezone": "Europe/Amsterdam"}]))
    out = runner.invoke(cli, ["projects", "update", made["projectId"], "--business-hours", str(tmp_path / "hours.json"),
                              "--webhook-url", "https://hooks.example.com/x", "--verify-token", "s3cret", "--json", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["businessHours"][0]["weekdays"][0]["weekday"] == "Monday" and shown["webhookUrl"] == "https://hooks.example.com/x"
    out = runner.invoke(cli, ["projects", "update", made["projectId"], "--webhook-url", "http://169.254.169.254/", "--data-dir", data_dir])
    assert out.exit_code == 1 and "not allowed" in out.output
    out = runner.invoke(cli, ["projects", "list", "--json", "--data-dir", data_dir])
    assert {p["name"] for p in json.loads(out.output)} == {"authoring", "cli project"}


# -- the engine's rules, on the shop flow and small flows (exact matches only) -------------------

def run(flows, inputs, **options):
    """Feeds inputs through ``decide`` like a thread would; returns the reply texts per input."""
    graph = build_graph([normalize_flow(f, "p") for f in flows], 1)
    state: dict = {}
    out = []

    async def go():
        nonlocal state
        for inp in inputs:
            inp = Input(kind="text", text=inp, reply_to=inp) if isinstance(inp, str) else inp
            decision = await decide(graph, state, inp, threshold=0.99, rng=random.Random(1), **options)
            state = decision.state
            out.append([r["payload"]["text"] for m in decision.messages for r in m["responses"]])
        return state

    return out, asyncio.run(go())


def test_engine_slots_entities_and_fallbacks():
    # an entity in the intent's example fills the slot, so it is not asked
    texts, state = run([FLOW], ["I want to order 2 pizzas"])
    assert texts == [["Pizza it is."]] and state["params"]["quantity"][0]["value"] == "2"
    # a slot question re-asked, then escaped by a top-level intent
    texts, state = run([FLOW], ["order a pizza", "many", "Hello"])
    assert texts[1] == ["How many pizzas?"] and texts[2] == ["Hi! Ask me about the weather, or give feedback."]
    assert state["slot"] is None
    # the intent that left the question is reported with its reply, as any matched intent is, with the rule that matched it
    _, asked = run([FLOW], ["order a pizza", "many"])
    decision = asyncio.run(decide(build_graph([normalize_flow(FLOW, "p")], 1), asked, Input(kind="text", text="Hello"),
                                  threshold=0.99, rng=random.Random(1)))
    assert [i["confidence"] for i in decision.messages[0]["intents"]] == [1.0] and decision.rule == "exact"
    # a free-text slot takes any text, even one that shares words with an intent, but not an intent's example
    assert run([FLOW], ["weather forecast", "pizza town"])[0][1] == ["The weather in pizza town is sunny."]
    assert run([FLOW], ["weather forecast", "order a pizza"])[0][1] == ["Pizza it is.", "How many pizzas?"]
    # agent fallback: asked for instead of the top-level UNKNOWN, but a contextual UNKNOWN wins
    graph = build_graph([normalize_flow(FLOW, "p")], 1)
    decision = asyncio.run(decide(graph, {}, Input(kind="text", text="qwerty"), threshold=0.99, has_agent=True))
    assert decision.agent and decision.unknown_step["stepId"] == "unknown" and decision.messages == []
    decision = asyncio.run(decide(graph, {"step": "feedback"}, Input(kind="text", text="qwerty"), threshold=0.99, has_agent=True))
    assert not decision.agent and decision.messages[0]["step"]["stepId"] == "feedback-unknown"
    # a step or flow triggered directly (socket attachments)
    texts, _ = run([FLOW], [Input(kind="step", target="feedback"), Input(kind="flow", target=FLOW["flowId"])])
    assert texts == [["Did you like our service?"], ["Hi! Ask me about the weather, or give feedback."]]
    # a SLOT triggered directly asks its question, and the next text answers it
    texts, state = run([FLOW], [Input(kind="step", target="city"), "pizza town"])
    assert texts == [["Which city?"], ["The weather in pizza town is sunny."]]
    assert state["params"]["city"][0]["value"] == "pizza town" and state["slot"] is None

    booking = {"title": "Booking", "steps": [
        {"stepId": "book", "type": "INTENT", "intent": {"examples": ["book a table"]},
         "actions": [{"type": "TEXT", "payload": {"texts": ["Sure."]}}]},
        {"stepId": "people", "type": "SLOT", "contexts": ["book"], "slot": {"entityId": "system.number", "label": "people"},
         "actions": [{"type": "TEXT", "payload": {"texts": ["For how many?"]}}]},
        {"stepId": "email", "type": "SLOT", "contexts": ["book"], "slot": {"entityId": "system.email", "label": "email", "validation": "OPTIONAL"},
         "actions": [{"type": "TEXT", "payload": {"texts": ["Your email?"]}}]},
        {"stepId": "date", "type": "SLOT", "contexts": ["email"], "slot": {"entityId": "system.date", "label": "date"},
         "actions": [{"type": "TEXT", "payload": {"texts": ["Which date?"]}}]},
        {"stepId": "done", "type": "ANYTHING", "contexts": ["date"],
         "actions": [{"type": "TEXT", "payload": {"texts": ["Booked for {{people}} on {{date}} ({{email}})."]}}]},
    ]}
    # sibling slots in order, an OPTIONAL slot skipped on bad input, a chained slot, then the follow-up
    texts, state = run([booking], ["book a table", "four", "no thanks", "2025-05-01"])
    # a param shows its human "match"; one that is not set (the skipped email) becomes empty text, never "{{email}}"
    assert texts == [["Sure.", "For how many?"], ["Your email?"], ["Which date?"], ["Booked for four on 2025-05-01 ()."]]
    assert state["params"]["people"][0]["value"] == "4" and "email" not in state["params"]


def test_no_template_syntax_reaches_users():
    greeting = {"title": "Greeting", "steps": [
        {"stepId": "hi", "type": "EVENT", "title": "HI", "actions": [
            {"type": "TEXT", "payload": {"texts": ["Hi {{name}}{{ title }}! {{ no such param }}Your code: {{code}}."]}}]},
    ]}
    params = {"name": [{"value": "Jane"}], "code": [{"value": 0}]}
    texts, _ = run([greeting], [Input(kind="event", event="HI", params=params), Input(kind="event", event="HI"),
                                Input(kind="event", event="HI", params={"name": []})])
    # params stay on the thread; a param with no value, or none at all, becomes empty text
    assert texts == [["Hi Jane! Your code: 0."], ["Hi Jane! Your code: 0."], ["Hi ! Your code: 0."]]
    texts, _ = run([greeting], [Input(kind="event", event="HI")])
    assert texts == [["Hi ! Your code: ."]]


def test_projects_over_http(mgmt):
    server, pid, client = mgmt
    admin = server.client(server.key)
    made = admin.post("/v1/projects", json={"name": "web", "webhookUrl": "https://hooks.example.com/in", "webhookVerifyToken": "v"})
    assert made.status_code == 201, made.text
    project = made.json()
    assert project["token"].startswith("fbm_") and project["clientId"] and project["webhookUrl"] == "https://hooks.example.com/in"
    assert {p["name"] for p in admin.get("/v1/projects").json()} == {"authoring", "web"}
    own = server.client(f"Bearer {project['token']}")
    assert own.get(f"/v1/projects/{project['projectId']}").json()["name"] == "web"
    for bad in ({"webhookUrl": "http://169.254.169.254/latest"}, {"webhookUrl": "ftp://x"}, {"intentThreshold": 2},
                {"agentId": "nope"}, {"colour": "blue"}, {"name": ""}, [1]):
        response = own.patch(f"/v1/projects/{project['projectId']}", json=bad)
        assert response.status_code == 400 and response.json()["status"] == "error", bad
    assert own.patch(f"/v1/projects/{project['projectId']}", json={"intentThreshold": 0.7}).json()["intentThreshold"] == 0.7
    assert admin.post("/v1/projects", json={"webhookUrl": "https://x.example"}).status_code == 400  # no name
    assert server.client("").get("/v1/projects").status_code == 401
    new_token = own.post(f"/v1/projects/{project['projectId']}/token").json()["token"]
    assert own.get(f"/v1/projects/{project['projectId']}").status_code == 401
    renewed = server.client(f"Bearer {new_token}")
    assert renewed.delete(f"/v1/projects/{project['projectId']}").json() == {"status": "ok"}
    assert renewed.get("/rest/v1/businesshours").status_code == 401
    assert admin.get(f"/v1/projects/{project['projectId']}").status_code == 404
