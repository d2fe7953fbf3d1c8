"""A remote model on a pool of two real llama_cpp.server processes on loopback: one is killed (SIGKILL)
in the middle of a run of chats, and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from flowbox import config as config_mod
from flowbox.errors import ModelError, ReplyBroken
from flowbox.metrics import Metrics
from flowbox.models import ChatRequest, generate
from flowbox.models.files import model_path
from flowbox.models.pool import Pool
from flowbox.models.remote import RemoteChatModel
from flowbox.status import live
from tests.helpers import Receiver, create_agent, eventually, free_port, wait_serving

CHATS = 6


class LlamaServer:
    """llama_cpp.server serving the test model on a port of its own, which a restart keeps."""

    def __init__(self, models_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.args = [sys.executable, "-m", "tests.llama_server", "--model", str(model_path(models_dir, "smollm2")),
                     "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "512", "--model_alias", "smol",
                     "--n_threads", "1", "--n_threads_batch", "1", "--verbose", "False",
                     "--interrupt_requests", "False"]  # a second request waits for the first instead of cutting it short
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> None:
        try:
            wait_serving(self.proc, f"{self.url}/models", "llama_cpp.server", timeout=120)
        except AssertionError:
            self.proc.kill()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def servers(models_dir):
    pair = [LlamaServer(models_dir), LlamaServer(models_dir)]
    for server in pair:  # both load at once
        server.start()
    try:
        for server in pair:
            server.wait()
        yield pair
    finally:
        for server in pair:
            server.stop()


@pytest.fixture
def backends(servers):
    """Both servers serving (one a test killed is started again)."""
    dead = [server for server in servers if not server.alive()]
    for server in dead:
        server.start()
    for server in dead:
        server.wait()
    return servers


@pytest.fixture
def pooled(backends, make_server, monkeypatch):
    """A flowbox server whose model "remote" is the pool of both, an agent on it, and the pool."""
    monkeypatch.setenv("FLOWBOX_REMOTE_BASE_URLS", ",".join(server.url for server in backends))
    monkeypatch.setenv("FLOWBOX_REMOTE_MODEL", "smol")
    srv = make_server(preload_model=False)
    client = srv.client()
    agent = create_agent(client, name="pooled", model="remote", instructions="Answer briefly.", max_tokens=8)
    pool = srv.call(srv.services.models.get("remote")).pool
    return srv, client, agent, pool


def state(pool, server) -> dict:
    return next(b for b in pool.snapshot() if b["url"] == server.url)


def test_a_server_killed_mid_run_fails_no_chat_and_is_probed_back_in(pooled, backends):
    srv, client, agent, pool = pooled
    victim, survivor = backends
    results: list[httpx.Response] = []

    def chats(n: int) -> None:
        with httpx.Client(base_url=srv.base_url, headers={"Authorization": srv.key}, timeout=120) as own:
            for i in range(n):
                results.append(own.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": f"Say hello to number {i}."}))

    runs = [threading.Thread(target=chats, args=(CHATS // 2,)) for _ in range(2)]
    for run in runs:
        run.start()
    # Killed while it streams a reply (its answer began): that chat is asked again on the survivor.
    eventually(lambda: state(pool, victim)["answering"], "a reply streaming from the server to kill")
    victim.kill9()
    served_by_victim = state(pool, victim)["served"]
    for run in runs:
        run.join(timeout=120)

    assert [r.status_code for r in results] == [200] * CHATS, [r.text for r in results if r.status_code != 200]
    assert all(r.json()["body"]["conversation_history"][-1]["content"] for r in results)
    gone, kept = state(pool, victim), state(pool, survivor)
    assert not gone["up"] and gone["failures"] >= 1 and gone["served"] == served_by_victim
    # every chat the victim did not finish was answered by the survivor
    assert kept["served"] >= CHATS - served_by_victim and kept["up"]
    # what an operator sees: flowbox status's live part and the metrics
    remote = next(model for model in live(srv.services)["models"] if model["name"] == "remote")
    assert [(server["url"], server["up"]) for server in remote["servers"]] == [(victim.url, False), (survivor.url, True)]
    scraped = srv.call(srv.services.state(Metrics).render()).decode()
    assert f'flowbox_remote_server_up{{model="remote",url="{victim.url}"}} 0.0' in scraped
    assert f'flowbox_remote_server_up{{model="remote",url="{survivor.url}"}} 1.0' in scraped

    victim.start()
    victim.wait()
    eventually(lambda: state(pool, victim)["up"], "the restarted server probed back into the pool", timeout=30)
    for _ in range(2):  # an idle pool takes turns: the next two chats go one to each
        assert client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi."}).status_code == 200
    assert state(pool, victim)["served"] == served_by_victim + 1


def test_a_reply_cut_after_text_was_streamed_fails_and_is_not_sent_again(pooled, backends):
    srv, client, _, pool = pooled
    agent = create_agent(client, name="long", model="remote", max_tokens=200)  # still streaming when the server dies
    with client.stream("POST", f"/api/public/agent/{agent['id']}/chat", json={"messages": "Write a long story about bees."},
                       headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: delta"
        serving = next(server for server in backends if state(pool, server)["answering"])
        other = next(server for server in backends if server is not serving)
        before = state(pool, other)["served"]
        serving.kill9()
        events = [line for line in lines if line.startswith(("event:", "data:"))]
    last_event = [line for line in events if line.startswith("event:")][-1]
    assert last_event == "event: error", events
    assert json.loads(events[-1][5:]) == {"statusCode": 503, "body": {
        "agent_id": agent["id"], "message": "Service temporarily unavailable", "error": "AI provider is currently experiencing high traffic"}}
    assert state(pool, other)["served"] == before  # text had reached the caller: not asked again
    assert not state(pool, serving)["up"]


def test_base_urls_config_and_pick_order():
    env = {"FLOWBOX_REMOTE_BASE_URL": "http://a:1/v1", "FLOWBOX_REMOTE_BASE_URLS": "http://a:1/v1/, http://b:2/v1", "FLOWBOX_REMOTE_MODEL": "m"}
    remote = config_mod.load(None, env=env).remotes["remote"]
    assert remote.base_urls == ("http://a:1/v1", "http://b:2/v1") and remote.base_url == "http://a:1/v1"
    with pytest.raises(config_mod.ConfigError, match="remote.remote.base_urls"):
        config_mod.load(None, env={"FLOWBOX_REMOTE_BASE_URLS": "ftp://x", "FLOWBOX_REMOTE_MODEL": "m"})

    async def never(url: str) -> bool:
        return False

    pool = Pool("m", ["a", "b", "c"], never)
    a, b, c = pool.backends
    assert [pool.pick().url for _ in range(4)] == ["a", "b", "c", "a"]  # idle: in turn
    with pool.lease(a), pool.lease(b):
        assert pool.pick().url == "c"  # the least busy
        assert pool.pick({"c"}).url == "b"  # a request that failed on c: the least busy of the rest
    c.down_since = 1.0
    assert [pool.pick().url for _ in range(3)] == ["a", "b", "a"]  # one that is out only when nothing else is left
    assert pool.pick({"a", "b"}).url == "c" and pool.pick({"a", "b", "c"}) is None


SSE_REPLY = (200, 'data: {"choices": [{"delta": {"content": "Hello"}}]}\n\ndata: [DONE]\n\n', {"Content-Type": "text/event-stream"})


@pytest.mark.parametrize("status,failed_over", [(503, True), (400, False)])
def test_an_unavailable_answer_goes_to_the_next_server_a_refusal_does_not(status, failed_over):
    first, second = Receiver(lambda record: (status, {"error": {"message": "no"}})), Receiver(lambda record: SSE_REPLY)
    urls = (first.url("/v1"), second.url("/v1"))

    async def ask():
        model = RemoteChatModel(config_mod.RemoteModel("pair", urls[0], "m", base_urls=urls))
        try:
            return await generate(model, ChatRequest(messages=[{"role": "user", "content": "hi"}])), model.pool.snapshot()
        except ModelError as exc:
            return exc, model.pool.snapshot()
        finally:
            await model.aclose()

    try:
        result, pool = asyncio.run(ask())
    finally:
        first.stop()
        second.stop()
    if failed_over:  # 502/503/504: not this server, not now
        assert result.text == "Hello" and [b["up"] for b in pool] == [False, True] and len(second.requests) == 1
    else:  # any other refusal would be the same anywhere: it is the answer
        assert f"answered {status}" in str(result) and [b["up"] for b in pool] == [True, True] and not second.requests


def breaking_server() -> tuple[socket.socket, str]:
    """A server that begins a streamed reply (one word) and dies: the connection closes mid-stream."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                chunk = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"%x\r\n%s\r\n" % (len(chunk), chunk))

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_reply_cut_short_is_asked_again_only_while_no_text_reached_the_caller(streamed):
    listener, broken = breaking_server()
    good = Receiver(lambda record: SSE_REPLY)
    seen: list[str] = []

    async def on_text(text: str) -> None:
        seen.append(text)

    async def ask():
        model = RemoteChatModel(config_mod.RemoteModel("pair", broken, "m", base_urls=(broken, good.url("/v1"))))
        try:
            return await generate(model, ChatRequest(messages=[{"role": "user", "content": "hi"}]), on_text=on_text if streamed else None)
        except ReplyBroken as exc:
            return exc
        finally:
            await model.aclose()

    try:
        result = asyncio.run(ask())
    finally:
        listener.close()
        good.stop()
    if streamed:  # "Hel" reached the caller: the turn fails, nothing is asked again
        assert isinstance(result, ReplyBroken) and seen == ["Hel"] and not good.requests
    else:
        assert result.text == "Hello" and len(good.requests) == 1
