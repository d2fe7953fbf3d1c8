// Messaging (the Flow.ai-style API): projects, their intent flows, and a test chat that talks to
// the bot over the socket API as a web-chat widget would.
import { api } from "./api.js";
import { errorBox, field, h, mount, onSubmit } from "./dom.js";
import { Transcript } from "./transcript.js";

const NEW_TOKEN = "flowbox.new-project"; // shown once, on the page the creation leads to

export async function render(main, args) {
  const projects = await api("/v1/projects");
  const project = projects.find((p) => p.projectId === args[0]) || projects[0];
  const create = onSubmit(h("form", { class: "panel row", id: "project-form" },
    h("div", { class: "grow" }, field("New project", h("input", { name: "name", required: true, placeholder: "e.g. support bot" }))),
    h("button", { type: "submit", class: "primary" }, "Create project")),
  async (data) => {
    const created = await api("/v1/projects", { method: "POST", body: { name: data.get("name") } });
    sessionStorage.setItem(NEW_TOKEN, JSON.stringify(created));
    location.hash = `#/messaging/${created.projectId}`;
  });
  if (!project) return void mount(main, h("h1", {}, "Messaging"), create, h("div", { class: "panel empty" }, "No messaging projects yet."));

  const picker = h("select", { id: "project-select", class: "auto", onchange: () => (location.hash = `#/messaging/${picker.value}`) },
    projects.map((p) => h("option", { value: p.projectId, selected: p === project }, p.name)));
  // The list holds steps in brief (ids for intents and actions); each flow in full has the words.
  const base = `/v1/projects/${encodeURIComponent(project.projectId)}/flows`;
  const listed = await api(`${base}?limit=50`);
  const flows = await Promise.all(listed.map((f) => api(`${base}/${encodeURIComponent(f.flowId)}`)));
  const created = JSON.parse(sessionStorage.getItem(NEW_TOKEN) || "null");
  sessionStorage.removeItem(NEW_TOKEN);
  const chat = testChat(project);
  mount(main,
    h("h1", {}, "Messaging", h("span", { class: "spacer" }), picker),
    created && created.projectId === project.projectId ? h("div", { class: "notice" },
      h("b", {}, `Project “${created.name}” created. Its API token (REST v1 and webhooks) is shown this once:`),
      h("div", { class: "secret", id: "project-token" }, created.token)) : null,
    h("p", { class: "muted small" }, `project ${project.projectId} · clientId ${project.clientId}`),
    h("div", { class: "grid2" },
      h("div", {}, h("h2", {}, `Flows (${flows.length})`), flowList(flows)),
      h("div", {}, h("h2", {}, "Test chat"), chat.panel)),
    create);
  return chat.close;
}

function flowList(flows) {
  if (!flows.length) return h("div", { class: "panel empty" }, "No flows yet: import them with the Management API (POST /v1/projects/:id/flows).");
  return h("div", { id: "flows" }, flows.map((flow) => h("div", { class: "panel flow" },
    h("div", { class: "row" }, h("b", {}, flow.title), flow.group ? h("span", { class: "tag" }, flow.group) : null,
      flow.disabled ? h("span", { class: "tag warn" }, "disabled") : null),
    h("ul", { class: "small" }, (flow.steps || []).map((step) => h("li", {},
      h("span", { class: "tag" }, step.type), " ", step.title || "",
      examples(step), replies(step)))))));
}

function examples(step) {
  const list = step.intent && Array.isArray(step.intent.examples) ? step.intent.examples.map((e) => e.query) : [];
  return list.length ? h("div", { class: "muted" }, "when: ", list.slice(0, 6).map((q) => `“${q}”`).join(", ")) : null;
}

function replies(step) {
  const texts = (step.actions || []).flatMap((a) => (a && a.payload && Array.isArray(a.payload.texts) ? a.payload.texts : []));
  return texts.length ? h("div", {}, "replies: ", texts.slice(0, 3).map((t) => `“${t}”`).join(" / ")) : null;
}

// The test chat is a web-chat client: the socket API with the project's (public) clientId.
function testChat(project) {
  const transcript = new Transcript();
  const threadId = `console-${crypto.randomUUID()}`;
  const input = h("input", { id: "bot-input", placeholder: "Say something to the bot…", autocomplete: "off" });
  let socket = null;
  let keepalive = null;

  async function connect() {
    const query = new URLSearchParams({ clientId: project.clientId, sessionId: crypto.randomUUID() });
    const info = await api(`/socket.info?${query}`, { auth: "none" });
    socket = new WebSocket(info.payload.endpoint);
    socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
    socket.addEventListener("close", () => clearInterval(keepalive));
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("error", () => reject(new Error("The socket did not open.")), { once: true });
    });
    keepalive = setInterval(() => socket.send(JSON.stringify({ type: "ping" })), 25_000);
  }

  function receive(frame) {
    if (frame.type === "message.received") {
      for (const message of frame.payload.messages || []) {
        const texts = (message.responses || []).filter((r) => r.type === "text").map((r) => r.payload.text);
        transcript.bubble("bot", texts.length ? texts.join("\n") : message.fallback, frame.payload.originator?.name);
        const quick = (message.responses || []).flatMap((r) => r.payload?.quickReplies || []);
        if (quick.length) transcript.el.append(h("div", { class: "row" }, quick.map((q) => h("span", { class: "tag" }, q.label || q.value))));
      }
    } else if (frame.type === "error") {
      transcript.el.append(errorBox(frame.message || frame.payload?.message));
    }
  }

  const form = onSubmit(h("form", { id: "bot-form" }, transcript.el,
    h("div", { class: "composer" }, input, h("button", { type: "submit", class: "primary" }, "Send"))),
  async () => {
    const speech = input.value.trim();
    if (!speech) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) await connect();
    input.value = "";
    transcript.bubble("user", speech);
    socket.send(JSON.stringify({ type: "message.send", payload: { threadId, traceId: Date.now(), speech, originator: { name: "console" } } }));
  });
  const panel = h("div", { class: "panel" }, form, h("div", { class: "muted small spaced" }, `thread ${threadId}`));
  return { panel, close: () => { clearInterval(keepalive); socket?.close(); } };
}
