// A chat transcript: message bubbles, tool calls and retrieved knowledge as cards, a live bubble
// that grows while a reply streams. Used by the playground, the messaging test chat and Chats.
import { h } from "./dom.js";

const KNOWLEDGE_TOOL = "knowledge_search";

export class Transcript {
  constructor() {
    this.el = h("div", { class: "chat", "aria-live": "polite" });
    this.cards = new Map(); // toolCallId -> card
    this.live = null;
  }

  clear() {
    this.el.replaceChildren();
    this.cards.clear();
    this.live = null;
  }

  scroll() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  bubble(role, text, who) {
    const el = h("div", { class: `msg ${role}` }, who ? h("span", { class: "who" }, who) : null, text);
    this.el.append(el);
    this.scroll();
    return el;
  }

  note(text) {
    return this.bubble("system", text);
  }

  // A reply that is being generated: text is appended as it arrives.
  start(who) {
    this.liveText = document.createTextNode("");
    this.live = this.bubble("assistant streaming", this.liveText, who);
    return this.live;
  }

  delta(text) {
    if (!this.live) this.start();
    this.liveText.data += text;
    this.scroll();
  }

  // Ends the live reply; returns the text it received.
  finish() {
    const text = this.live ? this.liveText.data : "";
    if (this.live) this.live.classList.remove("streaming");
    this.live = null;
    return text;
  }

  // A tool call (and its result when known). knowledge_search is shown as retrieved knowledge.
  tool({ toolCallId, toolName, args, result }) {
    let card = toolCallId ? this.cards.get(toolCallId) : null;
    if (!card) {
      const kb = toolName === KNOWLEDGE_TOOL;
      card = h("div", { class: `card ${kb ? "kb" : "tool"}`, dataset: { tool: toolName } },
        h("div", { class: "title" }, kb ? `Retrieved knowledge for “${args?.query ?? ""}”` : `Tool call: ${toolName}`),
        kb ? null : h("pre", { class: "args" }, JSON.stringify(args ?? {})));
      if (toolCallId) this.cards.set(toolCallId, card);
      // Keep cards above the live reply they lead to.
      this.live ? this.el.insertBefore(card, this.live) : this.el.append(card);
    }
    if (result !== undefined && !card.querySelector(".result")) card.append(renderResult(toolName, result));
    this.scroll();
    return card;
  }

  // Agents API conversation_history: strings, or content parts (text, tool-call, tool-result).
  history(messages) {
    this.clear();
    for (const message of messages) {
      const content = message.content;
      if (typeof content === "string") {
        this.bubble(message.role, content);
        continue;
      }
      const text = (content || []).filter((p) => p.type === "text").map((p) => p.text).join("");
      for (const part of content || []) {
        if (part.type === "tool-call") this.tool({ toolCallId: part.toolCallId, toolName: part.toolName, args: part.args });
        if (part.type === "tool-result") this.tool({ toolCallId: part.toolCallId, toolName: part.toolName, result: part.result });
      }
      if (text.trim() && message.role !== "tool") this.bubble(message.role, text);
    }
  }
}

function renderResult(toolName, result) {
  if (toolName === KNOWLEDGE_TOOL && result && Array.isArray(result.results)) {
    if (!result.results.length) return h("div", { class: "result muted" }, "Nothing relevant found.");
    return h("ol", { class: "result" }, result.results.map((r) =>
      h("li", {}, h("b", {}, r.name || r.id), " ",
        typeof r.similarity === "number" ? h("span", { class: "score" }, `similarity ${r.similarity.toFixed(2)}`) : null,
        h("div", { class: "small" }, snippet(r.content)))));
  }
  return h("pre", { class: "result" }, "→ " + JSON.stringify(result));
}

export function snippet(text, length = 220) {
  text = String(text ?? "").replace(/\s+/g, " ").trim();
  return text.length > length ? text.slice(0, length) + "…" : text;
}
