"""The database survives the disk: Litestream replicates it while flowbox writes, flowbox is killed
with kill -9, and a new data dir restored from the replica holds every acknowledged write. Scheduled
backups, and ``flowbox status`` with and without a running server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from flowbox import backup, config, replication
from flowbox.db import migrate
from flowbox.status import RUN_FILE
from tests.helpers import ServeProcess, cli, eventually, start_server
from tests.test_crash_safety import Load

# One server for the status and scheduled-backup tests, taking a backup every 200 ms.
SERVER_OPTIONS = {"backup_every": "200ms", "backup_keep": 2}


def status(data_dir, **env) -> dict:
    return json.loads(cli("status", "--json", "--data-dir", str(data_dir), env=env).stdout)


def litestream_of(keeper: int) -> int:
    """The litestream process under flowbox's keeper process (replication.py)."""
    children = Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_kill9_while_replicating_then_restore_from_the_replica_loses_nothing_acknowledged(tmp_path):
    data_dir, replica = tmp_path / "data", f"file://{tmp_path / 'replica'}"
    server = ServeProcess("--data-dir", str(data_dir), env={"FLOWBOX_REPLICATE_TO": replica, "FLOWBOX_RATE_LIMIT_PER_MINUTE": "0"})
    headers = {"Authorization": server.first_key}

    def replication(when) -> dict | None:
        facts = status(data_dir, FLOWBOX_REPLICATE_TO=replica)["replication"]
        return facts if when(facts) else None

    # litestream's first copy of the database is in the replica about a second after the start
    first = eventually(lambda: replication(lambda facts: facts["replica_txid"]), "replication started", timeout=60, interval=0.2)
    os.kill(litestream_of(first["pid"]), signal.SIGKILL)  # litestream dies on its own: flowbox starts it again
    again = eventually(lambda: replication(lambda facts: facts["restarts"] == 1 and facts["running"]), "litestream started again",
                       timeout=60, interval=0.2)
    assert again["pid"] != first["pid"] and again["last_exit"] == -signal.SIGKILL
    litestream = litestream_of(again["pid"])
    # the new litestream replicates (and has found its place in the database: for the second after it
    # starts, before it has, a write is in the database but not yet copied)
    assert httpx.post(f"{server.base}/api/public/agent", headers=headers, json={"name": "after the restart"}).status_code == 201
    eventually(lambda: replication(lambda facts: facts["replica_txid"] > again["replica_txid"]), "a copy after the restart",
               timeout=60, interval=0.2)

    load = Load(server, headers, 2, lambda n, i, _: ("POST", "/api/public/agent", {"name": f"worker {n} agent {i}"}), expected=201)
    load.wait_for(lambda answers: len(answers) >= 20, "20 agents created")
    load.kill()  # flowbox dies with writes under way; litestream gets SIGTERM once and copies what it has not yet
    eventually(lambda: gone(litestream), "litestream stopped after flowbox was killed", timeout=60, interval=0.05)

    restored = tmp_path / "restored"
    result = json.loads(cli("restore", "--from", replica, "--data-dir", str(restored), "--json").stdout)
    assert result == {"restored_from": replica, "previous_copy": None}
    srv = start_server(tmp_path, data_dir=str(restored))
    try:
        names = {agent["name"] for agent in srv.client(key=server.first_key).get("/api/public/agent").json()["agents"]}
    finally:
        srv.stop()
    missing = [agent["name"] for agent in load.acknowledged if agent["name"] not in names]
    litestream_log = "".join(line for line in server.later if "level=" in line)
    assert not missing, f"{len(missing)} of {len(load.acknowledged)} acknowledged agents are not in the replica: {missing[:5]}\n{litestream_log}"


def test_restore_from_a_replica_refuses_a_bad_url(tmp_path):
    result = cli("restore", "--from", "http://example.com/x", "--data-dir", str(tmp_path / "d"), code=1)
    assert "--from must be file:///path or s3://bucket/path" in result.stderr
    assert "one of them" in cli("restore", "--data-dir", str(tmp_path / "d"), code=1).stderr


@pytest.mark.parametrize("key, value, words", [
    ("replicate_to", "s3://AKIA:secret@bucket/x", "must not hold credentials"),
    ("replicate_to", "file://relative/path", "file:///path or s3://bucket/path"),
    ("backup_every", "6 hours", "a duration such as 6h"),
])
def test_replication_and_backup_settings_are_checked(key, value, words):
    with pytest.raises(config.ConfigError, match=words) as caught:
        config.load(None, env={f"FLOWBOX_{key.upper()}": value})
    assert "secret" not in str(caught.value)


def test_scheduled_backups_are_taken_in_the_background_and_the_newest_kept(module_server):
    srv = module_server
    schedule = srv.services.state(backup.BackupSchedule)
    folder = srv.config.backup_path
    taken = schedule.taken
    eventually(lambda: schedule.taken >= taken + 4, lambda: f"4 scheduled backups taken ({schedule.taken - taken})", timeout=60)
    assert srv.client().get("/healthz").status_code == 200  # the loop is free while they are taken
    kept = eventually(lambda: len(backup.scheduled_backups(folder)) == 2 and backup.scheduled_backups(folder), "two kept")
    for path in kept:
        conn = sqlite3.connect(path)
        assert conn.execute("select count(*) from api_keys").fetchone()[0] >= 1  # a whole database
        conn.close()
    manual = backup.backup(srv.config.db_path, folder)  # `flowbox backup` into the same folder is never deleted
    eventually(lambda: schedule.taken >= taken + 7, "three more backups", timeout=60)
    assert os.path.exists(manual["path"]) and len(backup.scheduled_backups(folder)) == 2
    assert schedule.last_error is None


def test_status_of_a_running_server_and_of_a_data_dir_without_one(module_server, tmp_path):
    server = module_server
    facts = status(server.config.data_path)
    assert facts["running"] is True and facts["version"] and facts["uptime_seconds"] >= 0
    assert facts["queue"] == 0 and isinstance(facts["models"], list)
    assert facts["database"]["bytes"] > 0 and facts["outbox"]["pending"] == 0 and facts["replication"] == "off"
    assert facts["media"]["bytes"] == 0 and facts["backups"]["every"] == "200ms" and facts["backups"]["last_error"] is None
    text = cli("status", "--data-dir", str(server.config.data_path)).stdout
    assert "running: True" in text and "database.bytes:" in text

    # the live endpoint answers only the token in server.json (readable by its owner only)
    run_file = server.config.data_path / RUN_FILE
    assert oct(run_file.stat().st_mode & 0o777) == "0o600"
    assert httpx.get(f"{server.base_url}/api/status", headers={"Authorization": server.key}).status_code == 401
    token = json.loads(run_file.read_text())["token"]
    assert httpx.get(f"{server.base_url}/api/status", headers={"Authorization": f"Bearer {token}"}).json()["pid"] == os.getpid()

    # a data dir whose server was killed (server.json left behind, its pid gone) or never ran
    idle = tmp_path / "idle"
    idle.mkdir()
    migrate(idle / "flowbox.db")
    (idle / RUN_FILE).write_text(json.dumps({"pid": 2**22 + 1, "url": server.base_url, "token": token}))
    facts = status(idle, FLOWBOX_REPLICATE_TO="file:///nowhere/replica")
    assert facts["running"] is False and facts["uptime_seconds"] is None and facts["models"] is None
    assert facts["database"]["bytes"] > 0 and facts["outbox"] == {"pending": 0, "dead": 0, "delivered": 0,
                                                                   "oldest_pending_at": None, "bytes": 0}
    assert facts["replication"]["to"] == "file:///nowhere/replica" and facts["replication"]["replica_txid"] is None
    assert status(tmp_path / "empty")["database"] is None


def test_an_s3_replica_is_configured_from_the_settings_and_its_credentials_stay_in_the_environment(tmp_path):
    cfg = config.load(None, env={"FLOWBOX_DATA_DIR": str(tmp_path), "FLOWBOX_REPLICATE_TO": "s3://bucket/flowbox",
                                 "FLOWBOX_REPLICATE_S3_ENDPOINT": "http://127.0.0.1:9000", "FLOWBOX_REPLICATE_S3_REGION": "eu-1",
                                 "AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    generated = replication.litestream_config(cfg)
    assert generated["dbs"] == [{"path": str(tmp_path / "flowbox.db"),
                                 "replica": {"url": "s3://bucket/flowbox", "endpoint": "http://127.0.0.1:9000", "region": "eu-1"}}]
    assert "s3cr3t" not in json.dumps(generated)
