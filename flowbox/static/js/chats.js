// Multi-agent chats (the Chats API): flows, chat sessions started from them, a live transcript
// (Server-Sent Events) and a box for human input when a chat waits for it.
import { api, events, request } from "./api.js";
import { errorBox, field, h, mount, onSubmit, refresh, table, toast, when } from "./dom.js";
import { Transcript } from "./transcript.js";

const AUTH = { auth: "x-api-key" };
const STATUS_TAGS = { ready: "", running: "warn", wait_for_human_input: "warn", completed: "ok", error: "bad" };

const EXAMPLE_FLOW = {
  name: "writer-and-critic",
  description: "A writer drafts, a critic improves it; you step in when asked.",
  speaker_selection: "round_robin",
  max_rounds: 4,
  agents: [
    { name: "user", type: "user_proxy", human_input_mode: "TERMINATE" },
    { name: "writer", type: "assistant", instructions: "Write a short answer to the user's request.", max_tokens: 64 },
    { name: "critic", type: "assistant", instructions: "Suggest one improvement to the writer's answer, then say TERMINATE.", max_tokens: 64 },
  ],
};

export async function render(main, args) {
  if (args[0]) return chatView(main, args[0]);
  const [flows, chats] = await Promise.all([api("/chatflows", AUTH), api("/chats", AUTH)]);
  const start = onSubmit(h("form", { class: "panel", id: "start-chat" }, h("h2", {}, "Start a chat"),
    flows.length
      ? [field("Flow", h("select", { name: "flow" }, flows.map((f) => h("option", { value: f.id }, `${f.name} (${f.agents.length} agents)`)))),
        field("Name", h("input", { name: "name", placeholder: "optional" })),
        h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Start"))]
      : h("p", { class: "muted" }, "Create a flow first.")),
  async (data) => {
    const body = { from_type: "flow", from_flow: data.get("flow") };
    if (data.get("name")) body.name = data.get("name");
    const chat = await api("/chats", { method: "POST", body, ...AUTH });
    location.hash = `#/chats/${chat.id}`;
  });
  const newFlow = onSubmit(h("form", { class: "panel", id: "flow-form" }, h("h2", {}, "New flow"),
    field("Flow definition (JSON)", h("textarea", { name: "flow", rows: 12, class: "mono", spellcheck: false }, JSON.stringify(EXAMPLE_FLOW, null, 2)),
      "Assistants (instructions, model) or agent_id of an agent, and at most one user_proxy: the human's seat."),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create flow"))),
  async (data) => {
    let body;
    try {
      body = JSON.parse(data.get("flow"));
    } catch (err) {
      throw new Error(`Not valid JSON: ${err.message}`);
    }
    const flow = await api("/chatflows", { method: "POST", body, ...AUTH });
    toast(`Created flow ${flow.name}`);
    refresh();
  });
  mount(main, h("h1", {}, "Chats"),
    h("div", { class: "grid2" }, start, newFlow),
    h("h2", {}, "Sessions"),
    table([
      ["Name", (c) => h("a", { href: `#/chats/${c.id}` }, c.name)],
      ["Status", (c) => statusTag(c.status)],
      ["Round", (c) => `${c.round ?? 0} / ${c.max_rounds}`],
      ["Updated", (c) => when(c.updated_at)],
      ["", (c) => h("button", { type: "button", class: "danger", onclick: () => remove(c) }, "Delete"), "actions"],
    ], [...chats].reverse(), "No chats yet."),
    h("h2", {}, "Flows"),
    table([
      ["Name", (f) => [f.name, h("div", { class: "muted small" }, f.description)]],
      ["Agents", (f) => f.agents.map((a) => h("span", { class: "tag" }, `${a.name}${a.type === "user_proxy" ? " (human)" : ""}`))],
      ["Speaker selection", (f) => f.speaker_selection],
    ], flows, "No flows yet."));
}

function statusTag(status) {
  return h("span", { class: `tag ${STATUS_TAGS[status] ?? ""}`, dataset: { status } }, status.replaceAll("_", " "));
}

async function remove(chat) {
  if (!confirm(`Delete chat “${chat.name}”?`)) return;
  await api(`/chats/${encodeURIComponent(chat.id)}`, { method: "DELETE", ...AUTH });
  toast("Deleted");
  refresh();
}

async function chatView(main, chatId) {
  const path = `/chats/${encodeURIComponent(chatId)}`;
  const chat = await api(path, AUTH);
  const transcript = new Transcript();
  const status = h("span", { id: "chat-status" });
  const waiting = h("div", { class: "muted small", id: "chat-waiting" });
  const input = h("textarea", { id: "chat-input", rows: 1 });
  const send = h("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
  let current = chat;
  const seen = new Set();

  function setStatus(next) {
    current = next;
    mount(status, statusTag(next.status));
    const human = next.status === "wait_for_human_input";
    waiting.textContent = human
      ? `${next.waiting_for?.agent ?? "The chat"} waits for your input${next.waiting_for?.reason ? ` (${next.waiting_for.reason})` : ""}. Type 'exit' to end it.`
      : next.status === "error" ? `Error: ${next.error}` : "";
    input.placeholder = human ? "Your input…" : "A message starts a conversation of this chat's flow…";
    input.disabled = send.disabled = next.status === "running";
    send.textContent = human ? "Send input" : "Send";
  }

  function show(message) {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    transcript.bubble(message.type === "user" ? "user" : "assistant", message.content, message.sender);
  }

  const form = h("form", { class: "composer", id: "chat-form" }, input, send);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    const human = current.status === "wait_for_human_input";
    if (!human && !text.trim()) return;
    send.disabled = true;
    try {
      const answer = await api(`${path}/${human ? "input" : "messages"}`, { method: "POST", body: { message: text }, ...AUTH });
      input.value = "";
      if (answer.message) show(answer.message);
      setStatus(answer.chat);
    } catch (err) {
      transcript.el.append(errorBox(err));
      send.disabled = false;
    }
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) form.requestSubmit();
  });

  mount(main, h("h1", {}, h("a", { href: "#/chats" }, "Chats"), " / ", chat.name, h("span", { class: "spacer" }), status),
    transcript.el, waiting, form);
  setStatus(chat);

  // Messages from the start, then live ones and status changes, until the page is left.
  const controller = new AbortController();
  (async () => {
    try {
      const response = await request(`${path}/stream`, { accept: "text/event-stream", signal: controller.signal, ...AUTH });
      for await (const event of events(response)) {
        if (event.event === "message") show(event.json);
        else if (event.event === "status") setStatus(event.json);
        else if (event.event === "deleted") {
          transcript.note("This chat was deleted.");
          break;
        }
      }
    } catch (err) {
      if (err.name !== "AbortError") transcript.el.append(errorBox(err));
    }
  })();
  input.focus();
  return () => controller.abort();
}
