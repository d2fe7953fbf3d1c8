// The console shell: sign in with an API key, then one page per API surface (hash routes).
import { api, available, key } from "./api.js";
import { errorBox, field, h, mount, onSubmit } from "./dom.js";

// A page is shown only when the server has the API it uses (read from /schema/openapi.json).
const PAGES = [
  { id: "agents", title: "Agents", needs: "/api/public/agent" },
  { id: "playground", title: "Playground", needs: "/api/public/agent/{agent_id}/chat" },
  { id: "knowledge", title: "Knowledge", needs: "/api/public/knowledge" },
  { id: "messaging", title: "Messaging", needs: "/v1/projects/{project_id}/flows" },
  { id: "inbox", title: "Inbox", needs: "/v1/projects/{project_id}/threads" },
  { id: "chats", title: "Chats", needs: "/chats" },
  { id: "keys", title: "API keys", needs: "/api/admin/keys" },
  { id: "usage", title: "Usage", needs: "/api/public/agent/{agent_id}/usage" },
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let pages = [];
let cleanup = null;
export const session = { org: null };

function route() {
  const [id = "", ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return { id, args };
}

async function show() {
  if (cleanup) {
    try { cleanup(); } catch { /* a page's cleanup never blocks navigation */ }
    cleanup = null;
  }
  if (!key.get()) return signIn();
  if (!session.org) {
    try {
      session.org = await api("/api/admin/org");
    } catch (err) {
      if (err.status === 401) {
        key.clear();
        return signIn("That API key is not valid (any more). Sign in again.");
      }
      return mount(main, errorBox(err));
    }
    const paths = await available();
    pages = PAGES.filter((p) => paths.has(p.needs));
    mount(who, h("span", { class: "org" }, session.org.name),
      h("button", { type: "button", onclick: signOut, id: "signout" }, "Sign out"));
  }
  const { id, args } = route();
  const page = pages.find((p) => p.id === id) || pages[0];
  mount(nav, pages.map((p) => h("a", { href: `#/${p.id}`, class: p === page ? "active" : "" }, p.title)),
    h("a", { href: "/schema", target: "_blank", rel: "noopener" }, "API docs"));
  document.title = `${page.title} · flowbox`;
  // Each visit renders into its own element: a slow page that finishes after the next navigation
  // (or a sign-out) writes into a detached element, never over what is shown now.
  const view = h("div", { class: "view" }, h("p", { class: "muted" }, "Loading…"));
  mount(main, view);
  try {
    const module = await import(`./${page.id}.js`);
    const stop = (await module.render(view, args, session)) || null;
    if (view.isConnected) cleanup = stop;
    else if (stop) stop();
  } catch (err) {
    if (!view.isConnected) return;
    if (err.status === 401) return signOut("That API key stopped working (revoked?). Sign in again.");
    mount(view, h("h1", {}, page.title), errorBox(err));
  }
}

function signIn(problem) {
  mount(nav);
  mount(who);
  document.title = "Sign in · flowbox";
  const input = h("input", { name: "key", type: "password", autocomplete: "off", required: true, placeholder: "fbx_…", autofocus: true });
  const form = onSubmit(h("form", { class: "panel", id: "signin" },
    field("API key", input, "The first key is printed by `flowbox serve` on its first start; more with `flowbox keys create`."),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in"))),
  async (data) => {
    key.set(String(data.get("key")).trim());
    try {
      session.org = await api("/api/admin/org");
    } catch (err) {
      key.clear();
      throw err.status === 401 ? new Error("That API key is not valid.") : err;
    }
    session.org = null; // show() loads it again with the pages
    if (!location.hash || location.hash === "#/") location.hash = "#/agents";
    else show();
  });
  mount(main, h("div", { class: "signin" }, h("h1", {}, "Sign in to flowbox"),
    problem ? h("div", { class: "notice" }, problem) : null, form,
    h("p", { class: "muted small" }, "The key is kept in this tab only (sessionStorage) and sent only to this server.")));
  input.focus();
}

function signOut(problem) {
  key.clear();
  session.org = null;
  history.replaceState(null, "", "#/");
  signIn(typeof problem === "string" ? problem : undefined);
}

window.addEventListener("hashchange", show);
show();
