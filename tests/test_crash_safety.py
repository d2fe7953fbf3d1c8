"""kill -9 in the middle of writes: the database opens cleanly, every acknowledged write is there,
no half-written turn exists, and accepted background runs resume after the restart."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from conftest import ServeProcess


def Proc(data_dir: Path) -> ServeProcess:
    return ServeProcess("--data-dir", str(data_dir), env={"FLOWBOX_ALLOW_PRIVATE_OUTBOUND": "true"})  # the callback receiver is on loopback


def test_kill9_during_chat_turns_loses_nothing_acknowledged(tmp_path):
    data_dir = tmp_path / "data"
    server = Proc(data_dir)
    key = server.first_key
    headers = {"Authorization": key}
    agent = httpx.post(f"{server.base}/api/public/agent", headers=headers,
                       json={"name": "crash", "max_tokens": 24, "tools": ["calculator"]}).json()
    acknowledged: list[dict] = []
    stop = threading.Event()

    def talk(n: int):
        with httpx.Client(base_url=server.base, headers=headers, timeout=60) as c:
            thread_id = None
            i = 0
            while not stop.is_set():
                payload = {"messages": f"Worker {n} question {i}: what is {i} + {n}?"}
                if thread_id:
                    payload["thread_id"] = thread_id
                try:
                    response = c.post(f"/api/public/agent/{agent['id']}/chat", json=payload)
                except httpx.HTTPError:
                    return  # the server died under us: this turn was never acknowledged
                assert response.status_code == 200, response.text
                body = response.json()["body"]
                thread_id = body["metadata"]["thread_id"]
                acknowledged.append(body)
                i += 1

    workers = [threading.Thread(target=talk, args=(n,)) for n in range(3)]
    for w in workers:
        w.start()
    # an async run accepted just before the crash must resume after it
    async_ack = httpx.post(f"{server.base}/api/public/agent/{agent['id']}/chat", headers=headers,
                           json={"messages": "Resume me after the crash", "callback_url": "http://127.0.0.1:9/x"})
    assert async_ack.status_code == 202
    deadline = time.time() + 90
    while len(acknowledged) < 4 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # and kill in the middle of the next turns
    server.kill9()
    stop.set()
    for w in workers:
        w.join()
    assert acknowledged, "no turn completed before the kill"

    db = sqlite3.connect(data_dir / "flowbox.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    server = Proc(data_dir)
    try:
        deadline = time.time() + 60
        db = sqlite3.connect(data_dir / "flowbox.db")
        while time.time() < deadline:
            if db.execute("select count(*) from runs where status = 'processing'").fetchone()[0] == 0:
                break
            time.sleep(0.3)
        # every acknowledged turn is stored exactly as it was answered
        for body in acknowledged:
            stored = [(m, json.loads(c), r) for m, c, r in db.execute(
                "select id, content, role from messages where thread_id = ? order by seq", [body["metadata"]["thread_id"]])]
            ids = [m for m, _, _ in stored]
            for message in body["conversation_history"]:
                assert message["id"] in ids
        # no half-written turn: every thread alternates user → (tool call → tool result)* → assistant
        for (thread_id,) in db.execute("select id from threads"):
            roles = [r for (r,) in db.execute("select role from messages where thread_id = ? order by seq", [thread_id])]
            assert roles and roles[-1] == "assistant", roles
            text = "".join({"user": "u", "assistant": "a", "tool": "t"}[r] for r in roles)
            assert re.fullmatch(r"(u(at)*a)+", text), text
        # every run row has its messages, and the async run resumed and completed
        assert db.execute("select count(*) from runs r left join threads t on t.id = r.thread_id "
                          "where r.status = 'completed' and t.id is null").fetchone()[0] == 0
        resumed = db.execute("select status, thread_id from runs where callback_url is not null").fetchone()
        assert resumed[0] == "completed"
        assert db.execute("select content from messages where thread_id = ? order by seq limit 1",
                          [resumed[1]]).fetchone()[0] == json.dumps("Resume me after the crash")
        db.close()
        # and the server works on after the crash
        response = httpx.post(f"{server.base}/api/public/agent/{agent['id']}/chat", headers=headers, json={"messages": "still there?"}, timeout=60)
        assert response.status_code == 200
    finally:
        server.stop()


def test_kill9_during_knowledge_ingest_leaves_no_entry_without_vectors(tmp_path):
    from flowbox.db import connect

    data_dir = tmp_path / "data"
    server = Proc(data_dir)
    headers = {"Authorization": server.first_key}
    agent = httpx.post(f"{server.base}/api/public/agent", headers=headers, json={"name": "kb"}).json()
    acknowledged: list[str] = []
    stop = threading.Event()

    def ingest(n: int):
        with httpx.Client(base_url=server.base, headers=headers, timeout=60) as c:
            i = 0
            while not stop.is_set():
                try:
                    response = c.post("/api/public/knowledge", json={
                        "name": f"w{n}-{i}", "agent_ids": agent["id"],
                        "content": f"Shop {n}-{i} opens at {i % 12 + 1} o'clock and sells item {i}. " * 20})
                except httpx.HTTPError:
                    return
                assert response.status_code == 200, response.text
                acknowledged.append(response.json()["id"])
                i += 1

    workers = [threading.Thread(target=ingest, args=(n,)) for n in range(3)]
    for w in workers:
        w.start()
    deadline = time.time() + 90
    while len(acknowledged) < 6 and time.time() < deadline:
        time.sleep(0.05)
    server.kill9()
    stop.set()
    for w in workers:
        w.join()
    assert acknowledged

    db = connect(data_dir / "flowbox.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        vec = db.execute("select name from sqlite_master where type = 'table' and name glob 'knowledge_vec_v*' "
                         "and sql like 'CREATE VIRTUAL TABLE%'").fetchone()[0]
        items = {r["id"]: r["n"] for r in db.execute("select id, n from knowledge_items")}
        assert set(acknowledged) <= set(items)  # every acknowledged entry is there
        for n in items.values():  # and none is there without its vector and its FTS row
            assert db.execute(f"select count(*) from {vec} where rowid = ?", [n]).fetchone()[0] == 1
            assert db.execute("select count(*) from knowledge_fts where rowid = ?", [n]).fetchone()[0] == 1
    finally:
        db.close()
    server = Proc(data_dir)  # and it serves on after the crash
    try:
        found = httpx.get(f"{server.base}/api/public/knowledge/search", headers=headers, timeout=60,
                          params={"q": "when does shop 0-1 open", "agent_id": agent["id"], "limit": 3})
        assert found.status_code == 200
    finally:
        server.stop()


def test_kill9_during_flow_imports_leaves_a_whole_flow(tmp_path):
    data_dir = tmp_path / "data"
    flow = json.loads((Path(__file__).parent / "messaging_flow.json").read_text())
    project = json.loads(subprocess.run(
        [sys.executable, "-m", "flowbox", "projects", "create", "crash", "--json", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True).stdout)
    server = Proc(data_dir)
    headers = {"Authorization": f"Bearer {project['token']}"}
    url = f"/v1/projects/{project['projectId']}/flows/import"
    sent: list[str] = []
    acknowledged: list[str] = []
    stop = threading.Event()

    def importer():
        with httpx.Client(base_url=server.base, headers=headers, timeout=60) as c:
            i = 0
            while not stop.is_set():
                title = f"Shop assistant {i}"
                sent.append(title)
                try:
                    response = c.post(url, json={**flow, "title": title})
                except httpx.HTTPError:
                    return
                assert response.status_code == 200, response.text
                acknowledged.append(title)
                i += 1

    worker = threading.Thread(target=importer)
    worker.start()
    deadline = time.time() + 60
    while len(acknowledged) < 5 and time.time() < deadline:
        time.sleep(0.02)
    server.kill9()
    stop.set()
    worker.join()
    assert acknowledged

    server = Proc(data_dir)
    try:
        exported = httpx.get(f"{server.base}/v1/projects/{project['projectId']}/flows/export", headers=headers, timeout=60).json()
        flows = exported if isinstance(exported, list) else exported.get("flows", [exported])
        assert len(flows) == 1
        stored = flows[0]
        # the last acknowledged import or a later one, never an older one, and never a partial flow
        assert sent.index(stored["title"]) >= sent.index(acknowledged[-1])
        assert len(stored["steps"]) == len(flow["steps"])
    finally:
        server.stop()
