"""Hostile input over HTTP (issue 21, item 5): one request must never give a 500 or take the server down.

Every operation of the app's own OpenAPI document (so new endpoints are covered when they are added)
gets: JSON nested far too deep, integers of thousands of digits and past 64 bits, infinities and NaN,
lone UTF-16 surrogates in values and keys, bytes that are not UTF-8, oversized bodies, and, field by
field, NUL bytes and extreme numbers; every query parameter gets digits ``int`` refuses ("²", "①"),
digits only ``int`` takes ("٣"), and huge and negative numbers. Each answer must be a 4xx in JSON (a 2xx
where the input is in fact valid), and the server must stay alive and quick. Slow clients (headers or a
body sent byte by byte) get a 408 within the configured limit while others are served; proxy headers are
believed only from configured proxies; static paths the OS refuses are 404s; /schema carries a CSP.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse

import httpx
import pytest

from flowbox.middleware import body_deadline
from flowbox.surfaces import Surfaces
from tests.helpers import create_agent

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)

# Operations that start a model turn when a body is valid: they get only bodies that are invalid as
# JSON (strings that would be valid text are not sent there; the model's own robustness is tested apart).
GENERATES = {
    ("POST", "/api/public/agent/{agent_id}/chat"),
    ("POST", "/agent"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/chats/{chat_id}/messages"),
    ("POST", "/chats/{chat_id}/input"),
}
# Streams stay open while their resource exists: they get unknown ids (so an answer comes at once).
STREAMS = {("GET", "/chats/{chat_id}/stream"), ("GET", "/v1/projects/{project_id}/events")}
MAX_BODY = 65_536  # the test server's max_body_bytes: oversized bodies stay small
SERVER_OPTIONS = {"max_body_bytes": MAX_BODY}  # the module's server (tests that need other settings start their own)

DEEP = b"[" * 1000 + b"]" * 1000
HUGE_INT = b"9" * 5000  # past Python's 4,300-digit limit on int(str)
# Bodies no JSON endpoint may take: each must be a 4xx before anything else happens.
BAD_BODIES = {
    "nested 1000 deep": b'{"x": ' + DEEP + b"}",
    "nested 1000 deep, bare": DEEP,
    "unclosed 100000 deep": b"[" * 100_000,
    "objects nested 200 deep": b'{"a": ' * 200 + b"1" + b"}" * 200,
    "5000-digit integer": b'{"x": ' + HUGE_INT + b"}",
    "5000-digit integer, bare": HUGE_INT,
    "integer past 64 bits": b'{"x": 9223372036854775808}',
    "float overflowing to infinity": b'{"x": 1e999}',
    "NaN": b'{"x": NaN}',
    "Infinity": b'{"x": -Infinity}',
    "lone surrogate in a value": b'{"x": "\\udfff"}',
    "lone surrogate in a key": b'{"\\ud800": "x"}',
    "lone surrogate nested": b'{"x": [{"y": "a\\ud800b"}]}',
    "not UTF-8": b'{"x": "\xff\xfe"}',
    "lone surrogate as raw UTF-8 bytes": b'{"x": "\xed\xa0\x80"}',  # Python's own decoder lets it pass
    "oversized": b'{"x": "' + b"a" * (MAX_BODY + 10) + b'"}',
}
# Values each documented body field gets, alone (the rest of the body missing: never a model turn).
FIELD_VALUES = {
    "NUL in a string": "a\u0000b",
    "largest 64-bit integer": 9223372036854775807,
    "smallest 64-bit integer": -9223372036854775808,
    "largest float": 1.7976931348623157e308,
    "fraction": 0.5,
    "deep list": json.loads(b"[" * 60 + b"]" * 60),  # within the depth limit: the handler's checks see it
}
# Values each query parameter gets.
QUERY_VALUES = ["²", "①", "٣", "9223372036854775807", "99999999999999999999999999", "-1", "1e3", " 1", "\u0000",
                "%ED%A0%80", "x" * 5000]


def seed(server) -> tuple[dict[str, str], str]:
    """Real resources (created without any model turn), so requests get past their 404s; and the
    messaging project's token, which its REST API takes."""
    client = server.client()
    agent = create_agent(client, max_tokens=1)
    flow = client.post("/chatflows", json={"name": "hostile", "max_rounds": 1,
                                            "agents": [{"name": "a", "instructions": "Say hi.", "max_tokens": 1}]}).json()
    chat = client.post("/chats", json={"from_flow": flow["id"]}).json()
    project = client.post("/v1/projects", json={"name": "hostile"}).json()
    item = client.post("/api/public/knowledge", json={"name": "hostile", "content": "a note", "agent_ids": agent["id"]}).json()
    spare_key = client.post("/api/admin/keys", json={"name": "spare"}).json()
    ids = {"agent_id": agent["id"], "flow_id": flow["id"], "chat_id": chat["id"], "project_id": project["projectId"],
           "item_id": item["id"], "key_id": spare_key["id"], "model_id": "local", "thread_id": "hostile-thread"}
    missing = [name for name, value in ids.items() if not (isinstance(value, str) and value)]
    assert not missing, f"seeding failed for {missing}"
    return ids, project["token"]


def operations(document: dict) -> list[tuple[str, str, dict]]:
    ops = [(method.upper(), path, op) for path, item in document["paths"].items()
           for method, op in item.items() if method in ("get", "post", "put", "patch", "delete")]
    return sorted(ops, key=lambda o: o[0] == "DELETE")  # deletions last: the seeded resources serve the rest first


def url_of(path: str, ids: dict[str, str], stream: bool) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", "no-such-id" if stream else urllib.parse.quote(value, safe=""))
    return path.replace("{", "").replace("}", "")  # any other path parameter: its own name


def body_fields(op: dict) -> list[str]:
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    return sorted(schema.get("properties", {})) or ["x"]


def check(answer: httpx.Response, label: str, failures: list[str]) -> None:
    status = answer.status_code
    if status >= 500:
        failures.append(f"{label}: {status} {answer.text[:200]}")
    elif status >= 400 and not answer.headers.get("content-type", "").startswith("application/json"):
        failures.append(f"{label}: {status} not JSON ({answer.headers.get('content-type')}): {answer.text[:100]}")


def assert_responsive(server, limit_s: float = 5.0) -> float:
    """Generous for a busy CI machine; a blocked event loop would hold it for the whole slow request."""
    started = time.monotonic()
    answer = httpx.get(server.base_url + "/healthz", timeout=30)
    took = time.monotonic() - started
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    assert took < limit_s, f"/healthz took {took:.2f}s"
    return took


def test_hostile_input_over_every_operation(org_server):
    server = org_server
    ids, project_token = seed(server)
    document = httpx.get(server.base_url + "/schema/openapi.json").json()
    failures: list[str] = []
    counts = {"bodies": 0, "fields": 0, "queries": 0}
    took: dict[str, float] = {}
    started = time.monotonic()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for method, path, op in operations(document):
            key = project_token if path.startswith("/rest/v1/") else server.key
            headers = {"Authorization": f"Bearer {key}"}
            url = url_of(path, ids, (method, path) in STREAMS)
            op_started = time.monotonic()
            if method in ("POST", "PUT", "PATCH"):
                for name, raw in BAD_BODIES.items():
                    answer = client.request(method, url, content=raw, headers={**headers, "Content-Type": "application/json"})
                    counts["bodies"] += 1
                    check(answer, f"{method} {path} [{name}]", failures)
                    if answer.status_code < 400 and "requestBody" in op:  # (an operation taking no body ignores it)
                        failures.append(f"{method} {path} [{name}]: {answer.status_code} for a body it cannot take")
                for field in body_fields(op):
                    for name, value in FIELD_VALUES.items():
                        if isinstance(value, str) and (method, path) in GENERATES:
                            continue
                        answer = client.request(method, url, json={field: value}, headers=headers)
                        counts["fields"] += 1
                        check(answer, f"{method} {path} [{field}: {name}]", failures)
            for param in op.get("parameters", []):
                if param.get("in") != "query":
                    continue
                for value in QUERY_VALUES:
                    # raw percent-encoding for the invalid UTF-8 case; everything else encoded by httpx
                    target = f"{url}?{param['name']}={value}" if value.startswith("%") else httpx.URL(url, params={param["name"]: value})
                    answer = client.request(method, target, headers=headers)
                    counts["queries"] += 1
                    check(answer, f"{method} {path} [?{param['name']}={value[:20]!r}]", failures)
            assert_responsive(server)
            took[f"{method} {path}"] = time.monotonic() - op_started
    elapsed = time.monotonic() - started
    print(f"hostile input: {counts} in {elapsed:.1f}s; slowest:",
          ", ".join(f"{label} {s:.1f}s" for label, s in sorted(took.items(), key=lambda t: -t[1])[:8]))
    assert not failures, "\n".join(failures[:60])
    assert counts["bodies"] >= 25 * len(BAD_BODIES) and counts["queries"] >= 10 * len(QUERY_VALUES), counts
    assert_responsive(server)


def test_static_paths_the_os_refuses_are_404_and_api_docs_carry_the_consoles_csp(org_server):
    server = org_server
    for url in ("/static/%00", "/static/" + "a" * 5000, "/static/favicon.svg/x", "/static/a%00b.js",
                "/static/..%2f..%2fetc%2fpasswd"):
        answer = httpx.get(server.base_url + url)
        assert answer.status_code == 404 and answer.headers["content-type"].startswith("application/json"), (url, answer.text[:200])
    assert httpx.get(server.base_url + "/static/favicon.svg").status_code == 200
    for url in ("/schema", "/schema/openapi.json", "/"):
        answer = httpx.get(server.base_url + url)
        assert answer.status_code == 200, url
        csp = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, (url, csp)
        assert answer.headers.get("x-content-type-options") == "nosniff", url


def test_query_numbers_are_ascii_digits_within_bounds(org_server):
    server = org_server
    client = server.client()
    agent = create_agent(client, max_tokens=1)
    client.post("/api/public/knowledge", json={"name": "n", "content": "a note", "agent_ids": agent["id"]})
    for page in ("²", "①", "٣", "9223372036854775807", "-1", " 1"):
        answer = client.get("/api/public/knowledge", params={"page": page})
        assert answer.status_code == 400 and answer.json()["error"] == "Invalid pagination parameters", (page, answer.text)
    for limit in ("²", "①", "٣", "101", "0"):
        answer = client.get("/api/public/knowledge", params={"limit": limit})
        assert answer.status_code == 400, (limit, answer.text)
    listed = client.get("/api/public/knowledge", params={"page": "1", "limit": "100"})
    assert listed.status_code == 200 and len(listed.json()["knowledge_items"]) == 1, listed.text


def _raw_connection(server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.settimeout(0.05)
    return sock


def _trickle(server, sock: socket.socket, data: bytes, every_s: float, give_up_s: float) -> tuple[bytes, float]:
    """Sends ``data`` a byte at a time until the server answers and closes; meanwhile checks that it
    answers others at once. Returns what it answered and when the connection closed."""
    started = time.monotonic()
    answer = b""
    sent = 0
    next_send = started
    while time.monotonic() - started < give_up_s:
        if sent < len(data) and time.monotonic() >= next_send:
            try:
                sock.sendall(data[sent:sent + 1])
            except OSError:  # closed by the server
                pass
            sent += 1
            next_send += every_s
            if sent % 5 == 0:
                assert_responsive(server)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    return answer, time.monotonic() - started


def test_slow_headers_get_408_and_others_are_served_meanwhile(make_server):
    server = make_server(preload_model=False, request_header_timeout_ms=1500)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 500 + b"\r\n\r\n"
    with _raw_connection(server) as sock:
        answer, took = _trickle(server, sock, request, every_s=0.05, give_up_s=60)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower() and json.loads(body)["error"] == "Request timeout"
    assert 1.4 < took < 30, took  # at the limit, not at once: a slow network is not an attack
    # a connection that never sends a byte is closed too (without an answer: it asked nothing)
    with _raw_connection(server) as sock:
        answer, took = _trickle(server, sock, b"", every_s=1, give_up_s=60)
    assert answer == b"" and 1.4 < took < 30, (answer, took)
    # a client as fast as a normal one is unaffected, on a kept-alive connection too
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.6)  # together longer than the header limit: only each request's own time counts


def test_slow_body_gets_408_and_others_are_served_meanwhile(make_server):
    server = make_server(preload_model=False, request_body_timeout_ms=1500, request_body_min_rate=0)
    body = json.dumps({"name": "slow", "instructions": "a" * 500}).encode()
    head = (f"POST /api/public/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {server.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with _raw_connection(server) as sock:
        sock.sendall(head)
        answer, took = _trickle(server, sock, body, every_s=0.05, give_up_s=60)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "Request timeout"
    assert 1.4 < took < 30, took
    agents = server.client().get("/api/public/agent").json()["agents"]
    assert not [a for a in agents if a["name"].startswith("slow")]  # the half-sent request did nothing
    # the same body sent at once is taken
    assert server.client().post("/api/public/agent", content=body, headers={"Content-Type": "application/json"}).status_code == 201
    document = server.client().get("/schema/openapi.json").json()
    assert "408" in document["paths"]["/api/public/agent"]["post"]["responses"]  # documented where a body is taken


def test_body_deadline_grows_with_what_arrives():
    """A large body on a slow link earns time per byte (``request_body_min_rate``); a trickle does not."""

    async def run(rate: int) -> list[dict]:
        chunks = [{"type": "http.request", "body": b"x" * 100, "more_body": True} for _ in range(5)]
        chunks.append({"type": "http.request", "body": b"", "more_body": False})
        sent: list[dict] = []

        async def receive():
            await asyncio.sleep(0.2)  # the client's pace
            return chunks.pop(0)

        async def send(message):
            sent.append(message)

        async def app(scope, receive, send):
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        await body_deadline(0.5, rate, Surfaces(()).rendered)(app)({"type": "http"}, receive, send)
        return sent

    assert asyncio.run(run(rate=200))[0]["status"] == 200  # 0.5 s plus half a second per 100 bytes: in time
    answered = asyncio.run(run(rate=0))  # 0.5 s in all: the third chunk is late
    assert answered[0]["status"] == 408 and len(answered) == 2


def test_forwarded_for_is_believed_only_from_configured_proxies(make_server):
    """Without a configured proxy, X-Forwarded-For cannot name another address (it would lift the
    per-address limits); from a configured proxy it names the client."""
    limited = make_server(preload_model=False, rate_limit_per_minute=1, rate_limit_burst=2)  # no refill within the test
    statuses = [httpx.get(limited.base_url + "/api/public/agent", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
                for i in range(4)]
    assert statuses[:2] == [401, 401] and statuses[-1] == 429, statuses  # one caller: 127.0.0.1
    proxied = make_server(preload_model=False, rate_limit_per_minute=1, rate_limit_burst=2, trusted_proxies="127.0.0.1")
    statuses = [httpx.get(proxied.base_url + "/api/public/agent", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
                for i in range(4)]
    assert statuses == [401] * 4, statuses  # four callers, each within its burst
    statuses = [httpx.get(proxied.base_url + "/api/public/agent", headers={"X-Forwarded-For": "10.0.0.9"}).status_code
                for i in range(4)]
    assert statuses[-1] == 429, statuses  # and one named address is still limited


def test_json_inside_strings_is_decoded_like_bodies(org_server):
    """OpenAI tool-call arguments are JSON in a string: refused as bodies are, before any model turn."""
    server = org_server
    client = server.client()
    for arguments in ("[" * 1000 + "]" * 1000, '{"n": ' + "9" * 5000 + "}", '{"n": NaN}', '{"n": "\\udfff"}'):
        messages = [{"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                          "function": {"name": "f", "arguments": arguments}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
        answer = client.post("/v1/chat/completions", json={"model": "local", "messages": messages, "max_tokens": 1})
        assert answer.status_code == 400, (arguments[:20], answer.text[:300])
        assert answer.json()["error"]["param"] == "messages[1].tool_calls[0].function.arguments", answer.text[:300]
