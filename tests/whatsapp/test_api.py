"""WhatsApp template sends against a stand-in Cloud API on 127.0.0.1 that records what it received."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from flowbox.cli.main import cli
from flowbox.whatsapp import store as wa_store
from tests.helpers import Receiver, create_agent

CLOUD_OK = {"messaging_product": "whatsapp", "contacts": [{"input": "31612345678", "wa_id": "31612345678"}],
            "messages": [{"id": "wamid.HBgLMzE2MTIzNDU2NzgVAgARGBI"}]}
DOC_PARAMETERS = [
    {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://whatsapp_image_template"}}]},
    {"type": "body", "parameters": [{"type": "text", "text": "ABC123"}, {"type": "text", "text": "Shipped"}]},
]
DOC_REQUEST = {"recipient_phone_number": "31612345678", "template_name": "order_update", "language": "en_US",
               "customer_name": "John Doe", "parameters": DOC_PARAMETERS}
NOT_CONNECTED = {"error": "WhatsApp connection not found", "message": "No WhatsApp connection found for this agent"}


@pytest.fixture
def cloud():
    answers: list = []
    receiver = Receiver(lambda record: answers.pop(0)(record) if answers else (200, CLOUD_OK))
    receiver.answers = answers
    yield receiver
    receiver.stop()


SERVER_OPTIONS = {"allow_private_outbound": True, "whatsapp_timeout_ms": 500}  # the stand-in Cloud API is on loopback


@pytest.fixture
def setup(org_server, cloud):
    """An agent and a connection to this test's stand-in Cloud API, in an org of the test's own."""
    server = org_server
    client = server.client()
    agent = create_agent(client)
    connection = server.call(wa_store.save_connection(server.services.store, server.org_id, {
        "phone_number_id": "106540352242922", "access_token": "EAAG-test-token-1234", "api_base_url": f"http://127.0.0.1:{cloud.port}/graph"}))
    return server, client, agent, connection


def test_template_send_posts_the_cloud_api_payload(setup, cloud):
    server, client, agent, connection = setup
    response = client.post(f"/api/public/agent/{agent['id']}/waba", json=DOC_REQUEST)
    assert response.status_code == 200, response.text
    assert response.json() == CLOUD_OK
    request = cloud.requests[0]
    assert request["path"] == "/graph/v21.0/106540352242922/messages"
    assert request["headers"]["authorization"] == "Bearer EAAG-test-token-1234"
    assert request["headers"]["content-type"] == "application/json"
    assert json.loads(request["body"]) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "31612345678",
        "type": "template",
        "template": {"name": "order_update", "language": {"code": "en_US"}, "components": DOC_PARAMETERS},
    }
    sends = server.call(wa_store.list_sends(server.services.store, server.org_id))
    assert sends[0]["status"] == "sent" and sends[0]["message_id"] == "wamid.HBgLMzE2MTIzNDU2NzgVAgARGBI"
    assert sends[0]["customer_name"] == "John Doe" and sends[0]["recipient"] == "31612345678"
    # no parameters: no components; a formatted number is sent as digits
    client.post(f"/api/public/agent/{agent['id']}/waba",
                json={"recipient_phone_number": "+31 (6) 1234-5678", "template_name": "hello_world", "language": "en"})
    assert json.loads(cloud.requests[1]["body"])["template"] == {"name": "hello_world", "language": {"code": "en"}}
    assert json.loads(cloud.requests[1]["body"])["to"] == "31612345678"


def test_an_agents_own_connection_wins_and_settings_fill_the_version(setup, cloud):
    server, client, agent, _ = setup
    server.call(wa_store.save_connection(server.services.store, server.org_id, {
        "phone_number_id": "999", "access_token": "agent-token-abcdef", "api_base_url": f"http://127.0.0.1:{cloud.port}", "api_version": "v19.0",
        "agent_id": agent["id"]}))
    other = create_agent(client, name="other")
    assert client.post(f"/api/public/agent/{agent['id']}/waba", json=DOC_REQUEST).status_code == 200
    assert client.post(f"/api/public/agent/{other['id']}/waba", json=DOC_REQUEST).status_code == 200
    assert [r["path"] for r in cloud.requests] == ["/v19.0/999/messages", "/graph/v21.0/106540352242922/messages"]
    assert cloud.requests[0]["headers"]["authorization"] == "Bearer agent-token-abcdef"


def test_documented_errors(setup, cloud):
    server, client, agent, _ = setup
    url = f"/api/public/agent/{agent['id']}/waba"
    missing = {"error": "Missing required fields", "message": "recipient_phone_number and template_name are required"}
    for body in ({}, {"template_name": "x", "language": "en"}, {"recipient_phone_number": "31612345678", "language": "en"},
                 {"recipient_phone_number": "", "template_name": "x", "language": "en"}, {"recipient_phone_number": 316, "template_name": "x"}):
        response = client.post(url, json=body)
        assert response.status_code == 400 and response.json() == missing, body
    response = server.client(key="fbx_wrong").post(url, json=DOC_REQUEST)
    assert response.status_code == 401 and response.json() == {"error": "Invalid API key", "message": "The provided API key is not valid"}
    assert server.client(key="").post(url, json=DOC_REQUEST).json()["error"] == "API key is required"
    server.call(wa_store.delete_connection(server.services.store, server.org_id))
    response = client.post(url, json=DOC_REQUEST)
    assert response.status_code == 404 and response.json() == NOT_CONNECTED
    assert cloud.requests == []


def test_bad_input_is_a_400_naming_the_field(setup, cloud):
    server, client, agent, _ = setup
    url = f"/api/public/agent/{agent['id']}/waba"
    cases = [
        ({"recipient_phone_number": "0612345678"}, "Invalid phone number"),       # no country code
        ({"recipient_phone_number": "31-abc-12345"}, "Invalid phone number"),
        ({"recipient_phone_number": "3161234567812345"}, "Invalid phone number"),  # 16 digits
        ({"template_name": "Order Update"}, "Invalid template name"),
        ({"language": "english please"}, "Invalid language"),
        ({"language": None}, "Missing required fields"),
        ({"parameters": {"type": "body"}}, "Validation failed"),
        ({"parameters": [{"parameters": []}]}, "Validation failed"),
        ({"customer_name": 7}, "Validation failed"),
    ]
    for change, error in cases:
        response = client.post(url, json={**DOC_REQUEST, **change})
        assert response.status_code == 400 and response.json()["error"] == error, change
    response = client.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "Invalid JSON body"
    response = client.post("/api/public/agent//waba", json=DOC_REQUEST)
    assert response.status_code == 400 and response.json() == {"error": "agent_id is required and must be a non-empty string"}
    _, other_key = server.new_org()
    response = server.client(key=other_key).post(url, json=DOC_REQUEST)
    assert response.status_code == 403 and response.json() == {"error": "Access denied", "message": "This agent does not belong to your organisation"}
    assert cloud.requests == []


def test_cloud_api_failures_are_clear_errors(setup, cloud):
    server, client, agent, _ = setup
    url = f"/api/public/agent/{agent['id']}/waba"
    unknown_template = {"error": {"message": "(#132001) Template name does not exist in the translation", "type": "OAuthException",
                                  "code": 132001,
                                  "error_data": {"messaging_product": "whatsapp", "details": "template name (nope) does not exist in en_US"}}}
    cloud.answers.append(lambda record: (404, unknown_template))
    response = client.post(url, json={**DOC_REQUEST, "template_name": "nope"})
    assert response.status_code == 400
    assert response.json() == {"error": "WhatsApp API error",
                               "message": "The WhatsApp API answered 404: (#132001) Template name does not exist in the translation "
                                          "(template name (nope) does not exist in en_US)",
                               "whatsapp_error": unknown_template["error"]}
    cloud.answers.append(lambda record: (401, {"error": {"message": "Invalid OAuth access token.", "code": 190}}))
    response = client.post(url, json=DOC_REQUEST)
    assert response.status_code == 502 and response.json()["message"] == "The WhatsApp API answered 401: Invalid OAuth access token."
    cloud.answers.append(lambda record: (500, "<html>oops</html>"))
    response = client.post(url, json=DOC_REQUEST)
    assert response.status_code == 502 and response.json() == {"error": "WhatsApp API error", "message": "The WhatsApp API answered 500"}
    # the Cloud API would answer 200 after 2 s: a 502 proves the call gave up at its 500 ms limit
    # (a bound on the elapsed time would also measure how busy the machine is)
    cloud.answers.append(lambda record: time.sleep(2) or 200)
    response = client.post(url, json=DOC_REQUEST)
    assert response.status_code == 502 and "could not be reached" in response.json()["message"]
    sends = server.call(wa_store.list_sends(server.services.store, server.org_id))
    assert [s["status"] for s in sends] == ["failed"] * 4


def test_unreachable_or_refused_cloud_api(make_server, cloud):
    server = make_server(preload_model=False)  # private outbound not allowed
    client = server.client()
    agent = create_agent(client)
    server.call(wa_store.save_connection(server.services.store, server.org_id, {
        "phone_number_id": "1", "access_token": "tok-123456789", "api_base_url": f"http://127.0.0.1:{cloud.port}"}))
    response = client.post(f"/api/public/agent/{agent['id']}/waba", json=DOC_REQUEST)
    assert response.status_code == 502
    assert response.json()["message"].startswith("The WhatsApp API URL is not allowed: loopback address 127.0.0.1")
    assert cloud.requests == []


def test_connection_admin_endpoint_and_cli(make_server):
    server = make_server(preload_model=False)
    client = server.client()
    agent = create_agent(client)
    response = client.put("/api/public/waba/connection", json={"phone_number_id": "123", "access_token": "secret-token-5678"})
    assert response.status_code == 200 and response.json()["access_token"] == "****5678" and response.json()["agent_id"] is None
    response = client.put("/api/public/waba/connection", json={"phone_number_id": "456", "access_token": "secret-token-9999", "agent_id": agent["id"],
                                                              "api_base_url": "https://wa.example.com", "api_version": "v20.0"})
    assert response.status_code == 200 and response.json()["agent_id"] == agent["id"]
    listed = client.get("/api/public/waba/connection").json()["connections"]
    assert sorted(c["phone_number_id"] for c in listed) == ["123", "456"]
    assert all("secret" not in json.dumps(c) for c in listed)
    for bad in ({"phone_number_id": "123"}, {"phone_number_id": "1 2", "access_token": "t"},
                {"phone_number_id": "1", "access_token": "t", "api_version": "21"},
                {"phone_number_id": "1", "access_token": "t", "api_base_url": "ftp://x"}, {"phone_number_id": "1", "access_token": "t", "extra": 1}):
        response = client.put("/api/public/waba/connection", json=bad)
        assert response.status_code == 400 and response.json()["error"] == "Validation failed", bad
    _, other_key = server.new_org()
    response = server.client(key=other_key).put("/api/public/waba/connection",
                                                json={"phone_number_id": "1", "access_token": "t", "agent_id": agent["id"]})
    assert response.status_code == 403
    assert client.delete("/api/public/waba/connection", params={"agent_id": agent["id"]}).status_code == 200
    assert client.delete("/api/public/waba/connection", params={"agent_id": agent["id"]}).json() == NOT_CONNECTED

    runner = CliRunner()
    result = runner.invoke(cli, ["whatsapp", "connect", "--phone-number-id", "777", "--token", "cli-token-abcd",
                                 "--base-url", "https://wa.example.com", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["phone_number_id"] == "777"  # replaced the org's connection
    listed = json.loads(runner.invoke(cli, ["whatsapp", "list", "--json"]).output)
    assert [c["phone_number_id"] for c in listed] == ["777"] and listed[0]["access_token"] == "****abcd"
    assert runner.invoke(cli, ["whatsapp", "connect", "--phone-number-id", "7", "--token", "t", "--api-version", "x"]).exit_code == 1
    assert json.loads(runner.invoke(cli, ["whatsapp", "disconnect", "--json"]).output) == {"removed": True}
    assert runner.invoke(cli, ["whatsapp", "disconnect"]).exit_code == 1
