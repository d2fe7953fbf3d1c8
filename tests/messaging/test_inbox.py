"""The Management API's inbox routes (a project's threads for human agents, with an org's API key)
and the matcher's explanation, on a real server with the shop flow of ``messaging_flow.json``."""

from __future__ import annotations

import copy
import json
import threading

import httpx
from click.testing import CliRunner

from flowbox.cli.main import cli
from flowbox.messaging import matcher, unmatched
from tests.helpers import SHOP_FLOW


def project(server, **settings) -> tuple[str, httpx.Client, httpx.Client]:
    """A project with the shop flow: its id, a Management API client (the org's key) and a REST v1 client."""
    admin = server.client(f"Bearer {server.key}")
    created = admin.post("/v1/projects", json={"name": "inbox", **settings}).json()
    assert admin.post(f"/v1/projects/{created['projectId']}/flows", json=SHOP_FLOW).status_code == 201
    return created["projectId"], admin, server.client(f"Bearer {created['token']}")


def say(rest: httpx.Client, thread: str, speech: str, name: str = "Ann") -> None:
    answer = rest.post(f"/rest/v1/messages/{thread}", json={"payload": {"type": "text", "speech": speech, "originator": {"name": name}}})
    assert answer.status_code == 200, answer.text


def test_threads_filters_take_over_reply_and_resume(org_server):
    project_id, admin, rest = project(org_server)
    base = f"/v1/projects/{project_id}"
    say(rest, "t-hello", "Hello")
    say(rest, "t-human", "I want to talk to a human", name="Bob")
    say(rest, "t-paused", "Hello")
    assert admin.post(f"{base}/threads/t-paused/pause", json={}).json() == {"status": "ok"}

    listed = admin.get(f"{base}/threads").json()
    assert [t["threadId"] for t in listed] == ["t-paused", "t-human", "t-hello"]  # most recently active first
    human = next(t for t in listed if t["threadId"] == "t-human")
    assert human["paused"] and human["handover"] and human["user"] == {"name": "Bob"}
    assert human["lastMessage"]["role"] == "bot" and human["stepId"] == "human"
    assert {t["threadId"] for t in admin.get(f"{base}/threads?only=paused").json()} == {"t-human", "t-paused"}
    assert [t["threadId"] for t in admin.get(f"{base}/threads?only=handover").json()] == ["t-human"]
    assert admin.get(f"{base}/threads?only=outsideHours").json() == []
    assert [t["threadId"] for t in admin.get(f"{base}/threads?limit=1&skip=1").json()] == ["t-human"]

    # A human agent answers with the org's key: the user gets it as a moderator's reply.
    assert admin.post(f"{base}/threads/t-human/messages", json={"payload": {"type": "text", "speech": "Hi Bob, Carla here."}}).status_code == 200
    view = admin.get(f"{base}/threads/t-human").json()
    assert view["messages"] == 3 and view["lastMessage"] == {**view["lastMessage"], "role": "moderator", "text": "Hi Bob, Carla here."}
    groups = view["history"]["history"]
    assert [g["originator"]["role"] for g in groups] == ["user", "bot", "moderator"]
    # Handed back, the bot answers again.
    assert admin.delete(f"{base}/threads/t-human/pause").json() == {"status": "ok"}
    assert admin.get(f"{base}/threads?only=paused").json()[0]["threadId"] == "t-paused"
    say(rest, "t-human", "Hello")
    assert admin.get(f"{base}/threads/t-human").json()["lastMessage"]["role"] == "bot"
    # A thread that has said nothing is simply empty.
    assert admin.get(f"{base}/threads/nobody-yet").json()["history"] == {"history": [], "threadId": "nobody-yet", "page": 1, "pages": 0}

    bad = admin.get(f"{base}/threads?only=sleeping")
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    assert admin.post(f"{base}/threads/t-human/messages", json={"payload": {"type": "event", "eventName": "INTRO"}}).status_code == 400
    other = org_server.in_new_org("other")
    assert other.client(f"Bearer {other.key}").get(f"{base}/threads").status_code == 404


def test_outside_business_hours_filter(org_server):
    project_id, admin, rest = project(org_server, businessHours=[{"weekdays": [], "timezone": "UTC"}])  # never open
    say(rest, "late", "Hello")
    assert [t["threadId"] for t in admin.get(f"/v1/projects/{project_id}/threads?only=outsideHours").json()] == ["late"]


def test_project_events_stream_what_happens_on_threads(org_server):
    project_id, admin, rest = project(org_server)
    seen: list[tuple[str, dict]] = []
    opened = threading.Event()

    def follow():
        with httpx.stream("GET", f"{org_server.base_url}/v1/projects/{project_id}/events",
                          headers={"Authorization": f"Bearer {org_server.key}"}, timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in response.iter_lines():
                opened.set()
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    seen.append((name, json.loads(line[6:])))
                    if name == "control.resume":
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert opened.wait(30)
    say(rest, "live", "I want to talk to a human")
    admin.delete(f"/v1/projects/{project_id}/threads/live/pause")
    reader.join(30)
    kinds = [k for k, _ in seen]
    assert kinds[:2] == ["message.delivered", "message.received"] and "control.handover" in kinds and kinds[-1] == "control.resume"
    assert all(event["threadId"] == "live" for _, event in seen)


def test_explain_says_why_and_stores_nothing(org_server):
    project_id, admin, rest = project(org_server)
    base = f"/v1/projects/{project_id}"
    exact = admin.get(f"{base}/explain", params={"text": "hello!"}).json()
    assert exact["step"] == {"stepId": "greet", "title": "Hello!", "type": "INTENT"} and exact["confidence"] == 1.0
    assert "one of its examples" in exact["explanation"] and exact["intents"][0]["stepId"] == "greet"

    say(rest, "asking", "what is the weather like")  # the City slot's question is pending
    before = admin.get(f"{base}/threads/asking").json()
    answer = admin.get(f"{base}/explain", params={"text": "Utrecht", "threadId": "asking"}).json()
    assert answer["context"]["stepId"] == "city" and answer["step"]["type"] == "SLOT"
    assert answer["params"]["city"][0]["value"] == "Utrecht" and "params.city" in answer["explanation"]
    assert admin.get(f"{base}/threads/asking").json() == before  # nothing stored

    say(rest, "feedback", "I want to give feedback")  # the thread is in Feedback: its children are tried first
    child = admin.get(f"{base}/explain", params={"text": "yes", "threadId": "feedback"}).json()
    assert child["step"]["stepId"] == "feedback-yes" and "As a child of “Feedback”" in child["explanation"]

    nothing = admin.get(f"{base}/explain", params={"text": "zxqv wvvk"}).json()
    assert nothing["step"]["type"] in ("UNKNOWN", "ANYTHING") and "threshold" in nothing["explanation"]
    missing = admin.get(f"{base}/explain")
    assert missing.status_code == 400 and "text" in missing.json()["message"]


def test_evaluate_counts_the_test_messages_matched_right_and_where_the_others_went(org_server):
    project_id, admin, _ = project(org_server)
    evaluate = f"/v1/projects/{project_id}/evaluate"
    cases = [
        {"text": "hello!", "expected": "greet"},
        {"text": "how hot is it outside", "expected": "weather"},
        {"text": "zxqv wvvk", "expected": "UNKNOWN"},
        {"text": "I want to talk to a human", "expected": "order"},  # written down wrong: it reaches human
        {"text": "yes", "expected": "feedback-yes", "context": "feedback"},  # an answer to Feedback's question
    ]
    report = admin.post(evaluate, json={"cases": cases}).json()
    assert [r["stepId"] for r in report["results"]] == ["greet", "weather", "UNKNOWN", "human", "feedback-yes"]
    assert [r["right"] for r in report["results"]] == [True, True, True, False, True]
    assert report["results"][0]["confidence"] == 1.0 and report["results"][2]["confidence"] is None
    assert (report["cases"], report["right"], report["accuracy"]) == (5, 4, 0.8)
    assert report["inScope"] == {"cases": 4, "right": 3, "accuracy": 0.75}
    assert report["outOfScope"] == {"cases": 1, "right": 1, "accuracy": 1.0}
    assert report["threshold"] == 0.5 and report["method"] == "similarity"  # too few examples to learn from
    worst = report["intents"][0]
    assert worst == {"stepId": "order", "title": worst["title"], "cases": 1, "right": 0, "accuracy": 0.0,
                     "confusedWith": [{"stepId": "human", "cases": 1}]}
    assert admin.get(f"/v1/projects/{project_id}/threads").json() == []  # nothing stored

    for body, says in (({"cases": []}, "cases is required"), ({"cases": [{"text": "hi", "expected": "nope"}]}, "'nope' is neither"),
                       ({"cases": [{"text": "hi", "expected": {"stepId": "greet"}}]}, "is neither"),
                       ({"cases": [{"text": "hi", "expected": "greet", "context": "greet"}]}, "child steps"),
                       ({"cases": [{"text": "x" * 1001, "expected": "greet"}]}, "at most 1000"),
                       ([1], "cases is required")):
        answer = admin.post(evaluate, json=body)
        assert answer.status_code == 400 and says in answer.json()["message"], (body, answer.text)
    assert admin.post(evaluate, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    surrogate = admin.post(evaluate, content=b'{"cases": [{"text": "\\ud800", "expected": "greet"}]}', headers={"content-type": "application/json"})
    assert surrogate.status_code == 400 and "cases[0].text" in surrogate.json()["message"], surrogate.text


def test_unmatched_lists_what_no_intent_took_the_most_frequent_first(org_server):
    project_id, admin, rest = project(org_server)
    base = f"/v1/projects/{project_id}"
    say(rest, "u1", "zxqv wvvk")
    say(rest, "u2", "Zxqv  wvvk!")  # the same text as an exact match reads it, on another thread
    say(rest, "u2", "Hello")  # matched: not listed
    say(rest, "u3", "I want to give feedback")
    say(rest, "u3", "purple monkey dishwasher")  # the Feedback question's own UNKNOWN step answers it
    assert [m["step"]["type"] for m in admin.get(f"{base}/threads/u1").json()["history"]["history"][0]["messages"]
            if m.get("step")] == ["UNKNOWN"]

    say(rest, "u4", "purple monkey dishwasher")  # the same text at the top level: an entry of its own

    report = admin.get(f"{base}/unmatched").json()
    assert (report["messages"], report["distinct"]) == (4, 3)
    first, second, third = report["texts"]
    assert (first["text"], first["count"], first["threads"]) == ("Zxqv  wvvk!", 2, 2)  # worded as it came last
    assert first["lastAt"] > report["since"] and first["unknownStepId"] == "unknown" and first["context"] is None
    assert first["now"]["stepId"] == "unknown" and "offTopic" in first
    assert first["suggestion"]["stepId"] in {"greet", "weather", "order", "feedback", "human"}
    assert [(t["text"], t["count"], t["unknownStepId"]) for t in (second, third)] == [
        ("purple monkey dishwasher", 1, "unknown"), ("purple monkey dishwasher", 1, "feedback-unknown")]  # the latest first
    # the one that answered Feedback's question is read there again: its children first
    assert third["context"] == {"stepId": "feedback", "title": "Feedback", "type": "INTENT"}
    assert third["now"]["stepId"] == "feedback-unknown" and third["offTopic"] is None
    assert third["suggestion"]["stepId"] in {"feedback-yes", "feedback-no", "greet", "weather", "order", "feedback", "human"}
    assert admin.get(f"{base}/threads/u1").json()["messages"] == 2  # reading them again stored nothing

    # the builder adds the text as an example: it is still listed (it came), and now matches
    flow = copy.deepcopy(SHOP_FLOW)
    next(s for s in flow["steps"] if s["stepId"] == "weather")["intent"]["examples"].append("zxqv wvvk")
    assert admin.put(f"{base}/flows/{flow['flowId']}", json=flow).status_code == 200
    again = admin.get(f"{base}/unmatched", params={"limit": "1"}).json()
    assert [t["text"] for t in again["texts"]] == ["Zxqv  wvvk!"] and again["texts"][0]["now"]["stepId"] == "weather"
    assert again["texts"][0]["suggestion"] == {**again["texts"][0]["suggestion"], "stepId": "weather", "confidence": 1.0}

    assert admin.get(f"{base}/unmatched", params={"since": "2999-01-01"}).json()["texts"] == []
    assert admin.get(f"{base}/unmatched", params={"since": "1999-01-01T00:00:00+02:00"}).json()["messages"] == 4
    for params, says in (({"since": "yesterday"}, "since must be a date"), ({"limit": "0"}, "limit must be"),
                         ({"limit": "101"}, "at most 100")):
        bad = admin.get(f"{base}/unmatched", params=params)
        assert bad.status_code == 400 and says in bad.json()["message"], bad.text
    other = org_server.in_new_org("other")
    assert other.client(f"Bearer {other.key}").get(f"{base}/unmatched").status_code == 404


def test_unmatched_lists_what_nothing_answered_in_flows_without_an_unknown_step(org_server):
    admin = org_server.client(f"Bearer {org_server.key}")
    created = admin.post("/v1/projects", json={"name": "no fallback"}).json()
    base = f"/v1/projects/{created['projectId']}"
    flow = copy.deepcopy(SHOP_FLOW)
    flow["steps"] = [s for s in flow["steps"] if s["stepId"] != "unknown"]
    assert admin.post(f"{base}/flows", json=flow).status_code == 201
    rest = org_server.client(f"Bearer {created['token']}")
    say(rest, "n1", "zxqv wvvk")  # nothing answers it: the bot is silent, but the message is known not understood
    assert admin.post(f"{base}/threads/n2/pause", json={}).json() == {"status": "ok"}
    say(rest, "n2", "zxqv wvvk")  # while paused nothing reads it: not listed
    [entry] = admin.get(f"{base}/threads/n1").json()["history"]["history"][0]["messages"]
    assert entry["step"] == {"stepId": None, "title": "UNKNOWN", "type": "UNKNOWN"}
    report = admin.get(f"{base}/unmatched").json()
    assert [(t["text"], t["count"], t["unknownStepId"], t["context"]) for t in report["texts"]] == [("zxqv wvvk", 1, None, None)]
    assert report["texts"][0]["now"] == {"stepId": None, "title": "UNKNOWN", "type": "UNKNOWN"}
    explained = admin.get(f"{base}/explain", params={"text": "zxqv wvvk"}).json()
    assert explained["explanation"].startswith("Nothing matched: ") and "no ANYTHING or UNKNOWN step" in explained["explanation"]


def test_unmatched_and_unsure_from_the_cli(make_server):
    server = make_server()
    project_id, admin, rest = project(server)
    say(rest, "c1", "zxqv wvvk")
    say(rest, "c2", "zxqv wvvk")
    say(rest, "c3", "can i get some food")
    data_dir = str(server.config.data_path)
    server.stop()  # one writer: the CLI opens the same database
    out = CliRunner().invoke(cli, ["projects", "unmatched", project_id, "--json", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["texts"] == [{"text": "zxqv wvvk", "unknownStepId": "unknown", "count": 2, "threads": 2,
                                "lastAt": report["texts"][0]["lastAt"]}]
    out = CliRunner().invoke(cli, ["projects", "unmatched", project_id, "--data-dir", data_dir])
    assert out.exit_code == 0 and "2 unmatched messages since" in out.output and "zxqv wvvk" in out.output
    out = CliRunner().invoke(cli, ["projects", "unmatched", project_id, "--since", "soon", "--data-dir", data_dir])
    assert out.exit_code == 1 and "--since must be a date" in out.output
    out = CliRunner().invoke(cli, ["projects", "unsure", project_id, "--json", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    [unsure] = json.loads(out.output)["texts"]
    assert (unsure["text"], unsure["matched"]["stepId"], unsure["count"]) == ("can i get some food", "order", 1)
    out = CliRunner().invoke(cli, ["projects", "unsure", project_id, "--data-dir", data_dir])
    assert out.exit_code == 0 and "1 unsure matches since" in out.output and "order    can i get some food" in out.output


def test_unsure_lists_what_an_intent_matched_with_little_confidence(org_server):
    project_id, admin, rest = project(org_server)
    base = f"/v1/projects/{project_id}"
    say(rest, "s1", "can i get some food")  # the nearest example's intent, order, with a confidence below 0.9
    say(rest, "s2", "Can I get some food?")
    say(rest, "s3", "Hello")  # an example: 1.0, not listed
    say(rest, "s4", "zxqv wvvk")  # unmatched, not unsure
    report = admin.get(f"{base}/unsure").json()
    assert (report["messages"], report["distinct"], report["below"]) == (2, 1, unmatched.UNSURE)
    [item] = report["texts"]
    assert (item["text"], item["count"], item["threads"]) == ("Can I get some food?", 2, 2)
    assert item["matched"] == {"stepId": "order", "title": "Order"} and 0.5 < item["confidence"] < unmatched.UNSURE
    assert item["context"] is None and item["now"]["stepId"] == "order" and item["suggestion"]["stepId"] == "order"
    assert item["alternative"]["stepId"] in {"greet", "weather", "feedback", "human"}
    assert admin.get(f"{base}/unmatched").json()["texts"][0]["text"] == "zxqv wvvk"

    # the builder confirms it with an example: still listed (it came), now matched surely; later matches are not unsure
    flow = copy.deepcopy(SHOP_FLOW)
    next(s for s in flow["steps"] if s["stepId"] == "order")["intent"]["examples"].append("can I get some food")
    assert admin.put(f"{base}/flows/{flow['flowId']}", json=flow).status_code == 200
    again = admin.get(f"{base}/unsure").json()["texts"][0]
    assert again["suggestion"] == {**again["suggestion"], "stepId": "order", "confidence": 1.0}
    say(rest, "s5", "can i get some food")
    assert admin.get(f"{base}/unsure").json()["messages"] == 2
    for params, says in (({"since": "today"}, "since must be a date"), ({"limit": "x"}, "limit must be")):
        bad = admin.get(f"{base}/unsure", params=params)
        assert bad.status_code == 400 and says in bad.json()["message"], bad.text
    other = org_server.in_new_org("other")
    assert other.client(f"Bearer {other.key}").get(f"{base}/unsure").status_code == 404


def test_a_flow_too_small_to_learn_from_matches_its_nearest_example_with_a_calibrated_confidence(org_server):
    # two or three examples per intent: no model is learned, each message goes to its nearest example's
    # intent when that is likely enough right for this flow's number of examples
    project_id, admin, _ = project(org_server)
    explain = f"/v1/projects/{project_id}/explain"
    near = admin.get(explain, params={"text": "how hot is it outside"}).json()
    top = near["intents"][0]
    assert near["method"] == "similarity" and near["step"]["stepId"] == "weather" == top["stepId"]
    assert near["confidence"] == top["confidence"] > near["threshold"] == 0.5 > top["similarity"] > 0.4
    # a text with no word the model knows lands anywhere: it needs a cosine of 0.5, whatever its confidence (here
    # a project's lower threshold lets that confidence through)
    lenient, admin, _ = project(org_server, intentThreshold=0.3)
    noise = admin.get(f"/v1/projects/{lenient}/explain", params={"text": "zxqv wvvk"}).json()
    assert noise["intents"][0]["confidence"] > noise["threshold"] == 0.3 and noise["intents"][0]["similarity"] < matcher.UNREAD_COSINE
    assert noise["step"]["type"] in ("UNKNOWN", "ANYTHING")


def test_project_events_end_when_their_key_or_token_is_revoked(org_server):
    project_id, admin, rest = project(org_server)
    spare = org_server.client().post("/api/admin/keys", json={"name": "human agent"}).json()
    token = rest.headers["Authorization"].removeprefix("Bearer ")

    def follow(secret: str, lines: list[str], opened: threading.Event, ended: threading.Event):
        with httpx.stream("GET", f"{org_server.base_url}/v1/projects/{project_id}/events",
                          headers={"Authorization": f"Bearer {secret}"}, timeout=30) as response:
            for line in response.iter_lines():
                lines.append(line)
                opened.set()
        ended.set()

    streams = {secret: ([], threading.Event(), threading.Event()) for secret in (spare["key"], token)}
    for secret, state in streams.items():
        threading.Thread(target=follow, args=(secret, *state), daemon=True).start()
    assert all(opened.wait(30) for _, opened, _ in streams.values())
    assert org_server.client().delete(f"/api/admin/keys/{spare['id']}").status_code == 200
    assert admin.post(f"/v1/projects/{project_id}/token").status_code == 200
    for lines, _, ended in streams.values():
        assert ended.wait(30), lines
        assert "event: error" in lines and json.loads(lines[lines.index("event: error") + 1][6:])["status"] == "error"
