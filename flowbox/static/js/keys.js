// API keys of the signed-in org: create (the key is shown once), list, revoke.
import { api, key, newest } from "./api.js";
import { field, h, mount, onSubmit, table, toast, when } from "./dom.js";

export async function render(main) {
  const { keys } = await api("/api/admin/keys");
  const created = h("div", { id: "new-key" });
  const form = onSubmit(h("form", { class: "panel row", id: "key-form" },
    h("div", { class: "grow" }, field("Name", h("input", { name: "name", required: true, maxlength: 100, placeholder: "e.g. website widget" }))),
    h("button", { type: "submit", class: "primary" }, "Create key")),
  async (data) => {
    const record = await api("/api/admin/keys", { method: "POST", body: { name: data.get("name") } });
    form.reset();
    mount(created, h("div", { class: "notice" },
      h("b", {}, `New key “${record.name}”: copy it now, it is not shown again.`),
      h("div", { class: "secret", id: "new-key-value" }, record.key)));
    await list();
  });
  const listing = h("div", { id: "keys-table" });
  const listLoad = newest(); // a create and a revoke can overlap: an older listing is not drawn over a newer one
  async function list(rows) {
    const current = listLoad();
    rows = rows || (await api("/api/admin/keys")).keys;
    if (!current()) return;
    mount(listing, table([
      ["Name", (k) => [k.name, k.current ? h("span", { class: "tag ok" }, "this session") : null]],
      ["Key", (k) => h("span", { class: "mono" }, `${k.prefix}…`)],
      ["Created", (k) => when(k.created_at)],
      ["Status", (k) => k.revoked_at ? h("span", { class: "tag bad" }, `revoked ${when(k.revoked_at)}`) : h("span", { class: "tag ok" }, "active")],
      ["", (k) => k.revoked_at ? null : h("button", { type: "button", class: "danger", onclick: () => revoke(k) }, "Revoke"), "actions"],
    ], rows));
  }
  async function revoke(k) {
    const warning = k.current ? "\nThis is the key you are signed in with: you will be signed out." : "";
    if (!confirm(`Revoke key “${k.name}” (${k.prefix}…)? It stops working at once.${warning}`)) return;
    try {
      await api(`/api/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
      toast(`Revoked ${k.name}`);
      if (k.current) {
        key.clear();
        location.hash = "#/";
        location.reload();
      } else {
        await list();
      }
    } catch (err) {
      toast(err.message);
    }
  }
  mount(main, h("h1", {}, "API keys"),
    h("p", { class: "muted" }, "Keys authenticate every API (Agents: Authorization: <key>; Chats: X-API-KEY; Messaging management: Bearer). Only a prefix is stored for display; the key itself is shown once."),
    form, created, listing);
  await list(keys);
}
