"""Messaging API end to end: a real server, the shop flow of ``messaging_flow.json`` (nested
contexts, slots, events, handover, unknown fallbacks) driven over REST v1, with replies read
from a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from flowbox.messaging import projects
from tests.helpers import Receiver, eventually

FLOW = json.loads((Path(__file__).parent / "messaging_flow.json").read_text())


class Hooks:
    """The webhook calls a receiver got, parsed."""

    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    def events(self, kind: str | None = None, thread: str | None = None) -> list[dict]:
        """Acknowledged calls (a 2xx answer), once per delivery id."""
        out, seen = [], set()
        for record in list(self.receiver.requests):
            delivery = record["headers"].get("x-flowbox-delivery")
            if not 200 <= record.get("answer", 200) < 300 or delivery in seen:
                continue
            seen.add(delivery)
            body = json.loads(record["body"])
            if (kind is None or body["type"] == kind) and (thread is None or body["payload"].get("threadId") == thread):
                out.append(body)
        return out

    def wait(self, kind: str, thread: str, count: int = 1, timeout: float = 60) -> list[dict]:
        return eventually(lambda: len(found := self.events(kind, thread)) >= count and found,
                          lambda: f"{count} {kind} events for {thread}, got {self.events(kind, thread)}", timeout=timeout)

    def texts(self, thread: str, count: int) -> list[str]:
        """Reply texts (in order of the messages' createdAt) once ``count`` replies arrived."""
        replies = self.wait("message.reply", thread, count)
        messages = sorted((m for r in replies for m in r["payload"]["messages"]), key=lambda m: m["createdAt"])
        return [r["payload"]["text"] for m in messages for r in m["responses"]]


class Bot:
    def __init__(self, server, receiver: Receiver, **settings):
        self.server = server
        self.hooks = Hooks(receiver)
        settings.setdefault("webhookUrl", receiver.url("/hook"))
        settings.setdefault("webhookVerifyToken", "verify-me")
        project, self.token = server.call(projects.create_project(server.services.store, server.org_id, "shop", settings))
        self.project_id = project["id"]
        self.rest = server.client(f"Bearer {self.token}")
        response = self.rest.post(f"/v1/projects/{self.project_id}/flows", json=FLOW)
        assert response.status_code == 201, response.text

    def send(self, thread: str, **payload) -> httpx.Response:
        payload.setdefault("type", "text")
        payload.setdefault("originator", {"name": "John Doe", "role": "external"})
        return self.rest.post(f"/rest/v1/messages/{thread}", json={"payload": payload})

    def say(self, thread: str, speech: str) -> list[str]:
        """Sends text; returns the texts of the reply it got (one message.reply per message)."""
        before = len(self.hooks.events("message.reply", thread))
        response = self.send(thread, speech=speech)
        assert response.status_code == 200 and response.json() == {"status": "ok"}, response.text
        reply = self.hooks.wait("message.reply", thread, before + 1)[before]
        return [r["payload"]["text"] for m in reply["payload"]["messages"] for r in m["responses"]]


SERVER_OPTIONS = {"allow_private_outbound": True, "outbox_retry_base_ms": 100, "outbox_poll_ms": 100}


@pytest.fixture
def bot(org_server, receiver):
    """A project of this test's own org on the module's server, its webhook on this test's receiver."""
    return Bot(org_server, receiver)


def test_conversation_over_rest(bot):
    t = "thread-1"
    # exact intent match, with quick replies; delivered + reply webhooks carry the documented fields
    assert bot.say(t, "Hello") == ["Hi! Ask me about the weather, or give feedback."]
    reply = bot.hooks.events("message.reply", t)[0]
    assert reply["verifyToken"] == "verify-me"
    message = reply["payload"]["messages"][0]
    assert message["responses"][0]["payload"]["quickReplies"] == [{"label": "Weather", "value": "what is the weather like", "type": "text"}]
    assert message["originator"]["role"] == "bot" and message["step"] == {"stepId": "greet", "title": "Hello!", "type": "INTENT"}
    assert message["flow"] == {"flowId": FLOW["flowId"], "title": "Shop assistant"} and message["replyTo"] == "Hello"
    delivered = bot.hooks.wait("message.delivered", t)[0]["payload"]
    assert delivered["speech"] == "Hello" and delivered["threadId"] == t

    # a slot: asked, filled, the value in params and in the following step's text
    assert bot.say(t, "what is the weather like") == ["Let me check the weather.", "Which city?"]
    assert bot.say(t, "Amsterdam") == ["The weather in Amsterdam is sunny."]
    last = bot.hooks.events("message.reply", t)[-1]["payload"]["messages"][0]
    assert last["params"]["city"] == [{"value": "Amsterdam", "match": "Amsterdam"}]
    # nested context: "thanks" only exists below the step the thread is in
    assert bot.say(t, "thank you") == ["You're welcome! Enjoy Amsterdam."]

    # a validated slot re-asks until it gets a number
    assert bot.say(t, "order a pizza") == ["Pizza it is.", "How many pizzas?"]
    assert bot.say(t, "lots and lots") == ["How many pizzas?"]
    assert bot.say(t, "3 please") == ["Ordering 3 pizzas."]

    # contexts: yes/no children, and the contextual UNKNOWN inside them
    assert bot.say(t, "I want to give feedback") == ["Did you like our service?"]
    assert bot.say(t, "zzqx blorp") == ["Please answer yes or no."]
    assert bot.say(t, "yes") == ["Great, thank you!"]
    # outside any context the top-level UNKNOWN answers
    assert bot.say(t, "zzqx blorp") == ["Sorry, I did not get that."]

    # an event, by eventName: params.event as documented, and the action's delay
    before = len(bot.hooks.events("message.reply", t))
    assert bot.send(t, type="event", eventName="INTRO").status_code == 200
    event_reply = bot.hooks.wait("message.reply", t, before + 1)[-1]["payload"]["messages"][0]
    assert event_reply["responses"] == [{"type": "text", "payload": {"text": "Welcome to the shop!"}, "delay": 1}]
    assert event_reply["params"]["event"] == [{"type": "custom", "value": {"name": "INTRO"}}]
    # an unknown event is silent (stored, not answered)
    assert bot.send(t, type="event", eventName="NOBODY_LISTENS").status_code == 200

    # media by URL, location, and the empty message
    assert bot.send(t, type="media", mediaType="image", mimetype="image/png", url="https://example.com/cat.png").status_code == 200
    assert bot.send(t, type="location", lat="52.37", long="4.89").status_code == 200
    assert bot.send(t, speech="").status_code == 200
    texts = bot.hooks.texts(t, before + 4)[-3:]
    assert texts == ["Nice picture!", "Thanks for sharing your location.", "You sent an empty message."]

    # history: 20 per page, newest page first, grouped by originator, sync result as documented
    rest = bot.rest
    assert rest.get(f"/rest/v1/messages/{t}").json() == {"status": "ok"}
    first = rest.get(f"/rest/v1/messages/{t}", params={"sync": "true"}).json()
    assert first["status"] == "ok"
    result = first["result"]
    stored = sum(len(e["messages"]) for e in result["history"])
    assert result["threadId"] == t and result["page"] == 1 and stored == 20
    total = 0
    for page in range(1, result["pages"] + 1):
        body = rest.get(f"/rest/v1/messages/{t}", params={"sync": "true", "page": page}).json()["result"]
        total += sum(len(e["messages"]) for e in body["history"])
    # 16 user messages (one of them the unanswered event) and 17 bot messages
    assert total == 33 and result["pages"] == 2
    oldest = rest.get(f"/rest/v1/messages/{t}", params={"sync": "true", "page": 2}).json()["result"]["history"]
    assert oldest[0]["originator"]["role"] == "user" and oldest[0]["messages"][0]["fallback"] == "Hello"
    assert oldest[1]["originator"]["role"] == "bot"
    # the documented fields, and the step the message matched
    assert set(oldest[0]["messages"][0]) == {"fallback", "replyTo", "contexts", "params", "intents", "createdAt", "responses", "step"}
    assert oldest[0]["messages"][0]["step"] == {"stepId": "greet", "title": "Hello!", "type": "INTENT"}
    assert rest.get(f"/rest/v1/messages/{t}", params={"sync": "true", "page": 9}).json()["result"]["history"] == []
    # the async form answers through the webhook
    assert bot.hooks.wait("thread.history", t)[0]["payload"]["page"] == 1


def test_messages_arriving_together_are_handled_in_order(bot):
    """A thread's messages that arrive while one is being handled are decided in arrival order,
    each from the state the one before left (and written together); a handover stops the run."""
    import asyncio

    from flowbox.messaging import conversation
    from flowbox.messaging.incoming import from_rest

    t = "together"
    project = bot.server.call(projects.get_project(bot.server.services.store, bot.project_id))
    texts = ["what is the weather like", "Lisbon", "thank you", "order a pizza", "2", "I want to talk to a human", "hello?"]

    async def arrive_together() -> list:
        return await asyncio.gather(*(conversation.handle(bot.server.services, project, t, from_rest(
            {"payload": {"type": "text", "speech": text, "originator": {"name": "John Doe", "role": "external"}}}))
            for text in texts))

    outcomes = bot.server.call(arrive_together())
    steps = [(o.step or {}).get("stepId") for o in outcomes]
    assert steps == ["weather", "city", "thanks", "order", "quantity", "human", None]  # the last: paused by the handover
    assert outcomes[-1].paused and outcomes[-1].reply is None
    replies = [[r["payload"]["text"] for m in o.reply["messages"] for r in m["responses"]] for o in outcomes[:-1]]
    assert replies == [["Let me check the weather.", "Which city?"], ["The weather in Lisbon is sunny."],
                       ["You're welcome! Enjoy Lisbon."], ["Pizza it is.", "How many pizzas?"], ["Ordering 2 pizzas."],
                       ["Connecting you to a colleague."]]
    assert len(bot.hooks.wait("message.reply", t, 6)) == 6  # and the webhook got them
    history = bot.rest.get(f"/rest/v1/messages/{t}", params={"sync": "true"}).json()["result"]["history"]
    said = [m["fallback"] for entry in history if entry["originator"]["role"] == "user" for m in entry["messages"]]
    assert said == texts


def test_pause_resume_handover_and_moderator(bot):
    t = "thread-p"
    assert bot.say(t, "Hello")
    rest = bot.rest
    assert rest.post(f"/rest/v1/pause/{t}", json={}).json() == {"status": "ok"}
    assert bot.hooks.wait("control.pause", t)[0]["payload"]["isPaused"] is True
    status = rest.get(f"/rest/v1/pause/{t}", params={"sync": "true"}).json()
    assert status == {"status": "ok", "isPaued": True, "isPaused": True, "threadId": t}

    # paused: stored and forwarded (message.delivered), no bot reply
    replies_before = len(bot.hooks.events("message.reply", t))
    assert bot.send(t, speech="Hello? anybody?").status_code == 200
    assert bot.hooks.wait("message.delivered", t, 2)[-1]["payload"]["speech"] == "Hello? anybody?"
    # a human agent's reply (originator role moderator) reaches the user
    assert bot.send(t, speech="Hi, this is Anna from support.", originator={"name": "Anna", "role": "moderator"}).status_code == 200
    agent_reply = bot.hooks.wait("message.reply", t, replies_before + 1)[-1]["payload"]
    assert agent_reply["messages"][0]["responses"][0]["payload"]["text"] == "Hi, this is Anna from support."
    assert agent_reply["originator"]["role"] == "moderator" and agent_reply["originator"]["name"] == "Anna"
    time.sleep(0.3)
    assert len(bot.hooks.events("message.reply", t)) == replies_before + 1  # the bot stayed silent

    history = rest.get(f"/rest/v1/messages/{t}", params={"sync": "true"}).json()["result"]["history"]
    assert [e["originator"]["role"] for e in history] == ["user", "bot", "user", "moderator"]

    assert rest.delete(f"/rest/v1/pause/{t}").json() == {"status": "ok"}
    assert bot.hooks.wait("control.resume", t)[0]["payload"]["isPaused"] is False
    assert rest.get(f"/rest/v1/pause/{t}", params={"sync": "true"}).json()["isPaued"] is False
    assert bot.say(t, "yes") == ["Sorry, I did not get that."]

    # a HANDOVER action: the reply, control.handover and control.pause, then silence
    assert bot.say(t, "I want to talk to a human") == ["Connecting you to a colleague."]
    handover = bot.hooks.wait("control.handover", t)[0]["payload"]
    assert handover["stepId"] == "human"
    bot.hooks.wait("control.pause", t, 2)
    assert rest.get(f"/rest/v1/pause/{t}", params={"sync": "true"}).json()["isPaued"] is True
    count = len(bot.hooks.events("message.reply", t))
    bot.send(t, speech="Hello")
    bot.hooks.wait("message.delivered", t, 5)
    assert len(bot.hooks.events("message.reply", t)) == count

    # a timed pause ends by itself
    rest.delete(f"/rest/v1/pause/{t}")
    assert rest.post(f"/rest/v1/pause/{t}", json={"secondsToPause": 1}).status_code == 200
    eventually(lambda: rest.get(f"/rest/v1/pause/{t}", params={"sync": "true"}).json()["isPaued"] is False, "the timed pause ended",
               interval=0.1)
    assert bot.say(t, "Hello") == ["Hi! Ask me about the weather, or give feedback."]
    # null, as documented, is no time limit: paused until resumed (a string is still refused)
    assert rest.post(f"/rest/v1/pause/{t}", json={"secondsToPause": "60"}).status_code == 400
    assert rest.post(f"/rest/v1/pause/{t}", json={"secondsToPause": None}).status_code == 200
    assert rest.get(f"/rest/v1/pause/{t}", params={"sync": "true"}).json()["isPaued"] is True
    schema = bot.rest.get("/schema/openapi.json").json()
    body = schema["paths"]["/rest/v1/pause/{thread_id}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "null" in json.dumps(body)



def test_threads_that_have_not_spoken_yet(bot):
    """threadIds are the client's keys: a human agent may pause the bot before the user's first
    message, and a thread nobody has used yet is simply new (not paused, an empty history)."""
    rest = bot.rest
    t = "+31 6 1234 5678"  # a phone number, as channels name threads
    status = rest.get(f"/rest/v1/pause/{t}", params={"sync": "true"})
    assert status.status_code == 200 and status.json() == {"status": "ok", "isPaued": False, "isPaused": False, "threadId": t}
    history = rest.get(f"/rest/v1/messages/{t}", params={"sync": "true"})
    assert history.status_code == 200
    assert history.json() == {"status": "ok", "result": {"history": [], "threadId": t, "page": 1, "pages": 0}}
    # the asynchronous forms answer through the webhook, the same way
    assert rest.get(f"/rest/v1/pause/{t}").json() == {"status": "ok"}
    assert rest.get(f"/rest/v1/messages/{t}").json() == {"status": "ok"}
    assert bot.hooks.wait("control.status", t)[0]["payload"]["isPaued"] is False
    assert bot.hooks.wait("thread.history", t)[0]["payload"]["history"] == []

    # paused before it spoke (the document's example sends no body): the first message is stored, the bot stays silent
    response = rest.post(f"/rest/v1/pause/{t}", headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert bot.hooks.wait("control.pause", t)[0]["payload"]["isPaused"] is True
    assert rest.get(f"/rest/v1/pause/{t}", params={"sync": "true"}).json()["isPaued"] is True
    assert bot.send(t, speech="Hello").status_code == 200
    assert bot.hooks.wait("message.delivered", t)[0]["payload"]["speech"] == "Hello"
    assert bot.send(t, speech="Anna here.", originator={"name": "Anna", "role": "moderator"}).status_code == 200
    assert bot.hooks.wait("message.reply", t)[0]["payload"]["originator"]["name"] == "Anna"
    history = rest.get(f"/rest/v1/messages/{t}", params={"sync": "true"}).json()["result"]["history"]
    assert [e["originator"]["role"] for e in history] == ["user", "moderator"]  # the bot never answered
    assert rest.delete(f"/rest/v1/pause/{t}").json() == {"status": "ok"}
    assert bot.say(t, "Hello") == ["Hi! Ask me about the weather, or give feedback."]

    # a timed pause before the first message ends by itself; resuming a new thread is a harmless no-op
    assert rest.post("/rest/v1/pause/later", json={"secondsToPause": 1}).status_code == 200
    assert rest.get("/rest/v1/pause/later", params={"sync": "true"}).json()["isPaued"] is True
    eventually(lambda: rest.get("/rest/v1/pause/later", params={"sync": "true"}).json()["isPaued"] is False, "the timed pause ended",
               interval=0.1)
    assert bot.say("later", "Hello") == ["Hi! Ask me about the weather, or give feedback."]
    assert rest.delete("/rest/v1/pause/never-used").json() == {"status": "ok"}
    assert rest.get("/rest/v1/pause/never-used", params={"sync": "true"}).json()["isPaued"] is False

    # a socket client on a thread paused before it spoke: its message is delivered, no reply follows
    assert rest.post("/rest/v1/pause/socket-user", json={}).status_code == 200
    project = bot.server.call(projects.get_project(bot.server.services.store, bot.project_id))
    info = httpx.get(f"{bot.server.base_url}/socket.info", params={"clientId": project["client_id"], "sessionId": "s-1"}).json()
    with connect(info["payload"]["endpoint"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "message.send", "payload": {"threadId": "socket-user", "speech": "Hello", "traceId": 1}}))
        assert json.loads(ws.recv(timeout=15))["type"] == "message.delivered"
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=15)) == {"type": "pong"}  # nothing came between: the bot stayed silent

    # the web SDK on a thread an agent paused first: the widget still claims it, and its history is empty
    assert rest.post("/rest/v1/pause/widget-user", json={}).status_code == 200
    sdk = {"x-flowai-clientid": project["client_id"], "x-flowai-sessionid": "sdk-session", "x-flowai-threadid": "widget-user",
           "x-flowai-secret": "null", "x-flowai-ott": "null"}
    claimed = httpx.get(f"{bot.server.base_url}/socket.info", headers=sdk)
    assert claimed.status_code == 200 and claimed.json()["secret"], claimed.text
    history = httpx.get(f"{bot.server.base_url}/thread.history", headers={**sdk, "x-flowai-secret": claimed.json()["secret"]})
    assert history.status_code == 200 and history.json()["payload"]["history"] == [], history.text

    # the threadId is still checked
    for method in ("get", "post", "delete"):
        response = getattr(rest, method)("/rest/v1/pause/%20")
        assert response.status_code == 400 and response.json()["status"] == "error" and "threadId" in response.json()["message"]
    assert rest.get("/rest/v1/messages/%20", params={"sync": "true"}).status_code == 400


def preflight(base_url: str, path: str, method: str, headers: str, origin: str = "https://widget.example") -> httpx.Response:
    """What a browser sends before a cross-origin call with an Authorization header."""
    return httpx.options(base_url + path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                                   "Access-Control-Request-Headers": headers})


def test_browser_example_from_another_origin(bot):
    """The document's browser page (XMLHttpRequest with a bearer token) and the web SDK's calls work
    from a page on any site out of the box, never with credentials; the console's routes do not open."""
    base, t = bot.server.base_url, "USER_THREAD_ID"
    page = {"Origin": "https://widget.example", "Authorization": f"Bearer {bot.token}"}
    for path, method in ((f"/rest/v1/messages/{t}", "POST"), (f"/rest/v1/messages/{t}?sync=true", "GET"), ("/rest/v1/businesshours", "GET"),
                         (f"/rest/v1/pause/{t}", "POST"), (f"/rest/v1/pause/{t}", "DELETE"), (f"/rest/v1/pause/{t}?sync=true", "GET")):
        response = preflight(base, path, method, "authorization,content-type")
        assert response.status_code in (200, 204), (path, response.status_code)
        assert response.headers["access-control-allow-origin"] == "*", path
        assert method in response.headers["access-control-allow-methods"]
        assert {"authorization", "content-type"} <= {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
        assert "access-control-allow-credentials" not in response.headers
    # the calls themselves, as the page makes them: readable answers (errors too), no credentials
    message = {"payload": {"type": "text", "speech": "Hello", "originator": {"name": "John Doe", "role": "external"}}}
    calls = [httpx.post(f"{base}/rest/v1/messages/{t}", json=message, headers=page),
             httpx.get(f"{base}/rest/v1/messages/{t}", params={"sync": "true"}, headers=page),
             httpx.post(f"{base}/rest/v1/pause/{t}", headers={**page, "Content-Type": "application/json"}),
             httpx.get(f"{base}/rest/v1/pause/{t}", params={"sync": "true"}, headers=page),
             httpx.delete(f"{base}/rest/v1/pause/{t}", headers={**page, "Cookie": "session=abc"}),
             httpx.get(f"{base}/rest/v1/businesshours", params={"sync": "true"}, headers=page)]
    assert [c.status_code for c in calls] == [200] * 6, [c.text for c in calls]
    assert calls[3].json()["isPaued"] is True and calls[1].json()["result"]["threadId"] == t
    refused = httpx.get(f"{base}/rest/v1/businesshours", headers={**page, "Authorization": "Bearer nope"})
    assert refused.status_code == 401 and refused.json()["status"] == "error"
    for response in (*calls, refused):
        assert response.headers["access-control-allow-origin"] == "*" and "access-control-allow-credentials" not in response.headers
    assert bot.hooks.texts(t, 1) == ["Hi! Ask me about the weather, or give feedback."]

    # the web SDK's calls: socket.info and thread.* with its x-flowai-* headers
    project = bot.server.call(projects.get_project(bot.server.services.store, bot.project_id))
    sdk = "content-type,x-flowai-clientid,x-flowai-sessionid,x-flowai-threadid,x-flowai-secret,x-flowai-ott"
    for path in ("/socket.info", "/thread.history", "/thread.unnoticed"):
        response = preflight(base, path, "GET", sdk)
        assert response.headers["access-control-allow-origin"] == "*" and "x-flowai-secret" in response.headers["access-control-allow-headers"]
    info = httpx.get(f"{base}/socket.info", headers={"Origin": "https://widget.example", "x-flowai-clientid": project["client_id"],
                                                     "x-flowai-sessionid": "s-1", "x-flowai-threadid": "undefined"})
    assert info.status_code == 200 and info.headers["access-control-allow-origin"] == "*"

    # routes of the console and the API keys keep their CORS: closed unless cors_origins lists the origin
    for path in ("/api/public/agent", "/api/admin/keys"):
        response = preflight(base, path, "GET", "authorization")
        assert "access-control-allow-origin" not in response.headers, path
    assert "access-control-allow-origin" not in httpx.get(f"{base}/api/public/agent", headers=page).headers


def test_cors_origins_narrow_the_browser_apis(make_server, receiver):
    bot = Bot(make_server(preload_model=False, allow_private_outbound=True, cors_origins="https://shop.example"), receiver)
    base = bot.server.base_url
    listed = preflight(base, "/rest/v1/pause/t", "POST", "authorization", origin="https://shop.example")
    assert listed.headers["access-control-allow-origin"] == "https://shop.example" and "Origin" in listed.headers.get("vary", "")
    assert "access-control-allow-credentials" not in listed.headers
    other = preflight(base, "/rest/v1/pause/t", "POST", "authorization", origin="https://elsewhere.example")
    assert "access-control-allow-origin" not in other.headers
    answer = httpx.get(f"{base}/rest/v1/pause/t", params={"sync": "true"},
                       headers={"Origin": "https://elsewhere.example", "Authorization": f"Bearer {bot.token}"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    answer = httpx.get(f"{base}/rest/v1/pause/t", params={"sync": "true"},
                       headers={"Origin": "https://shop.example", "Authorization": f"Bearer {bot.token}"})
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    # the other routes follow cors_origins as before
    assert preflight(base, "/api/public/agent", "GET", "authorization", origin="https://shop.example").headers[
        "access-control-allow-origin"] == "https://shop.example"


def test_webhook_retried_until_receiver_answers_and_across_restart(make_server):
    answers = {"status": 503}

    def respond(record):
        record["answer"] = answers["status"]
        return answers["status"]

    receiver = Receiver(respond)
    try:
        options = dict(preload_model=False, allow_private_outbound=True, outbox_retry_base_ms=100, outbox_poll_ms=100)
        server = make_server(**options)
        bot = Bot(server, receiver)
        assert bot.send("t", speech="Hello").status_code == 200
        receiver.wait_for(4)  # delivered + reply, each tried at least twice
        answers["status"] = 200
        assert bot.hooks.texts("t", 1) == ["Hi! Ask me about the weather, or give feedback."]

        # pending deliveries survive a restart
        answers["status"] = 500
        assert bot.send("t", speech="good morning").status_code == 200
        count = len(receiver.requests)
        receiver.wait_for(count + 1)
        server.stop()
        answers["status"] = 200
        server2 = make_server(**options)
        eventually(lambda: any(b["payload"]["messages"][0]["replyTo"] == "good morning" for b in bot.hooks.events("message.reply", "t")),
                   "the pending reply delivered after the restart")
        server2.stop()
    finally:
        receiver.stop()


def test_bad_input(bot):
    rest = bot.rest
    t = "thread-bad"

    def error(response, status):
        assert response.status_code == status, response.text
        assert response.json()["status"] == "error" and response.json()["message"]
        return response.json()["message"]

    # the document's limit, in its own words, and in the OpenAPI document
    assert error(bot.send(t, speech="x" * 256), 400) == "The maximum length of a message is 255 characters"
    assert bot.send(t, speech="x" * 255).status_code == 200
    body = rest.get("/schema/openapi.json").json()["paths"]["/rest/v1/messages/{thread_id}"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["payload"]["properties"]["speech"]["maxLength"] == 255
    error(bot.send(t, type="fax", speech="hi"), 400)
    error(bot.send(t, type="media", mediaType="hologram", url="https://example.com/x"), 400)
    error(bot.send(t, type="media", mediaType="image"), 400)
    error(bot.send(t, type="media", mediaType="image", url="ftp://example.com/x"), 400)
    error(bot.send(t, type="event"), 400)
    error(bot.send(t, type="location", lat="north", long="4"), 400)
    # degrees in range, in ASCII digits: float() alone would read these
    for lat, long in (("nan", "4"), ("52", "inf"), ("٥٢", "4"), ("91", "4"), ("52", -180.5), ("1e3", "4")):
        assert "must be a number" in error(bot.send(t, type="location", lat=lat, long=long), 400)
    error(bot.send(t, speech="hi", traceId=True), 400)
    # a field of another kind of message is ignored, but one given must have the type the document gives it
    for field, value in (("mediaType", ["image"]), ("eventName", 7), ("speech", None), ("mediaUrl", {}), ("lat", True), ("long", [1])):
        assert field in error(bot.send(t, type="event", eventName="INTRO", **{field: value}) if field == "speech" else
                              bot.send(t, speech="hi", **{field: value}), 400)
    for name in ("e" * 256, " "):  # and within the document's limits, whatever the message's type
        assert "eventName" in error(bot.send(t, speech="hi", eventName=name), 400)
    for trace in ("1519091841664", "x", [1], {"n": 1}):  # the document's type is a number: no string, however numeric
        assert "traceId" in error(bot.send(t, speech="hi", traceId=trace), 400)
    assert bot.send(t, speech="x" * 255, traceId=1519091841664.5).status_code == 200
    for payload in ({"speech": "hi"}, {"type": None, "speech": "hi"}, {"eventName": "INTRO"}):  # payload.type is required
        assert "payload.type" in error(rest.post(f"/rest/v1/messages/{t}", json={"payload": payload}), 400)
    error(bot.send(t, speech="hi", params={"seats": "two"}), 400)
    error(bot.send(t, speech="hi", originator={"role": "king"}), 400)
    error(rest.post(f"/rest/v1/messages/{t}", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    error(rest.post(f"/rest/v1/messages/{t}", content=b"", headers={"Content-Type": "application/json"}), 400)
    error(rest.post(f"/rest/v1/messages/{t}", json=["payload"]), 400)
    error(rest.post(f"/rest/v1/messages/{t}", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"}), 413)
    # auth
    error(httpx.post(f"{bot.server.base_url}/rest/v1/messages/{t}", json={"payload": {"type": "text", "speech": "hi"}}), 401)
    error(httpx.get(f"{bot.server.base_url}/rest/v1/businesshours", headers={"Authorization": "Bearer nope"}), 401)
    for body in (b"[1]", b" \n"):  # the pause's body is optional, but one that is there must be a JSON object
        error(rest.post("/rest/v1/pause/t", content=body, headers={"Content-Type": "application/json"}), 400)
    # the accepted messages are all there, the refused ones are not
    history = rest.get(f"/rest/v1/messages/{t}", params={"sync": "true"}).json()["result"]["history"]
    assert [m["fallback"] for e in history for m in e["messages"] if e["originator"]["role"] == "user"] == ["x" * 255] * 2


def test_media_upload_streamed_with_limit(make_server, receiver, tmp_path):
    server = make_server(preload_model=False, allow_private_outbound=True, messaging_max_upload_mb=1, outbox_poll_ms=100)
    bot = Bot(server, receiver)
    media_root = server.config.data_path / "messaging" / "media"
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 5000
    query = json.dumps({"payload": {"type": "media", "mediaType": "image", "mimeType": "image/png",
                                    "originator": {"name": "John Doe", "role": "external"}}})
    response = bot.rest.post("/rest/v1/messages/up", files={"file": ("cat.png", png, "image/png")}, data={"query": query})
    assert response.status_code == 200, response.text
    assert bot.hooks.texts("up", 1) == ["Nice picture!"]
    url = bot.hooks.wait("message.delivered", "up")[0]["payload"]["url"]
    assert url.startswith(server.base_url + "/rest/v1/media/")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.content == png and fetched.headers["content-type"] == "image/png"

    # over the limit while streaming (no Content-Length up front): refused, partial file removed
    def body():
        yield b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        for _ in range(40):
            yield b"\x01" * 65536
        yield b"\r\n--XyZ--\r\n"

    response = bot.rest.post("/rest/v1/messages/up", content=body(), headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert response.status_code == 413 and "1MB" in response.json()["message"]
    response = bot.rest.post("/rest/v1/messages/up", files={"file": ("big.bin", b"\x02" * (3 << 20), "application/octet-stream")},
                             data={"query": query})
    assert response.status_code == 413
    leftovers = [p for p in media_root.rglob("*") if p.is_file()]
    assert len(leftovers) == 1  # only the accepted picture
    history = bot.rest.get("/rest/v1/messages/up", params={"sync": "true"}).json()["result"]["history"]
    assert sum(len(e["messages"]) for e in history) == 2

    # a broken multipart body, and a file with a non-media message type
    response = bot.rest.post("/rest/v1/messages/up", content=b"--XyZ\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert response.status_code == 400
    response = bot.rest.post("/rest/v1/messages/up", files={"file": ("a.txt", b"hi", "text/plain")},
                             data={"query": json.dumps({"payload": {"type": "text", "speech": "hi"}})})
    assert response.status_code == 400
    assert [p for p in media_root.rglob("*") if p.is_file()] == leftovers
    assert httpx.get(server.base_url + "/rest/v1/media/nope").status_code == 404


HOURS = [{
    "weekdays": [{"weekday": day, "content": [{"from": "0:20", "to": "4:19"}, {"from": "10:00", "to": "22:22"}]}
                 for day in ("Monday", "Tuesday")],
    "holidays": [{"holiday": "New Year", "date": "2019-12-31T00:00:00.000Z"}],
    "label": "test BH",
    "timezone": "(UTC+03:00) Minsk",
}]


def test_business_hours(bot):
    rest = bot.rest
    project = f"/v1/projects/{bot.project_id}"
    assert rest.get("/rest/v1/businesshours", params={"sync": "true"}).json() == {"status": "ok", "businessHours": []}
    assert rest.patch(project, json={"businessHours": HOURS}).status_code == 200
    assert rest.get("/rest/v1/businesshours", params={"sync": "true"}).json() == {"status": "ok", "businessHours": HOURS}
    assert rest.get("/rest/v1/businesshours").json() == {"status": "ok"}
    eventually(lambda: [e for e in bot.hooks.events("businesshours") if e["payload"]["businessHours"] == HOURS],
               "the businesshours event with the new hours")
    for bad in ([{"weekdays": [{"weekday": "Caturday", "content": []}]}], [{"timezone": "Mars/Olympus"}],
                [{"weekdays": [{"weekday": "Monday", "content": [{"from": "25:00", "to": "26:00"}]}]}], {"weekdays": []}):
        response = rest.patch(project, json={"businessHours": bad})
        assert response.status_code == 400 and response.json()["status"] == "error"
    # outside business hours (a schedule with no open hours) the configured event answers
    closed = [{"weekdays": [], "holidays": [], "label": "never", "timezone": "Europe/Amsterdam"}]
    assert rest.patch(project, json={"businessHours": closed, "outsideHoursEvent": "CLOSED"}).status_code == 200
    assert bot.say("after-hours", "Hello") == ["We are closed right now."]


def test_paraphrases_match_by_embeddings_and_hub_follows_the_thread(bot):
    server = bot.server
    from flowbox.messaging.hub import hub_of

    sub = server.call(_subscribe(hub_of(server.services), bot.project_id, "para"))
    # not an example of any intent: matched by similarity with the local embedding model
    assert bot.say("para", "is it going to rain later?") == ["Let me check the weather.", "Which city?"]
    assert bot.say("para", "Utrecht") == ["The weather in Utrecht is sunny."]
    assert bot.say("para", "hey, good morning to you") == ["Hi! Ask me about the weather, or give feedback."]
    matched = bot.hooks.events("message.reply", "para")[-1]["payload"]["messages"][0]["intents"][0]
    assert matched["title"] == "Greeting" and 0.5 < matched["confidence"] < 1
    # the hub saw the same thread live, in order, in socket frame shape
    events = server.call(_drain(sub, 6))
    assert [e["type"] for e in events] == ["message.delivered", "message.received"] * 3
    assert events[1]["payload"]["messages"][0]["responses"][0]["payload"]["text"] == "Let me check the weather."
    # a paused thread's human-agent reply is pushed too
    bot.rest.post("/rest/v1/pause/para", json={})
    bot.send("para", speech="Anna here", originator={"name": "Anna", "role": "moderator"})
    pushed = server.call(_drain(sub, 2))
    assert [e["type"] for e in pushed] == ["control.pause", "message.received"]
    assert pushed[1]["payload"]["originator"]["name"] == "Anna"
    server.call(_close(sub))


async def _subscribe(hub, project_id, thread_id):
    return hub.subscribe(project_id, thread_id)


async def _drain(sub, n):
    import asyncio

    return [await asyncio.wait_for(sub.get(), 10) for _ in range(n)]


async def _close(sub):
    sub.close()


def test_unknown_goes_to_the_fallback_agent(make_server, receiver, monkeypatch):
    monkeypatch.setenv("FLOWBOX_REMOTE_BASE_URL", "http://127.0.0.1:9")  # a remote model that is down
    monkeypatch.setenv("FLOWBOX_REMOTE_MODEL", "nothing")
    server = make_server(allow_private_outbound=True, outbox_poll_ms=100)
    admin = server.client()
    agent = admin.post("/api/public/agent", json={"name": "helper", "max_tokens": 12, "temperature": 0,
                                                  "instructions": "Answer in one short sentence."}).json()
    down = admin.post("/api/public/agent", json={"name": "down", "model": "remote"}).json()
    bot = Bot(server, receiver, agentId=agent["id"])
    # a contextual UNKNOWN still answers inside its context; elsewhere the agent answers
    assert bot.say("a", "I want to give feedback") == ["Did you like our service?"]
    assert bot.say("a", "zzqx blorp") == ["Please answer yes or no."]
    assert bot.say("a", "yes") == ["Great, thank you!"]
    texts = bot.say("a", "How many legs does a spider have?")
    answer = bot.hooks.events("message.reply", "a")[-1]["payload"]["messages"][0]
    assert texts and texts[0].strip() and answer["agent"]["agentId"] == agent["id"] and answer["replyTo"].startswith("How many legs")
    run = server.call(server.services.store.fetchone("SELECT * FROM runs WHERE id = ?", [answer["agent"]["runId"]]))
    assert run["status"] == "completed" and run["agent_id"] == agent["id"]
    # the agent cannot answer (its model is down): the top-level UNKNOWN step does
    assert bot.rest.patch(f"/v1/projects/{bot.project_id}", json={"agentId": down["id"]}).status_code == 200
    assert bot.say("b", "How many legs does a spider have?") == ["Sorry, I did not get that."]
    assert bot.rest.patch(f"/v1/projects/{bot.project_id}", json={"agentId": "not-an-agent"}).status_code == 400
