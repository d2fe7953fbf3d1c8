// Usage: the org's credit balance and an agent's credits per day as a bar chart (inline SVG).
import { api } from "./api.js";
import { h, mount, picker, svg } from "./dom.js";

export async function render(main, args, session) {
  const [{ agents }, org] = await Promise.all([api("/api/public/agent"), api("/api/admin/org")]);
  const stats = h("div", { class: "stats" },
    h("div", { class: "stat" }, h("span", { class: "muted small" }, "Credit balance"), h("b", { id: "balance" }, org.unlimited ? "unlimited" : org.credits)),
    h("div", { class: "stat" }, h("span", { class: "muted small" }, "Credits used (all time)"), h("b", {}, org.used_credits)));
  if (!agents.length) return void mount(main, h("h1", {}, "Usage"), stats, h("div", { class: "panel empty" }, "No agents yet."));
  const agent = agents.find((a) => a.id === args[0]) || agents[0];
  const days = [7, 14, 31].includes(Number(args[1])) ? Number(args[1]) : 14;
  const select = picker({ id: "usage-agent", class: "auto", "aria-label": "Agent" }, agents.map((a) => [a.id, a.name]), agent.id,
    (id) => `#/usage/${id}/${days}`);
  const range = h("div", { class: "row" }, [7, 14, 31].map((n) =>
    h("a", { class: `button${n === days ? " primary" : ""}`, href: `#/usage/${agent.id}/${n}` }, `${n} days`)));
  // The API's range ends yesterday (UTC) and spans at most 31 days.
  const end = new Date(Date.now() - 86400000);
  const start = new Date(end.getTime() - (days - 1) * 86400000);
  const iso = (d) => d.toISOString().slice(0, 10);
  const report = await api(`/api/public/agent/${encodeURIComponent(agent.id)}/usage?start_date=${iso(start)}&end_date=${iso(end)}`);
  mount(main, h("h1", {}, "Usage", h("span", { class: "spacer" }), select), stats,
    h("div", { class: "panel" },
      h("div", { class: "row" }, h("b", {}, `${report.usage.total_credits_used} credits`),
        h("span", { class: "muted" }, `${agent.name}, ${iso(start)} to ${iso(end)} (UTC)`), h("span", { class: "grow" }), range),
      chart([...report.usage.daily_breakdown].reverse()),
      report.note ? h("p", { class: "muted small" }, report.note) : null));
}

// Bars for [{date, credits_used}], oldest first; values are labelled, dates every few bars.
export function chart(rows) {
  const width = 860, height = 260, left = 44, bottom = 28, top = 14;
  const max = Math.max(1, ...rows.map((r) => r.credits_used));
  const nice = niceMax(max);
  const step = (width - left - 8) / rows.length;
  const y = (v) => top + (height - top - bottom) * (1 - v / nice);
  const every = Math.ceil(rows.length / 10);
  const ticks = [0, nice / 2, nice];
  return svg("svg", { class: "chart", id: "usage-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Credits used per day" },
    ticks.map((t) => [
      svg("line", { class: "axis", x1: left, x2: width - 8, y1: y(t), y2: y(t) }),
      svg("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, String(+t.toFixed(2))),
    ]),
    rows.map((r, i) => {
      const x = left + i * step + step * 0.15;
      const w = step * 0.7;
      const v = r.credits_used;
      return svg("g", { "data-date": r.date, "data-credits": v },
        svg("rect", { class: "bar", x, y: y(v), width: w, height: Math.max(0, y(0) - y(v)) },
          svg("title", {}, `${r.date}: ${v} credit${v === 1 ? "" : "s"}`)),
        v ? svg("text", { x: x + w / 2, y: y(v) - 4, "text-anchor": "middle" }, String(v)) : null,
        i % every === 0 ? svg("text", { x: x + w / 2, y: height - 8, "text-anchor": "middle" }, r.date.slice(5)) : null);
    }));
}

function niceMax(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((m) => m >= value);
}
