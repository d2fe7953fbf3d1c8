"""The admin HTTP API (org keys, org info, options), the console's files and the API docs at /schema:
every route documented, and the Agents API's real responses matching what /schema says."""

import concurrent.futures
import copy
import re

import httpx
import jsonschema
import pytest

from flowbox import orgs, usage

SERVER_OPTIONS = {"allow_private_outbound": True}  # a callback to the server itself


@pytest.fixture
def server(org_server):
    """One server for the module; each test works in an org of its own."""
    return org_server

# -- keys ---------------------------------------------------------------------------------------

def test_keys_are_org_scoped_and_shown_once(server):
    client = server.client()
    listed = client.get("/api/admin/keys").json()["keys"]
    assert [k["current"] for k in listed] == [True]
    assert all("key" not in k and "key_hash" not in k for k in listed)

    # the body is optional: none at all names the key "console"; anything else must be JSON, blank text included
    json_type = {"Content-Type": "application/json"}
    for blank in (b"\x0c\x0b", b" \t\r\n"):  # not JSON, though bytes.strip() leaves nothing of either
        refused = client.post("/api/admin/keys", content=blank, headers=json_type)
        assert refused.status_code == 400 and refused.json()["error"] == "Invalid JSON body", refused.text
    assert [k["name"] for k in client.get("/api/admin/keys").json()["keys"]] == ["test"]  # nothing created
    unnamed = client.post("/api/admin/keys", content=b"", headers=json_type)
    assert unnamed.status_code == 201 and unnamed.json()["name"] == "console", unnamed.text
    created = client.post("/api/admin/keys", json={"name": "widget"})
    assert created.status_code == 201
    record = created.json()
    assert record["key"].startswith("fbx_") and record["name"] == "widget" and record["revoked_at"] is None
    assert record["key"].startswith(record["prefix"])
    new_client = server.client(record["key"])
    assert new_client.get("/api/public/agent").status_code == 200
    names = {k["name"]: k for k in new_client.get("/api/admin/keys").json()["keys"]}
    assert names["widget"]["current"] and not names["test"]["current"]

    # Another org sees only its own keys and cannot revoke ours.
    _, other_key = server.new_org()
    other = server.client(other_key)
    assert [k["name"] for k in other.get("/api/admin/keys").json()["keys"]] == ["test"]
    assert other.delete(f"/api/admin/keys/{record['id']}").status_code == 404
    assert new_client.get("/api/public/agent").status_code == 200

    revoked = client.delete(f"/api/admin/keys/{record['id']}")
    assert revoked.status_code == 200 and revoked.json() == {"id": record["id"], "revoked": True, "current": False}
    assert new_client.get("/api/public/agent").status_code == 401
    assert client.delete(f"/api/admin/keys/{record['id']}").status_code == 404  # already revoked


def test_last_active_key_cannot_be_revoked(server):
    client = server.client()
    (only,) = client.get("/api/admin/keys").json()["keys"]
    response = client.delete(f"/api/admin/keys/{only['id']}")
    assert response.status_code == 409 and response.json()["error"] == "Last key"
    assert client.get("/api/public/agent").status_code == 200


def test_revoking_two_keys_at_once_keeps_one(server):
    client = server.client()
    client.post("/api/admin/keys", json={"name": "second"})
    ids = [k["id"] for k in client.get("/api/admin/keys").json()["keys"]]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda key_id: server.client().delete(f"/api/admin/keys/{key_id}").status_code, ids))
    # One wins; the other finds the last key (409), or its own key gone before it was checked (401).
    assert codes[0] == 200 and codes[1] in (401, 409), codes
    assert sum(k["revoked_at"] is None for k in server.call(orgs.list_keys(server.services.store, server.org_id))) == 1


@pytest.mark.parametrize("body,problem", [
    ({"name": ""}, "name"), ({"name": 5}, "name"), ({"name": "x" * 101}, "name"), ([1], "JSON object"),
])
def test_key_creation_bad_input(server, body, problem):
    client = server.client()
    response = client.post("/api/admin/keys", json=body)
    assert response.status_code == 400 and problem in response.json()["message"]
    bad_json = client.post("/api/admin/keys", content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "Invalid JSON body"
    assert len(client.get("/api/admin/keys").json()["keys"]) == 1


def test_admin_routes_need_a_valid_key(server):
    anonymous = server.client(key="")
    for method, path in [("GET", "/api/admin/keys"), ("POST", "/api/admin/keys"), ("DELETE", "/api/admin/keys/x"),
                         ("GET", "/api/admin/org"), ("GET", "/api/admin/options")]:
        response = anonymous.request(method, path)
        assert response.status_code == 401 and response.json()["error"] == "API key is required", path
        assert server.client("fbx_wrong").request(method, path).json()["error"] == "Invalid API key"


def test_org_info_and_options(server):
    client = server.client()
    info = client.get("/api/admin/org").json()
    assert info["org_id"] == server.org_id and info["unlimited"] is True and info["credits"] is None
    server.call(usage.set_credits(server.services.store, server.org_id, 12))
    info = client.get("/api/admin/org").json()
    assert info["credits"] == 12 and info["unlimited"] is False
    options = client.get("/api/admin/options").json()
    assert options["models"][0] == "local" and {"calculator", "datetime"} <= set(options["tools"])


# -- console and docs ----------------------------------------------------------------------------

def test_console_is_served_offline_with_a_strict_policy(server):
    client = server.client(key="")
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    policy = index.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    # Every asset the page and its modules name is served from this server, none from elsewhere.
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', index.text)
    modules = {"/static/js/app.js"}
    seen = set()
    while modules:
        path = modules.pop()
        seen.add(path)
        text = client.get(path).text
        modules |= {f"/static/js/{m}" for m in re.findall(r'from "\./([\w-]+\.js)"', text)} - seen
        if path.endswith("/app.js"):  # the pages, imported when shown
            modules |= {f"/static/js/{m}.js" for m in re.findall(r'\{ id: "(\w+)", title', text)}
    for path in assets + sorted(seen):
        response = client.get(path)
        assert response.status_code == 200, path
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", response.text), f"{path} loads something from elsewhere"
    assert client.get("/static/../app.py").status_code == 404


def test_schema_is_rendered_from_bundled_files(server):
    client = server.client(key="")
    page = client.get("/schema")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r'(?:src|href)=["\']([^"\']+)', page.text)
    assert urls and all(u.startswith("/static/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_every_route_has_a_summary(server):
    doc = server.client(key="").get("/schema/openapi.json").json()
    operations = [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()
                  if method in ("get", "post", "put", "patch", "delete")]
    assert len(operations) > 10
    missing = [f"{method.upper()} {path}" for path, method, op in operations if not op.get("summary")]
    assert not missing


# -- the Agents API's documented responses are the real ones ----------------------------------------

def strict(schemas: dict) -> dict:
    """The document's schemas, with objects closed: a real response may not carry undocumented fields."""
    schemas = copy.deepcopy(schemas)

    def close(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schemas)
    return schemas


class Documented:
    def __init__(self, doc: dict):
        self.doc = doc
        self.schemas = strict(doc["components"]["schemas"])
        self.checked: list[str] = []

    def check(self, response: httpx.Response, path: str, method: str = "get") -> dict:
        operation = self.doc["paths"][path][method]
        documented = operation["responses"].get(str(response.status_code))
        assert documented, f"{method.upper()} {path} answered {response.status_code}, which is not documented"
        schema = documented["content"]["application/json"]["schema"]
        root = {**schema, "components": {"schemas": self.schemas}}
        jsonschema.validate(response.json(), root, cls=jsonschema.Draft202012Validator)
        self.checked.append(f"{method.upper()} {path} {response.status_code}")
        return response.json()


def test_agents_api_responses_match_the_schema(server):
    client = server.client()
    docs = Documented(client.get("/schema/openapi.json").json())
    agents, agent_path = "/api/public/agent", "/api/public/agent/{agent_id}"

    docs.check(server.client(key="").get(agents), agents)  # 401
    docs.check(client.post(agents, json={"name": ""}), agents, "post")  # 400
    created = docs.check(client.post(agents, json={"name": "doc", "tools": ["calculator"], "max_tokens": 24}), agents, "post")
    docs.check(client.get(agents), agents)
    docs.check(client.get(f"{agents}/{created['id']}"), agent_path)
    docs.check(client.get(f"{agents}/nope"), agent_path)  # 404
    _, other_key = server.new_org()
    docs.check(server.client(other_key).get(f"{agents}/{created['id']}"), agent_path)  # 403
    docs.check(client.patch(f"{agents}/{created['id']}", json={"instructions": "Be brief."}), agent_path, "patch")
    docs.check(client.patch(f"{agents}/{created['id']}", json={"temperature": 9}), agent_path, "patch")  # 400

    chat_path = f"{agent_path}/chat"
    reply = docs.check(client.post(f"{agents}/{created['id']}/chat", json={"messages": "What is 12*7?"}), chat_path, "post")
    assert reply["body"]["metadata"]["tool_calls"], "the calculator call exercises the documented tool_calls shape"
    thread_id = reply["body"]["metadata"]["thread_id"]
    docs.check(client.post(f"{agents}/{created['id']}/chat", json={"messages": []}), chat_path, "post")  # 400
    docs.check(client.post("/agent", json={"agent_id": created["id"], "messages": "Hi", "thread_id": thread_id}), "/agent", "post")
    docs.check(client.post(f"{agents}/{created['id']}/chat", json={"messages": "Hi", "callback_url": f"{server.base_url}/healthz"}),
               chat_path, "post")  # 202
    thread_path = f"{agent_path}/threads/{{thread_id}}"
    docs.check(client.get(f"{agents}/{created['id']}/threads/{thread_id}"), thread_path)
    docs.check(client.get(f"{agents}/{created['id']}/threads/nope"), thread_path)  # 404
    server.call(usage.set_credits(server.services.store, server.org_id, 0))
    docs.check(client.post(f"{agents}/{created['id']}/chat", json={"messages": "Hi"}), chat_path, "post")  # 402
    if "/api/public/agent/{agent_id}/usage" in docs.doc["paths"]:
        docs.check(client.get(f"{agents}/{created['id']}/usage"), "/api/public/agent/{agent_id}/usage")
    docs.check(client.delete(f"{agents}/{created['id']}"), agent_path, "delete")
    assert len(docs.checked) >= 17
