"""Upgrades: a database written by an older flowbox (only the older migrations applied, data in every
table) migrates forward when flowbox starts on it, with nothing lost; one written by a newer flowbox
is refused, untouched.

The older schema is ``OLDER``: each migration set applied up to and including the step named there.
``ROWS`` holds rows for every table that schema has; the test lists the tables from sqlite_master,
so a table without rows here fails it, and so does a table added since ``OLDER`` that is not named in
``ADDED_SINCE``. Moving ``OLDER`` forward (to test newer steps on data) means giving rows to the
tables it then has."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlite_utils

from flowbox.db import connect, migrate, migration_sets
from flowbox.errors import StartupError
from flowbox.orgs import hash_key
from tests.helpers import start_server

OLDER = {"flowbox": "m001_core", "flowbox.outbox": "m001_outbox", "flowbox.callbacks": "m001_run_callbacks",
         "flowbox.chats": "m001_chats", "flowbox.whatsapp": "m001_whatsapp", "flowbox.messaging": "m001_messaging",
         "flowbox.knowledge": "m001_knowledge"}
# Tables made by steps after OLDER: they start empty, so there is nothing of theirs to lose.
ADDED_SINCE = {"msg_socket_threads", "msg_intent_models", "models", "knowledge_keyword_tables"}

KEY = "fbx_" + "u" * 43
T = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # recent: no retention sweep deletes a row
ORG = "org-upgrade"
ROWS: dict[str, list[dict]] = {
    "orgs": [{"id": ORG, "name": "Acme", "credits": 12.5, "created_at": T}],
    "api_keys": [{"id": "key-1", "org_id": ORG, "name": "ops", "prefix": KEY[:8], "key_hash": hash_key(KEY), "created_at": T,
                  "revoked_at": None}],
    "agents": [{"id": "agent-1", "org_id": ORG, "name": "Support", "description": "helps", "instructions": "Be brief.",
                "model": "local", "temperature": 0.5, "max_tokens": 64, "tools": '["calculator"]', "created_at": T, "updated_at": T}],
    "threads": [{"id": "thread-1", "org_id": ORG, "agent_id": "agent-1", "created_at": T, "updated_at": T}],
    "messages": [{"id": "msg-1", "thread_id": "thread-1", "seq": 1, "role": "user", "content": '"What is 2 + 2?"', "created_at": T},
                 {"id": "msg-2", "thread_id": "thread-1", "seq": 2, "role": "assistant", "content": '"4"', "created_at": T}],
    "runs": [{"id": "run-1", "org_id": ORG, "agent_id": "agent-1", "thread_id": "thread-1", "status": "completed", "model": "local",
              "prompt_tokens": 10, "completion_tokens": 5, "credits": 1.0, "callback_url": "http://127.0.0.1:9/cb", "request": "{}",
              "response": '{"ok": true}', "error": None, "created_at": T, "finished_at": T}],
    "outbox": [{"id": "delivery-1", "org_id": ORG, "kind": "agent.callback", "url": "http://127.0.0.1:9/cb", "body": '{"ok": true}',
                "headers": "{}", "secret": None, "max_age_seconds": None, "status": "dead", "attempts": 3, "window_start": 1.0,
                "next_attempt_at": 2.0, "last_status": 500, "last_error": "HTTP 500", "created_at": T, "updated_at": T,
                "delivered_at": None}],
    "outbox_secrets": [{"org_id": ORG, "secret": "signing-secret", "created_at": T}],
    "run_callbacks": [{"run_id": "run-1", "delivery_id": "delivery-1", "created_at": T}],
    "chat_flows": [{"id": "chatflow-1", "org_id": ORG, "name": "pair", "definition": '{"agents": []}', "created_at": T, "updated_at": T}],
    "chats": [{"id": "chat-1", "org_id": ORG, "name": "a chat", "from_type": "flow", "from_flow": "chatflow-1", "flow": '{"agents": []}',
               "status": "completed", "error": None, "round": 2, "last_speaker": "Support", "waiting_for": None, "waiting_reason": None,
               "resumes": 0, "created_at": T, "updated_at": T}],
    "chat_messages": [{"id": "chatmsg-1", "chat_id": "chat-1", "seq": 1, "type": "user", "sender": "human", "content": "hi",
                       "created_at": T}],
    "oauth_tokens": [{"token_hash": "ab" * 32, "key_id": "key-1", "org_id": ORG, "created_at": T, "expires_at": 4102444800.0}],
    "whatsapp_connections": [{"id": "wa-1", "org_id": ORG, "agent_id": "", "phone_number_id": "1234", "access_token": "EAAB-token",
                              "api_base_url": None, "api_version": None, "created_at": T, "updated_at": T}],
    "whatsapp_sends": [{"id": "send-1", "org_id": ORG, "agent_id": "agent-1", "connection_id": "wa-1", "recipient": "+15550001",
                        "customer_name": "Ann", "template_name": "hello", "language": "en", "status": "sent", "message_id": "wamid.1",
                        "http_status": 200, "error": None, "created_at": T}],
    "msg_projects": [{"id": "project-1", "org_id": ORG, "name": "shop", "client_id": "client-1", "token_hash": "cd" * 32,
                      "token_prefix": "fbp_abcd", "webhook_url": None, "webhook_verify_token": None, "agent_id": None,
                      "business_hours": "[]", "outside_hours_event": None, "intent_threshold": None, "flows_version": 1,
                      "created_at": T, "updated_at": T}],
    "msg_flows": [{"id": "flow-1", "project_id": "project-1", "title": "Greeting", "doc": '{"flowId": "flow-1", "steps": []}',
                   "created_at": T, "updated_at": T}],
    "msg_threads": [{"project_id": "project-1", "thread_id": "user-1", "state": "{}", "paused": 0, "paused_until": None,
                     "originator": '{"name": "Ann"}', "created_at": T, "updated_at": T}],
    "msg_messages": [{"id": "mm-1", "project_id": "project-1", "thread_id": "user-1", "seq": 1, "sender": "user", "trace_id": "7",
                      "originator": '{"name": "Ann"}', "message": '{"fallback": "hello"}', "created_at": T}],
    "msg_media": [{"id": "media-1", "project_id": "project-1", "name": "a.png", "mimetype": "image/png", "size": 67,
                   "path": "project-1/media-1", "created_at": T}],
    "msg_embeddings": [{"model": "all-minilm-l6-v2", "text_hash": "ef" * 20, "vector": b"\x00\x00\x80?" * 4}],
    "knowledge_items": [{"n": 1, "id": "kb-1", "org_id": ORG, "name": "Returns", "content": "Returns are accepted for 30 days.",
                         "description_to_index_on": None, "source": "api", "source_key": None, "created_at": T, "updated_at": T}],
    "knowledge_links": [{"item_n": 1, "agent_id": "agent-1", "pos": 0}],
    "knowledge_fts": [{"rowid": 1, "name": "Returns", "body": "Returns are accepted for 30 days."}],
    "knowledge_meta": [{"key": "upgrade-test", "value": "kept"}],
    "knowledge_generations": [{"org_id": ORG, "generation": 3}],
}


def tables(conn) -> set[str]:
    """The tables that hold data: not SQLite's own, not the migrations' record, not the shadow tables
    of a virtual table (its contents are the virtual table's)."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    virtual = [name for name, sql in rows if sql and sql.upper().startswith("CREATE VIRTUAL TABLE")]
    return {name for name, _ in rows if not name.startswith("sqlite_") and name != "_sqlite_migrations"
            and not any(name.startswith(f"{v}_") for v in virtual)}


def older_database(path) -> None:
    conn = connect(path)
    db = sqlite_utils.Database(conn)
    for migrations in migration_sets():
        steps = [step.name for step in migrations._migrations]
        later = steps[steps.index(OLDER[migrations.name]) + 1:]
        migrations.apply(db, stop_before=later[:1] or None)
    assert tables(conn) == set(ROWS), f"tables of the older schema without rows in ROWS: {sorted(tables(conn) - set(ROWS))}"
    for table, rows in ROWS.items():
        for row in rows:
            conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    conn.close()


def test_a_database_of_an_older_flowbox_migrates_forward_at_start_with_nothing_lost(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    older_database(data_dir / "flowbox.db")

    srv = start_server(tmp_path, data_dir=str(data_dir))  # migrates at start
    try:
        agents = srv.client(key=KEY).get("/api/public/agent")  # the older key still authenticates
        assert agents.status_code == 200, agents.text
        assert [agent["name"] for agent in agents.json()["agents"]] == ["Support"]
        thread = srv.client(key=KEY).get("/api/public/agent/agent-1/threads/thread-1")
        assert thread.status_code == 200, thread.text
    finally:
        srv.stop()

    current = tmp_path / "current.db"
    migrate(current)
    conn = connect(current)
    added = tables(conn) - set(ROWS)
    conn.close()
    assert added <= ADDED_SINCE, f"tables new since OLDER, not in ADDED_SINCE: {sorted(added - ADDED_SINCE)}"

    conn = connect(data_dir / "flowbox.db")
    try:
        applied = {(s, n) for s, n in conn.execute("SELECT migration_set, name FROM _sqlite_migrations")}
        assert applied == {(m.name, step.name) for m in migration_sets() for step in m._migrations}
        for table, rows in ROWS.items():
            if table == "knowledge_fts":  # contentless, and now one table per org: its rows are found by what they index
                [(k,)] = conn.execute("SELECT k FROM knowledge_keyword_tables WHERE org_id = ?", [ORG])
                assert [tuple(r) for r in conn.execute(f"SELECT rowid FROM knowledge_fts_{k} WHERE knowledge_fts_{k} MATCH 'accepted'")] == [(1,)]
                continue
            columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= len(rows), table
            for row in rows:
                kept = {k: v for k, v in row.items() if k in columns}
                assert kept == row, f"{table} lost columns {set(row) - columns}"
                where = " AND ".join(f"{k} IS ?" for k in kept)
                assert conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", list(kept.values())).fetchone()[0] == 1, (table, row)
        # the step that keyed threads by agent moved each message to its thread's agent
        assert conn.execute("SELECT agent_id FROM messages WHERE id = 'msg-2'").fetchone()[0] == "agent-1"
    finally:
        conn.close()


def test_a_database_of_a_newer_flowbox_is_refused_untouched(tmp_path):
    path = tmp_path / "flowbox.db"
    migrate(path)
    conn = connect(path)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('flowbox.chats', 'm999_future', 'x')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StartupError, match=r"written by a newer flowbox \(migration 'm999_future'\); upgrade flowbox or restore a backup"):
        migrate(path)
    assert path.read_bytes() == before
