// Multi-agent chats (the Chats API): flows, chat sessions started from them, a live transcript
// (Server-Sent Events) and a box for human input when a chat waits for it.
import { api, events, request } from "./api.js";
import { errorBox, field, h, mount, onSubmit, refresh, table, toast, when } from "./dom.js";
import { Transcript } from "./transcript.js";

const AUTH = { auth: "x-api-key" };
let modelNames = []; // what an assistant's Model field suggests: local, added and remote models (GET /api/admin/options)
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
  const agents = await api("/api/public/agent").then((r) => r.agents).catch(() => []);
  modelNames = await api("/api/admin/options").then((r) => r.models).catch(() => []);
  let editor = flowEditor(agents);
  const edit = (flow) => {
    const next = flowEditor(agents, flow);
    editor.replaceWith(next);
    editor = next;
    next.scrollIntoView({ block: "start" });
    next.querySelector("input[name=name]")?.focus();
  };
  mount(main, h("h1", {}, "Chats"),
    start,
    editor,
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
      ["", (f) => h("button", { type: "button", dataset: { edit: f.id }, onclick: () => edit(f) }, "Edit"), "actions"],
    ], flows, "No flows yet."));
}

// A chat flow as a form (agents, speaker selection, rounds, keyword) beside its JSON: both show
// the same definition, and a change in either shows in the other. Saved with POST (new) or PATCH.
const FLOW_FIELDS = ["name", "description", "agents", "speaker_selection", "manager_model", "max_rounds", "termination_keyword"];
const KINDS = [["assistant", "Assistant"], ["agent", "Agents-API agent"], ["user_proxy", "User proxy (a human)"]];
const MODES = [["ALWAYS", "ALWAYS: asked at each of its turns"], ["TERMINATE", "TERMINATE: asked when the chat would end"], ["NEVER", "NEVER: never asked"]];

function kindOf(agent) {
  return agent.type === "user_proxy" ? "user_proxy" : "agent_id" in agent ? "agent" : "assistant";
}

function flowEditor(agents, existing) {
  let def = existing ? Object.fromEntries(FLOW_FIELDS.filter((k) => k in existing).map((k) => [k, existing[k]])) : structuredClone(EXAMPLE_FLOW);
  const json = h("textarea", { name: "flow", rows: 26, class: "mono", spellcheck: false });
  const form = h("div", { id: "flow-fields" });
  const sync = () => (json.value = JSON.stringify(def, null, 2));
  json.addEventListener("input", () => {
    try {
      const parsed = JSON.parse(json.value);
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
      def = parsed;
      json.removeAttribute("aria-invalid");
      draw();
    } catch {
      json.setAttribute("aria-invalid", "true");
    }
  });

  function input(props, get, set) {
    const el = h(props.tag || "input", { ...props, tag: undefined });
    if (el.tagName !== "SELECT") el.value = get() ?? ""; // a select's options come after, each marked selected
    el.addEventListener(el.tagName === "SELECT" ? "change" : "input", () => {
      set(el.value);
      sync();
    });
    return el;
  }

  function agentRow(agent, index) {
    const list = def.agents;
    const kind = h("select", { name: "kind", "aria-label": `Kind of agent ${index + 1}` },
      KINDS.map(([id, label]) => h("option", { value: id, selected: id === kindOf(agent) }, label)));
    kind.addEventListener("change", () => {
      list[index] = newAgent(kind.value, agent.name);
      changed(`[data-agent="${index}"] select[name=kind]`);
    });
    const remove = h("button", { type: "button", class: "small danger", "aria-label": `Remove agent ${agent.name || index + 1}`, onclick: () => {
      list.splice(index, 1);
      changed("#add-assistant");
    } }, "Remove");
    const name = field("Name", input({ name: "agent-name", required: true }, () => agent.name, (v) => (agent.name = v)));
    let details;
    if (kindOf(agent) === "user_proxy") {
      details = field("Human input", input({ tag: "select", name: "human_input_mode" }, () => agent.human_input_mode, (v) => (agent.human_input_mode = v)),
        "When the chat waits for the human in this seat.");
      details.querySelector("select").append(...MODES.map(([id, label]) => h("option", { value: id, selected: id === (agent.human_input_mode || "ALWAYS") }, label)));
    } else if (kindOf(agent) === "agent") {
      const select = input({ tag: "select", name: "agent_id" }, () => agent.agent_id, (v) => (agent.agent_id = v));
      select.append(...(agents.length ? agents : [{ id: agent.agent_id || "", name: "no agents yet" }]).map((a) =>
        h("option", { value: a.id, selected: a.id === agent.agent_id }, a.name)));
      details = field("Agent", select, "Its instructions, model and tools come from the agent.");
    } else {
      details = [
        field("Instructions", input({ tag: "textarea", name: "instructions", rows: 2 }, () => agent.instructions, (v) => (agent.instructions = v))),
        h("div", { class: "row" },
          field("Model", input({ name: "model", placeholder: "local", list: "model-names" }, () => agent.model, (v) => (v ? (agent.model = v) : delete agent.model))),
          field("Max tokens", input({ name: "max_tokens", type: "number", min: 1, max: 8192 }, () => agent.max_tokens,
            (v) => (v === "" ? delete agent.max_tokens : (agent.max_tokens = Number(v)))))),
      ];
    }
    return h("div", { class: "agent-row", dataset: { agent: String(index) } }, h("div", { class: "row" }, name, field("Kind", kind), remove), details);
  }

  // A new seat of a kind (one of KINDS), as the JSON holds it.
  function newAgent(kind, name) {
    if (kind === "user_proxy") return { name, type: "user_proxy", human_input_mode: "ALWAYS" };
    if (kind === "agent") return { name, type: "assistant", agent_id: agents[0]?.id ?? "" };
    return { name, type: "assistant", instructions: "", max_tokens: 64 };
  }

  function add(kind) {
    def.agents = Array.isArray(def.agents) ? def.agents : [];
    const name = kind === "user_proxy" ? "user" : `${kind === "agent" ? "agent" : "assistant"}${def.agents.length + 1}`;
    def.agents.push(newAgent(kind, name));
    changed(`[data-agent="${def.agents.length - 1}"] input[name=agent-name]`);
  }

  // After a change of shape: the JSON and the form again, the focus back where it belongs.
  function changed(focus) {
    sync();
    draw();
    form.querySelector(focus)?.focus();
  }

  function draw() {
    const speaker = input({ tag: "select", name: "speaker_selection" }, () => def.speaker_selection, (v) => (def.speaker_selection = v));
    speaker.append(...[["round_robin", "round robin"], ["auto", "auto (a manager model picks)"]].map(([id, label]) =>
      h("option", { value: id, selected: id === (def.speaker_selection || "round_robin") }, label)));
    mount(form,
      h("div", { class: "row" },
        h("div", { class: "grow" }, field("Name", input({ name: "name", required: true }, () => def.name, (v) => (def.name = v)))),
        h("div", { class: "grow" }, field("Description", input({ name: "description" }, () => def.description, (v) => (def.description = v))))),
      h("div", { class: "row" },
        h("div", { class: "grow" }, field("Speaker selection", speaker)),
        h("div", { class: "grow" }, field("Rounds (at most)", input({ name: "max_rounds", type: "number", min: 1, max: 100 }, () => def.max_rounds,
          (v) => (v === "" ? delete def.max_rounds : (def.max_rounds = Number(v)))))),
        h("div", { class: "grow" }, field("Keyword that ends it", input({ name: "termination_keyword", placeholder: "TERMINATE" },
          () => def.termination_keyword, (v) => (def.termination_keyword = v || null))))),
      h("h3", {}, "Agents"),
      (Array.isArray(def.agents) ? def.agents : []).map(agentRow),
      h("div", { class: "row" },
        h("button", { type: "button", class: "small", id: "add-assistant", onclick: () => add("assistant") }, "+ Assistant"),
        h("button", { type: "button", class: "small", id: "add-agent", onclick: () => add("agent") }, "+ Agents-API agent"),
        h("button", { type: "button", class: "small", id: "add-proxy", onclick: () => add("user_proxy") }, "+ User proxy")),
      h("datalist", { id: "model-names" }, modelNames.map((name) => h("option", { value: name }))));
  }

  sync();
  draw();
  return onSubmit(h("form", { class: "panel", id: "flow-form" }, h("h2", {}, existing ? `Edit flow “${existing.name}”` : "New flow"),
    h("div", { class: "grid2" }, form, field("JSON", json, "The same definition: edit either side.")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, existing ? "Save flow" : "Create flow"),
      existing ? h("a", { class: "button", href: "#/chats", onclick: (e) => { e.preventDefault(); refresh(); } }, "New flow instead") : null)),
  async (data) => {
    let body;
    try {
      body = JSON.parse(data.get("flow"));
    } catch (err) {
      throw new Error(`Not valid JSON: ${err.message}`);
    }
    const flow = existing
      ? await api(`/chatflows/${encodeURIComponent(existing.id)}`, { method: "PATCH", body, ...AUTH })
      : await api("/chatflows", { method: "POST", body, ...AUTH });
    toast(`${existing ? "Saved" : "Created"} flow ${flow.name}`);
    refresh();
  });
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
      // The stream may have brought a later status first (a quick reply, an error): an answer older than
      // what is shown would leave the chat 'running' with the input off for good.
      setStatus(answer.chat.updated_at > current.updated_at ? answer.chat : current);
    } catch (err) {
      transcript.el.append(errorBox(err));
      send.disabled = false;
    }
  });
  input.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey) return;
    e.preventDefault(); // no newline left in the box
    if (!send.disabled) form.requestSubmit(); // (requestSubmit ignores a disabled button: a second Enter sent twice)
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
