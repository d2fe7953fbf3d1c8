// The messaging test chat: a web-chat client over the socket API with the project's (public)
// clientId, as a widget is. With `explain`, each text is first explained by the Management API
// (GET .../explain, which stores nothing): the step it matches on this thread, with what confidence
// and why, and the params collected; the card goes under the text, the bot's answer after it.
import { api } from "./api.js";
import { errorBox, h, onSubmit } from "./dom.js";
import { Transcript } from "./transcript.js";

export function testChat(project, { explain = false } = {}) {
  const transcript = new Transcript();
  const threadId = `console-${crypto.randomUUID()}`;
  const input = h("input", { id: "bot-input", placeholder: "Say something to the bot…", autocomplete: "off", "aria-label": "Message to the bot" });
  let socket = null;
  let keepalive = null;
  let turn = Promise.resolve(); // what was said is explained and sent one message after another, in order

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
      const from = frame.payload.originator || {};
      const human = from.role === "moderator";
      for (const message of frame.payload.messages || []) {
        const texts = (message.responses || []).filter((r) => r.type === "text").map((r) => r.payload.text);
        if (!texts.length && message.silent) continue; // a handover's own silent message
        transcript.bubble(human ? "moderator" : "bot", texts.length ? texts.join("\n") : message.fallback, human ? `${from.name || "agent"} (human)` : null);
        const quick = (message.responses || []).flatMap((r) => r.payload?.quickReplies || []);
        if (quick.length) {
          // a row of quick replies answers once: the first click spends it, as in a chat widget
          const row = h("div", { class: "row quick" }, quick.map((q) => h("button", {
            type: "button", class: "small",
            onclick: () => { row.querySelectorAll("button").forEach((b) => { b.disabled = true; }); say(q.value || q.label).catch((err) => transcript.el.append(errorBox(err))); },
          }, q.label || q.value)));
          transcript.el.append(row);
        }
        transcript.scroll();
      }
    } else if (frame.type === "error") {
      transcript.el.append(errorBox(frame.message || frame.payload?.message));
    }
  }

  function say(speech) {
    // one at a time: two sends must not open two sockets, nor pass each other while being explained
    const done = turn.then(() => sayNow(speech));
    turn = done.catch(() => {}); // a message that failed (its error is shown) does not hold up the next
    return done;
  }

  async function sayNow(speech) {
    if (!socket || socket.readyState !== WebSocket.OPEN) await connect();
    transcript.bubble("user", speech);
    if (explain) {
      try {
        const query = new URLSearchParams({ text: speech, threadId });
        transcript.el.append(matchCard(await api(`/v1/projects/${encodeURIComponent(project.projectId)}/explain?${query}`)));
      } catch (err) {
        transcript.el.append(errorBox(err));
      }
      transcript.scroll();
    }
    socket.send(JSON.stringify({ type: "message.send", payload: { threadId, traceId: Date.now(), speech, originator: { name: "console" } } }));
  }

  const form = onSubmit(h("form", { id: "bot-form" }, transcript.el,
    h("div", { class: "composer" }, input, h("button", { type: "submit", class: "primary" }, "Send"))),
  async () => {
    const speech = input.value.trim();
    if (!speech) return;
    input.value = "";
    await say(speech);
  });
  const panel = h("div", { class: "panel" }, form, h("div", { class: "muted small spaced", id: "bot-thread" }, `thread ${threadId}`));
  return { panel, threadId, close: () => { clearInterval(keepalive); socket?.close(); } };
}

// What the matcher made of a text: the step, its confidence, the reasons and the params.
function matchCard(why) {
  const params = Object.entries(why.params || {}).map(([name, values]) => `${name} = ${paramValue(values)}`);
  return h("div", { class: "card match", dataset: { step: why.step?.stepId ?? "", type: why.step?.type ?? "" } },
    h("div", { class: "title" }, why.step ? `Matched ${why.step.type} “${why.step.title || why.step.stepId}”` : "No step matched",
      typeof why.confidence === "number" ? h("span", { class: "score confidence" }, ` confidence ${why.confidence.toFixed(2)}`) : null),
    h("div", { class: "why" }, why.explanation),
    why.paused ? h("div", { class: "muted" }, "The bot is paused on this thread: a human agent answers.") : null,
    params.length ? h("pre", { class: "params" }, params.join("\n")) : null);
}

function paramValue(values) {
  const first = Array.isArray(values) ? values[0] : values;
  const value = first && typeof first === "object" ? first.value ?? first.match : first;
  return typeof value === "string" ? value : JSON.stringify(value);
}
