"""The console's messaging work in a real headless Chromium, end to end: a five-step flow built in
the flow editor (its validation problem shown at the step), a chat with it that explains each
match, a handover answered by a human from the inbox in a second tab, and the bot resumed; then
the chat-flow form. Keyboard only where a person would use it; screenshots in the test's tmp dir."""

from __future__ import annotations

import pytest

from tests.admin.test_console import TIMEOUT_MS, browser, expect, pytestmark, sign_in  # noqa: F401

STEP_TIMEOUT_MS = 30_000


@pytest.fixture
def context(browser, org_server):  # noqa: F811 (browser: test_console's fixture, imported above)
    """Tabs that may reach only the server; console errors (a CSP violation, an exception) fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    outside, errors = [], []

    def route(r):
        if r.request.url.startswith(org_server.base_url) or r.request.url.startswith(org_server.base_url.replace("http", "ws")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    context.on("page", lambda tab: (tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None),
                                    tab.on("pageerror", lambda exc: errors.append(str(exc))), tab.on("dialog", lambda d: d.accept())))
    yield context
    context.close()
    assert not outside, f"the console tried to reach {outside}"
    unexpected = [e for e in errors if "status of 4" not in e]  # the 400 of a save with a problem, provoked on purpose
    assert not unexpected, unexpected


def step(tab, index: int):
    return tab.locator("#steps section.step").nth(index)


def focused_step(tab):
    """The step whose control has the focus (a new step's title is focused as it is added)."""
    step_id = tab.evaluate("document.activeElement.closest('section.step').dataset.stepId")
    return tab.locator(f"#steps section.step[data-step-id='{step_id}']")


def shows_focus(tab) -> bool:
    """The focused control draws an outline (the console's :focus-visible style)."""
    return tab.evaluate("() => { const s = getComputedStyle(document.activeElement);"
                        " return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0; }")


def test_build_a_flow_chat_hand_over_answer_from_the_inbox_and_resume(context, org_server, tmp_path):
    api = org_server.client(f"Bearer {org_server.key}")
    project = api.post("/v1/projects", json={"name": "Pizza bot"}).json()
    tab = context.new_page()
    sign_in(tab, org_server)
    tab.goto(f"{org_server.base_url}/#/messaging/{project['projectId']}")
    tab.click("#new-flow")

    # Five steps: Greeting, Order with a Quantity slot under it and an ANYTHING under that, Human (handover).
    tab.fill("#flow-editor input[name=title]", "Pizza")
    first = step(tab, 0)
    first.locator("input[name=title]").fill("Greeting")
    first.locator("textarea[name=examples]").fill("hello\nhi there")
    first.locator("[data-add=text]").click()
    first.locator("textarea[name=texts]").fill("Hi! What would you like?")
    first.locator("input[name=quickReplies]").fill("Order, Human")

    # Human is dragged under Greeting (with the mouse); later its "Under" select moves it back to the top.
    tab.click("#add-step")
    human = focused_step(tab)
    human.locator(".handle").drag_to(first)
    expect(human.locator("select[name=parent] option:checked")).to_have_text("INTENT · Greeting")
    human.locator("input[name=title]").fill("Human")
    human.locator("textarea[name=examples]").fill("human\ntalk to a human\nconnect me with an agent")
    human.locator("[data-add=text]").click()
    human.locator("textarea[name=texts]").fill("Connecting you with a colleague.")
    human.locator("[data-add=handover]").click()

    tab.click("#add-step")
    order = focused_step(tab)
    tab.keyboard.type("Order")
    order.locator("textarea[name=examples]").fill("I want to order a pizza\norder pizza")
    order.locator("[data-add=text]").click()
    order.locator("textarea[name=texts]").fill("Sure, let's order.")
    order.locator("[data-add=child]").click()

    quantity = focused_step(tab)
    quantity.locator("select[name=type]").select_option("SLOT")
    quantity.locator("input[name=title]").fill("Quantity")
    quantity.locator("select[name=entityId]").select_option("system.number")
    quantity.locator("[data-add=text]").click()
    quantity.locator("textarea[name=texts]").fill("How many pizzas?")
    quantity.locator("[data-add=child]").click()

    done = focused_step(tab)
    done.locator("select[name=type]").select_option("ANYTHING")
    done.locator("input[name=title]").fill("Ordered")
    done.locator("[data-add=text]").click()
    done.locator("textarea[name=texts]").fill("{{quantity}} pizzas coming up!")

    human.locator("select[name=parent]").select_option("")
    expect(tab.locator("#steps > ol.steps > li > section.step")).to_have_count(3)  # Greeting, Order, Human at the top
    tab.screenshot(path=str(tmp_path / "flow-editor.png"), full_page=True)

    # The slot has no param name: the API's problem is shown at that step, and nothing is saved.
    tab.click("#save-flow")
    slot = tab.locator("#steps section.step[data-type=SLOT]")
    expect(slot.locator(".step-problems .error")).to_contain_text("slot.label")
    expect(slot).to_have_class("panel step invalid")
    assert api.get(f"/v1/projects/{project['projectId']}/flows").json() == []
    slot.locator("input[name=label]").fill("quantity")
    tab.click("#save-flow")
    expect(tab.locator("#toast")).to_contain_text("Saved")
    expect(tab.locator("h1")).to_have_text("Pizza bot / Pizza")  # the saved flow's page (the new flow's says "Pizza bot / New flow")
    [saved] = api.get(f"/v1/projects/{project['projectId']}/flows").json()
    assert [s["type"] for s in saved["steps"]] == ["INTENT", "INTENT", "INTENT", "SLOT", "ANYTHING"]
    by_title = {s["title"]: s for s in saved["steps"]}
    assert by_title["Quantity"]["contexts"] == [by_title["Order"]["stepId"]] and by_title["Human"]["contexts"] == []

    # The test chat explains each match; quick replies are buttons.
    chat = tab.locator("#bot-form")
    tab.fill("#bot-input", "hello")
    tab.press("#bot-input", "Enter")
    card = chat.locator(".card.match").last
    expect(card).to_contain_text("Matched INTENT “Greeting”")
    expect(card.locator(".confidence")).to_have_text(" confidence 1.00")
    expect(card).to_contain_text("one of its examples")
    expect(chat.locator(".msg.bot").last).to_have_text("Hi! What would you like?")
    expect(chat.locator(".row.quick button")).to_have_text(["Order", "Human"])
    tab.fill("#bot-input", "I want to order a pizza")
    tab.press("#bot-input", "Enter")
    expect(chat.locator(".msg.bot").last).to_contain_text("How many pizzas?")
    tab.fill("#bot-input", "3")
    tab.press("#bot-input", "Enter")
    card = chat.locator(".card.match").last
    expect(card).to_contain_text("Matched SLOT “Quantity”")
    expect(card.locator(".params")).to_contain_text("quantity = 3")
    expect(chat.locator(".msg.bot").last).to_have_text("3 pizzas coming up!")
    chat.locator(".row.quick button", has_text="Human").last.click()
    expect(chat.locator(".msg.bot").last).to_have_text("Connecting you with a colleague.")
    thread = tab.locator("#bot-thread").inner_text().removeprefix("thread ")
    tab.screenshot(path=str(tmp_path / "test-chat.png"), full_page=True)

    # A human agent, in a second tab: the thread is in the inbox's handover list, live.
    inbox = context.new_page()
    sign_in(inbox, org_server)
    inbox.goto(f"{org_server.base_url}/#/inbox/{project['projectId']}")
    expect(inbox.locator("#inbox-live")).to_have_text("live")
    inbox.click("[data-filter=handover]")
    item = inbox.locator(f".thread-item[data-thread='{thread}']")
    expect(item.locator("[data-tag=handover]")).to_be_visible()
    item.focus()
    # the user writes again: the live list is redrawn, and the item keeps the keyboard's focus
    tab.fill("#bot-input", "still there?")
    tab.press("#bot-input", "Enter")
    expect(item).to_contain_text("still there?")
    expect(item).to_be_focused()
    inbox.keyboard.press("Enter")
    expect(inbox.locator("#thread .msg.customer").first).to_contain_text("hello")
    expect(inbox.locator("#thread .msg.customer .meta").first).to_have_text("matched INTENT “Greeting”")
    expect(inbox.locator("#resume-bot")).to_be_visible()
    expect(inbox.locator("#reply-input")).to_be_focused()
    # The user writes while the agent types: that live refresh, answered only after the typing, keeps what was typed
    held, holding = [], {"on": True}
    inbox.route(f"**/threads/{thread}", lambda route: held.append(route) if holding["on"] else route.continue_())
    with inbox.expect_request(f"**/threads/{thread}"):
        tab.fill("#bot-input", "are you there?")
        tab.press("#bot-input", "Enter")
    inbox.keyboard.type("Hi, I am Carla. How can I help?")
    holding["on"] = False
    for route in held:
        route.continue_()
    inbox.unroute(f"**/threads/{thread}")
    expect(inbox.locator("#thread .msg.customer").last).to_contain_text("are you there?")
    expect(inbox.locator("#reply-input")).to_have_value("Hi, I am Carla. How can I help?")
    expect(inbox.locator("#reply-input")).to_be_focused()
    inbox.keyboard.press("Enter")
    expect(inbox.locator("#thread .msg.moderator")).to_contain_text("Hi, I am Carla. How can I help?")
    expect(chat.locator(".msg.moderator")).to_contain_text("Hi, I am Carla. How can I help?")  # live, in the user's chat

    # While paused, the user's messages reach the inbox live and the bot stays silent.
    tab.fill("#bot-input", "hello")
    tab.press("#bot-input", "Enter")
    expect(chat.locator(".card.match").last).to_contain_text("paused")
    expect(inbox.locator("#thread .msg.customer").last).to_contain_text("hello")
    inbox.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)

    inbox.locator("#resume-bot").focus()
    assert shows_focus(inbox), "a focused button shows an outline"
    inbox.keyboard.press("Enter")
    expect(inbox.locator("#take-over")).to_be_visible()
    inbox.click("[data-filter=paused]")
    expect(inbox.locator(f".thread-item[data-thread='{thread}']")).to_have_count(0)
    tab.fill("#bot-input", "hello")
    tab.press("#bot-input", "Enter")
    expect(chat.locator(".msg.bot").last).to_have_text("Hi! What would you like?")
    history = api.get(f"/v1/projects/{project['projectId']}/threads/{thread}").json()
    assert not history["paused"] and history["lastMessage"]["role"] == "bot"

    # A long thread shows its newest 20 messages, and older ones on demand. The live refresh its messages
    # cause (still for "Paused") is held back until "All" has been drawn: the late answer is not drawn over it.
    held = []
    inbox.route("**/threads?only=paused", lambda route: held.append(route))
    rest = org_server.client(f"Bearer {project['token']}")
    with inbox.expect_request("**/threads?only=paused"):
        for i in range(11):
            rest.post("/rest/v1/messages/long", json={"payload": {"type": "text", "speech": "hello", "originator": {"name": "Lou"}}})
    inbox.click("[data-filter=all]")
    expect(inbox.locator(".thread-item[data-thread=long]")).to_be_visible()
    for route in held:
        route.continue_()
        route.request.response().finished()
    inbox.evaluate("() => new Promise((done) => requestAnimationFrame(() => setTimeout(done)))")  # the late answers handled
    item = inbox.locator(".thread-item[data-thread=long]")
    expect(item).to_be_visible()
    # pressed, then a live refresh rewrites the item (Lou writes again), then released: still a click on it
    item.hover()
    inbox.mouse.down()
    rest.post("/rest/v1/messages/long", json={"payload": {"type": "text", "speech": "one more", "originator": {"name": "Lou"}}})
    expect(item).to_contain_text("one more")
    inbox.mouse.up()
    expect(inbox.locator("#thread .msg")).to_have_count(20)
    inbox.click("#show-older")
    expect(inbox.locator("#thread .msg")).to_have_count(23)  # 12 from Lou, 11 answers ("one more" has none)
    expect(inbox.locator("#show-older")).to_have_count(0)


def test_chat_flow_form_and_json_view(context, org_server, tmp_path):
    agent = org_server.client().post("/api/public/agent", json={"name": "Researcher", "instructions": "Be brief."}).json()
    tab = context.new_page()
    sign_in(tab, org_server)
    tab.goto(f"{org_server.base_url}/#/chats")
    form = tab.locator("#flow-form")
    form.locator("input[name=name]").fill("panel")
    form.locator("select[name=speaker_selection]").select_option("auto")
    form.locator("input[name=max_rounds]").fill("5")
    form.locator("input[name=termination_keyword]").fill("DONE")
    expect(form.locator("datalist#model-names option[value=local]")).to_have_count(1)  # the Model field suggests the models
    form.locator("#add-agent").click()
    row = form.locator(".agent-row").last
    expect(row.locator("input[name=agent-name]")).to_be_focused()
    row.locator("input[name=agent-name]").fill("researcher")
    row.locator("select[name=agent_id]").select_option(agent["id"])
    proxy = form.locator(".agent-row", has=tab.locator("select[name=human_input_mode]"))
    proxy.locator("select[name=human_input_mode]").select_option("ALWAYS")
    # The JSON view shows the same definition, and an edit there shows in the form.
    text = form.locator("textarea[name=flow]")
    expect(text).to_have_value(__import__("re").compile(r'"agent_id": "' + agent["id"]))
    text.fill(text.input_value().replace('"writer"', '"author"'))
    expect(form.locator(".agent-row input[name=agent-name]").nth(1)).to_have_value("author")
    tab.screenshot(path=str(tmp_path / "chat-flow-form.png"), full_page=True)
    form.locator("button[type=submit]").click()
    expect(tab.locator("table")).to_contain_text("panel")
    flow = next(f for f in org_server.client().get("/chatflows").json() if f["name"] == "panel")
    assert flow["speaker_selection"] == "auto" and flow["max_rounds"] == 5 and flow["termination_keyword"] == "DONE"
    assert [a["name"] for a in flow["agents"]] == ["user", "author", "critic", "researcher"]
    assert flow["agents"][3]["agent_id"] == agent["id"] and flow["agents"][0]["human_input_mode"] == "ALWAYS"
    # Editing loads the flow into the form; saving PATCHes it.
    tab.locator(f"[data-edit='{flow['id']}']").click()
    tab.locator("#flow-form input[name=max_rounds]").fill("7")
    tab.locator("#flow-form button[type=submit]").click()
    expect(tab.locator("#toast")).to_contain_text("Saved")
    assert org_server.client().get(f"/chatflows/{flow['id']}").json()["max_rounds"] == 7


def test_test_messages_show_what_the_flows_match_and_what_they_miss(context, org_server):
    from tests.helpers import SHOP_FLOW

    api = org_server.client(f"Bearer {org_server.key}")
    project = api.post("/v1/projects", json={"name": "Shop"}).json()
    assert api.post(f"/v1/projects/{project['projectId']}/flows", json=SHOP_FLOW).status_code == 201
    rest = org_server.client(f"Bearer {project['token']}")
    for thread in ("t1", "t2"):  # what a customer wrote that nothing matched is listed under the test messages
        assert rest.post(f"/rest/v1/messages/{thread}", json={"payload": {"type": "text", "speech": "plorb fnark"}}).status_code == 200
    # and what an intent matched with little confidence, under it
    assert rest.post("/rest/v1/messages/t3", json={"payload": {"type": "text", "speech": "can i get some food"}}).status_code == 200
    tab = context.new_page()
    sign_in(tab, org_server)
    tab.goto(f"{org_server.base_url}/#/messaging/{project['projectId']}")
    expect(tab.locator("#unmatched")).to_contain_text("2 unmatched messages, 1 distinct text,")
    row = tab.locator("#unmatched tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("plorb fnark")
    expect(row).to_contain_text("UNKNOWN")  # what it matches now
    likeliest = api.get(f"/v1/projects/{project['projectId']}/unmatched").json()["texts"][0]["suggestion"]
    row.locator("button").click()  # "Add to <the likeliest intent>": the text becomes one of its examples
    expect(tab.locator("#toast")).to_contain_text(f"Added “plorb fnark” to the examples of “{likeliest['title']}”")
    expect(row.locator("td").nth(4)).to_have_text(likeliest["title"])  # it matches that intent now
    expect(row.locator("button")).to_have_count(0)
    flow = api.get(f"/v1/projects/{project['projectId']}/flows/{SHOP_FLOW['flowId']}").json()
    step = next(s for s in flow["steps"] if s["stepId"] == likeliest["stepId"])
    assert step["intent"]["examples"][-1]["query"] == "plorb fnark"
    expect(tab.locator("#unsure")).to_contain_text("1 match below 0.9 confidence, 1 distinct text,")
    unsure = tab.locator("#unsure tbody tr")
    expect(unsure).to_have_count(1)
    expect(unsure).to_contain_text("can i get some food")
    expect(unsure.locator("td").nth(2)).to_contain_text("Order (0.")  # the step it matched, and how surely
    unsure.locator("button", has_text="Confirm Order").click()  # a right match: the text becomes an example of Order
    expect(tab.locator("#toast")).to_contain_text("Added “can i get some food” to the examples of “Order”")
    expect(unsure.locator("button")).to_have_count(0)
    flow = api.get(f"/v1/projects/{project['projectId']}/flows/{SHOP_FLOW['flowId']}").json()
    assert next(s for s in flow["steps"] if s["stepId"] == "order")["intent"]["examples"][-1]["query"] == "can i get some food"
    tab.locator("#evaluate-form textarea").fill("greet | hello!\norder | I want to talk to a human\nUNKNOWN | zxqv wvvk")
    tab.locator("#evaluate-form button[type=submit]").click()
    expect(tab.locator("#evaluation-summary")).to_contain_text("Right: 2 of 3 (67%) · in scope 1 of 2 (50%) · out of scope 1 of 1 (100%)")
    expect(tab.locator("#evaluation table").first).to_contain_text("human ×1")  # where the order case went
    missed = tab.locator("#evaluation table").nth(1)
    expect(missed).to_contain_text("I want to talk to a human")
    expect(missed).not_to_contain_text("hello!")
    # a line naming no INTENT step is the endpoint's 400, shown under the form
    tab.locator("#evaluate-form textarea").fill("pizzas | two large ones")
    tab.locator("#evaluate-form button[type=submit]").click()
    expect(tab.locator("#evaluate-form [role=alert]")).to_contain_text("'pizzas' is neither")
