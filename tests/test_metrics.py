"""Prometheus metrics and JSON logs, read from a real server: its loopback metrics port and its
/metrics route (with the metrics key) after real requests, a real model call, real embeddings and a
real messaging socket; and its access log in the json format."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowbox import __version__
from flowbox import config as config_mod
from flowbox.logs import JsonFormatter
from flowbox.metrics import METRICS
from tests.helpers import Shop, create_agent, eventually, free_port, ping

METRICS_KEY = "metrics-" + "k" * 24
EMBEDDING_MODEL = "all-minilm-l6-v2"
SOCKET = "/ws/{token}"  # the messaging socket's route template
SERVER_OPTIONS = {"metrics_port": free_port(), "metrics_key": METRICS_KEY, "log_format": "json"}  # both ways in, and JSON logs


def scrape(srv) -> dict[str, dict[tuple, float]]:
    """The metrics port's samples: {sample name: {sorted labels: value}}."""
    response = httpx.get(f"http://127.0.0.1:{srv.config.metrics_port}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[name].get(tuple(sorted(labels.items())), 0.0)


def test_requests_a_model_call_embeddings_and_a_socket_show_in_the_metrics(org_server):
    before = scrape(org_server)
    client = org_server.client()
    agent = create_agent(client)
    for _ in range(2):
        assert client.get(f"/api/public/agent/{agent['id']}").status_code == 200
    assert client.get("/api/public/agent/no-such-agent").status_code == 404
    reply = client.post("/v1/chat/completions", json={"model": "local", "max_tokens": 4, "temperature": 0,
                                                      "messages": [{"role": "user", "content": "Count from one to ten."}]})
    assert reply.status_code == 200, reply.text
    tokens = reply.json()["usage"]["completion_tokens"]
    embedded = client.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": ["one", "two", "three"], "encoding_format": "float"})
    assert embedded.status_code == 200, embedded.text
    shop = Shop(org_server)
    with shop.open() as ws:
        ping(ws)
        during = scrape(org_server)

    def closed():
        samples = scrape(org_server)
        return samples if value(samples, "flowbox_websockets_open", route=SOCKET) == 0 else None

    after = eventually(closed, "the socket counted as closed")

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/api/public/agent/{agent_id}"  # the template: never the id itself
    assert grew("flowbox_http_requests_total", method="GET", route=route, status="200") == 2
    assert grew("flowbox_http_requests_total", method="GET", route=route, status="404") == 1
    assert grew("flowbox_http_requests_total", method="POST", route="/v1/chat/completions", status="200") == 1
    assert grew("flowbox_http_request_duration_seconds_count", method="GET", route=route, status="200") == 2
    assert value(after, "flowbox_http_request_duration_seconds_bucket", method="GET", route=route, status="200", le="+Inf") == \
        value(after, "flowbox_http_requests_total", method="GET", route=route, status="200")
    assert grew("flowbox_http_request_duration_seconds_sum", method="GET", route=route, status="200") > 0
    labels = {v for series in after.values() for key in series for _, v in key}
    assert agent["id"] not in labels and "no-such-agent" not in labels

    # the model call: queued, a first token, tokens after it
    assert grew("flowbox_model_queue_wait_seconds_count", model="local") >= 1
    assert grew("flowbox_model_time_to_first_token_seconds_count", model="local") == 1
    assert grew("flowbox_model_decode_tokens_total", model="local") == tokens - 1
    assert grew("flowbox_model_decode_seconds_total", model="local") > 0
    assert value(after, "flowbox_model_queue_waiting", model="local") == 0
    assert value(after, "flowbox_model_generations_running", model="local") == 0

    assert grew("flowbox_embeddings_total", model=EMBEDDING_MODEL) >= 3  # and the shop flow's intent examples
    assert value(during, "flowbox_websockets_open", route=SOCKET) == 1
    for status in ("pending", "delivered", "dead"):
        assert ("status", status) in {k[0] for k in after["flowbox_outbox_deliveries"]}
    for outcome in ("delivered", "retry", "dead"):
        assert (("outcome", outcome),) in after["flowbox_outbox_attempts_total"]
    assert set(after["flowbox_chats"]) == {(("status", "running"),), (("status", "waiting"),)}
    assert value(after, "flowbox_build_info", version=__version__) == 1
    assert after["process_resident_memory_bytes"]
    exported = {name.removesuffix(suffix) for name in after for suffix in ("_total", "_bucket", "_count", "_sum", "") if name.endswith(suffix)}
    pool_only = {"flowbox_remote_server_up", "flowbox_remote_server_in_flight"}  # with remote servers: tests/models/test_pool.py
    assert set(METRICS) - pool_only <= exported, set(METRICS) - pool_only - exported


def test_metrics_on_the_main_port_need_the_metrics_key(module_server):
    url = f"{module_server.base_url}/metrics"
    missing = httpx.get(url)
    assert missing.status_code == 401 and set(missing.json()) == {"error", "message"}
    for wrong in ("Bearer " + "x" * 32, METRICS_KEY[:-1], module_server.key):  # an org's API key is not the metrics key
        assert httpx.get(url, headers={"Authorization": wrong}).status_code == 401
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_KEY}"})
    assert allowed.status_code == 200 and "flowbox_http_requests_total" in allowed.text
    plain = config_mod.load(None)  # by default neither way in is open: no key (no route), no port
    assert plain.metrics_key == "" and plain.metrics_port == 0


def test_the_metrics_port_is_on_loopback_only(module_server):
    port = module_server.config.metrics_port
    with pytest.raises(ConnectionRefusedError):  # another loopback address: bound to 127.0.0.1 alone, not to every address
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 404
    assert httpx.post(f"http://127.0.0.1:{port}/metrics").status_code == 405
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # not HTTP: closed without an answer
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        assert sock.recv(100) == b""


@pytest.fixture
def access_log():
    """What the access log writes while the test runs."""
    handler = next(h for h in logging.getLogger("flowbox.access").handlers if getattr(h, "_flowbox_access", False))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def test_json_log_lines_carry_the_request_and_no_credential(org_server, access_log):
    client = org_server.client(**{"X-Request-ID": "trace-123"})
    agent = create_agent(client)
    assert client.get(f"/api/public/agent/{agent['id']}").status_code == 200
    # a key in the query string (browsers' event streams) and one in a request id of the client's choosing
    assert httpx.get(f"{org_server.base_url}/chats/no-such-chat/stream", params={"access_token": org_server.key}).status_code == 404
    assert httpx.get(f"{org_server.base_url}/healthz", headers={"X-Request-ID": org_server.key}).status_code == 200
    lines = eventually(lambda: len(lines := access_log.getvalue().splitlines()) >= 4 and lines, "four access lines")
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert {"time", "level", "logger", "message", "request_id", "method", "path", "route", "status", "duration_ms"} <= set(entry)
        assert entry["time"].endswith("Z") and entry["level"] == "info"
    read = next(e for e in entries if e["method"] == "GET" and e["route"] == "/api/public/agent/{agent_id}")
    assert read["status"] == 200 and read["org_id"] == org_server.org_id and read["request_id"] == "trace-123"
    assert read["path"] == f"/api/public/agent/{agent['id']}" and read["duration_ms"] >= 0
    stream = next(e for e in entries if e["route"] == "/chats/{chat_id}/stream")
    assert stream["status"] == 404 and "org_id" in stream
    text = access_log.getvalue()
    assert org_server.key not in text and org_server.key[:12] not in text and "access_token" not in text
    assert "name" not in read and agent["name"] not in text  # no bodies


def test_json_formatter_redacts_messages_fields_and_tracebacks():
    key = "fbx_" + "s3cr3t" * 6
    try:
        raise ValueError(f"bad key {key}")
    except ValueError:
        record = logging.LogRecord("flowbox", logging.ERROR, __file__, 1, "calling %s?access_token=%s", ("/chats/x/ws", key), sys.exc_info())
    record.path = f"/ws/{key}"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["path"] == "/ws/[redacted]" and "ValueError" in entry["error"]
    assert key not in json.dumps(entry)


def test_the_grafana_dashboard_reads_only_metrics_flowbox_exports():
    dashboard = json.loads((Path(__file__).parents[1] / "packaging" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {re.sub(r"_(total|bucket|count|sum)$", "", name) for expr in exprs for name in re.findall(r"\bflowbox_[a-z_]+", expr)}
    assert used and used <= set(METRICS), used - set(METRICS)
    assert set(METRICS) - used <= {"flowbox_build_info"}, set(METRICS) - used  # every metric has a panel (the version: the instance list)
