"""A `flowbox serve` process killed (SIGKILL) during chat runs and started again on the same data dir:
a chat left running resumes from its last stored turn; one interrupted too often goes to error.
Also the `flowbox chatflows` CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx

from flowbox import db
from flowbox.chats import engine
from tests.helpers import cli, eventually, free_port, models, wait_serving

FLOW = {
    "name": "relay",
    "agents": [
        {"name": "alpha", "instructions": "Add one sentence to the story.", "max_tokens": 16},
        {"name": "beta", "instructions": "Add one sentence to the story.", "max_tokens": 16},
    ],
    "max_rounds": 6,
}


def serve(port: int, data_dir) -> subprocess.Popen:
    models()
    env = {**os.environ, "FLOWBOX_N_THREADS": "1"}  # see chats/test_api.py: one thread is faster on a busy machine
    proc = subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(proc, f"http://127.0.0.1:{port}/healthz")
    except AssertionError:
        proc.kill()
        raise
    return proc


def test_kill9_during_runs_then_restart(tmp_path):
    data_dir = tmp_path / "data"  # FLOWBOX_DATA_DIR of this test
    key = json.loads(cli("keys", "create", "--json").stdout)["key"]
    port = free_port()
    proc = serve(port, data_dir)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-KEY": key}, timeout=30)
    try:
        flow = client.post("/chatflows", json=FLOW).json()
        resumed, given_up = (client.post("/chats", json={"from_type": "flow", "from_flow": flow["id"]}).json() for _ in range(2))
        for chat in (resumed, given_up):
            assert client.post(f"/chats/{chat['id']}/messages", json={"message": "A fox found a key."}).status_code == 202
        eventually(lambda: len(client.get(f"/chats/{resumed['id']}/messages").json()) >= 2, "a turn taken before the kill",
                   timeout=120, interval=0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    # while it is down: both chats are stored as running; one has already been resumed too often
    conn = db.connect(data_dir / "flowbox.db")
    before = {r["id"]: dict(r) for r in conn.execute("SELECT id, status, round FROM chats")}
    assert {c["status"] for c in before.values()} == {"running"}
    assert before[resumed["id"]]["round"] < FLOW["max_rounds"]
    conn.execute("UPDATE chats SET resumes = ? WHERE id = ?", [engine.MAX_RESUMES, given_up["id"]])
    conn.close()

    proc = serve(port, data_dir)
    try:
        chat = eventually(lambda: (c := client.get(f"/chats/{resumed['id']}").json())["status"] != "running" and c,
                          "the resumed chat finished", timeout=120, interval=0.1)
        assert chat["status"] == "completed" and chat["round"] == FLOW["max_rounds"]
        messages = client.get(f"/chats/{resumed['id']}/messages").json()
        # the run went on from its last stored turn: no turn lost, none repeated
        assert [m["sender"] for m in messages] == ["user", "alpha", "beta", "alpha", "beta", "alpha", "beta"]
        assert len({m["id"] for m in messages}) == 7
        stopped = client.get(f"/chats/{given_up['id']}").json()
        assert stopped["status"] == "error" and "interrupted by 3 server restarts" in stopped["error"]
        assert client.get(f"/chats/{given_up['id']}/messages").json()[0]["content"] == "A fox found a key."
    finally:
        proc.terminate()
        proc.wait(20)
        client.close()


def test_chatflows_cli(tmp_path):
    created = json.loads(cli("chatflows", "create", "-", "--json", input=json.dumps(FLOW)).stdout)
    assert created["name"] == "relay" and [a["name"] for a in created["agents"]] == ["alpha", "beta"]
    listed = json.loads(cli("chatflows", "list", "--json").stdout)
    assert [f["id"] for f in listed] == [created["id"]]
    assert "relay" in cli("chatflows", "list").stdout

    (tmp_path / "change.json").write_text(json.dumps({"max_rounds": 3}))
    updated = json.loads(cli("chatflows", "update", created["id"], str(tmp_path / "change.json"), "--json").stdout)
    assert updated["max_rounds"] == 3

    exported = cli("chatflows", "export", created["id"]).stdout
    assert json.loads(exported)["flow"]["max_rounds"] == 3
    imported = json.loads(cli("chatflows", "import", "-", "--json", input=exported).stdout)
    assert imported["id"] != created["id"] and imported["max_rounds"] == 3
    assert json.loads(cli("chatflows", "show", imported["id"]).stdout)["agents"] == created["agents"]
    assert json.loads(cli("chatflows", "delete", created["id"], "--json").stdout) == {"id": created["id"], "deleted": True}
    assert len(json.loads(cli("chatflows", "list", "--json").stdout)) == 1
    assert json.loads(cli("chats", "list", "--json").stdout) == []

    # bad input: one line on stderr and exit status 1
    bad = cli("chatflows", "create", "-", input=json.dumps({"name": "x", "agents": []}), code=1)
    assert bad.stderr.startswith("error: ") and "agents" in bad.stderr
    assert "No flow exists" in cli("chatflows", "show", "nope", code=1).stderr
    assert "not valid JSON" in cli("chatflows", "import", "-", input="{nope", code=1).stderr
