"""kill -9 in the middle of writes: the database opens cleanly, every acknowledged write is there,
no half-written turn exists, and accepted background runs resume after the restart."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tests.helpers import ServeProcess, eventually

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)

# Generous: a busy CI machine may take minutes for what takes seconds here. Every wait polls for the
# state it needs and ends as soon as that state is there.
CALL_TIMEOUT_S = 300
WAIT_S = 300


def Proc(data_dir: Path) -> ServeProcess:
    return ServeProcess("--data-dir", str(data_dir), env={"FLOWBOX_ALLOW_PRIVATE_OUTBOUND": "true"})  # the callback receiver is on loopback


class Load:
    """Client threads calling a ``flowbox serve`` process until it is killed with kill -9.

    ``request(n, i, previous)`` gives worker ``n``'s ``i``-th call as (method, path, JSON body);
    ``previous`` is that worker's last acknowledged answer. An answer with the expected status is
    acknowledged (its JSON kept, in the order answered). Anything else (another status, a timeout,
    a failed connection before the kill) is a problem, asserted on in the test's own thread; after
    the kill, a failed call only means it was never acknowledged."""

    def __init__(self, server: ServeProcess, headers: dict[str, str], workers: int,
                 request: Callable[[int, int, Any], tuple[str, str, Any]], expected: int = 200):
        self.server, self.headers, self.request, self.expected = server, headers, request, expected
        self.acknowledged: list[Any] = []
        self.problems: list[str] = []
        self.killed = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(workers)]
        for thread in self.threads:
            thread.start()

    def _work(self, n: int) -> None:
        try:
            with httpx.Client(base_url=self.server.base, headers=self.headers, timeout=CALL_TIMEOUT_S) as client:
                previous, i = None, 0
                while not self.killed.is_set():
                    method, path, body = self.request(n, i, previous)
                    try:
                        response = client.request(method, path, json=body)
                    except httpx.TransportError:
                        if self.killed.is_set():
                            return  # the server died under this call: it was never acknowledged
                        raise
                    if response.status_code != self.expected:
                        self.problems.append(f"worker {n}, call {i}: {response.status_code} {response.text[:300]}")
                        return
                    previous = response.json()
                    self.acknowledged.append(previous)
                    i += 1
        except Exception as exc:  # reported by check(), in the test's thread
            self.problems.append(f"worker {n}: {type(exc).__name__}: {exc}")

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)

    def wait_for(self, condition: Callable[[list[Any]], bool], what: str) -> None:
        """Until ``condition(acknowledged)`` holds (the workers keep calling meanwhile)."""
        eventually(lambda: self.check() or condition(self.acknowledged), lambda: f"{what} ({len(self.acknowledged)} calls acknowledged)",
                   timeout=WAIT_S, interval=0.05)
        self.check()

    def kill(self) -> None:
        """kill -9 while the workers' next calls are under way; every worker has stopped after it."""
        self.killed.set()
        self.server.kill9()
        for thread in self.threads:
            thread.join(timeout=CALL_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in self.threads), "a worker is still waiting for the killed server"
        self.check()


def test_kill9_during_chat_turns_loses_nothing_acknowledged(tmp_path):
    data_dir = tmp_path / "data"
    server = Proc(data_dir)
    headers = {"Authorization": server.first_key}
    agent = httpx.post(f"{server.base}/api/public/agent", headers=headers,
                       json={"name": "crash", "max_tokens": 24, "tools": ["calculator"]}).json()
    chat = f"/api/public/agent/{agent['id']}/chat"

    def turn(n: int, i: int, previous: dict | None):
        payload: dict[str, Any] = {"messages": f"Worker {n} question {i}: what is {i} + {n}?"}
        if previous:  # continue the thread the first turn started
            payload["thread_id"] = previous["body"]["metadata"]["thread_id"]
        elif n == 0:  # one worker names its thread itself, the others get new ids
            payload["thread_id"] = "worker-0"
        return "POST", chat, payload

    load = Load(server, headers, 3, turn)
    # an async run accepted just before the crash must resume after it
    async_ack = httpx.post(server.base + chat, headers=headers, timeout=CALL_TIMEOUT_S,
                           json={"messages": "Resume me after the crash", "callback_url": "http://127.0.0.1:9/x"})
    assert async_ack.status_code == 202, async_ack.text
    load.wait_for(lambda answers: len(answers) >= 4 and any(a["body"]["metadata"]["thread_id"] == "worker-0" for a in answers),
                  "four turns acknowledged, one of them in the thread named by the client")
    load.kill()
    acknowledged = [answer["body"] for answer in load.acknowledged]

    db = sqlite3.connect(data_dir / "flowbox.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    server = Proc(data_dir)
    db = sqlite3.connect(data_dir / "flowbox.db")
    try:
        eventually(lambda: db.execute("select count(*) from runs where status = 'processing'").fetchone()[0] == 0,
                   "the accepted async run has finished after the restart", timeout=WAIT_S, interval=0.2)
        # every acknowledged turn is stored exactly as it was answered
        for body in acknowledged:
            stored = {m: (r, json.loads(c)) for m, r, c in db.execute(
                "select id, role, content from messages where agent_id = ? and thread_id = ?",
                [agent["id"], body["metadata"]["thread_id"]])}
            for message in body["conversation_history"]:
                assert stored.get(message["id"]) == (message["role"], message["content"]), message
        # no half-written turn: every thread alternates user → (tool call → tool result)* → assistant
        for agent_id, thread_id in db.execute("select agent_id, id from threads").fetchall():
            roles = [r for (r,) in db.execute("select role from messages where agent_id = ? and thread_id = ? order by seq",
                                              [agent_id, thread_id])]
            text = "".join({"user": "u", "assistant": "a", "tool": "t"}[r] for r in roles)
            assert re.fullmatch(r"(u(at)*a)+", text), (thread_id, text)
        # every completed run has its thread, and the async run resumed and completed
        assert db.execute("select count(*) from runs r left join threads t on t.agent_id = r.agent_id and t.id = r.thread_id "
                          "where r.status = 'completed' and t.id is null").fetchone()[0] == 0
        resumed = db.execute("select status, thread_id from runs where callback_url is not null").fetchone()
        assert resumed[0] == "completed"
        assert db.execute("select content from messages where agent_id = ? and thread_id = ? order by seq limit 1",
                          [agent["id"], resumed[1]]).fetchone()[0] == json.dumps("Resume me after the crash")
        # and the server works on after the crash
        response = httpx.post(server.base + chat, headers=headers, json={"messages": "still there?"}, timeout=CALL_TIMEOUT_S)
        assert response.status_code == 200, response.text
    finally:
        db.close()
        server.stop()


def test_kill9_during_knowledge_ingest_leaves_no_entry_without_vectors(tmp_path):
    from flowbox.db import connect

    data_dir = tmp_path / "data"
    server = Proc(data_dir)
    headers = {"Authorization": server.first_key}
    agent = httpx.post(f"{server.base}/api/public/agent", headers=headers, json={"name": "kb"}).json()

    def code(name: str) -> str:
        """A word only this item holds, to find it by."""
        return "code" + name.replace("-", "x")

    def item(n: int, i: int, previous):
        name = f"w{n}-{i}"
        return "POST", "/api/public/knowledge", {
            "name": name, "agent_ids": agent["id"],
            "content": f"Shop {n}-{i} opens at {i % 12 + 1} o'clock and sells item {i}. " * 20 + f"Its code word is {code(name)}."}

    load = Load(server, headers, 3, item)
    load.wait_for(lambda answers: len(answers) >= 6, "six knowledge items acknowledged")
    load.kill()
    acknowledged = {answer["id"]: answer["name"] for answer in load.acknowledged}

    db = connect(data_dir / "flowbox.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        vec = db.execute("select name from sqlite_master where type = 'table' and name glob 'knowledge_vec_v*' "
                         "and sql like 'CREATE VIRTUAL TABLE%'").fetchone()[0]
        items = {r["id"]: r["n"] for r in db.execute("select id, n from knowledge_items")}
        assert set(acknowledged) <= set(items)  # every acknowledged entry is there
        for n in items.values():  # and none is there without its vector and its FTS row
            assert db.execute(f"select count(*) from {vec} where rowid = ?", [n]).fetchone()[0] == 1
            fts = "knowledge_fts_{}".format(*db.execute("select k from knowledge_keyword_tables t join knowledge_items i "
                                                        "on i.org_id = t.org_id where i.n = ?", [n]).fetchone())
            assert db.execute(f"select count(*) from {fts} where rowid = ?", [n]).fetchone()[0] == 1
    finally:
        db.close()
    server = Proc(data_dir)  # and it serves on after the crash: every acknowledged item is found
    try:
        with httpx.Client(base_url=server.base, headers=headers, timeout=CALL_TIMEOUT_S) as client:
            for item_id, name in acknowledged.items():
                # its word ranks it first among keyword matches, so no vector ranking can push it out of the top 3
                found = client.get("/api/public/knowledge/search", params={"q": code(name), "agent_id": agent["id"], "limit": 3})
                assert found.status_code == 200, found.text
                assert item_id in [r["id"] for r in found.json()["results"]], (name, found.json())
    finally:
        server.stop()


def test_kill9_during_flow_imports_leaves_a_whole_flow(tmp_path):
    data_dir = tmp_path / "data"
    flow = json.loads((Path(__file__).parent / "messaging" / "messaging_flow.json").read_text())
    project = json.loads(subprocess.run(
        [sys.executable, "-m", "flowbox", "projects", "create", "crash", "--json", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True).stdout)
    server = Proc(data_dir)
    headers = {"Authorization": f"Bearer {project['token']}"}
    url = f"/v1/projects/{project['projectId']}/flows/import"
    sent: list[str] = []

    def import_flow(n: int, i: int, previous):
        sent.append(f"Shop assistant {i}")
        return "POST", url, {**flow, "title": sent[-1]}

    load = Load(server, headers, 1, import_flow)
    load.wait_for(lambda answers: len(answers) >= 5, "five flow imports acknowledged")
    load.kill()
    last_acknowledged = sent[len(load.acknowledged) - 1]  # one worker: its answers come in the order sent

    server = Proc(data_dir)
    try:
        exported = httpx.get(f"{server.base}/v1/projects/{project['projectId']}/flows/export", headers=headers,
                             timeout=CALL_TIMEOUT_S).json()
        flows = exported if isinstance(exported, list) else exported.get("flows", [exported])
        assert len(flows) == 1
        stored = flows[0]
        # the last acknowledged import or a later one, never an older one, and never a partial flow
        assert sent.index(stored["title"]) >= sent.index(last_acknowledged)
        assert len(stored["steps"]) == len(flow["steps"])
    finally:
        server.stop()
