// Knowledge: upload text files (split into items of at most 4,000 characters, the API's limit),
// add an item by hand, list and delete items, and try the search agents use.
import { api, available } from "./api.js";
import { errorBox, field, h, mount, onSubmit, refresh, table, toast, when } from "./dom.js";
import { snippet } from "./transcript.js";

const MAX_CONTENT = 4000;
const PAGE_SIZE = 20;

export async function render(main, args) {
  const page = Math.max(1, Number(args[0]) || 1);
  const [{ agents }, listing] = await Promise.all([
    api("/api/public/agent"),
    api(`/api/public/knowledge?page=${page}&limit=${PAGE_SIZE}`),
  ]);
  const names = new Map(agents.map((a) => [a.id, a.name]));
  const canSearch = (await available()).has("/api/public/knowledge/search");
  mount(main,
    h("h1", {}, "Knowledge"),
    agents.length ? null : h("div", { class: "notice" }, "Knowledge is linked to agents: ", h("a", { href: "#/agents/new" }, "create an agent"), " first."),
    h("div", { class: "grid2" }, uploadPanel(agents), addPanel(agents)),
    canSearch ? searchPanel(agents) : null,
    h("h2", {}, `Items (${listing.pagination.total_count})`),
    table([
      ["Name", (k) => h("details", {}, h("summary", {}, k.name || k.id), h("div", { class: "small", dataset: { item: k.id } }, "…"))],
      ["Agents", (k) => k.linked_agents.map((id) => h("span", { class: "tag" }, names.get(id) || id))],
      ["Source", (k) => k.source],
      ["Updated", (k) => when(k.updated_at)],
      ["", (k) => h("button", { type: "button", class: "danger", onclick: () => remove(k) }, "Delete"), "actions"],
    ], listing.knowledge_items, "No knowledge yet: upload a text file or add an item."),
    pager(listing.pagination));
  // Content is loaded when an item is opened.
  main.querySelectorAll("details").forEach((d) => d.addEventListener("toggle", async () => {
    const box = d.querySelector("[data-item]");
    if (!d.open || box.dataset.loaded) return;
    const item = await api(`/api/public/knowledge/${encodeURIComponent(box.dataset.item)}`);
    box.dataset.loaded = "1";
    box.textContent = item.content;
  }), { once: false });
}

function agentPicker(agents, name = "agent_ids") {
  return h("select", { name, multiple: true, required: true, size: Math.min(4, Math.max(2, agents.length)) },
    agents.map((a, i) => h("option", { value: a.id, selected: i === 0 }, a.name)));
}

// Split at paragraph, then line, then word boundaries so that no piece exceeds the limit.
export function pieces(text, limit = MAX_CONTENT) {
  const out = [];
  let rest = text.trim();
  while (rest.length > limit) {
    const window = rest.slice(0, limit);
    let cut = Math.max(window.lastIndexOf("\n\n"), window.lastIndexOf("\n"));
    if (cut < limit / 2) cut = window.lastIndexOf(" ");
    if (cut < limit / 2) cut = limit;
    out.push(rest.slice(0, cut).trim());
    rest = rest.slice(cut).trim();
  }
  if (rest) out.push(rest);
  return out;
}

function uploadPanel(agents) {
  const files = h("input", { type: "file", name: "files", multiple: true, accept: ".txt,.md,.csv,.json,.html,.htm,.rst,text/*", id: "upload-files" });
  const progress = h("div", { class: "muted small", id: "upload-progress" });
  const zone = h("div", { class: "dropzone" }, "Drop text files here, or choose them: ", files);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); files.files = e.dataTransfer.files; });
  const form = onSubmit(h("form", { class: "panel", id: "upload-form" }, h("h2", {}, "Upload files"), zone,
    field("Link to agents", agentPicker(agents)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Upload")), progress),
  async (data) => {
    const agentIds = data.getAll("agent_ids");
    const chosen = [...files.files];
    if (!chosen.length) throw new Error("Choose at least one file.");
    let done = 0;
    for (const file of chosen) {
      const parts = pieces(await file.text());
      for (const [i, content] of parts.entries()) {
        const name = parts.length > 1 ? `${file.name} (${i + 1}/${parts.length})` : file.name;
        progress.textContent = `Adding ${name}…`;
        await api("/api/public/knowledge", { method: "POST", body: { name, content, agent_ids: agentIds } });
        done += 1;
      }
    }
    toast(`Added ${done} item${done === 1 ? "" : "s"}`);
    refresh();
  });
  return form;
}

function addPanel(agents) {
  return onSubmit(h("form", { class: "panel", id: "add-form" }, h("h2", {}, "Add an item"),
    field("Name", h("input", { name: "name", maxlength: 200 })),
    field("Content", h("textarea", { name: "content", required: true, maxlength: MAX_CONTENT, rows: 4 })),
    field("Link to agents", agentPicker(agents)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add"))),
  async (data) => {
    const body = { content: data.get("content"), agent_ids: data.getAll("agent_ids") };
    if (data.get("name")) body.name = data.get("name");
    const item = await api("/api/public/knowledge", { method: "POST", body });
    toast(`Added ${item.name || item.id}`);
    refresh();
  });
}

function searchPanel(agents) {
  const results = h("ol", { class: "results", id: "search-results" });
  const form = onSubmit(h("form", { class: "panel", id: "search-form" }, h("h2", {}, "Search"),
    h("div", { class: "row" },
      h("input", { name: "q", class: "grow auto", placeholder: "Ask what an agent would be asked…", required: true }),
      h("select", { name: "agent_id", class: "auto" }, h("option", { value: "" }, "all agents"), agents.map((a) => h("option", { value: a.id }, a.name))),
      h("select", { name: "mode", class: "auto" }, ["hybrid", "vector", "keyword"].map((m) => h("option", { value: m }, m))),
      h("button", { type: "submit", class: "primary" }, "Search")),
    results),
  async (data) => {
    const params = new URLSearchParams({ q: data.get("q"), mode: data.get("mode"), limit: "5" });
    if (data.get("agent_id")) params.set("agent_id", data.get("agent_id"));
    const found = await api(`/api/public/knowledge/search?${params}`);
    mount(results, found.results.length ? found.results.map((r) => h("li", {},
      h("b", {}, r.name || r.id), " ", h("span", { class: "score" }, `similarity ${Number(r.similarity).toFixed(2)} · score ${Number(r.score).toFixed(3)}`),
      h("div", { class: "small" }, snippet(r.content, 400)))) : h("li", { class: "muted" }, "No results."));
  });
  return form;
}

function pager(p) {
  if (p.total_pages <= 1) return null;
  return h("div", { class: "row spaced" },
    p.has_previous_page ? h("a", { class: "button", href: `#/knowledge/${p.current_page - 1}` }, "← Previous") : null,
    h("span", { class: "muted" }, `Page ${p.current_page} of ${p.total_pages}`),
    p.has_next_page ? h("a", { class: "button", href: `#/knowledge/${p.current_page + 1}` }, "Next →") : null);
}

async function remove(item) {
  if (!confirm(`Delete “${item.name || item.id}”? Agents linked to it lose it too.`)) return;
  try {
    await api(`/api/public/knowledge/${encodeURIComponent(item.id)}`, { method: "DELETE" });
    toast("Deleted");
    refresh();
  } catch (err) {
    document.getElementById("main").prepend(errorBox(err));
  }
}
