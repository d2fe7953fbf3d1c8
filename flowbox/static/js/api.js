// Calls to flowbox's own APIs with the signed-in key. The key lives in sessionStorage: it is
// gone when the tab closes, and no other site can read it (the console only talks to its origin).

const STORE = "flowbox.key";

export const key = {
  get: () => sessionStorage.getItem(STORE),
  set: (value) => sessionStorage.setItem(STORE, value),
  clear: () => sessionStorage.removeItem(STORE),
};

export class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

// An error names itself in `error` and `message` (the common shape) or in `message` (messaging's
// {status, message}); the chat endpoint's {statusCode, body} is read where the chat is (playground.js).
function describe(status, body) {
  if (body && typeof body === "object") {
    const parts = [body.error, body.message].filter((p) => typeof p === "string" && p);
    if (parts.length) return `${status}: ${[...new Set(parts)].join(" — ")}`;
  }
  return `${status}: ${typeof body === "string" && body ? body.slice(0, 200) : "request failed"}`;
}

// auth: "raw" (Authorization: <key>, which every surface but Chats accepts), "x-api-key" (the
// Chats API), "none" (what a public client sends, e.g. a web-chat widget).
export function headers(auth = "raw", extra = {}) {
  const out = { ...extra };
  const value = key.get();
  if (value && auth !== "none") {
    if (auth === "x-api-key") out["X-API-KEY"] = value;
    else out["Authorization"] = value;
  }
  return out;
}

export async function request(path, { method = "GET", body, auth = "raw", accept, signal } = {}) {
  const extra = accept ? { Accept: accept } : {};
  if (body !== undefined) extra["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, signal, headers: headers(auth, extra), body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new ApiError(response.status, await parse(response));
  return response;
}

async function parse(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}

export async function api(path, options = {}) {
  return parse(await request(path, options));
}

// Server-Sent Events from a fetch Response (EventSource cannot send an API key header).
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = { event: "message", data: "", id: null };
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") data.push(val);
        else if (name === "event") event.event = val;
        else if (name === "id") event.id = val;
      }
      if (!data.length) continue;
      event.data = data.join("\n");
      try {
        event.json = JSON.parse(event.data);
      } catch {
        event.json = null;
      }
      yield event;
    }
  }
}

// Which API surfaces this server has, from its OpenAPI document: pages for missing ones are hidden.
let surfaces = null;
export async function available() {
  if (!surfaces) {
    const doc = await api("/schema/openapi.json");
    surfaces = new Set(Object.keys(doc.paths || {}));
  }
  return surfaces;
}

// For a view whose loads can overlap (a click while a live refresh is on its way): each call starts a
// load and returns a check that is true while it is still the newest, so that a slow earlier answer is
// never drawn over a newer one.
export function newest() {
  let count = 0;
  return () => {
    const mine = ++count;
    return () => mine === count;
  };
}
