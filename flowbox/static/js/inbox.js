// The inbox: a messaging project's threads (REST, sockets and SDK alike), live, filtered by paused,
// handover and outside business hours. Open a thread to read its history, take it over (the bot
// pauses), answer as a human agent and hand it back. Everything goes through the Management API's
// thread routes with the signed-in key; updates come from the project's event stream (SSE).
import { api, events, newest, request } from "./api.js";
import { errorBox, h, mount, onSubmit, picker, toast, when } from "./dom.js";
import { Transcript } from "./transcript.js";

const FILTERS = [["all", "All"], ["paused", "Paused"], ["handover", "Handover"], ["outsideHours", "Outside hours"]];
const RETRY_MS = 3000;

export async function render(main, args) {
  const projects = await api("/v1/projects");
  const project = projects.find((p) => p.projectId === args[0]) || projects[0];
  if (!project) {
    mount(main, h("h1", {}, "Inbox"), h("div", { class: "panel empty" }, "No messaging projects yet. ", h("a", { href: "#/messaging" }, "Create one"), "."));
    return;
  }
  const base = `/v1/projects/${encodeURIComponent(project.projectId)}`;
  let filter = FILTERS.some(([id]) => id === args[1]) ? args[1] : "all";
  let selected = args[2] || null;
  const list = h("ul", { id: "threads", class: "thread-list", "aria-label": "Threads" });
  const pane = h("div", { id: "thread", class: "thread-pane" });
  const live = h("span", { id: "inbox-live", class: "tag" }, "connecting…");
  const controller = new AbortController();

  const address = () => history.replaceState(null, "", `#/inbox/${[project.projectId, filter, selected].filter(Boolean).map(encodeURIComponent).join("/")}`);

  const filters = h("div", { class: "row filters", role: "group", "aria-label": "Show" }, FILTERS.map(([id, label]) =>
    h("button", { type: "button", dataset: { filter: id }, "aria-pressed": String(id === filter), onclick: (event) => {
      filter = id;
      for (const b of filters.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === event.currentTarget));
      address();
      loadList();
    } }, label)));

  // Loads overlap (a filter click while a live refresh is on its way): only the newest one's answer is
  // drawn, or a slow earlier answer for another filter or thread would paint over it.
  const listLoad = newest();
  const threadLoad = newest();
  let focusWanted = false; // asked of a load that a newer one replaced: the newer one gives the focus
  async function loadList() {
    const query = filter === "all" ? "" : `?only=${filter}`;
    const current = listLoad();
    try {
      const threads = await api(`${base}/threads${query}`, { signal: controller.signal });
      if (!current()) return;
      // A live refresh updates the items in place (a click or the focus on one survives it); only an
      // item that changed place is moved, and the one a keyboard user was on gets the focus back.
      const focused = list.contains(document.activeElement) ? document.activeElement.dataset.thread : null;
      if (!threads.length) return void mount(list, h("li", { class: "panel empty" }, "No threads here."));
      const wanted = threads.map(threadItem);
      wanted.forEach((li, i) => list.children[i] !== li && list.insertBefore(li, list.children[i] || null));
      while (list.children.length > wanted.length) list.lastElementChild.remove();
      const shown = new Set(threads.map((t) => t.threadId));
      for (const id of items.keys()) if (!shown.has(id)) items.delete(id);
      if (focused && !list.contains(document.activeElement)) list.querySelector(`.thread-item[data-thread="${CSS.escape(focused)}"]`)?.focus();
    } catch (err) {
      if (err.name !== "AbortError" && current()) mount(list, h("li", {}, errorBox(err)));
    }
  }

  function markSelected(button) {
    const on = button.dataset.thread === selected;
    button.classList.toggle("active", on);
    on ? button.setAttribute("aria-current", "true") : button.removeAttribute("aria-current");
  }

  const items = new Map(); // threadId -> its <li>, kept across live refreshes
  const drawn = new WeakMap(); // button -> the thread (as JSON) its text shows
  function threadItem(t) {
    let li = items.get(t.threadId);
    if (!li) {
      li = h("li", {}, h("button", { type: "button", class: "thread-item", dataset: { thread: t.threadId }, onclick: () => open(t.threadId) }));
      items.set(t.threadId, li);
    }
    const button = li.firstElementChild;
    markSelected(button);
    const shown = JSON.stringify(t);
    if (drawn.get(button) !== shown) { // its text is rewritten only when the thread changed
      drawn.set(button, shown);
      mount(button,
        h("div", { class: "row" }, h("b", { class: "grow" }, t.user?.name || t.threadId), statusTags(t)),
        t.lastMessage ? h("div", { class: "small muted last" }, `${t.lastMessage.role}: ${t.lastMessage.text}`) : null,
        h("div", { class: "small muted" }, when(t.lastMessage?.createdAt || t.updatedAt)));
    }
    return li;
  }

  async function open(threadId) {
    selected = threadId;
    shownPages = 1;
    address();
    for (const item of list.querySelectorAll(".thread-item")) markSelected(item);
    await loadThread(true);
  }

  const transcript = new Transcript();
  let shownPages = 1; // history pages of 20 shown, the newest first; "Show older" adds one
  let keepTop = false; // after "Show older": stay at the top, where the older messages came in
  async function loadThread(focus = false) {
    if (!selected) {
      mount(pane, h("div", { class: "panel empty" }, "Pick a thread to read it, take it over and answer."));
      return;
    }
    const path = `${base}/threads/${encodeURIComponent(selected)}`;
    let view, older;
    const current = threadLoad();
    focusWanted ||= focus;
    try {
      view = await api(path, { signal: controller.signal });
      const more = Array.from({ length: Math.min(shownPages, view.history.pages) - 1 }, (_, i) => i + 2);
      older = await Promise.all(more.map((page) => api(`${path}?page=${page}`, { signal: controller.signal })));
    } catch (err) {
      if (err.name !== "AbortError" && current()) mount(pane, errorBox(err));
      return;
    }
    if (!current()) return;
    // Read as the pane is replaced, not as the load began: what was typed or focused meanwhile stays.
    const hadFocus = pane.contains(document.activeElement) ? document.activeElement.id : null;
    const draft = pane.dataset.thread === view.threadId ? pane.querySelector("#reply-input")?.value ?? "" : ""; // kept across live updates
    transcript.clear();
    const earlier = view.history.pages > shownPages
      ? h("button", { type: "button", class: "small", id: "show-older", onclick: () => { shownPages += 1; keepTop = true; loadThread(); } }, "Show older messages")
      : null;
    if (earlier) transcript.el.append(earlier);
    for (const group of [...older.reverse(), view].flatMap((page) => page.history.history)) {
      const role = group.originator.role === "user" ? "customer" : group.originator.role === "moderator" ? "moderator" : "bot";
      for (const message of group.messages) {
        const text = (message.responses || []).filter((r) => r.type === "text").map((r) => r.payload.text).join("\n") || message.fallback;
        if (!text) continue;
        const bubble = transcript.bubble(role, text, role === "bot" ? "bot" : group.originator.name);
        if (message.step && role === "customer") bubble.append(h("span", { class: "meta" }, `matched ${message.step.type} “${message.step.title}”`));
      }
    }
    if (!view.messages) transcript.note("No messages yet.");
    const toggle = view.paused
      ? h("button", { type: "button", id: "resume-bot", onclick: () => setPaused(view.threadId, false) }, "Resume the bot")
      : h("button", { type: "button", id: "take-over", class: "primary", onclick: () => setPaused(view.threadId, true) }, "Take over");
    const input = h("input", { id: "reply-input", name: "text", autocomplete: "off", placeholder: view.paused ? "Answer as a human agent…" : "Take over first, or answer beside the bot…", "aria-label": "Reply as a human agent" });
    const form = onSubmit(h("form", { class: "composer", id: "reply-form" }, input, h("button", { type: "submit", class: "primary" }, "Send as agent")),
      async () => {
        const text = input.value.trim();
        if (!text) return;
        input.value = ""; // before the reply's own live update rebuilds the pane (which keeps a draft)
        try {
          // to the thread this pane shows (another may be selected and still loading)
          await api(`${base}/threads/${encodeURIComponent(view.threadId)}/messages`, { method: "POST", body: { payload: { type: "text", speech: text, originator: { name: "agent" } } } });
        } catch (err) {
          const current = document.getElementById("reply-input");
          if (current && !current.value) current.value = text;
          throw err;
        }
        document.getElementById("reply-input")?.focus();
      });
    input.value = draft;
    pane.dataset.thread = view.threadId;
    mount(pane,
      h("div", { class: "row" }, h("h2", { class: "grow", id: "thread-title" }, view.user?.name || view.threadId), statusTags(view), toggle),
      h("p", { class: "muted small" }, `thread ${view.threadId}`, view.pausedUntil ? ` · paused until ${when(view.pausedUntil)}` : ""),
      transcript.el, form);
    if (keepTop) transcript.el.scrollTop = 0;
    else transcript.scroll();
    keepTop = false;
    const again = hadFocus && document.getElementById(hadFocus);
    if (again) again.focus();
    else if (focusWanted) (view.paused ? input : toggle).focus();
    focusWanted = false;
  }

  async function setPaused(threadId, paused) {
    const path = `${base}/threads/${encodeURIComponent(threadId)}/pause`;
    await api(path, paused ? { method: "POST", body: {} } : { method: "DELETE" });
    toast(paused ? "You have the thread: the bot is paused." : "The bot answers again.");
    await Promise.all([loadThread(), loadList()]);
    document.getElementById(paused ? "reply-input" : "take-over")?.focus();
  }

  // Live: each event of the project refreshes the list, and the open thread when it is that one.
  let pending = null;
  let threadPending = false;
  function changed(threadId) {
    threadPending ||= threadId === selected;
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      loadList();
      if (threadPending) loadThread();
      threadPending = false;
    }, 150);
  }

  async function follow() {
    while (!controller.signal.aborted) {
      try {
        const response = await request(`${base}/events`, { accept: "text/event-stream", signal: controller.signal });
        live.textContent = "live";
        live.className = "tag ok";
        loadList(); // what happened before the stream opened
        if (selected) loadThread();
        for await (const event of events(response)) {
          if (event.event === "error") throw new Error(event.json?.message || "The stream ended");
          if (event.json?.threadId) changed(event.json.threadId);
        }
      } catch (err) {
        if (controller.signal.aborted || err.name === "AbortError") return;
        if (err.status === 401) return void (live.textContent = "signed out");
      }
      live.textContent = "reconnecting…";
      live.className = "tag warn";
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }

  const projectPicker = picker({ id: "inbox-project", class: "auto", "aria-label": "Project" }, projects.map((p) => [p.projectId, p.name]),
    project.projectId, (id) => `#/inbox/${id}`);
  mount(main, h("h1", {}, "Inbox", live, h("span", { class: "spacer" }), projectPicker), filters,
    h("div", { class: "inbox-grid" }, list, pane));
  await loadThread();
  follow();
  return () => {
    controller.abort();
    clearTimeout(pending);
  };
}

function statusTags(t) {
  return [
    t.handover ? h("span", { class: "tag warn", dataset: { tag: "handover" } }, "handover") : t.paused ? h("span", { class: "tag warn", dataset: { tag: "paused" } }, "paused") : null,
    t.outsideHours ? h("span", { class: "tag", dataset: { tag: "outside" } }, "outside hours") : null,
  ];
}
