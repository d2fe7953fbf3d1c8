// The agent playground: chat with an agent, see the reply as it is generated (Server-Sent Events
// when the server offers them on the chat endpoint, the plain JSON response otherwise), with its
// tool calls and retrieved knowledge. The thread id is in the address, so a reload continues it.
import { ApiError, api, events, request } from "./api.js";
import { errorBox, h, mount, picker } from "./dom.js";
import { Transcript } from "./transcript.js";

export async function render(main, args) {
  const { agents } = await api("/api/public/agent");
  if (!agents.length) {
    mount(main, h("h1", {}, "Playground"), h("div", { class: "panel empty" }, "No agents yet. ", h("a", { href: "#/agents/new" }, "Create one"), "."));
    return;
  }
  const agent = agents.find((a) => a.id === args[0]) || agents[0];
  let threadId = args[1] || null;
  let controller = null;
  const transcript = new Transcript();
  const meta = h("div", { class: "meta", id: "chat-meta" });
  const threadLabel = h("span", { class: "mono small", id: "thread-id" });
  const input = h("textarea", { id: "message", placeholder: `Message ${agent.name}…  (Enter sends, Shift+Enter for a new line)`, rows: 1 });
  const send = h("button", { type: "submit", class: "primary", id: "send" }, "Send");
  const stop = h("button", { type: "button", id: "stop", hidden: true, onclick: () => controller?.abort() }, "Stop");
  const select = picker({ id: "agent-select", "aria-label": "Agent" }, agents.map((a) => [a.id, a.name]), agent.id, (id) => `#/playground/${id}`);

  function setThread(id) {
    threadId = id;
    threadLabel.textContent = id ? `thread ${id}` : "new thread";
    const hash = `#/playground/${agent.id}${id ? "/" + id : ""}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  async function submit(event) {
    event?.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = "";
    transcript.bubble("user", text);
    controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    try {
      await chat(text, controller.signal);
    } catch (err) {
      transcript.finish();
      if (err.name !== "AbortError") transcript.el.append(errorBox(err));
    } finally {
      controller = null;
      send.disabled = false;
      stop.hidden = true;
      input.focus();
    }
  }

  async function chat(text, signal) {
    const body = { messages: text, ...(threadId ? { thread_id: threadId } : {}) };
    const response = await request(`/api/public/agent/${encodeURIComponent(agent.id)}/chat`,
      { method: "POST", body, accept: "text/event-stream, application/json", signal }).catch((err) => {
        // no credits, model unavailable: the chat's own {statusCode, body} shape
        throw err instanceof ApiError && err.body?.statusCode ? new Error(`${err.status}: ${describeError(err.body)}`) : err;
      });
    if ((response.headers.get("content-type") || "").includes("text/event-stream")) {
      transcript.start(agent.name);
      for await (const event of events(response)) {
        if (onEvent(event)) break;
      }
      transcript.finish();
    } else {
      finished(await response.json());
    }
  }

  // The stream's events: `delta` {text} as the reply is generated, `tool` per tool call (retrieved
  // knowledge included), then `done` with the documented response, or `error` with its error body.
  function onEvent(event) {
    const data = event.json;
    if (event.event === "delta") transcript.delta(data.text);
    else if (event.event === "tool") transcript.tool(data);
    else if (event.event === "done") {
      finished(data);
      return true;
    } else if (event.event === "error") throw new Error(describeError(data) || event.data);
    return false;
  }

  function finished(response) {
    const { body } = response;
    transcript.finish();
    transcript.history(body.conversation_history);
    setThread(body.metadata.thread_id);
    const m = body.metadata;
    const ms = typeof m.execution_time === "number" ? `${m.execution_time} ms` : `${m.execution_time} s`;
    meta.textContent = `${m.model} · ${ms} · ${m.used_credits} credit${m.used_credits === 1 ? "" : "s"} · run ${m.id}`;
  }

  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) submit(e);
  });
  const form = h("form", { class: "composer", onsubmit: submit }, input, send, stop);
  mount(main,
    h("h1", {}, "Playground", h("span", { class: "spacer" }), select,
      h("button", { type: "button", id: "new-thread", onclick: () => {
        controller?.abort(); // a reply on its way would stream into the new thread's transcript and name its old thread
        transcript.clear();
        meta.textContent = "";
        setThread(null);
      } }, "New thread")),
    h("div", { class: "row muted small" }, h("span", {}, agent.description || `model ${agent.model}`), h("span", { class: "grow" }), threadLabel),
    transcript.el, form, meta);
  setThread(threadId);
  if (threadId) {
    try {
      const thread = await api(`/api/public/agent/${encodeURIComponent(agent.id)}/threads/${encodeURIComponent(threadId)}`);
      transcript.history(thread.messages);
    } catch (err) {
      setThread(null);
      transcript.el.append(errorBox(err));
    }
  }
  input.focus();
  return () => controller?.abort();
}

function describeError(data) {
  if (!data || typeof data !== "object") return "";
  const inner = data.body && typeof data.body === "object" ? data.body : data;
  return [inner.message, inner.error].filter(Boolean).join(" — ");
}
