"""What the tests share, in one module: real servers on 127.0.0.1 (in a thread, or ``flowbox serve`` as a
child process), a real HTTP receiver for outbound calls, ``eventually()`` for waiting on a state, and
small helpers. The fixtures that use them are in conftest.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from flowbox import config as config_mod
from flowbox import orgs
from flowbox.app import create_app, uvicorn_options
from flowbox.cli.main import cli as flowbox_cli
from flowbox.messaging import projects
from flowbox.models.files import ensure_model

MODELS_DIR = Path(os.environ.get("FLOWBOX_TEST_MODELS_DIR") or Path.home() / ".cache" / "flowbox-test-models")


@functools.cache
def models() -> Path:
    """The prepared chat and embedding models, shared by all tests (preparing them is slow; they never
    change). Called by what needs them, so tests that never load a model never download one."""
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    ensure_model(MODELS_DIR, "smollm2", progress=False)
    ensure_model(MODELS_DIR, "all-minilm-l6-v2", progress=False)
    ensure_model(MODELS_DIR, "all-minilm-l6-v2-intents", progress=False)
    ensure_model(MODELS_DIR, "all-minilm-l6-v2-pairs", progress=False)
    ensure_model(MODELS_DIR, "all-minilm-l6-v2-answers", progress=False)
    ensure_model(MODELS_DIR, "e5-small", progress=False)
    return MODELS_DIR


def eventually(check: Callable[[], Any], what: str | Callable[[], str], timeout: float = 120, interval: float = 0.02) -> Any:
    """Polls ``check()`` until it returns something truthy, and returns that. Tests wait for the state they
    need this way, never for a fixed time; deadlines are generous because CI machines are busy. ``what``
    names the state (a callable is asked only on failure, for a message that shows how far it got)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what() if callable(what) else what}")
        time.sleep(interval)
    return value


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

    def local_model(self):
        """The local chat model's backend (its worker starts if it has not yet)."""
        return self.call(self.services.models.get("local"))

    def new_org(self, name: str = "other") -> tuple[str, str]:
        async def go():
            org = await orgs.create_org(self.services.store, name)
            key, _ = await orgs.create_key(self.services.store, org["id"], "test")
            return org["id"], key

        return self.call(go())

    def in_new_org(self, name: str = "test") -> Server:
        """This server as seen from a fresh org with its own key: tests sharing one server each work in
        an org of their own, so what one creates is invisible to the next. ``stop()`` on it only
        closes its clients."""
        org_id, key = self.new_org(name)
        return dataclasses.replace(self, key=key, org_id=org_id, clients=[], _server=None, _thread=None)

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)


def start_server(tmp_path: Path, preload_model: bool = False, **overrides) -> Server:
    """``preload_model=False``: the model's worker starts on the first chat, as in a server whose
    first request is a chat; most tests never chat, and starting a worker costs a second of CPU."""
    models()
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


class ServeProcess:
    """``flowbox serve`` as a child process, for what only a real process shows (the first run's output,
    signals, kill -9, TLS). Started when made; ``output`` is what it printed until it was serving."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, scheme: str = "http"):
        models()
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


def wait_serving(proc: subprocess.Popen, url: str, what: str = "flowbox serve", timeout: float = 180) -> None:
    """Until a server child process answers ``url`` with 200 (it must not exit meanwhile). Generous: on a
    loaded machine a start, or one answer from a server busy with its backlog, takes many times its usual."""

    def healthy() -> bool:
        assert proc.poll() is None, f"{what} exited"
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(healthy, f"{what} answering at {url}", timeout=timeout, interval=0.1)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl for this test."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def cli(*args: str, input: str | None = None, code: int = 0, env: dict[str, str] | None = None):
    """The flowbox CLI in-process, as a user runs it (its data dir: the test's ``FLOWBOX_DATA_DIR``),
    without a process start per command. Expects exit status ``code`` and no traceback."""
    result = CliRunner().invoke(flowbox_cli, list(args), input=input, env=env)
    assert result.exit_code == code, (result.output, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def create_agent(client: httpx.Client, **fields) -> dict:
    fields.setdefault("name", "test agent")
    response = client.post("/api/public/agent", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


# -- knowledge -------------------------------------------------------------------------------------

KNOWLEDGE_URL = "/api/public/knowledge"


def knowledge_org(srv: Server, **agent_fields) -> tuple[str, httpx.Client, dict]:
    """A fresh org on a shared server: (org id, client, an agent)."""
    org_id, key = srv.new_org("kb")
    client = srv.client(key=key)
    return org_id, client, create_agent(client, **{"name": "kb agent", **agent_fields})


def add_knowledge(client: httpx.Client, agent_ids, content: str, **fields) -> dict:
    response = client.post(KNOWLEDGE_URL, json={"content": content, "agent_ids": agent_ids, **fields})
    assert response.status_code == 200, response.text
    return response.json()


# -- messaging sockets -----------------------------------------------------------------------------

# The shop flow the messaging tests drive (nested contexts, slots, events, handover, unknown fallbacks).
SHOP_FLOW = json.loads((Path(__file__).parent / "messaging" / "messaging_flow.json").read_text())
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


class Shop:
    """A project with the shop flow on a running server, and socket helpers."""

    def __init__(self, server):
        self.server = server
        project, self.token = server.call(projects.create_project(server.services.store, server.org_id, "shop", {}))
        self.project_id, self.client_id = project["id"], project["client_id"]
        self.rest = server.client(f"Bearer {self.token}")
        assert self.rest.post(f"/v1/projects/{self.project_id}/flows", json=SHOP_FLOW).status_code == 201
        self.http = server.client("")

    def info(self, headers: dict | None = None, **params) -> httpx.Response:
        if headers is None:
            params = {"clientId": self.client_id, "sessionId": "s-1", **params}
        return self.http.get("/socket.info", params={k: v for k, v in params.items() if v is not None}, headers=headers or {})

    def endpoint(self, **params) -> str:
        response = self.info(**params)
        assert response.status_code == 200, response.text
        return response.json()["payload"]["endpoint"]

    def open(self, **params):
        return connect(self.endpoint(**params), open_timeout=10)

    def sdk_headers(self, thread: str | None = None, secret: str | None = None) -> dict:
        # What flowai-js sends: unset values arrive as the words "null" / "undefined".
        return {"x-flowai-clientid": self.client_id, "x-flowai-sessionid": "sdk-session", "x-flowai-threadid": thread or "undefined",
                "x-flowai-secret": secret or "null", "x-flowai-ott": "null"}


def recv(ws, timeout: float = 120) -> dict:
    """The next frame; as generous as ``eventually()``: a fresh server's first message loads the embedding
    model, which took 8-11 s on a busy 2-core machine (and past 15 s beside a second test process)."""
    return json.loads(ws.recv(timeout=timeout))


def send(ws, type_: str, **payload) -> None:
    ws.send(json.dumps({"type": type_, "payload": payload}))


def say(ws, thread: str, speech: str, trace: int | None = None, **extra) -> tuple[dict, dict]:
    """message.send; returns (message.delivered payload, message.received payload)."""
    send(ws, "message.send", threadId=thread, speech=speech, traceId=trace, **extra)
    delivered, received = recv(ws), recv(ws)
    assert delivered["type"] == "message.delivered" and received["type"] == "message.received", (delivered, received)
    return delivered["payload"], received["payload"]


def texts(payload: dict) -> list[str]:
    return [r["payload"]["text"] for m in payload["messages"] for r in m["responses"]]


def ping(ws) -> None:
    """Nothing else is queued for this socket: the next frame is the pong."""
    send(ws, "ping")
    assert recv(ws) == {"type": "pong"}


def closed(ws, timeout: float = 120) -> tuple[int, list[dict]]:
    """Reads until the server closes; (close code, frames read before)."""
    frames = []
    with pytest.raises(ConnectionClosed):
        while True:
            frames.append(recv(ws, timeout))
    return ws.close_code, frames


# -- a receiver for outbound calls ---------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stopping does not wait for a handler still playing a slow receiver

    def handle_error(self, request, client_address):
        pass  # a sender killed or timing out mid-request is what these tests do on purpose


class Receiver:
    """A real HTTP receiver on 127.0.0.1 for outbound calls (webhooks, callbacks, a stand-in Cloud API).
    It records every request and answers with what ``respond(record)`` returns: a status, or
    (status, body) / (status, body, headers); ``respond`` may sleep to play a slow or hanging receiver."""

    def __init__(self, respond: Callable[[dict], Any] | None = None, port: int = 0):
        self.respond = respond or (lambda record: 200)
        self.requests: list[dict] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    self.close_connection = True
                    return  # the sender was cut off mid-request (killed): as for any server, no request arrived
                record = {"method": "POST", "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": body, "at": time.time()}
                with receiver._cond:
                    record["n"] = len(receiver.requests)
                    receiver.requests.append(record)
                    receiver._cond.notify_all()
                try:
                    answer = receiver.respond(record)
                except Exception:  # the test's respond() failing must still answer
                    answer = 500
                status, body, headers = (answer, b"", {}) if isinstance(answer, int) else (tuple(answer) + ({},))[:3]
                if not isinstance(body, (bytes, str)):
                    body = json.dumps(body)
                body = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller gave up (a timeout test)

            def log_message(self, *args):
                pass

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, n: int, timeout: float = 30) -> list[dict]:
        """Waits until at least ``n`` requests arrived; returns them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"expected {n} requests, got {len(self.requests)} in {timeout}s")
            return list(self.requests)

    def delivery_ids(self) -> Counter:
        with self._cond:
            return Counter(r["headers"].get("x-flowbox-delivery") for r in self.requests)

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index]["body"])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
