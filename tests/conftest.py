"""Fixtures: every test gets its own data dir (a real SQLite file); servers are real uvicorn servers
on 127.0.0.1 running the real app with the real local model. Prepared model files are shared
between tests in one cache dir, since preparing them is slow and they never change."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from flowbox import config as config_mod
from flowbox import orgs
from flowbox.app import create_app, uvicorn_options
from flowbox.models.files import ensure_model

MODELS_DIR = Path(os.environ.get("FLOWBOX_TEST_MODELS_DIR") or Path.home() / ".cache" / "flowbox-test-models")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    ensure_model(MODELS_DIR, "smollm2", progress=False)
    ensure_model(MODELS_DIR, "all-minilm-l6-v2", progress=False)
    return MODELS_DIR


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch, models_dir):
    """A fresh data dir per test; only the prepared models are shared."""
    for name in list(os.environ):
        if name.startswith("FLOWBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLOWBOX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOWBOX_MODELS_DIR", str(models_dir))
    yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A real flowbox server in a background thread, with a first org and key."""

    config: Any
    app: Any
    base_url: str
    key: str = ""
    org_id: str = ""
    loop: asyncio.AbstractEventLoop | None = None
    _server: Any = None
    _thread: Any = None
    clients: list = field(default_factory=list)

    @property
    def services(self):
        return self.app.state.services

    def client(self, key: str | None = None, **headers) -> httpx.Client:
        auth = {"Authorization": self.key if key is None else key} if (key is None or key) else {}
        client = httpx.Client(base_url=self.base_url, headers={**auth, **headers}, timeout=120)
        self.clients.append(client)
        return client

    def call(self, coro, timeout: float = 120):
        """Run a coroutine on the server's own event loop (to use its store and services)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def new_org(self, name: str = "other") -> tuple[str, str]:
        async def go():
            org = await orgs.create_org(self.services.store, name)
            key, _ = await orgs.create_key(self.services.store, org["id"], "test")
            return org["id"], key

        return self.call(go())

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)


def start_server(tmp_path: Path, preload_model: bool = False, **overrides) -> Server:
    """``preload_model=False``: the model's worker starts on the first chat, as in a server whose
    first request is a chat; most tests never chat, and starting a worker costs a second of CPU."""
    port = free_port()
    overrides.setdefault("rate_limit_per_minute", 0)  # tests that test limits turn them on
    cfg = config_mod.load(None).replace(host="127.0.0.1", port=port, **overrides)
    app = create_app(cfg, preload_model=preload_model)
    server = Server(config=cfg, app=app, base_url=f"http://127.0.0.1:{port}")
    uv = uvicorn.Server(uvicorn.Config(app, **{**uvicorn_options(cfg), "log_level": "warning"}, lifespan="on"))
    uv.install_signal_handlers = lambda: None  # not the main thread

    def run():
        loop = asyncio.new_event_loop()
        server.loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(uv.serve())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    server._server, server._thread = uv, thread
    deadline = time.time() + 60
    while not uv.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)

    async def first_key():
        org, _ = await orgs.ensure_default_org(server.services.store, with_key=False)
        key, _ = await orgs.create_key(server.services.store, org["id"], "test")
        return org["id"], key

    server.org_id, server.key = server.call(first_key())
    return server


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def receiver():
    """A real HTTP receiver on 127.0.0.1 for webhooks and callbacks (see receiver.py)."""
    from receiver import Receiver

    rec = Receiver()
    yield rec
    rec.stop()


@pytest.fixture
def make_server(tmp_path):
    """A factory for tests that need config overrides or several servers."""
    started: list[Server] = []

    def make(**overrides) -> Server:
        srv = start_server(tmp_path, **overrides)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


class ServeProcess:
    """``flowbox serve`` as a child process, for what only a real process shows (the first run's output,
    signals, kill -9, TLS). Started when made; ``output`` is what it printed until it was serving."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, scheme: str = "http"):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
        lines = []
        for line in self.proc.stdout:  # ends early if the process exits
            lines.append(line)
            if "Uvicorn running on" in line:
                break
        self.output = "".join(lines)
        assert self.proc.poll() is None, f"flowbox serve exited:\n{self.output}"
        self.later: list[str] = []  # what it prints after that (its log), line by line as it comes

        def drain() -> None:  # also keeps its pipe from filling up
            for line in self.proc.stdout:
                self.later.append(line)

        threading.Thread(target=drain, daemon=True).start()
        match = re.search(r"First API key .*: (fbx_\S+)", self.output)
        self.first_key = match.group(1) if match else None
        self.base = f"{scheme}://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """A clean shutdown: exit status 0."""
        self.proc.send_signal(sig)
        assert self.proc.wait(timeout=30) == 0


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl for this test."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def create_agent(client: httpx.Client, **fields) -> dict:
    fields.setdefault("name", "test agent")
    response = client.post("/api/public/agent", json=fields)
    assert response.status_code == 201, response.text
    return response.json()
