"""Config loading, the CLI (as a user runs it: a subprocess, then in-process to spare a process start per
command) and `flowbox serve` first run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flowbox import config as config_mod
from flowbox.db import IntegrityError, Store, connect, migrate
from flowbox.models.files import model_path
from tests.helpers import ServeProcess, cli, free_port

ROOT = Path(__file__).resolve().parents[2]


def flowbox(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 120)
    result = subprocess.run([sys.executable, "-m", "flowbox", *args], capture_output=True, text=True, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_config_load_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('port = 9000\nhost = "0.0.0.0"\nlog_level = "debug"\n'
                    '[remote.big]\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "m"\napi_key = "secret"\n')
    cfg = config_mod.load(path, env={"FLOWBOX_PORT": "9100"})
    assert cfg.port == 9100 and cfg.host == "0.0.0.0" and cfg.log_level == "debug"
    assert cfg.remotes["big"].model == "m" and "secret" not in repr(cfg.remotes["big"])
    assert config_mod.load(None, env={}).port == 8000


@pytest.mark.parametrize("text,env,key", [
    ("port = 'abc'", {}, "port"),
    ("portt = 1", {}, "portt"),
    ("", {"FLOWBOX_N_CTX": "lots"}, "n_ctx"),
    ("allow_private_outbound = 'maybe'", {}, "allow_private_outbound"),
    ("[remote.x]\nmodel = 'm'", {}, "remote.x.base_url"),
    ("log_level = 'loud'", {}, "log_level"),
    ("port = [", {}, "not valid TOML"),
])
def test_invalid_config_names_the_key(tmp_path, text, env, key):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path, env=env)
    assert key in str(info.value)
    result = cli("keys", "list", "--config", str(path), env=env, code=1)
    assert key in result.stderr


def test_example_config_documents_every_setting_and_loads():
    example = (ROOT / "config.example.toml").read_text()
    for setting in config_mod.SETTINGS:
        assert re.search(rf"^{setting.name} = ", example, re.M), setting.name
    cfg = config_mod.load(ROOT / "config.example.toml", env={})
    assert cfg.values == {s.name: s.default for s in config_mod.SETTINGS}


def test_store_is_wal_with_sqlite_vec(tmp_path):
    path = tmp_path / "x.db"
    assert migrate(path).startswith("v")
    conn = connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("select vec_length(vec_f32('[1,2,3]'))").fetchone()[0] == 3
    names = {r[0] for r in conn.execute("select name from _sqlite_migrations")}
    assert "m001_core" in names
    # a database written by a newer flowbox is refused, untouched
    conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) values ('flowbox', 'm999_future', 'x')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(Exception, match="newer flowbox"):
        migrate(path)
    assert path.read_bytes() == before


def test_a_batch_is_one_transaction_or_nothing(tmp_path):
    async def scenario() -> None:
        store = await Store(tmp_path / "x.db", readers=1).open()
        try:
            async with store.write() as tx:
                await tx.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            async with store.batch() as batch:
                await batch.execute("INSERT INTO t VALUES (?, ?)", [1, "a"])
                await batch.executemany("INSERT INTO t VALUES (?, ?)", [(2, "b"), (3, "c")])
                assert await store.fetchall("SELECT * FROM t") == []  # queued until the block ends
            with pytest.raises(RuntimeError):  # the block fails: nothing is written
                async with store.batch() as batch:
                    await batch.execute("INSERT INTO t VALUES (?, ?)", [4, "d"])
                    raise RuntimeError("changed my mind")
            with pytest.raises(IntegrityError):  # a statement fails: the earlier ones are rolled back
                async with store.batch() as batch:
                    await batch.execute("INSERT INTO t VALUES (?, ?)", [5, "e"])
                    await batch.execute("INSERT INTO t VALUES (?, ?)", [1, "again"])
            async with store.batch() as batch:  # and the writer goes on
                await batch.execute("UPDATE t SET v = ? WHERE k = ?", ["z", 3])
            assert [tuple(r) for r in await store.fetchall("SELECT * FROM t ORDER BY k")] == [(1, "a"), (2, "b"), (3, "z")]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_keys_and_agents_cli_json():
    created = json.loads(flowbox("keys", "create", "--name", "ci", "--json").stdout)  # the real entry point, once
    assert created["key"].startswith("fbx_") and created["name"] == "ci"
    listed = json.loads(cli("keys", "list", "--json").stdout)
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    agent = json.loads(cli("agents", "create", "bot", "--tools", "calculator", "--max-tokens", "32", "--json").stdout)
    assert agent["tools"] == ["calculator"] and agent["max_tokens"] == 32
    updated = json.loads(cli("agents", "update", agent["id"], "--instructions", "Be brief.", "--json").stdout)
    assert updated["instructions"] == "Be brief."
    assert [a["id"] for a in json.loads(cli("agents", "list", "--json").stdout)] == [agent["id"]]
    bad = flowbox("agents", "create", "bot2", "--model", "nope", check=False)  # a real process's one-line error
    assert bad.returncode != 0 and "model" in bad.stderr and "Traceback" not in bad.stderr
    revoked = json.loads(cli("keys", "revoke", created["id"], "--json").stdout)
    assert revoked == {"id": created["id"], "revoked": True}
    cli("keys", "revoke", created["id"], code=1)
    assert json.loads(cli("agents", "delete", agent["id"], "--json").stdout)["deleted"] is True


def test_serve_first_run_prints_a_key_once(tmp_path):
    data_dir = tmp_path / "fresh"
    server = ServeProcess("--data-dir", str(data_dir))
    try:
        assert server.first_key, server.output
        import llama_cpp

        gpu = llama_cpp.llama_supports_gpu_offload()  # a CPU-only llama.cpp: n_gpu_layers -1 means none
        assert "local models run on " + ("" if gpu else "CPU") in server.output, server.output
        # on a CPU with AMX (where llama.cpp reports it) the line says the weights are kept out of its buffers
        with_amx = "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode()
        assert (not gpu and "Intel AMX" in server.output) == (not gpu and with_amx), server.output
        response = httpx.get(f"{server.base}/api/public/agent", headers={"Authorization": server.first_key})
        assert response.status_code == 200 and response.json() == {"agents": []}
    finally:
        server.stop(signal.SIGINT)
    assert (data_dir / "flowbox.db").exists()
    again = ServeProcess("--data-dir", str(data_dir))
    try:
        assert "First API key" not in again.output
    finally:
        again.stop()


def test_serve_refuses_a_busy_port_and_an_unwritable_dir(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = flowbox("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), check=False)
    assert result.returncode != 0 and f"port {port}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    result = flowbox("serve", "--port", str(free_port()), "--data-dir", str(blocker / "sub"), check=False)
    assert result.returncode != 0 and "not writable" in result.stderr


def test_corrupt_model_file_is_a_one_line_error(tmp_path, models_dir):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a model")
    result = flowbox("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"), check=False,
                     env={**os.environ, "FLOWBOX_CHAT_MODEL": str(bad)})
    assert result.returncode != 0 and "corrupt" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # a file cut short keeps its GGUF header: llama.cpp itself refuses it, and that is one line too
    truncated = tmp_path / "truncated.gguf"
    with open(model_path(models_dir, "smollm2"), "rb") as whole:
        truncated.write_bytes(whole.read(2_000_000))
    result = flowbox("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "e"), check=False,
                     env={**os.environ, "FLOWBOX_CHAT_MODEL": str(truncated)}, timeout=60)
    assert result.returncode != 0 and "cannot load chat model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "e" / "flowbox.db").exists()  # nothing touched
