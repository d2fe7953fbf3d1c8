"""Messaging socket protocol end to end: real servers on 127.0.0.1, real websocket clients (the
``websockets`` package; the published flowai-js SDK is driven in test_flowai_sdk.py), the shop flow of
``messaging_flow.json``. Timings (token lifetime, idle limit, frame rate) are set small so the
documented 60 s / 50 s behaviour is tested in well under a second."""

from __future__ import annotations

import json
import logging
import re
import signal
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from flowbox.messaging import sockets
from tests.helpers import PNG, SHOP_FLOW, ServeProcess, Shop, closed, ping, recv, say, self_signed_cert, send, texts

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)


@pytest.fixture
def shop(org_server):
    """The shop flow in a project of this test's own org, on the module's server."""
    return Shop(org_server)


def test_documented_exchange(shop):
    response = shop.http.get("/socket.info/", params={"clientId": shop.client_id, "sessionId": "123432"})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"status", "payload"} and body["status"] == "ok"
    port = shop.server.base_url.rsplit(":", 1)[1]
    assert re.fullmatch(rf"ws://127\.0\.0\.1:{port}/ws/[\w-]{{20,}}", body["payload"]["endpoint"])

    with connect(body["payload"]["endpoint"]) as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws) == {"type": "pong"}
        originator = {"name": "John Doe", "role": "external", "profile": {"fullName": "John Doe", "locale": "en-US", "timezone": -5},
                      "metadata": {"clientNumber": "asddaasq333ee332"}}
        metadata = {"language": "en-US", "timezone": -6, "params": {"seats": [{"value": "Business class"}]}}
        delivered, received = say(ws, "58ca9e327348ed3bd1439e7b", "Hi there!", 1519091841664, originator=originator, metadata=metadata)
        assert delivered["threadId"] == "58ca9e327348ed3bd1439e7b" and delivered["traceId"] == 1519091841664
        assert delivered["speech"] == "Hi there!" and delivered["originator"] == originator
        assert delivered["metadata"] == metadata
        assert received["threadId"] == "58ca9e327348ed3bd1439e7b" and received["originator"]["role"] == "bot"
        [message] = received["messages"]
        assert {"fallback", "silent", "replyTo", "originator", "actions", "responses", "flow", "step", "params"} <= set(message)
        assert message["fallback"] == "Hi! Ask me about the weather, or give feedback." and message["silent"] is False
        assert message["replyTo"] == "Hi there!" and message["actions"] == []
        assert message["responses"][0]["payload"]["quickReplies"][0]["label"] == "Weather"
        assert message["flow"] == {"flowId": SHOP_FLOW["flowId"], "title": "Shop assistant"}
        assert message["step"] == {"stepId": "greet", "title": "Hello!", "type": "INTENT"}
        assert message["params"]["seats"] == [{"value": "Business class"}]

        # the event attachment of the document's example
        _, event = say(ws, "58ca9e327348ed3bd1439e7b", "event attachment", 1519091841665, attachment={"type": "event", "payload": {"name": "INTRO"}})
        assert texts(event) == ["Welcome to the shop!"] and event["messages"][0]["replyTo"] == "event attachment"
        assert event["messages"][0]["params"]["event"] == [{"type": "custom", "value": {"name": "INTRO"}}]

    # one history with REST: the socket's messages are there, and REST continues the conversation
    history = shop.rest.get("/rest/v1/messages/58ca9e327348ed3bd1439e7b", params={"sync": "true"}).json()["result"]["history"]
    assert [e["originator"]["role"] for e in history] == ["user", "bot", "user", "bot"]
    assert history[0]["messages"][0]["fallback"] == "Hi there!"


def test_socket_info_errors_and_single_use_tokens(make_server):
    shop = Shop(make_server(preload_model=False, messaging_socket_token_ttl_ms=3000))  # room for a slow connect; expiry below
    for params, message in (({"clientId": None}, "clientId is required"), ({"clientId": "nope"}, "Unknown clientId"),
                            ({"sessionId": None}, "sessionId is required")):
        response = shop.info(**params)
        assert response.status_code == 400 and response.json()["status"] == "error"
        assert response.json()["message"].startswith(message)
    assert shop.info(headers={"Authorization": "Bearer wrong"}, clientId=shop.client_id, sessionId="s").status_code == 401

    endpoint = shop.endpoint()
    with connect(endpoint) as ws:
        ping(ws)
        with connect(endpoint) as again:  # single use: the second connection is refused with the documented error
            code, frames = closed(again)
            assert code == 4401 and frames[0]["type"] == "error" and "request a new one" in frames[0]["message"]
        ping(ws)  # the first one is unaffected
    late = shop.endpoint()
    time.sleep(3.2)  # past the (test-sized) lifetime
    with connect(late) as ws:
        assert closed(ws)[0] == 4401
    with connect(late.rsplit("/", 1)[0] + "/made-up-token") as ws:
        assert closed(ws)[0] == 4401


def test_bad_input_gets_error_frames_and_the_socket_carries_on(shop):
    with shop.open() as ws, shop.open() as other:
        bad = [
            (b"\x00\x01binary", "Binary frames are not supported"),
            ("{not json", "Invalid message format: not JSON"),
            ("[1, 2]", "Invalid message format"),
            (json.dumps({"payload": {}}), "Invalid message format"),
            (json.dumps({"type": "message.sned", "payload": {}}), 'Unknown message type "message.sned"'),
            (json.dumps({"type": "message.send", "payload": {"speech": "hi"}}), "threadId is required"),
            (json.dumps({"type": "message.send", "payload": {"threadId": "", "speech": "hi"}}), "threadId must be"),
            (json.dumps({"type": "message.send", "payload": {"threadId": "t"}}), "speech is required"),
            (json.dumps({"type": "message.send", "payload": "hi"}), "payload must be an object"),
            (json.dumps({"type": "message.send", "payload": {"threadId": "t", "speech": "x" * 256}}), "The maximum length of a message is 255"),
            (json.dumps({"type": "message.send", "payload": {"threadId": "t", "speech": "x", "metadata": {"timezone": 99}}}), "timezone"),
            (json.dumps({"type": "message.send", "payload": {"threadId": "t", "speech": "x", "attachment": {"type": "video"}}}), "attachment"),
            (json.dumps({"type": "message.send", "payload": {"threadId": "t", "speech": "hi", "traceId": 7,
                                                             "originator": {"name": "Mallory", "role": "moderator"}}}),
             "originator.role moderator is for human agents"),
            ("x" * 70_000, "Frame too large: 70000 bytes, at most 65536"),
        ]
        for data, message in bad:
            ws.send(data)
            frame = recv(ws)
            assert frame["type"] == "error" and frame["message"].startswith(message) and frame["payload"]["message"] == frame["message"], frame
        assert frame["payload"] == {"message": frame["message"]}
        ws.send(bad[-2][0])
        assert recv(ws)["payload"]["traceId"] == 7  # errors name the frame they answer
        # nothing of it was stored, and both sockets still work
        assert shop.rest.get("/rest/v1/messages/t", params={"sync": "true"}).json()["result"]["history"] == []
        assert texts(say(ws, "t", "Hello")[1]) == ["Hi! Ask me about the weather, or give feedback."]
        ping(other)
        # past the server's frame cap (1 MiB) the frame is not even read: the documented 1009
        with shop.open() as huge:
            with pytest.raises(ConnectionClosed):
                huge.send("x" * ((16 << 20) + 1))
                recv(huge)
            assert huge.close_code == 1009
        ping(ws), ping(other)


def test_flood_is_cut_off_and_others_carry_on(make_server):
    shop = Shop(make_server(preload_model=False, messaging_socket_frames_per_second=5, messaging_socket_frame_burst=5))
    with shop.open() as calm, shop.open() as flooder:
        for _ in range(40):
            try:
                flooder.send(json.dumps({"type": "ping"}))
            except ConnectionClosed:
                break
        code, frames = closed(flooder)
        assert code == 4429
        assert frames[:5] == [{"type": "pong"}] * 5  # the burst is served
        assert any(f["type"] == "error" and f["message"].startswith("Too many frames") for f in frames[5:])
        ping(calm)
        time.sleep(0.25)  # a steady pace within the rate is fine
        for _ in range(3):
            ping(calm)
            time.sleep(0.25)


def test_idle_disconnect_and_keepalive(make_server):
    shop = Shop(make_server(preload_model=False, messaging_socket_idle_ms=1000))
    with shop.open() as idle, shop.open() as alive:
        started = time.time()
        for _ in range(8):  # pings every 0.2 s keep a socket open past the idle limit
            ping(alive)
            time.sleep(0.2)
        code, frames = closed(idle, timeout=5)
        assert code == 4408 and frames == [] and time.time() - started < 4
        assert idle.close_reason.startswith("idle")
        ping(alive)


def test_pushes_reach_every_socket_on_the_thread(shop):
    t = "thread-push"
    with shop.open() as a, shop.open(threadId=t) as b, shop.open() as bystander:
        say(bystander, "elsewhere", "Hello")
        # b follows the thread from socket.info; a by sending on it: both see both frames
        delivered, received = say(a, t, "Hello", 1)
        assert recv(b) == {"type": "message.delivered", "payload": delivered}
        assert recv(b) == {"type": "message.received", "payload": received}
        # a message over REST on the same thread reaches both sockets
        assert shop.rest.post(f"/rest/v1/messages/{t}", json={"payload": {"type": "text", "speech": "good morning"}}).status_code == 200
        for ws in (a, b):
            assert recv(ws)["payload"]["speech"] == "good morning"
            assert texts(recv(ws)["payload"]) == ["Hi! Ask me about the weather, or give feedback."]
        # handover: the reply, then the bot is silent (control.* events go to webhooks, not sockets)
        assert texts(say(b, t, "I want to talk to a human")[1]) == ["Connecting you to a colleague."]
        assert recv(a)["type"] == "message.delivered" and recv(a)["type"] == "message.received"
        send(a, "message.send", threadId=t, speech="Hello? Anyone?")
        assert recv(a)["payload"]["speech"] == "Hello? Anyone?" and recv(b)["payload"]["speech"] == "Hello? Anyone?"
        ping(a), ping(b)
        # a human agent answers over REST: pushed to every socket on the thread
        agent = {"type": "text", "speech": "Anna here.", "originator": {"name": "Anna", "role": "moderator"}}
        assert shop.rest.post(f"/rest/v1/messages/{t}", json={"payload": agent}).status_code == 200
        for ws in (a, b):
            pushed = recv(ws)
            assert pushed["type"] == "message.received" and texts(pushed["payload"]) == ["Anna here."]
            assert pushed["payload"]["originator"]["name"] == "Anna"
            ping(ws)
        ping(bystander)  # another thread's socket got none of it


def test_reconnect_continues_the_thread_and_sockets_per_client(make_server):
    shop = Shop(make_server(preload_model=False, messaging_socket_max_per_address=3))
    with shop.open() as ws:
        assert texts(say(ws, "t-re", "what is the weather like")[1]) == ["Let me check the weather.", "Which city?"]
    spare = shop.endpoint()  # fetched while there is room
    with shop.open() as ws, shop.open() as two, shop.open() as three:
        assert texts(say(ws, "t-re", "Amsterdam")[1]) == ["The weather in Amsterdam is sunny."]
        refused = shop.info()
        assert refused.status_code == 429 and "at most 3" in refused.json()["message"]
        with connect(spare) as four:
            code, frames = closed(four)
            assert code == 4429 and frames[0]["message"].startswith("Too many open sockets")
        ping(two), ping(three)
    assert shop.info().status_code == 200  # closed sockets are counted out
    # the shutdown hook (for servers that do not close sockets themselves) says "going away"
    with shop.open() as ws:
        ping(ws)
        shop.server.call(sockets.close_all(shop.server.services))
        assert closed(ws)[0] == 1001


def test_sdk_headers_secret_and_thread_calls(shop):
    thread = "0a1b2c3d4e5f|channel"
    first = shop.info(headers=shop.sdk_headers(thread))
    assert first.status_code == 200 and first.json()["status"] == "ok"
    secret = first.json()["secret"]  # the SDK reads this top-level secret and keeps it
    call = {"x-flowai-clientid": shop.client_id, "x-flowai-threadid": thread}
    with connect(first.json()["payload"]["endpoint"]) as ws:
        # the SDK's message.send: nonce, contexts, domain, plain param values
        metadata = {"language": "en-US", "timezone": 1, "contexts": ["home"], "params": {"room": "kitchen"}, "domain": {"realm": "server"}}
        delivered, received = say(ws, thread, "Hello", 1, nonce=secret, metadata=metadata,
                                  originator={"name": "Jane", "role": "external", "profile": {}})
        assert delivered["metadata"]["params"] == {"room": [{"value": "kitchen"}]}
        send(ws, "thread.noticed", threadId=thread)
        send(ws, "activity.user.typing", clientId=shop.client_id, threadId=thread, originator={})
        send(ws, "log", text="debug line")
        ping(ws)  # none of these is answered
        unnoticed = shop.http.get("/thread.unnoticed", headers={**call, "x-flowai-secret": secret}).json()
        assert unnoticed == {"status": "ok", "payload": {"threadId": thread, "unnoticed": False}}
        shop.rest.post(f"/rest/v1/messages/{thread}",
                       json={"payload": {"type": "text", "speech": "Hi!", "originator": {"name": "Anna", "role": "moderator"}}})
        assert recv(ws)["payload"]["originator"]["role"] == "moderator"
        assert shop.http.get("/thread.unnoticed", headers={**call, "x-flowai-secret": secret}).json()["payload"]["unnoticed"] is True

    history = shop.http.get("/thread.history", headers={**call, "x-flowai-secret": secret})
    assert history.status_code == 200
    result = history.json()["payload"]
    assert result["threadId"] == thread and [e["originator"]["role"] for e in result["history"]] == ["user", "bot", "moderator"]
    # without the secret, or with another one: no history, no socket on that thread
    for headers in ({}, {"x-flowai-secret": "null"}, {"x-flowai-secret": "someone-else"}):
        assert shop.http.get("/thread.history", headers={**call, **headers}).status_code == 403
    assert shop.info(headers=shop.sdk_headers(thread, "someone-else")).status_code == 403
    again = shop.info(headers=shop.sdk_headers(thread, secret))
    assert again.status_code == 200 and "secret" not in again.json()  # reconnecting with its secret
    with connect(again.json()["payload"]["endpoint"]) as ws:
        assert texts(say(ws, thread, "I want to give feedback", nonce=secret)[1]) == ["Did you like our service?"]
        send(ws, "message.send", threadId=thread, speech="yes", nonce="someone-else")
        assert recv(ws)["message"].startswith("This thread belongs to another client")
    # the project's API token opens an agent's socket: any thread, speaking as a human agent
    agent = shop.info(headers={"Authorization": f"Bearer {shop.token}"}, clientId=shop.client_id, sessionId="agent", threadId=thread)
    with connect(agent.json()["payload"]["endpoint"]) as ws:
        _, received = say(ws, thread, "Anna again.", originator={"name": "Anna", "role": "moderator"})
        assert received["originator"]["role"] == "moderator"

    # an SDK socket without a secret gets one when it starts a thread (secret.generated)
    with connect(shop.info(headers=shop.sdk_headers()).json()["payload"]["endpoint"]) as ws:
        send(ws, "message.send", threadId="fresh|channel", speech="Hello")
        generated = recv(ws)
        assert generated["type"] == "secret.generated" and generated["payload"] == {"threadId": "fresh|channel"}
        assert [recv(ws)["type"], recv(ws)["type"]] == ["message.delivered", "message.received"]
    fresh = {"x-flowai-clientid": shop.client_id, "x-flowai-threadid": "fresh|channel", "x-flowai-secret": generated["message"]["secret"]}
    assert shop.http.get("/thread.history", headers=fresh).status_code == 200

    # thread.upload (multipart: file + payload) needs a known secret before it reads the file
    message = {"threadId": thread, "speech": "file attachment", "clientId": shop.client_id, "sessionId": "sdk-session", "traceId": 9}
    files = {"file": ("cat.png", PNG, "image/png"), "payload": (None, json.dumps(message))}
    assert shop.http.post("/thread.upload", files=files).status_code == 401
    uploaded = shop.http.post("/thread.upload", files=files, headers={"x-flowai-secret": secret})
    assert uploaded.status_code == 200, uploaded.text
    payload = uploaded.json()["payload"]
    assert payload["mediaType"] == "image" and payload["mimetype"] == "image/png" and payload["traceId"] == 9
    assert shop.http.get(payload["url"]).content == PNG
    merger = shop.http.post("/thread.merger", json={"clientId": shop.client_id, "threadId": thread, "mergerKey": "k"},
                            headers={"x-flowai-secret": secret})
    assert merger.status_code == 404 and merger.json() == {"status": "error", "message": "Unknown mergerKey"}


def test_fallback_agent_answer_is_pushed_later(make_server):
    server = make_server()
    agent = server.client().post("/api/public/agent", json={"name": "helper", "max_tokens": 8, "temperature": 0,
                                                            "instructions": "Answer in one short sentence."}).json()
    shop = Shop(server)
    assert shop.rest.patch(f"/v1/projects/{shop.project_id}", json={"agentId": agent["id"]}).status_code == 200
    with connect(shop.info(headers=shop.sdk_headers("agent|thread")).json()["payload"]["endpoint"]) as ws:
        send(ws, "message.send", threadId="agent|thread", speech="How many legs does a spider have?", traceId=5)
        assert recv(ws)["type"] == "message.delivered"
        assert recv(ws) == {"type": "agent.typing", "payload": {"threadId": "agent|thread"}}
        answer = recv(ws, timeout=120)
        assert answer["type"] == "message.received" and answer["payload"]["traceId"] == 5
        assert answer["payload"]["messages"][0]["agent"]["agentId"] == agent["id"] and texts(answer["payload"])[0].strip()


def test_tls_wss_and_shutdown_close_code(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    data = ["--data-dir", str(tmp_path / "d")]
    made = subprocess.run([sys.executable, "-m", "flowbox", "projects", "create", "shop", "--json", *data], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    client_id = json.loads(made.stdout)["clientId"]
    server = ServeProcess(*data, "--tls-cert", str(cert), "--tls-key", str(key), scheme="https")
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        info = httpx.get(f"{server.base}/socket.info", params={"clientId": client_id, "sessionId": "s"}, verify=trust).json()
        endpoint = info["payload"]["endpoint"]
        assert endpoint.startswith(f"wss://127.0.0.1:{server.port}/ws/")
        with connect(endpoint, ssl=trust) as ws:
            ping(ws)
            server.proc.send_signal(signal.SIGTERM)
            code, _ = closed(ws)
            assert code in (1001, 1012)  # going away / service restart: both tell the client to reconnect later
        assert server.proc.wait(timeout=30) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_public_url_decides_the_socket_url(make_server):
    shop = Shop(make_server(preload_model=False, public_url="https://bot.example.lan/chat"))
    assert shop.endpoint().startswith("wss://bot.example.lan/chat/ws/")


# -- fuzzing the frames ---------------------------------------------------------------------------

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                     max_leaves=12)
_THREAD = st.sampled_from(["t-fuzz", "", "x" * 600, "t/../x"]) | st.text(max_size=20) | _JSON
_PAYLOAD = st.fixed_dictionaries({}, optional={
    "threadId": _THREAD, "speech": st.text(max_size=300) | _JSON, "traceId": st.integers() | _JSON,
    "originator": st.fixed_dictionaries({}, optional={"name": st.text(max_size=20), "role": st.sampled_from(["user", "moderator", "bot", ""]),
                                                       "profile": _JSON}) | _JSON,
    "attachment": st.fixed_dictionaries({"type": st.sampled_from(["event", "location", "media", "video", ""]) | _JSON},
                                        optional={"payload": _JSON}) | _JSON,
    "metadata": st.fixed_dictionaries({}, optional={"language": _JSON, "timezone": _JSON, "params": _JSON}) | _JSON,
    "nonce": st.text(max_size=20) | _JSON,
}) | _JSON
FRAMES = st.fixed_dictionaries({"type": st.sampled_from(["message.send", "thread.noticed", "activity.user.typing", "log", "ping"])
                                | st.text(max_size=20), "payload": _PAYLOAD}) | _JSON


def test_fuzzed_frames_get_answers_never_internal_errors(make_server, caplog):
    """Whatever a client sends on the socket: an answer (an error frame naming the problem, or the
    protocol's own frames), never an internal error, and the socket and the server carry on."""
    caplog.set_level(logging.ERROR)
    shop = Shop(make_server(preload_model=False, messaging_socket_frames_per_second=0))
    sent = 0
    with shop.open() as ws:

        @settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(frame=FRAMES)
        def one(frame) -> None:
            nonlocal sent
            sent += 1
            ws.send(json.dumps(frame))
            # A marker after it: its error frame names its traceId, so everything before it is the frame's doing.
            send(ws, "fuzz.marker", traceId=sent)
            while (answer := recv(ws)).get("payload", {}).get("traceId") != sent or answer["type"] != "error":
                assert not (answer["type"] == "error" and answer["message"].startswith("Internal error")), (frame, answer)

        one()
        assert texts(say(ws, "t-after", "Hello")[1]) == ["Hi! Ask me about the weather, or give feedback."]
    assert sent == 150
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("flowbox")]
