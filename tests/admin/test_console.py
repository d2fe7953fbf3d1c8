"""The web console in a real headless Chromium (Debian's, driven by playwright), against a real
server with the real models. Every page is used as a person would; screenshots go to
test-artifacts/ and no request may leave the server (the console works offline)."""

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from flowbox import ids
from tests.helpers import create_agent

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = os.environ.get("FLOWBOX_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 120_000  # model answers on a busy 2-core machine
expect.set_options(timeout=TIMEOUT_MS)

pytestmark = [pytest.mark.slow,  # a long module: run first (conftest.py)
              pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]


@pytest.fixture(scope="module")
def console_server(module_server):
    return module_server


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, console_server):
    """A fresh tab. Requests anywhere but the server are refused and counted; console errors
    (a CSP violation, an exception) fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    outside, errors = [], []

    def route(r):
        if r.request.url.startswith(console_server.base_url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    tab.route("**/*", route)
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("dialog", lambda d: d.accept())
    yield tab
    context.close()
    assert not outside, f"the console tried to reach {outside}"
    unexpected = [e for e in errors if "status of 4" not in e]  # fetch 4xx that a test provokes on purpose
    assert not unexpected, unexpected


def shot(tab, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=full_page)


def sign_in(tab, server):
    tab.goto(server.base_url + "/")
    tab.fill("#signin input[name=key]", server.key)
    tab.click("#signin button[type=submit]")
    expect(tab.locator("nav a.active")).to_be_visible()


def open_console(tab, server, route: str, needs: str | None = None) -> None:
    """Signs in and opens a page; skips when the server lacks the API the page is for."""
    if needs and needs not in server.client().get("/schema/openapi.json").json()["paths"]:
        pytest.skip(f"this server has no {needs}")
    sign_in(tab, server)
    tab.goto(f"{server.base_url}/#/{route}")


def test_sign_in_and_out(page, console_server):
    page.goto(console_server.base_url + "/")
    expect(page.locator("#signin")).to_be_visible()
    shot(page, "signin")
    page.fill("#signin input[name=key]", "fbx_not-a-key")
    page.click("#signin button[type=submit]")
    expect(page.locator("#signin .error")).to_contain_text("not valid")
    page.fill("#signin input[name=key]", console_server.key)
    page.click("#signin button[type=submit]")
    expect(page.locator("nav a.active")).to_have_text("Agents")
    expect(page.locator("#who")).to_contain_text("default")
    # Pages for surfaces the server has; the key is kept for the tab, so a reload stays signed in.
    nav = page.locator("nav a").all_inner_texts()
    assert {"Agents", "Playground", "API keys"} <= set(nav)
    assert page.evaluate("sessionStorage.getItem('flowbox.key')") == console_server.key
    page.reload()
    expect(page.locator("nav a.active")).to_have_text("Agents")
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('flowbox.key')") is None


def test_agents_list_and_editor(page, console_server):
    sign_in(page, console_server)
    page.click("text=New agent")
    page.fill("#agent-form input[name=name]", "Console helper")
    page.fill("#agent-form textarea[name=instructions]", "You are brief.")
    page.fill("#agent-form input[name=max_tokens]", "24")
    page.check("#agent-form input[name=tools][value=calculator]")
    page.click("#agent-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Console helper")
    agent = next(a for a in console_server.client().get("/api/public/agent").json()["agents"] if a["name"] == "Console helper")
    assert agent["tools"] == ["calculator"] and agent["max_tokens"] == 24 and agent["instructions"] == "You are brief."

    page.fill("#agent-form textarea[name=instructions]", "You are very brief.")
    page.fill("#agent-form input[name=max_tokens]", "")
    page.click("#agent-form button[type=submit]")
    expect(page.locator("#toast")).to_contain_text("Saved")
    saved = console_server.client().get(f"/api/public/agent/{agent['id']}").json()
    assert saved["instructions"] == "You are very brief." and saved["max_tokens"] is None
    shot(page, "agent-editor")

    # A bad value shows the API's message and changes nothing.
    page.fill("#agent-form input[name=name]", " ")
    page.click("#agent-form button[type=submit]")
    expect(page.locator("#agent-form .error")).to_contain_text("name")
    assert console_server.client().get(f"/api/public/agent/{agent['id']}").json()["name"] == "Console helper"

    page.goto(console_server.base_url + "/#/agents")
    expect(page.locator("table")).to_contain_text("Console helper")
    shot(page, "agents")
    page.click(f"a[href='#/agents/{agent['id']}']  >> nth=0")
    page.click("#delete-agent")
    expect(page.locator("#toast")).to_contain_text("Deleted Console helper")  # the DELETE answered (the nav said Agents all along)
    assert console_server.client().get(f"/api/public/agent/{agent['id']}").status_code == 404


def _streams(server, agent_id: str) -> bool:
    """Whether the chat endpoint offers Server-Sent Events (read from the answer's headers; leaving
    at once stops the generation)."""
    with httpx.stream("POST", f"{server.base_url}/api/public/agent/{agent_id}/chat", json={"messages": "Hi"},
                      headers={"Authorization": server.key, "Accept": "text/event-stream"}, timeout=120) as response:
        return "text/event-stream" in response.headers.get("content-type", "")


def test_playground_shows_the_reply_as_it_comes_with_tool_calls(page, console_server):
    agent = create_agent(console_server.client(), name="Calc", tools=["calculator"], max_tokens=40,
                          instructions="Answer with the result.")
    streams = _streams(console_server, agent["id"])
    open_console(page, console_server, f"playground/{agent['id']}")
    expect(page.locator("#thread-id")).to_have_text("new thread")
    # Record every length the live reply has while it is generated.
    page.evaluate("""() => {
        window.__lengths = [];
        new MutationObserver(() => {
            const live = document.querySelector('.msg.streaming');
            if (live) window.__lengths.push(live.textContent.length);
        }).observe(document.querySelector('.chat'), {subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#message", "What is 12*7?")
    page.press("#message", "Enter")
    expect(page.locator(".chat .msg.user")).to_have_text("What is 12*7?")
    expect(page.locator(".chat .msg.assistant")).to_have_count(1)
    expect(page.locator("#send")).to_be_enabled()
    tool = page.locator(".chat .card.tool")
    expect(tool).to_contain_text("calculator")
    expect(tool).to_contain_text("84")
    expect(page.locator("#chat-meta")).to_contain_text("credit")
    thread = page.locator("#thread-id").inner_text().removeprefix("thread ")
    assert page.url.endswith(f"/#/playground/{agent['id']}/{thread}")
    if streams:
        lengths = page.evaluate("window.__lengths")
        assert len(set(lengths)) >= 3, f"the reply did not arrive in pieces: {lengths}"
    shot(page, "playground")

    # A reload continues the same thread from the address.
    page.reload()
    expect(page.locator(".chat .msg.user")).to_have_text("What is 12*7?")
    expect(page.locator(".chat .card.tool")).to_contain_text("84")


def test_knowledge_upload_search_and_retrieval_in_the_playground(page, console_server, tmp_path):
    agent = create_agent(console_server.client(), name="Office bot", max_tokens=32, instructions="Answer from the knowledge given.")
    open_console(page, console_server, "knowledge", needs="/api/public/knowledge")
    page.fill("#add-form input[name=name]", "Opening hours")
    page.fill("#add-form textarea[name=content]", "The Utrecht office opens at 9:00 and closes at 17:30 on weekdays. It is closed at weekends.")
    page.select_option("#add-form select[name=agent_ids]", agent["id"])
    page.click("#add-form button[type=submit]")
    expect(page.locator("table")).to_contain_text("Opening hours")

    long_text = "\n\n".join(f"Section {i}. The parking garage has {i * 10} spaces for visitors." + " More words." * 30
                            for i in range(1, 16))
    assert len(long_text) > 4000
    upload = tmp_path / "parking.txt"
    upload.write_text(long_text)
    page.set_input_files("#upload-files", str(upload))
    page.select_option("#upload-form select[name=agent_ids]", agent["id"])
    page.click("#upload-form button[type=submit]")
    expect(page.locator("table")).to_contain_text("parking.txt (1/2)")
    listed = console_server.client().get(f"/api/public/knowledge?agent_id={agent['id']}").json()
    assert {i["name"] for i in listed["knowledge_items"]} == {"Opening hours", "parking.txt (1/2)", "parking.txt (2/2)"}

    page.fill("#search-form input[name=q]", "when does the office open")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-results li").first).to_contain_text("Opening hours")
    shot(page, "knowledge")

    page.goto(f"{console_server.base_url}/#/playground/{agent['id']}")
    page.fill("#message", "When does the office open?")
    page.click("#send")
    kb = page.locator(".chat .card.kb")
    expect(kb).to_contain_text("Opening hours")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator(".chat .msg.assistant")).to_have_count(1)
    shot(page, "playground-knowledge")


def test_messaging_flows_and_test_chat(page, console_server):
    open_console(page, console_server, "messaging", needs="/v1/projects/{project_id}/flows")
    page.fill("#project-form input[name=name]", "Shop bot")
    page.click("#project-form button[type=submit]")
    expect(page.locator("#project-select")).to_contain_text("Shop bot")
    project_id = page.locator("#project-select").input_value()
    # The project's token is shown once, and works.
    token = page.locator("#project-token").inner_text().strip()
    assert console_server.client(f"Bearer {token}").get(f"/v1/projects/{project_id}").status_code == 200
    flow = {
        "title": "Greeting", "group": "Demo",
        "steps": [{"type": "INTENT", "title": "Hello", "contexts": [],
                   "intent": {"title": "Hello", "examples": [{"query": "hello"}, {"query": "hi there"}, {"query": "good morning"}]},
                   "actions": [{"type": "TEXT", "payload": {"texts": ["Hi from the test flow!"], "quickReplies": [
                       {"label": "Morning!", "value": "good morning", "type": "text"},
                       {"label": "Hi again", "value": "hi there", "type": "text"}]}}]}],
    }
    created = console_server.client().post(f"/v1/projects/{project_id}/flows", json=flow)
    assert created.status_code == 201, created.text
    page.reload()
    expect(page.locator("#flows")).to_contain_text("Greeting")
    expect(page.locator("#flows")).to_contain_text("Hi from the test flow!")
    expect(page.locator("#project-token")).to_have_count(0)
    # The test chat is a socket client, as a web-chat widget is.
    page.fill("#bot-input", "hello")
    page.click("#bot-form button[type=submit]")
    expect(page.locator(".chat .msg.user")).to_have_text("hello")
    expect(page.locator(".chat .msg.bot")).to_contain_text("Hi from the test flow!")
    # A quick reply is sent as the user's text, and its row is spent: a second click cannot send again
    first_row = page.locator(".chat .row.quick").first
    first_row.get_by_role("button", name="Morning!").click()
    expect(first_row.get_by_role("button")).to_have_count(2)
    for button in first_row.get_by_role("button").all():
        expect(button).to_be_disabled()
    expect(page.locator(".chat .msg.user")).to_have_text(["hello", "good morning"])
    expect(page.locator(".chat .msg.bot")).to_have_count(2)
    expect(page.locator(".chat .row.quick").last.get_by_role("button", name="Hi again")).to_be_enabled()
    page.fill("#bot-input", "hi there")
    page.press("#bot-input", "Enter")
    expect(page.locator(".chat .msg.bot")).to_have_count(3)
    shot(page, "messaging")


def test_multi_agent_chat_with_human_input(page, console_server):
    open_console(page, console_server, "chats", needs="/chats")
    flow = {"name": "pair", "max_rounds": 6, "speaker_selection": "round_robin", "agents": [
        {"name": "you", "type": "user_proxy", "human_input_mode": "ALWAYS"},
        {"name": "poet", "type": "assistant", "instructions": "Answer in one short line.", "max_tokens": 12},
    ]}
    page.fill("#flow-form textarea[name=flow]", json.dumps(flow))
    page.click("#flow-form button[type=submit]")
    expect(page.locator("#start-chat select[name=flow]")).to_contain_text("pair")
    page.select_option("#start-chat select[name=flow]", label="pair (2 agents)")
    page.fill("#start-chat input[name=name]", "poem session")
    page.click("#start-chat button[type=submit]")
    expect(page.locator("h1")).to_contain_text("poem session")
    expect(page.locator("#chat-status [data-status]")).to_have_attribute("data-status", "ready")
    # The answer to the message (the chat 'running') is held back until the stream has shown what came later
    held = []
    page.route("**/chats/*/messages", lambda route: held.append((route, route.fetch())) if route.request.method == "POST" else route.fallback())
    page.fill("#chat-input", "Write about the sea.")
    page.click("#chat-send")
    expect(page.locator(".chat .msg.user").first).to_contain_text("Write about the sea.")
    # The poet answers (live, over the stream); then the human's seat waits for input.
    expect(page.locator(".chat .msg.assistant").first).to_contain_text("poet")
    expect(page.locator("#chat-status [data-status]")).to_have_attribute("data-status", "wait_for_human_input")
    for route, response in held:
        route.fulfill(response=response)
    page.unroute("**/chats/*/messages")
    expect(page.locator("#chat-input")).to_have_value("")  # the late answer handled: it did not take the chat back
    expect(page.locator("#chat-status [data-status]")).to_have_attribute("data-status", "wait_for_human_input")
    expect(page.locator("#chat-send")).to_have_text("Send input")
    shot(page, "chat-waiting")
    # Enter sends; pressed again while the answer is on its way (held here), it sends nothing more
    inputs = []
    page.route("**/chats/*/input", lambda route: inputs.append(route))
    page.fill("#chat-input", "exit")
    with page.expect_request("**/chats/*/input"):
        page.press("#chat-input", "Enter")
    page.press("#chat-input", "Enter")
    inputs[0].continue_()
    expect(page.locator("#chat-status [data-status]")).to_have_attribute("data-status", "completed")
    page.unroute("**/chats/*/input")
    assert len(inputs) == 1
    expect(page.locator(".chat .error")).to_have_count(0)
    shot(page, "chat-done")


def test_api_keys_page(page, console_server):
    open_console(page, console_server, "keys")
    page.fill("#key-form input[name=name]", "console test key")
    page.click("#key-form button[type=submit]")
    new_key = page.locator("#new-key-value").inner_text().strip()
    assert new_key.startswith("fbx_")
    assert console_server.client(new_key).get("/api/public/agent").status_code == 200
    row = page.locator("#keys-table tr", has_text="console test key")
    expect(row).to_contain_text("active")
    shot(page, "keys")
    row.locator("button", has_text="Revoke").click()
    expect(row).to_contain_text("revoked")
    assert console_server.client(new_key).get("/api/public/agent").status_code == 401


def test_usage_chart(page, console_server):
    agent = create_agent(console_server.client(), name="Metered")
    today = dt.datetime.now(dt.timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    spent = {1: 3, 2: 1, 4: 7}  # days ago -> credits

    async def record():
        async with console_server.services.store.write() as tx:
            for days, credits in spent.items():
                stamp = ids.iso(today - dt.timedelta(days=days))
                await tx.execute(
                    "INSERT INTO runs (id, org_id, agent_id, status, credits, created_at, finished_at) VALUES (?, ?, ?, 'completed', ?, ?, ?)",
                    [ids.new_id(), console_server.org_id, agent["id"], credits, stamp, stamp])

    console_server.call(record())
    open_console(page, console_server, f"usage/{agent['id']}/7", needs="/api/public/agent/{agent_id}/usage")
    bars = page.locator("#usage-chart g[data-date]")
    expect(bars).to_have_count(7)
    shown = {g.get_attribute("data-date"): float(g.get_attribute("data-credits")) for g in bars.all()}
    for days, credits in spent.items():
        assert shown[(today - dt.timedelta(days=days)).date().isoformat()] == credits
    assert sum(shown.values()) == 11
    assert list(shown) == sorted(shown), "oldest day first"
    heights = {g.get_attribute("data-date"): float(g.locator("rect").get_attribute("height")) for g in bars.all()}
    tallest = max(heights, key=heights.get)
    assert shown[tallest] == 7
    expect(page.locator(".panel")).to_contain_text("11 credits")
    shot(page, "usage")


def test_api_docs_render_offline(page, console_server):
    page.goto(console_server.base_url + "/schema")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() > 20
    expect(page.locator("#swagger")).to_contain_text("/api/public/agent/{agent_id}/chat")
    shot(page, "schema", full_page=False)
