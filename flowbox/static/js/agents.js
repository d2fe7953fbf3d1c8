// Agents: the list, and an editor for one agent (create, change, delete).
import { api, available } from "./api.js";
import { field, h, mount, onSubmit, table, toast, when } from "./dom.js";

export async function render(main, args) {
  if (args[0]) return editor(main, args[0]);
  const { agents } = await api("/api/public/agent");
  mount(main,
    h("h1", {}, "Agents", h("span", { class: "spacer" }), h("a", { class: "button primary", href: "#/agents/new" }, "New agent")),
    table([
      ["Name", (a) => [h("a", { href: `#/agents/${a.id}` }, a.name), h("div", { class: "muted small" }, a.description)]],
      ["Model", (a) => a.model],
      ["Tools", (a) => a.tools.map((t) => h("span", { class: "tag" }, t))],
      ["Updated", (a) => when(a.updated_at)],
      ["", (a) => [h("a", { class: "button", href: `#/playground/${a.id}` }, "Chat"), " ",
        h("a", { class: "button", href: `#/agents/${a.id}` }, "Edit")], "actions"],
    ], agents, "No agents yet: create one to start chatting."));
}

async function editor(main, id) {
  const isNew = id === "new";
  const [agent, options] = await Promise.all([
    isNew ? Promise.resolve({ name: "", description: "", instructions: "", model: "local", temperature: 0.2, max_tokens: null, tools: [] })
      : api(`/api/public/agent/${encodeURIComponent(id)}`),
    api("/api/admin/options"),
  ]);
  const form = h("form", { class: "panel", id: "agent-form" },
    field("Name", h("input", { name: "name", value: agent.name, required: true, maxlength: 200 })),
    field("Description", h("input", { name: "description", value: agent.description, maxlength: 2000 })),
    field("Instructions", h("textarea", { name: "instructions", rows: 6 }, agent.instructions), "The system prompt: who the agent is and how it answers."),
    h("div", { class: "grid2" },
      field("Model", h("select", { name: "model" }, options.models.map((m) => h("option", { value: m, selected: m === agent.model }, m)))),
      h("div", { class: "row" },
        h("div", { class: "grow" }, field("Temperature", h("input", { name: "temperature", type: "number", min: 0, max: 2, step: 0.1, value: agent.temperature }))),
        h("div", { class: "grow" }, field("Max tokens", h("input", { name: "max_tokens", type: "number", min: 1, max: 8192, value: agent.max_tokens ?? "", placeholder: "server default" }))))),
    h("div", { class: "tools" }, h("span", { class: "muted small" }, "Tools "),
      options.tools.map((t) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "tools", value: t, checked: agent.tools.includes(t) }), t))),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, isNew ? "Create agent" : "Save"),
      isNew ? null : h("a", { class: "button", href: `#/playground/${agent.id}` }, "Open in playground"),
      h("span", { class: "grow" }),
      isNew ? null : h("button", { type: "button", class: "danger", id: "delete-agent", onclick: () => remove(agent) }, "Delete")));
  onSubmit(form, async (data) => {
    const fields = {
      name: data.get("name"), description: data.get("description"), instructions: data.get("instructions"),
      model: data.get("model"), temperature: Number(data.get("temperature")),
      max_tokens: data.get("max_tokens") ? Number(data.get("max_tokens")) : null, tools: data.getAll("tools"),
    };
    const saved = isNew
      ? await api("/api/public/agent", { method: "POST", body: fields })
      : await api(`/api/public/agent/${encodeURIComponent(agent.id)}`, { method: "PATCH", body: fields });
    toast(isNew ? `Created ${saved.name}` : `Saved ${saved.name}`);
    location.hash = `#/agents/${saved.id}`;
  });
  mount(main, h("h1", {}, h("a", { href: "#/agents" }, "Agents"), " / ", isNew ? "New agent" : agent.name), form,
    isNew ? null : h("p", { class: "muted small" }, `id ${agent.id} · created ${when(agent.created_at)} · updated ${when(agent.updated_at)}`));
  if (!isNew && (await available()).has("/api/public/knowledge")) main.append(await linkedKnowledge(agent));
}

async function linkedKnowledge(agent) {
  const { knowledge_items: items } = await api(`/api/public/knowledge?agent_id=${encodeURIComponent(agent.id)}&limit=100`);
  return h("div", {}, h("h2", {}, "Linked knowledge"),
    table([["Name", (k) => k.name || k.id], ["Updated", (k) => when(k.updated_at)]], items,
      "No knowledge linked to this agent. Add some on the Knowledge page."));
}

async function remove(agent) {
  if (!confirm(`Delete agent “${agent.name}” and all its threads?`)) return;
  await api(`/api/public/agent/${encodeURIComponent(agent.id)}`, { method: "DELETE" });
  toast(`Deleted ${agent.name}`);
  location.hash = "#/agents";
}
