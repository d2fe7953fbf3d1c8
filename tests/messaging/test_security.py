"""Messaging under attack, as issue reports found it: uploads that would run script on flowbox's
origin, uploads that fill the disk or cross projects, socket frames built to break the parser, and
flow ids that leaked across organisations. Real servers on 127.0.0.1, real websocket clients."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import sqlite_utils
from websockets.sync.client import connect

from flowbox import db as db_mod
from flowbox.messaging import projects
from flowbox.messaging.migrations import migrations as messaging_migrations
from tests.helpers import PNG, Shop, eventually, ping, recv, say, send, texts

HTML = b"<!doctype html><script>parent.postMessage(sessionStorage.getItem('flowbox-key'), '*')</script>"
SVG = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(sessionStorage.length)'><script>alert(1)</script></svg>"


def strict_json(text: str):
    """What a browser's JSON.parse takes: no NaN or Infinity."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def sdk_client(shop: Shop, thread: str) -> str:
    """What flowai-js does first: socket.info with its headers claims the thread and gets a secret."""
    info = shop.info(headers=shop.sdk_headers(thread))
    assert info.status_code == 200, info.text
    return info.json()["secret"]


def sdk_upload(shop: Shop, secret: str, thread: str, name: str, content: bytes, mimetype: str,
               client_id: str | None = None) -> httpx.Response:
    message = {"threadId": thread, "speech": "file attachment", "clientId": client_id or shop.client_id, "sessionId": "sdk-session"}
    files = {"file": (name, content, mimetype), "payload": (None, json.dumps(message))}
    return shop.http.post("/thread.upload", files=files, headers={"x-flowai-secret": secret})


def rest_upload(shop: Shop, thread: str, name: str, content: bytes, mimetype: str) -> httpx.Response:
    query = json.dumps({"payload": {"type": "media", "originator": {"name": "John Doe", "role": "external"}}})
    return shop.rest.post(f"/rest/v1/messages/{thread}", files={"file": (name, content, mimetype)}, data={"query": query})


def media_files(server, project_id: str | None = None) -> list[Path]:
    root = server.config.data_path / "messaging" / "media"
    root = root / project_id if project_id else root
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def stored_url(shop: Shop, thread: str) -> str:
    """The media URL of the newest user message on ``thread`` (what a human agent's console opens)."""
    history = shop.rest.get(f"/rest/v1/messages/{thread}", params={"sync": "true"}).json()["result"]["history"]
    users = [m for e in history if e["originator"]["role"] != "bot" for m in e["messages"]]
    return users[-1]["responses"][0]["payload"]["url"]


def assert_cannot_run(response: httpx.Response, inline_type: str | None = None) -> None:
    """Served so that no script in it runs on flowbox's origin."""
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp
    disposition = response.headers["content-disposition"]
    content_type = response.headers["content-type"].split(";")[0]
    if inline_type is None:
        assert disposition.startswith("attachment"), disposition
        assert content_type == "application/octet-stream"
    else:
        assert disposition.startswith("inline") and content_type == inline_type
    assert not any(word in content_type for word in ("html", "xml", "svg", "script"))


# -- 1. stored XSS through media ------------------------------------------------------------------

def test_uploaded_html_and_svg_never_run_on_flowbox_origin(make_server):
    shop = Shop(make_server(preload_model=False))
    # The attack: no credentials at all. socket.info hands out a secret, thread.upload takes the file.
    secret = sdk_client(shop, "evil|channel")
    for name, content, mimetype in (("x.html", HTML, "text/html"), ("x.svg", SVG, "image/svg+xml"),
                                    ("x.xhtml", HTML, "application/xhtml+xml"), ("x.png", HTML, "text/html; charset=utf-8")):
        uploaded = sdk_upload(shop, secret, "evil|channel", name, content, mimetype)
        assert uploaded.status_code == 200, uploaded.text
        served = httpx.get(uploaded.json()["payload"]["url"])
        assert_cannot_run(served)
        assert served.content == content  # still the file, for whoever downloads it

    # Through REST (a project's token) the same types get the same treatment.
    for mimetype in ("text/html", "image/svg+xml", "text/xml", "application/javascript", "text/javascript", "TEXT/HTML"):
        assert rest_upload(shop, "rest-thread", "f", HTML, mimetype).status_code == 200
        assert_cannot_run(httpx.get(stored_url(shop, "rest-thread")))
    # Other documents are attachments of their own type; raster images, audio and video are shown inline.
    assert rest_upload(shop, "rest-thread", "doc.pdf", b"%PDF-1.4", "application/pdf").status_code == 200
    pdf = httpx.get(stored_url(shop, "rest-thread"))
    assert pdf.headers["content-disposition"].startswith("attachment") and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["x-content-type-options"] == "nosniff"
    for mimetype in ("image/png", "image/jpeg", "image/gif", "image/webp", "audio/mpeg", "video/mp4"):
        assert rest_upload(shop, "rest-thread", "m", PNG, mimetype).status_code == 200
        assert_cannot_run(httpx.get(stored_url(shop, "rest-thread")), inline_type=mimetype)
    # An HTML file declared as a PNG is shown as a PNG: nosniff keeps the browser from guessing HTML.
    assert rest_upload(shop, "rest-thread", "cat.png", HTML, "image/png").status_code == 200
    assert_cannot_run(httpx.get(stored_url(shop, "rest-thread")), inline_type="image/png")


# -- 2. uploads: size, quota, retention, projects --------------------------------------------------

def test_upload_limits_quota_and_secrets_stay_in_their_project(make_server):
    server = make_server(preload_model=False, messaging_sdk_max_upload_mb=1, messaging_max_upload_mb=3, messaging_media_quota_mb=2)
    shop, other = Shop(server), Shop(server)
    secret = sdk_client(shop, "a|channel")
    other_secret = sdk_client(other, "b|channel")

    # A secret issued by one project is no key to another project's uploads (nor to its threads).
    crossed = sdk_upload(shop, secret, "b|channel", "x.png", PNG, "image/png", client_id=other.client_id)
    assert crossed.status_code == 403 and crossed.json()["status"] == "error"
    crossed = sdk_upload(shop, secret, "new|channel", "x.png", PNG, "image/png", client_id=other.client_id)
    assert crossed.status_code == 403 and crossed.json()["status"] == "error"
    assert media_files(server, other.project_id) == []
    assert sdk_upload(other, other_secret, "b|channel", "x.png", PNG, "image/png").status_code == 200

    # Anonymous clients get the smaller limit; a project's token keeps the documented one.
    too_big = sdk_upload(shop, secret, "a|channel", "big.bin", b"\x01" * ((1 << 20) + 1), "application/octet-stream")
    assert too_big.status_code == 413 and "1MB" in too_big.json()["message"]
    assert rest_upload(shop, "rest", "a.bin", b"\x02" * (3 << 19), "application/octet-stream").status_code == 200  # 1.5 MB

    # The project's quota (2 MB): one more 1.5 MB file does not fit; nothing of it stays on disk.
    before = media_files(server, shop.project_id)
    full = rest_upload(shop, "rest", "b.bin", b"\x03" * (3 << 19), "application/octet-stream")
    assert full.status_code == 413 and full.json() == {"status": "error", "message": full.json()["message"]}
    assert "storage is full" in full.json()["message"]
    full = sdk_upload(shop, secret, "a|channel", "c.bin", b"\x04" * (900 << 10), "application/octet-stream")
    assert full.status_code == 413 and "storage is full" in full.json()["message"]
    assert media_files(server, shop.project_id) == before
    history = shop.rest.get("/rest/v1/messages/rest", params={"sync": "true"}).json()["result"]["history"]
    assert sum(len(e["messages"]) for e in history if e["originator"]["role"] != "bot") == 1  # refused ones are not messages
    # ... and only that project's: the other one still takes files.
    assert sdk_upload(other, other_secret, "b|channel", "y.png", PNG, "image/png").status_code == 200


def test_old_media_and_deleted_projects_are_cleaned_up(make_server):
    server = make_server(preload_model=False, messaging_media_keep_days=30)
    shop, gone = Shop(server), Shop(server)
    assert rest_upload(shop, "t", "old.png", PNG, "image/png").status_code == 200
    old_url = stored_url(shop, "t")
    assert rest_upload(shop, "t", "new.png", PNG, "image/png").status_code == 200
    new_url = stored_url(shop, "t")
    assert rest_upload(gone, "t", "x.png", PNG, "image/png").status_code == 200
    old_id = old_url.rsplit("/", 1)[1]

    async def age():
        async with server.services.store.write() as tx:
            await tx.execute("UPDATE msg_media SET created_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", [old_id])
    server.call(age())
    # What a crash can leave: a file no row names, and a half-received upload; both untouched for hours.
    root = server.config.data_path / "messaging" / "media"
    stray, partial = root / shop.project_id / "unrecorded", root / ".incoming-deadbeef"
    stray.write_bytes(b"x"), partial.write_bytes(b"y")
    hours_ago = time.time() - 3 * 3600
    os.utime(stray, (hours_ago, hours_ago)), os.utime(partial, (hours_ago, hours_ago))
    recent = root / shop.project_id / "arriving-now"  # may be an upload being recorded right now: kept
    recent.write_bytes(b"z")
    # A project deleted by another process (its rows went, its folder stayed).
    async def drop():
        await projects.delete_project(server.services.store, gone.project_id)
    server.call(drop())
    assert (root / gone.project_id).is_dir()
    server.stop()

    # The sweep runs at start (then hourly).
    again = make_server(preload_model=False, messaging_media_keep_days=30)
    eventually(lambda: not (root / gone.project_id).exists() and not stray.exists() and not partial.exists(), "the media sweep")
    assert httpx.get(again.base_url + "/rest/v1/media/" + old_id).status_code == 404
    assert httpx.get(again.base_url + "/rest/v1/media/" + new_url.rsplit("/", 1)[1]).content == PNG
    assert recent.exists()
    assert [p.name for p in media_files(again, shop.project_id)] == sorted(["arriving-now", new_url.rsplit("/", 1)[1]])


# -- 3. hostile socket frames ---------------------------------------------------------------------

HOSTILE_VALUES = {
    "nested 3,000 deep": "[" * 3000 + "]" * 3000,
    "nested 100 deep": "[" * 100 + "]" * 100,
    "nested objects": '{"a":' * 200 + "1" + "}" * 200,
    "lone surrogate": '"\\udfff"',
    "surrogate pair halves swapped": '"\\udc00\\ud800"',
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "NaN": "NaN",
    "5,000 digits": "9" * 5000,
    "over 64 bits": str(1 << 70),
    "1e999": "1e999",
    "a string": '"12"',
    "null byte": '"a\\u0000b"',
}
FIELDS = ("threadId", "traceId", "speech", "nonce", "originator", "metadata", "attachment")
TYPES = ("message.send", "thread.noticed", "activity.user.typing", "log", "ping", "no.such.type")


def test_hostile_frames_get_error_frames_and_the_socket_stays_usable(make_server, caplog):
    caplog.set_level(logging.ERROR)
    shop = Shop(make_server(preload_model=False, messaging_socket_frames_per_second=0))
    with shop.open() as ws:
        # The report's cases, each with the answer it should have had.
        cases = [
            ('{"type":"message.send","payload":{"threadId":"t","speech":"hi","x":' + "[" * 3000 + "]" * 3000 + "}}", "nested deeper than"),
            ('{"type":"message.send","payload":{"threadId":"\\udfff","speech":"hi"}}', "payload.threadId"),
            ('{"type":"message.send","payload":{"threadId":"t","speech":"hi","traceId":Infinity}}', "Invalid message format"),
            ('{"type":"message.send","payload":{"threadId":"t","speech":"hi","traceId":NaN}}', "Invalid message format"),
            ('{"type":"message.send","payload":{"threadId":"t","speech":"hi","traceId":"7"}}', "traceId must be a number"),
            ('{"type":"thread.noticed","payload":{"threadId":"t","traceId":"7"}}', "traceId must be a number"),
            ('{"type":"message.send","payload":{"threadId":"t","speech":"hi","traceId":' + "9" * 5000 + "}}", "integers must fit in 64 bits"),
        ]
        for text, message in cases:
            ws.send(text)
            raw = ws.recv(timeout=60)
            answer = strict_json(raw)
            assert answer["type"] == "error" and message in answer["message"], (text[:80], answer)
            assert "traceId" not in answer["payload"]  # a bad one is never echoed (strict_json: no NaN or Infinity token)
            ping(ws)  # still open, still answering
        # A bad traceId is never echoed; a good one is.
        send(ws, "message.send", threadId="t", traceId=1e308, speech="x" * 300)
        assert recv(ws)["payload"]["traceId"] == 1e308

        # Every frame type with every hostile value in every field: an answer that is JSON, never an
        # internal error, and the socket goes on.
        marker = 0
        for kind in TYPES:
            for field in FIELDS:
                for label, value in HOSTILE_VALUES.items():
                    payload = {"threadId": "t-hostile", "speech": "hi"}
                    text = json.dumps({"type": kind, "payload": payload})[:-2] + f',"{field}":{value}}}}}'
                    ws.send(text)
                    marker += 1
                    send(ws, "fuzz.marker", traceId=marker)
                    while True:
                        answer = strict_json(ws.recv(timeout=60))
                        assert not (answer["type"] == "error" and answer["message"].startswith("Internal error")), (kind, field, label, answer)
                        if answer["type"] == "error" and answer["payload"].get("traceId") == marker:
                            break
        assert texts(say(ws, "t-after", "Hello")[1]) == ["Hi! Ask me about the weather, or give feedback."]
    history = shop.rest.get("/rest/v1/messages/t", params={"sync": "true"})
    assert history.status_code == 404 or history.json()["result"]["history"] == []  # no refused frame was stored
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("flowbox")]


# -- 4. flow ids belong to their project ----------------------------------------------------------

def flow(title: str, answer: str, flow_id: str = "welcome") -> dict:
    return {"flowId": flow_id, "title": title, "steps": [{"stepId": f"{flow_id}-hello", "type": "INTENT", "title": "Hello",
            "intent": {"examples": ["hello"]}, "actions": [{"type": "TEXT", "payload": {"texts": [answer]}}]}]}


def test_flow_ids_are_scoped_to_their_project(make_server):
    server = make_server(preload_model=False)
    other_org, _ = server.new_org("rival")
    mine, mine_token = server.call(projects.create_project(server.services.store, server.org_id, "mine"))
    theirs, theirs_token = server.call(projects.create_project(server.services.store, other_org, "theirs"))
    a, b = server.client(f"Bearer {mine_token}"), server.client(f"Bearer {theirs_token}")
    base_a, base_b = f"/v1/projects/{mine['id']}/flows", f"/v1/projects/{theirs['id']}/flows"

    assert a.post(base_a, json=flow("Mine", "Hello from mine")).status_code == 201
    # The other org picks the same flowId: its own flow, and nothing says another one exists.
    created = b.post(base_b, json=flow("Theirs", "Hello from theirs"))
    assert created.status_code == 201, created.text
    assert a.post(base_a, json=flow("Again", "x")).status_code == 409  # unique within a project still
    assert b.get(f"{base_b}/welcome").json()["title"] == "Theirs" and a.get(f"{base_a}/welcome").json()["title"] == "Mine"

    # Changing, importing, replacing, deleting theirs never touches mine.
    assert b.put(f"{base_b}/welcome", json=flow("Theirs v2", "Hi v2")).status_code == 200
    imported = b.post(f"{base_b}/import", params={"replace": "true"}, json=[flow("Other", "o", "second"), flow("Theirs v3", "v3")])
    assert imported.status_code == 200 and imported.json()["updated"] == ["welcome"] and imported.json()["created"] == ["second"]
    assert [f["title"] for f in b.get(f"{base_b}/export").json()["flows"]] == ["Theirs v3", "Other"]
    assert [f["title"] for f in a.get(f"{base_a}/export").json()["flows"]] == ["Mine"]
    assert a.post(f"{base_a}/import", json=flow("Mine v2", "Hello from mine")).json()["updated"] == ["welcome"]
    assert b.delete(f"{base_b}/welcome").status_code == 200
    assert a.get(f"{base_a}/welcome").json()["title"] == "Mine v2"
    assert b.get(f"{base_b}/welcome").status_code == 404 and a.get(f"{base_b}/welcome").status_code == 403

    # Each project's conversations run on its own flows.
    shop_a = server.client("")
    info = shop_a.get("/socket.info", params={"clientId": mine["client_id"], "sessionId": "s"}).json()
    with connect(info["payload"]["endpoint"]) as ws:
        _, received = say(ws, "t", "hello")
        assert texts(received) == ["Hello from mine"] and received["messages"][0]["flow"]["flowId"] == "welcome"


def test_flow_ids_migration_keeps_every_flow_in_order(tmp_path):
    """A database from before flow ids were per project: migrated, its flows are kept, in creation order."""
    path = tmp_path / "old.db"
    conn = db_mod.connect(path)
    database = sqlite_utils.Database(conn)
    for migration_set in db_mod.migration_sets():
        if migration_set is messaging_migrations:
            migration_set.apply(database, stop_before="m003_flow_ids_per_project")
        else:
            migration_set.apply(database)
    conn.execute("INSERT INTO orgs (id, name, created_at) VALUES ('o', 'org', '2020-01-01')")
    for pid in ("p1", "p2"):
        conn.execute("INSERT INTO msg_projects (id, org_id, name, client_id, token_hash, token_prefix, created_at, updated_at) "
                     "VALUES (?, 'o', ?, ?, ?, 'fbm_', '2020', '2020')", [pid, pid, f"client-{pid}", f"hash-{pid}"])
    for flow_id, pid in (("z", "p1"), ("a", "p2"), ("m", "p1")):
        conn.execute("INSERT INTO msg_flows (id, project_id, title, doc, created_at, updated_at) VALUES (?, ?, ?, '{}', '2020', '2020')",
                     [flow_id, pid, flow_id.upper()])
    conn.commit()
    conn.close()

    db_mod.migrate(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT id, project_id FROM msg_flows ORDER BY rowid").fetchall() == [("z", "p1"), ("a", "p2"), ("m", "p1")]
    conn.execute("INSERT INTO msg_flows (id, project_id, title, doc, created_at, updated_at) VALUES ('z', 'p2', 'Z2', '{}', '2020', '2020')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO msg_flows (id, project_id, title, doc, created_at, updated_at) VALUES ('z', 'p1', 'dup', '{}', '2020', '2020')")
    conn.close()
