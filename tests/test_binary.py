"""The artifact itself: build the one-file executable (scripts/build_binary.sh), start it on
127.0.0.1 with a temp data dir, chat with an agent through it, stop it with SIGTERM, and use
its CLI; bad input gives the same one-line errors as the source.

Building takes minutes, so the executable is kept by a hash of everything that goes into it
(scripts/cached_binary.py; CI builds it before the tests); FLOWBOX_BINARY names a prebuilt
executable to test instead.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from flowbox.db import connect, migrate
from scripts.cached_binary import cached_binary
from tests.helpers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def binary() -> Path:
    if os.environ.get("FLOWBOX_BINARY"):
        return Path(os.environ["FLOWBOX_BINARY"])
    return cached_binary()


def run(binary: Path, *args: str, env: dict | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=180, env=env, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def clean_env(tmp_path: Path) -> dict:
    """No FLOWBOX_* from the test run, an empty models dir: the executable must bring its models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOX_")}
    env["FLOWBOX_MODELS_DIR"] = str(tmp_path / "models")
    return env


def test_executable_checks_itself(binary, tmp_path):
    """`flowbox selfcheck` from the executable: sqlite-vec loads, both bundled models load and answer, the
    console is packaged. Its build ran it once already (scripts/cached_binary.py keeps the report)."""
    report_file = binary.parent / "selfcheck.json"
    if report_file.exists():
        report = json.loads(report_file.read_text())
    else:
        report = json.loads(run(binary, "selfcheck", "--json", env=clean_env(tmp_path)).stdout)
    assert report["frozen"] and report["vec_version"].startswith("v") and report["dim"] == 384
    assert report["completion_tokens"] >= 1 and report["console_files"] > 10
    assert "flowbox_models" in report["chat_model"] and "flowbox_models" in report["embedding_model"]


def test_executable_size(binary):
    assert binary.stat().st_size <= 250_000_000, f"{binary.stat().st_size / 1e6:.0f} MB"


def test_executable_serves_a_chat_and_stops_cleanly(binary, tmp_path):
    port, data_dir = free_port(), tmp_path / "data"
    proc = subprocess.Popen([str(binary), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(tmp_path))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        key, deadline = None, time.monotonic() + 120
        while key is None:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            match = re.search(r"First API key .*: (fbx_\S+)", "".join(lines))
            key = match.group(1) if match else None
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"Authorization": key}, timeout=180) as client:
            while True:
                try:
                    if client.get("/api/public/agent").status_code == 200:
                        break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
                    time.sleep(0.05)
            agent = client.post("/api/public/agent", json={"name": "binary", "max_tokens": 16, "tools": ["calculator"]}).json()
            reply = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "What is 6*7?"})
            assert reply.status_code == 200, reply.text
            body = reply.json()["body"]
            assert body["conversation_history"][-1]["role"] == "assistant"
            assert any(c["result"]["result"] == 42 for c in body["metadata"]["tool_calls"].values())
            assert client.get("/").status_code == 200 and "flowbox" in client.get("/").text
            assert client.get("/schema").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert code == 0, output
    assert "Traceback" not in output, output
    assert (data_dir / "flowbox.db").exists()
    assert not (tmp_path / "models").exists(), "the models came from the executable, not a download"


def test_executable_cli(binary, tmp_path):
    env = {**clean_env(tmp_path), "FLOWBOX_DATA_DIR": str(tmp_path / "data")}
    help_text = run(binary, "--help", env=env).stdout
    commands = set(re.findall(r"^  (\w[\w-]*)\s", help_text, re.M))
    assert {"serve", "keys", "models", "agents"} <= commands and "selfcheck" not in commands
    created = json.loads(run(binary, "keys", "create", "--name", "ci", "--json", env=env).stdout)
    assert created["key"].startswith("fbx_")
    assert [k["id"] for k in json.loads(run(binary, "keys", "list", "--json", env=env).stdout)] == [created["id"]]
    models = {m["name"]: m for m in json.loads(run(binary, "models", "list", "--json", env=env).stdout)}
    assert all(models[name]["ready"] and "flowbox_models" in models[name]["path"] for name in ("smollm2", "all-minilm-l6-v2"))
    assert {"knowledge", "flows", "projects", "chatflows"} <= commands  # every area's commands are in the build
    assert json.loads(run(binary, "chatflows", "list", "--json", env=env).stdout) == []
    # The bundled embedding model, from the CLI.
    agent = json.loads(run(binary, "agents", "create", "kb", "--json", env=env).stdout)
    run(binary, "knowledge", "add", "The warehouse ships orders every Tuesday.", "--name", "shipping",
        "--agent", agent["id"], "--json", env=env)
    found = json.loads(run(binary, "knowledge", "search", "when are orders shipped", "--mode", "vector", "--json", env=env).stdout)
    assert found[0]["name"] == "shipping", found


def one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("error: "), result.stderr


def test_executable_bad_input_is_a_one_line_error(binary, tmp_path):
    env = clean_env(tmp_path)
    data = str(tmp_path / "data")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    blocker = tmp_path / "file"
    blocker.write_text("")
    # A database from a newer flowbox is refused and left as it was.
    db = tmp_path / "newer" / "flowbox.db"
    db.parent.mkdir()
    migrate(db)
    conn = connect(db)
    conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) values ('flowbox', 'm999_future', 'x')")
    conn.close()
    before = db.read_bytes()

    def serve(data_dir: str, port: int | None = None, **extra_env: str) -> subprocess.CompletedProcess:
        return run(binary, "serve", "--port", str(port or free_port()), "--data-dir", data_dir, check=False, env={**env, **extra_env})

    no_litestream = str(tmp_path / "empty-bin")  # a PATH without litestream: the executable does not carry it
    os.mkdir(no_litestream)
    with socket.socket() as sock, ThreadPoolExecutor(6) as pool:  # each start unpacks the executable: run them together
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cases = {
            "corrupt": pool.submit(serve, data + "1", FLOWBOX_CHAT_MODEL=str(bad)),
            "not found": pool.submit(serve, data + "2", FLOWBOX_CHAT_MODEL=str(tmp_path / "missing.gguf")),
            "not writable": pool.submit(serve, str(blocker / "sub")),
            f"port {port}": pool.submit(serve, data + "3", port),
            "newer flowbox": pool.submit(serve, str(db.parent)),
            "litestream program on PATH": pool.submit(serve, data + "4", FLOWBOX_REPLICATE_TO=f"file://{tmp_path}/replica",
                                                      PATH=no_litestream),
        }
        for words, result in cases.items():
            one_line_error(result.result(), words)
    assert db.read_bytes() == before
