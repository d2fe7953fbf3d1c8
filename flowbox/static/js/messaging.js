// Messaging (the Flow.ai-style API): projects, their intent flows (edited in flows.js), and a test
// chat that talks to the bot over the socket API as a web-chat widget would.
import { api } from "./api.js";
import { errorBox, field, h, mount, onSubmit, picker, table, toast } from "./dom.js";
import { testChat } from "./testchat.js";

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
  if (args[1] === "flow") return (await import("./flows.js")).render(main, project, args[2]);

  const projectPicker = picker({ id: "project-select", class: "auto", "aria-label": "Project" }, projects.map((p) => [p.projectId, p.name]),
    project.projectId, (id) => `#/messaging/${id}`);
  // The list holds steps in brief (ids for intents and actions); each flow in full has the words.
  const base = `/v1/projects/${encodeURIComponent(project.projectId)}/flows`;
  const listed = await api(`${base}?limit=50`);
  const flows = await Promise.all(listed.map((f) => api(`${base}/${encodeURIComponent(f.flowId)}`)));
  const created = JSON.parse(sessionStorage.getItem(NEW_TOKEN) || "null");
  sessionStorage.removeItem(NEW_TOKEN);
  const chat = testChat(project, { explain: true });
  mount(main,
    h("h1", {}, "Messaging", h("span", { class: "spacer" }), projectPicker),
    created && created.projectId === project.projectId ? h("div", { class: "notice" },
      h("b", {}, `Project “${created.name}” created. Its API token (REST v1 and webhooks) is shown this once:`),
      h("div", { class: "secret", id: "project-token" }, created.token)) : null,
    h("p", { class: "muted small" }, `project ${project.projectId} · clientId ${project.clientId}`),
    h("div", { class: "grid2" },
      h("div", {}, h("h2", { class: "bar" }, `Flows (${flows.length})`, h("span", { class: "spacer" }),
        h("a", { class: "button small", id: "new-flow", href: `#/messaging/${project.projectId}/flow/new` }, "New flow")),
      flowList(project, flows)),
      h("div", {}, h("h2", {}, "Test chat"), chat.panel)),
    flows.length ? evaluation(project) : null,
    flows.length ? unmatched(project, flows) : null,
    flows.length ? unsure(project, flows) : null,
    create);
  return chat.close;
}

function flowList(project, flows) {
  if (!flows.length) return h("div", { class: "panel empty" }, "No flows yet: create one here, or import them with the Management API (POST /v1/projects/:id/flows).");
  return h("div", { id: "flows" }, flows.map((flow) => h("div", { class: "panel flow" },
    h("div", { class: "row" }, h("a", { href: `#/messaging/${project.projectId}/flow/${flow.flowId}` }, h("b", {}, flow.title)), flow.group ? h("span", { class: "tag" }, flow.group) : null,
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

// Test messages: how the flows match lines the builder writes ("step | text"), through the evaluate endpoint.
function evaluation(project) {
  const out = h("div", { id: "evaluation" });
  const form = onSubmit(h("form", { class: "panel", id: "evaluate-form" },
    field("One a line: the step the message should reach (its id, or UNKNOWN for one the flows should turn away), “|”, the message",
      h("textarea", { name: "cases", rows: 5, required: true, placeholder: "order | can I get two large pizzas\nUNKNOWN | what's the weather in Rome" }),
      "Write them as customers would, not as the examples are: an example matches itself."),
    h("button", { type: "submit", class: "primary" }, "Evaluate")),
  async (data) => {
    const cases = String(data.get("cases")).split("\n").map((line) => line.split("|")).filter((parts) => parts.length > 1)
      .map(([expected, ...text]) => ({ expected: expected.trim(), text: text.join("|").trim() }));
    const report = await api(`/v1/projects/${encodeURIComponent(project.projectId)}/evaluate`, { method: "POST", body: { cases } });
    const share = (s) => (s.cases ? `${s.right} of ${s.cases} (${Math.round(s.accuracy * 100)}%)` : "none");
    mount(out,
      h("p", { id: "evaluation-summary" }, `Right: ${share(report)} · in scope ${share(report.inScope)} · out of scope ${share(report.outOfScope)}`,
        h("span", { class: "muted small" }, ` · threshold ${report.threshold}, ${report.method}`)),
      table([["Step expected", (r) => r.title === r.stepId ? r.stepId : `${r.title} (${r.stepId})`], ["Right", (r) => share(r)],
        ["Went instead to", (r) => r.confusedWith.map((c) => `${c.stepId} ×${c.cases}`).join(", ")]], report.intents),
      h("h3", {}, "Missed"),
      table([["Message", (r) => r.text], ["Expected", (r) => r.expected], ["Reached", (r) => r.stepId],
        ["Confidence", (r) => (r.confidence === null ? "" : r.confidence.toFixed(2))]], report.results.filter((r) => !r.right), "None missed."));
  });
  return h("div", {}, h("h2", {}, "Test messages"), form, out);
}

// Not understood: what customers wrote that no intent matched, the most frequent first, with what the flows
// make of each text now (GET .../unmatched): what to add to an intent's examples, or to the UNKNOWN step's answer.
function unmatched(project, flows) {
  return textsPanel(project, flows, "unmatched", "Not understood", (report, addButton) => [
    h("p", { class: "muted small" }, `${counted(report.messages, "unmatched message")}, ${counted(report.distinct, "distinct text")}, since ${report.since.slice(0, 10)}. `,
      "Add a text an intent should take to its examples; one the business does not serve belongs in the UNKNOWN step's answer."),
    table([["Message", (t) => t.text], ["Times", (t) => String(t.count)], ["Threads", (t) => String(t.threads)],
      ["Likeliest intent", (t) => intentWith(t.suggestion)],
      ["Matches now", (t) => (!t.now ? "nothing" : t.now.type === "INTENT" ? t.now.title : t.now.type)],
      ["Off topic", (t) => (t.offTopic ? `like “${t.offTopic}”` : "")],
      ["", (t) => (t.now && t.now.type === "INTENT" ? "" : addButton(t.text, t.suggestion, "Add to"))]], report.texts,
    "Nothing unmatched: every message found its step.")]);
}

// Unsure: what an intent matched with little confidence (GET .../unsure), where the flows most likely misunderstood:
// confirm the match with an example, or move the text to the likeliest other intent.
function unsure(project, flows) {
  return textsPanel(project, flows, "unsure", "Matched, but unsure", (report, addButton) => [
    h("p", { class: "muted small" }, `${counted(report.messages, "match", "matches")} below ${report.below} confidence, ${counted(report.distinct, "distinct text")}, since ${report.since.slice(0, 10)}. `,
      "Confirm a right one with an example; move a wrong one to the intent it meant. One the business does not serve belongs in the UNKNOWN step's answer."),
    table([["Message", (t) => t.text], ["Times", (t) => String(t.count)],
      ["Matched", (t) => `${t.matched.title || t.matched.stepId} (${t.confidence.toFixed(2)})`],
      ["Likeliest other", (t) => intentWith(t.alternative)],
      ["Off topic", (t) => (t.offTopic ? `like “${t.offTopic}”` : "")],
      ["", (t) => (t.suggestion && t.suggestion.confidence === 1 ? "" : h("span", {},
        addButton(t.text, t.matched, "Confirm"), " ", addButton(t.text, t.alternative, "Move to")))]],
    report.texts, "Nothing unsure: every match was confident.")]);
}

// A titled panel of the project's GET .../<path> report, drawn by ``draw(report, addButton)``; loaded again after a
// button adds a text to an intent's examples.
function textsPanel(project, flows, path, title, draw) {
  const base = `/v1/projects/${encodeURIComponent(project.projectId)}`;
  const out = h("div", { id: path }, h("div", { class: "panel empty" }, "Loading…"));
  const load = () => api(`${base}/${path}`).then((report) => mount(out, ...draw(report, addButton)), (err) => mount(out, errorBox(err)));
  const addButton = exampleAdder(base, flows, out, load);
  load();
  return h("div", {}, h("h2", {}, title), out);
}

function counted(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

function intentWith(scored) {
  return scored ? scored.title + (scored.confidence === null ? "" : ` (${scored.confidence.toFixed(2)})`) : "";
}

// A button that adds a text to an intent's examples: its flow, read again, saved with it (the flow is learned
// again in the background; the text matches it exactly at once), then the panel loads again.
function exampleAdder(base, flows, out, load) {
  return (text, intent, label) => {
    const owner = intent && flows.find((f) => (f.steps || []).some((s) => s.stepId === intent.stepId));
    if (!owner) return "";
    return h("button", { type: "button", class: "small", onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        const flow = await api(`${base}/flows/${encodeURIComponent(owner.flowId)}`);
        flow.steps.find((s) => s.stepId === intent.stepId).intent.examples.push({ query: text, entities: [] });
        await api(`${base}/flows/${encodeURIComponent(owner.flowId)}`, { method: "PUT", body: flow });
        toast(`Added “${text}” to the examples of “${intent.title}”`);
        await load();
      } catch (err) {
        button.disabled = false;
        out.prepend(errorBox(err));
      }
    } }, `${label} ${intent.title}`);
  };
}
