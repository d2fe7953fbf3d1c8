// Building DOM nodes without innerHTML: every text from the server stays text.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  for (const child of children.flat(Infinity)) {
    if (child !== undefined && child !== null) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), 3500);
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

// A <select> that leads to another page: `items` are [value, label] pairs, `route(value)` the page's address.
export function picker(props, items, current, route) {
  const el = h("select", { ...props, onchange: () => (location.hash = route(el.value)) },
    items.map(([value, label]) => h("option", { value, selected: value === current }, label)));
  return el;
}

export function field(label, input, hint) {
  return h("label", {}, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

export function table(columns, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("div", { class: "panel empty" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))))));
}

export function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, String(err.message || err));
}

// A form's submit handler that shows the error under the form and keeps the button disabled meanwhile.
export function onSubmit(form, handler) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    form.querySelector(".error")?.remove();
    if (button) button.disabled = true;
    try {
      await handler(new FormData(form));
    } catch (err) {
      form.append(errorBox(err));
    } finally {
      if (button) button.disabled = false;
    }
  });
  return form;
}

// Render the current page again (after a change it shows).
export function refresh() {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}
