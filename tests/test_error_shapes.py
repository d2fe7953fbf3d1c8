"""Errors leave in the documented shape of the surface they leave by, including those raised before
any route is chosen (404, 405), by Litestar itself (413), by the rate limiter (429) and by the body
deadline (408): the Agents API's (also the Chats API's) ``{"error", "message"}``, the messaging APIs'
``{"status": "error", "message"}`` and OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
import socket
import time

import httpx


def common(response: httpx.Response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status and isinstance(body["error"], str) and isinstance(body["message"], str), response.text
    assert set(body) == {"error", "message"}, body
    return body


def messaging(response: httpx.Response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status and body["status"] == "error" and isinstance(body["message"], str), response.text
    assert set(body) == {"status", "message"}, body
    return body


def openai(response: httpx.Response, status: int) -> dict:
    body = response.json()
    assert response.status_code == status and set(body) == {"error"}, response.text
    assert set(body["error"]) == {"message", "type", "param", "code"} and isinstance(body["error"]["message"], str), body
    return body["error"]


def test_unknown_routes_and_wrong_methods_answer_in_each_surfaces_shape(make_server):
    server = make_server(max_body_bytes=4096)
    client = server.client()
    bearer = server.client(key="", Authorization=f"Bearer {server.key}")

    common(client.get("/api/public/nope"), 404)
    common(client.get("/chats/x/nope"), 404)
    messaging(client.get("/rest/v1/nope"), 404)
    messaging(client.get("/v1/projects/x/nope"), 404)
    assert openai(client.get("/v1/nope"), 404)["code"] == "not_found"

    assert common(client.put("/api/public/agent"), 405)["error"] == "Method not allowed"
    common(client.put("/chatflows"), 405)
    wrong = client.delete("/rest/v1/businesshours")
    messaging(wrong, 405)
    assert "GET" in wrong.headers["allow"]
    messaging(bearer.put("/v1/projects"), 405)
    assert openai(client.get("/v1/chat/completions"), 405)["code"] == "method_not_allowed"

    big = json.dumps({"name": "x" * 10_000}).encode()
    headers = {"Content-Type": "application/json"}
    assert common(client.post("/api/public/agent", content=big, headers=headers), 413)["error"] == "Request body too large"
    common(server.client(key="", **{"X-API-KEY": server.key}).post("/chats", content=big, headers=headers), 413)
    messaging(bearer.post("/v1/projects", content=big, headers=headers), 413)
    assert openai(bearer.post("/v1/chat/completions", content=big, headers=headers), 413)["code"] == "request_too_large"

    # each surface's documentation names its own shape for what any operation may answer
    document = client.get("/schema/openapi.json").json()
    def shape(path: str, method: str, status: str) -> str:
        return document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    assert shape("/v1/projects", "post", "413").endswith("/RestError") and shape("/v1/projects", "get", "429").endswith("/RestError")
    assert shape("/api/public/agent", "post", "413").endswith("/ErrorBody") and shape("/rest/v1/businesshours", "get", "429").endswith("/RestError")


def test_rate_limit_answers_in_each_surfaces_shape(make_server):
    server = make_server(rate_limit_per_minute=1, rate_limit_burst=1)
    client = server.client()
    assert client.get("/api/public/agent").status_code == 200  # the one request the bucket holds, on any route
    for path, render in (("/api/public/agent", common), ("/chats", common), ("/rest/v1/businesshours", messaging),
                         ("/v1/projects", messaging), ("/v1/models", openai)):
        response = client.get(path)
        assert int(response.headers["retry-after"]) >= 1
        assert "Rate limit exceeded" in render(response, 429)["message"]


def test_a_slow_body_gets_its_408_in_the_surfaces_shape(make_server):
    server = make_server(request_body_timeout_ms=500, request_body_min_rate=0)
    for path, auth, shape in (("/v1/projects", f"Bearer {server.key}", "messaging"), ("/api/public/agent", server.key, "common")):
        host, port = server.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
                          "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode())
            started, answer = time.monotonic(), b""
            while not answer.endswith(b"}") and time.monotonic() - started < 20:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        if shape == "messaging":
            assert body["status"] == "error" and "did not arrive" in body["message"], body
        else:
            assert body["error"] == "Request timeout" and "did not arrive" in body["message"], body
