"""Rate limits, request logs without secrets, CORS, TLS, online backup and restore under load."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import ssl
import subprocess
import sys
import threading

import httpx
import pytest

from flowbox.middleware import TokenBuckets
from tests.helpers import ServeProcess, create_agent, eventually, free_port, self_signed_cert


def test_token_buckets_refill():
    buckets = TokenBuckets(per_minute=60, burst=2)
    assert buckets.take("a", now=0) == 0 and buckets.take("a", now=0) == 0
    assert buckets.take("a", now=0) == pytest.approx(1.0)
    assert buckets.take("b", now=0) == 0  # callers are independent
    assert buckets.take("a", now=1.01) == 0  # one token a second


def test_rate_limit_answers_429_with_retry_after(make_server):
    server = make_server(rate_limit_per_minute=30, rate_limit_burst=3, preload_model=False)
    client = server.client()
    statuses = [client.get("/api/public/agent").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429
    response = client.get("/api/public/agent")
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == "Too many requests"
    _, other_key = server.new_org()
    assert server.client(key=other_key).get("/api/public/agent").status_code == 200


def test_request_log_has_ids_and_no_secrets(server, caplog):
    caplog.set_level(logging.INFO, logger="flowbox.access")
    client = server.client()
    agent = create_agent(client, name="secretive", max_tokens=4)
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "my password is hunter2"},
                           headers={"X-Request-ID": "req-abc-123"})
    assert response.headers["x-request-id"] == "req-abc-123"
    assert re.fullmatch(r"[0-9a-f]{16}", client.get("/api/public/agent").headers["x-request-id"])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "req-abc-123 POST /api/public/agent/" in text and " 200 " in text
    assert server.key not in text and "hunter2" not in text


def test_cors_closed_by_default_open_per_origin(make_server):
    closed = make_server(preload_model=False)
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    response = httpx.options(f"{closed.base_url}/api/public/agent", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    opened = make_server(preload_model=False, cors_origins="https://shop.example")
    response = httpx.options(f"{opened.base_url}/api/public/agent", headers=preflight)
    assert response.headers.get("access-control-allow-origin") == "https://shop.example"
    response = httpx.options(f"{opened.base_url}/api/public/agent", headers={**preflight, "Origin": "https://evil.example"})
    assert response.headers.get("access-control-allow-origin") != "https://evil.example"


def test_tls_serves_https(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    server = ServeProcess("--data-dir", str(tmp_path / "d"), "--tls-cert", str(cert), "--tls-key", str(key), scheme="https")
    try:
        assert server.base in server.output
        response = httpx.get(f"{server.base}/api/public/agent", headers={"Authorization": server.first_key},
                             verify=ssl.create_default_context(cafile=str(cert)))
        assert response.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/api/public/agent", timeout=5)
    finally:
        server.stop()
    result = subprocess.run([sys.executable, "-m", "flowbox", "serve", "--port", str(free_port()), "--tls-cert", str(cert)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "tls" in result.stderr.lower()


def _cli(*args):
    result = subprocess.run([sys.executable, "-m", "flowbox", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Writer:
    """Creates agents as fast as one client can, in a thread; records every answer."""

    def __init__(self, server):
        self.server, self.acknowledged, self.failures = server, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.base_url, headers={"Authorization": self.server.key}, timeout=60) as c:
            i = 0
            while not self._stop.is_set():
                response = c.post("/api/public/agent", json={"name": f"agent {i}"})
                if response.status_code == 201:
                    self.acknowledged.append(response.json()["id"])
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_backup_and_restore_under_write_load(server, tmp_path):
    client = server.client()
    writer = Writer(server)
    try:
        eventually(lambda: len(writer.acknowledged) >= 5, "writes acknowledged before the backup")
        before_backup = list(writer.acknowledged)
        info = _cli("backup", str(tmp_path / "snap.db"), "--json")
        after_backup = list(writer.acknowledged)
        eventually(lambda: len(writer.acknowledged) >= len(after_backup) + 5, "writes acknowledged after the backup")

        # restore while the writes go on: no write fails, and the server serves the backup's agents
        # plus whatever was acknowledged after the restore returned
        before_restore = set(writer.acknowledged)
        result = _cli("restore", info["path"], "--json")
        after_restore = len(writer.acknowledged)
        eventually(lambda: len(writer.acknowledged) >= after_restore + 5, "writes acknowledged after the restore")
    finally:
        writer.stop()
    assert not writer.failures, writer.failures[:5]
    snap = sqlite3.connect(info["path"])
    assert snap.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    in_backup = {r[0] for r in snap.execute("select id from agents")}
    snap.close()
    assert set(before_backup) <= in_backup <= set(after_backup)
    assert len(before_restore) > len(after_backup)  # writes went on during and after the backup

    assert result["previous_copy"]
    listed = {a["id"] for a in client.get("/api/public/agent").json()["agents"]}
    written_since = set(writer.acknowledged[after_restore:])
    assert written_since and in_backup | written_since <= listed <= in_backup | set(writer.acknowledged)
    assert not listed & (before_restore - in_backup)  # what the backup did not hold is gone: that is a restore
    live = sqlite3.connect(server.config.db_path)
    assert live.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    live.close()


def test_restore_refuses_a_bad_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 100)
    result = subprocess.run([sys.executable, "-m", "flowbox", "restore", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "not a readable SQLite database" in result.stderr
