// The flow editor: a messaging Flow's steps as a tree (a step sits under the step its first context
// names; "Under" moves it), each with its type's fields and its TEXT and HANDOVER actions. The whole
// Flow is saved through the Management API (POST or PUT .../flows), and the problems its validation
// names (steps[2].actions[0].payload.texts) are shown at that step. Beside it the test chat explains
// every match.
import { api } from "./api.js";
import { errorBox, field, h, mount, toast } from "./dom.js";
import { testChat } from "./testchat.js";

const STEP_TYPES = ["INTENT", "EVENT", "UNKNOWN", "SLOT", "ANYTHING", "NOTHING", "IMAGE", "FILE", "AUDIO", "VIDEO", "LOCATION"];
const ENTITIES = ["system.query", "system.number", "system.email", "system.url", "system.phone", "system.date"];
const HINTS = {
  INTENT: "Runs when the user's text is like one of its examples.",
  EVENT: "Runs on the event named by its title (e.g. a widget's INTRO).",
  UNKNOWN: "Answers what nothing else matched (under a step: only there).",
  SLOT: "A question asked after the step it is under; the answer is checked by the entity and kept as a param.",
  ANYTHING: "Takes any text that no intent at its level matched.",
  NOTHING: "Runs on an empty message.",
  IMAGE: "Runs when the user sends an image.", FILE: "Runs when the user sends a file.", AUDIO: "Runs when the user sends audio.",
  VIDEO: "Runs when the user sends a video.", LOCATION: "Runs when the user shares a location.",
};

const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);

export async function render(main, project, flowId) {
  const base = `/v1/projects/${encodeURIComponent(project.projectId)}/flows`;
  const isNew = !flowId || flowId === "new";
  const flow = isNew ? { title: "", group: "", disabled: false, steps: [] } : await api(`${base}/${encodeURIComponent(flowId)}`);
  const editor = new FlowEditor(flow);
  const chat = testChat(project, { explain: true });
  const problems = h("div", { id: "flow-problems" });

  async function save(event) {
    const button = event.currentTarget;
    button.disabled = true; // a second click while saving would create a new flow twice
    problems.replaceChildren();
    editor.clearProblems();
    try {
      const body = editor.document();
      const saved = isNew ? await api(base, { method: "POST", body }) : await api(`${base}/${encodeURIComponent(flow.flowId)}`, { method: "PUT", body });
      toast(`Saved “${saved.title}”`);
      if (isNew) location.hash = `#/messaging/${project.projectId}/flow/${saved.flowId}`;
    } catch (err) {
      const rest = editor.showProblems(err.body?.errors || []);
      problems.append(errorBox(err), rest.length ? h("ul", { class: "problems" }, rest.map((p) => h("li", {}, `${p.path}: ${p.message}`))) : null);
      problems.querySelector(".error")?.scrollIntoView({ block: "nearest" });
    } finally {
      button.disabled = false;
    }
  }

  async function remove() {
    if (!confirm(`Delete the flow “${flow.title}”?`)) return;
    await api(`${base}/${encodeURIComponent(flow.flowId)}`, { method: "DELETE" });
    toast("Flow deleted");
    location.hash = `#/messaging/${project.projectId}`;
  }

  mount(main,
    h("h1", {}, h("a", { href: `#/messaging/${project.projectId}` }, project.name), " / ", isNew ? "New flow" : flow.title),
    h("div", { class: "editor-grid" },
      h("div", { id: "flow-editor" },
        h("div", { class: "panel" },
          h("div", { class: "row" },
            h("div", { class: "grow" }, field("Title", editor.bind(h("input", { name: "title", required: true, value: flow.title }), "title"))),
            h("div", { class: "grow" }, field("Group", editor.bind(h("input", { name: "group", value: flow.group || "" }), "group"))),
            h("label", { class: "check" }, editor.bindCheck(h("input", { type: "checkbox", name: "disabled", checked: !!flow.disabled }), "disabled"), "Disabled"))),
        problems,
        editor.el,
        h("div", { class: "row spaced" },
          h("button", { type: "button", id: "add-step", onclick: () => editor.add(null) }, "Add a top-level step"),
          h("span", { class: "grow" }),
          isNew ? null : h("button", { type: "button", class: "danger", id: "delete-flow", onclick: remove }, "Delete flow"),
          h("button", { type: "button", class: "primary", id: "save-flow", onclick: save }, "Save flow"))),
      h("div", { class: "side" }, h("h2", {}, "Test chat"),
        h("p", { class: "muted small" }, "Talks to the project's saved flows; each text shows the step it matches, the confidence and why."),
        chat.panel)));
  editor.render();
  if (!flow.steps.length) editor.add(null);
  return chat.close;
}

class FlowEditor {
  constructor(flow) {
    this.flow = flow;
    this.flow.steps = (flow.steps || []).map((s) => ({ ...s, contexts: [...(s.contexts || [])], actions: [...(s.actions || [])] }));
    this.el = h("div", { id: "steps" });
  }

  get steps() {
    return this.flow.steps;
  }

  bind(input, key) {
    input.addEventListener("input", () => (this.flow[key] = input.value));
    return input;
  }

  bindCheck(input, key) {
    input.addEventListener("change", () => (this.flow[key] = input.checked));
    return input;
  }

  // The Flow as the Management API takes it; steps in the order they were added.
  document() {
    const { flowId, title, group, disabled, createdAt, steps } = this.flow;
    return { ...(flowId ? { flowId } : {}), ...(createdAt ? { createdAt } : {}), title, group, disabled, steps };
  }

  add(parent) {
    const step = { stepId: crypto.randomUUID(), title: "", type: "INTENT", contexts: parent ? [parent] : [], intent: { examples: [] }, actions: [] };
    this.steps.push(step);
    this.render(step.stepId);
  }

  remove(step) {
    const label = step.title || step.type;
    const children = this.steps.filter((s) => s.contexts.includes(step.stepId));
    if (children.length && !confirm(`“${label}” has ${children.length} step(s) under it; they move to its place. Delete it?`)) return;
    for (const child of children) child.contexts = [...step.contexts, ...child.contexts.filter((c) => c !== step.stepId && !step.contexts.includes(c))];
    this.flow.steps = this.steps.filter((s) => s !== step);
    this.render();
  }

  // Puts `step` under `parent` (its first context; any others stay), or at the top level (null).
  move(step, parent) {
    step.contexts = parent ? [parent, ...step.contexts.slice(1).filter((c) => c !== parent)] : [];
    this.dragging = null;
    this.render();
  }

  // The steps under `step`, at any depth (a step cannot move under one of them).
  descendants(step) {
    const out = new Set();
    const todo = [step.stepId];
    while (todo.length) {
      const id = todo.pop();
      for (const s of this.steps) if (s.contexts[0] === id && !out.has(s.stepId)) { out.add(s.stepId); todo.push(s.stepId); }
    }
    return out;
  }

  render(focusStep) {
    const ids = new Set(this.steps.map((s) => s.stepId));
    const children = new Map();
    const roots = [];
    for (const step of this.steps) {
      const parent = step.contexts.find((c) => ids.has(c));
      if (parent && parent !== step.stepId) (children.get(parent) || children.set(parent, []).get(parent)).push(step);
      else roots.push(step);
    }
    const shown = new Set();
    const node = (step) => {
      shown.add(step.stepId);
      const kids = (children.get(step.stepId) || []).filter((k) => !shown.has(k.stepId));
      return h("li", {}, this.stepPanel(step), kids.length ? h("ol", { class: "steps", "aria-label": `Under ${step.title || step.type}` }, kids.map(node)) : null);
    };
    const tree = roots.map(node);
    const stranded = this.steps.filter((s) => !shown.has(s.stepId)).map(node); // a cycle of contexts: shown at the top
    const top = h("div", { class: "drop-top", "aria-hidden": "true",
      ondragover: (e) => { if (this.dragging?.contexts.length) e.preventDefault(); },
      ondrop: (e) => {
        e.preventDefault();
        if (this.dragging) this.move(this.dragging, null);
      } }, "Drop here: top level");
    this.el.classList.remove("dragging");
    mount(this.el, h("ol", { class: "steps", "aria-label": "Steps" }, tree, stranded), top); // below: showing it moves nothing above
    if (focusStep) this.focus(focusStep, "[name=title]");
  }

  // Puts the focus on a control of a step (after a render replaced its panel).
  focus(stepId, selector) {
    this.el.querySelector(`[data-step-id="${CSS.escape(stepId)}"] ${selector}`)?.focus();
  }

  stepPanel(step) {
    const label = () => step.title || (step.type === "INTENT" ? "(untitled intent)" : step.type);
    const type = h("select", { name: "type", "aria-label": "Step type" }, STEP_TYPES.map((t) => h("option", { value: t, selected: t === step.type }, t)));
    type.addEventListener("change", () => {
      step.type = type.value;
      if (step.type === "INTENT") step.intent = step.intent || { examples: [] };
      else delete step.intent;
      if (step.type === "SLOT") step.slot = step.slot || { validation: "REQUIRED", entityId: "system.query", label: "" };
      else delete step.slot;
      this.render();
      this.focus(step.stepId, "[name=type]");
    });
    const title = h("input", { name: "title", value: step.title, placeholder: step.type === "EVENT" ? "Event name" : "Title", "aria-label": "Step title" });
    title.addEventListener("input", () => { step.title = title.value; });
    const excluded = this.descendants(step);
    const under = h("select", { name: "parent", "aria-label": "Under step" },
      h("option", { value: "" }, "(top level)"),
      this.steps.filter((s) => s !== step && !excluded.has(s.stepId)).map((s) =>
        h("option", { value: s.stepId, selected: s.stepId === step.contexts[0] }, `${s.type} · ${s.title || s.stepId.slice(0, 8)}`)));
    under.addEventListener("change", () => {
      this.move(step, under.value || null);
      this.focus(step.stepId, "[name=parent]");
    });
    const also = step.contexts.slice(1).map((id) => this.steps.find((s) => s.stepId === id)?.title || id);
    // With a mouse a step can also be dragged (by its handle) onto the step it should go under.
    const handle = h("span", { class: "handle", draggable: "true", title: "Drag onto another step to move it there", "aria-hidden": "true",
      ondragstart: (e) => {
        this.dragging = step;
        e.dataTransfer.setData("text/plain", step.stepId);
        e.dataTransfer.effectAllowed = "move";
        this.el.classList.add("dragging");
      },
      ondragend: () => {
        this.dragging = null;
        this.el.classList.remove("dragging");
      } }, "⠿");
    const accepts = () => this.dragging && this.dragging !== step && !this.descendants(this.dragging).has(step.stepId);
    return h("section", { class: "panel step", dataset: { stepId: step.stepId, type: step.type }, "aria-label": `Step ${label()}`,
      ondragover: (e) => { if (accepts()) { e.preventDefault(); e.currentTarget.classList.add("drop"); } },
      ondragleave: (e) => e.currentTarget.classList.remove("drop"),
      ondrop: (e) => {
        e.preventDefault();
        if (accepts()) this.move(this.dragging, step.stepId);
      } },
      h("div", { class: "row step-head" }, handle, type, h("div", { class: "grow" }, title),
        h("label", { class: "inline" }, h("span", {}, "Under"), under)),
      h("p", { class: "muted small" }, HINTS[step.type], also.length ? ` Also after: ${also.join(", ")}.` : ""),
      this.typeFields(step),
      h("div", { class: "actions-list" }, step.actions.map((action, i) => this.actionEditor(step, action, i))),
      h("div", { class: "row step-tools" },
        h("button", { type: "button", class: "small", dataset: { add: "text" }, onclick: () => this.addAction(step, "TEXT") }, "+ Text reply"),
        h("button", { type: "button", class: "small", dataset: { add: "handover" }, onclick: () => this.addAction(step, "HANDOVER") }, "+ Handover"),
        h("button", { type: "button", class: "small", dataset: { add: "child" }, onclick: () => this.add(step.stepId) }, "+ Step under this"),
        h("span", { class: "grow" }),
        h("button", { type: "button", class: "small danger", onclick: () => this.remove(step) }, "Delete step")),
      h("div", { class: "step-problems", role: "alert" }));
  }

  typeFields(step) {
    if (step.type === "INTENT") {
      const examples = h("textarea", { name: "examples", rows: 3, placeholder: "One example per line" },
        (step.intent?.examples || []).map((e) => e.query).join("\n"));
      examples.addEventListener("input", () => {
        const known = new Map((step.intent.examples || []).map((e) => [e.query, e]));
        step.intent.examples = lines(examples.value).map((q) => known.get(q) || { query: q, entities: [] });
      });
      return field("Examples (one per line)", examples);
    }
    if (step.type === "SLOT") {
      const slot = step.slot;
      const entity = h("select", { name: "entityId" }, ENTITIES.map((e) => h("option", { value: e, selected: e === slot.entityId }, e)));
      entity.addEventListener("change", () => { slot.entityId = entity.value; });
      const param = h("input", { name: "label", value: slot.label || "", placeholder: "e.g. city" });
      param.addEventListener("input", () => { slot.label = param.value; });
      const validation = h("select", { name: "validation" }, ["REQUIRED", "OPTIONAL"].map((v) => h("option", { value: v, selected: v === slot.validation }, v)));
      validation.addEventListener("change", () => { slot.validation = validation.value; });
      return h("div", { class: "row" }, h("div", { class: "grow" }, field("Entity", entity)),
        h("div", { class: "grow" }, field("Param name", param)), h("div", { class: "grow" }, field("Validation", validation)));
    }
    return null;
  }

  addAction(step, type) {
    step.actions.push(type === "TEXT" ? { type, payload: { texts: [], quickReplies: [], delay: 0 } } : { type, payload: { secondsToPause: 0 } });
    this.render();
    const actions = this.el.querySelectorAll(`[data-step-id="${CSS.escape(step.stepId)}"] > .actions-list > .action`);
    actions[actions.length - 1]?.querySelector("textarea, input")?.focus();
  }

  actionEditor(step, action, index) {
    const payload = action.payload || (action.payload = {});
    const removeButton = h("button", { type: "button", class: "small danger", "aria-label": `Remove ${action.type} action`, onclick: () => {
      step.actions.splice(index, 1);
      this.render();
    } }, "Remove");
    if (action.type === "HANDOVER") {
      const seconds = h("input", { name: "secondsToPause", type: "number", min: 0, value: payload.secondsToPause ?? 0, class: "auto" });
      seconds.addEventListener("input", () => { payload.secondsToPause = seconds.value === "" ? 0 : Number(seconds.value); });
      return h("div", { class: "action handover", dataset: { action: "HANDOVER" } },
        h("div", { class: "row" }, h("b", {}, "Handover"), h("span", { class: "muted small grow" }, "Pauses the bot so that a human agent answers."),
          removeButton),
        field("Pause for (seconds; 0 = until resumed)", seconds));
    }
    const texts = h("textarea", { name: "texts", rows: 2, placeholder: "One reply per line (one is picked at random); {{param}} fills in a param" },
      (payload.texts || []).join("\n"));
    texts.addEventListener("input", () => { payload.texts = lines(texts.value); });
    const quick = h("input", { name: "quickReplies", value: (payload.quickReplies || []).map((q) => q.label).join(", "), placeholder: "e.g. Yes, No" });
    quick.addEventListener("input", () => {
      const known = new Map((payload.quickReplies || []).map((q) => [q.label, q]));
      payload.quickReplies = quick.value.split(",").map((l) => l.trim()).filter(Boolean).map((label) => known.get(label) || { label, value: label, type: "text" });
    });
    const delay = h("input", { name: "delay", type: "number", min: 0, step: "0.5", value: payload.delay ?? 0, class: "auto" });
    delay.addEventListener("input", () => { payload.delay = delay.value === "" ? 0 : Number(delay.value); });
    return h("div", { class: "action text", dataset: { action: "TEXT" } },
      h("div", { class: "row" }, h("b", {}, "Text reply"), h("span", { class: "grow" }), removeButton),
      field("Texts", texts),
      h("div", { class: "row" }, h("div", { class: "grow" }, field("Quick replies (comma-separated)", quick)), field("Delay (s)", delay)));
  }

  clearProblems() {
    for (const box of this.el.querySelectorAll(".step-problems")) box.replaceChildren();
    for (const panel of this.el.querySelectorAll(".step.invalid")) panel.classList.remove("invalid");
  }

  // Problems naming steps[i] go to that step; the rest are returned (shown above the steps).
  showProblems(problems) {
    const rest = [];
    for (const problem of problems) {
      const match = /^steps\[(\d+)\]\.?(.*)$/.exec(problem.path || "");
      const step = match ? this.steps[Number(match[1])] : null;
      const panel = step ? this.el.querySelector(`[data-step-id="${CSS.escape(step.stepId)}"]`) : null;
      if (!panel) {
        rest.push(problem);
        continue;
      }
      panel.classList.add("invalid");
      panel.querySelector(".step-problems").append(h("div", { class: "error" }, `${match[2] || "step"}: ${problem.message}`));
    }
    this.el.querySelector(".step.invalid")?.scrollIntoView({ block: "nearest" });
    return rest;
  }
}
