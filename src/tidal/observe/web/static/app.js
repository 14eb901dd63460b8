// Tidal's dashboard: renders the server-sent snapshots of a running pipeline.
// Plain JavaScript and SVG, no libraries, nothing from the internet. Read-only.
// Every value from the run (names, reasons, records) is inserted as text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let prev = null;        // the previous snapshot, for rates
let updates = 0;
let graphKey = "";

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined || Number.isNaN(n)) ? "-" :
  Math.abs(n) >= 1e9 ? (n / 1e9).toFixed(1) + "G" : Math.abs(n) >= 1e6 ? (n / 1e6).toFixed(1) + "M" :
  Math.abs(n) >= 1e4 ? (n / 1e3).toFixed(1) + "k" : String(Math.round(n * 10) / 10);
const ms = (v) => (v === null || v === undefined) ? "-" : (v >= 1000 ? (v / 1000).toFixed(2) + "s" : v.toFixed(1) + "ms");
const secs = (v) => (v === null || v === undefined) ? "-" : v >= 172800 ? (v / 86400).toFixed(0) + " days" :
  v >= 7200 ? (v / 3600).toFixed(1) + "h" : v >= 120 ? (v / 60).toFixed(1) + "min" : v.toFixed(1) + "s";
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(id, text) { const e = $(id); if (e.textContent !== text) e.textContent = text; }

function rows(tbody, data) {
  tbody.replaceChildren(...data.map((cells) => {
    const tr = el("tr");
    cells.forEach((c, i) => {
      const td = el("td", {}, String(c));
      if (i === 1 && tbody.parentElement.id === "reasons") td.className = "reason";
      tr.appendChild(td);
    });
    return tr;
  }));
}

// -- the pipeline graph: steps in columns by their depth from a source --------------------
function layout(graph) {
  const depth = {};
  graph.nodes.forEach((n) => { depth[n.name] = 0; });
  for (let i = 0; i < graph.nodes.length; i++) {
    graph.edges.forEach((e) => { depth[e.to] = Math.max(depth[e.to], depth[e.from] + 1); });
  }
  const cols = {};
  graph.nodes.forEach((n) => { (cols[depth[n.name]] = cols[depth[n.name]] || []).push(n); });
  const W = 128, H = 56, pos = {};
  let rowsMax = 1;
  Object.entries(cols).forEach(([d, ns]) => {
    rowsMax = Math.max(rowsMax, ns.length);
    ns.forEach((n, i) => { pos[n.name] = { x: 10 + Number(d) * (W + 26), y: 10 + i * (H + 16) }; });
  });
  const width = 10 + (Object.keys(cols).length) * (W + 26);
  return { pos, W, H, width, height: 20 + rowsMax * (H + 16) };
}

function drawGraph(graph) {
  const svg = $("graph");
  const { pos, W, H, width, height } = layout(graph);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" });
  marker.appendChild(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5d7285" }));
  defs.appendChild(marker);
  const parts = [defs];
  graph.edges.forEach((e) => {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) return;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    parts.push(el("svg:path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
      "data-from": e.from, "data-to": e.to }));
  });
  graph.nodes.forEach((n) => {
    const p = pos[n.name];
    const g = el("svg:g", { class: "node " + n.kind, "data-step": n.name, id: "node-" + n.name });
    g.appendChild(el("svg:rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }));
    const label = n.name.length > 17 ? n.name.slice(0, 16) + "…" : n.name;
    g.appendChild(el("svg:text", { x: p.x + W / 2, y: p.y + 18 }, label));
    g.appendChild(el("svg:text", { x: p.x + W / 2, y: p.y + 33, class: "kind" }, n.type));
    g.appendChild(el("svg:text", { x: p.x + W / 2, y: p.y + 49, class: "rate" }, "-"));
    const title = el("svg:title", {}, `${n.name} (${n.type})`);
    g.appendChild(title);
    parts.push(g);
  });
  svg.replaceChildren(...parts);
}

function updateGraph(snap, dt) {
  snap.graph.nodes.forEach((n) => {
    const g = $("node-" + n.name);
    const s = snap.steps[n.name];
    if (!g || !s) return;
    const through = n.kind === "source" ? s.out : s.in;
    g.setAttribute("data-in", s.in);
    g.setAttribute("data-out", s.out);
    const before = prev && prev.steps[n.name];
    let rate = null;
    if (before && dt > 0) rate = (through - (n.kind === "source" ? before.out : before.in)) / dt;
    g.querySelector("text.rate").textContent = fmt(through) + (rate === null ? "" : "  ·  " + fmt(rate) + "/s");
  });
}

// -- line charts ------------------------------------------------------------------------
function chart(id, series, names) {
  const svg = $(id);
  const W = 400, H = 140, L = 40, B = 16;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const values = series.flatMap((s) => s.filter((v) => v !== null && Number.isFinite(v)));
  const top = values.length ? Math.max(...values) * 1.1 || 1 : 1;
  const n = Math.max(2, ...series.map((s) => s.length));
  const x = (i) => L + (i * (W - L - 4)) / (n - 1);
  const y = (v) => H - B - (v / top) * (H - B - 6);
  const parts = [el("svg:line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }),
    el("svg:line", { x1: L, y1: 4, x2: L, y2: H - B, class: "axis" }),
    el("svg:text", { x: L - 4, y: 12, "text-anchor": "end" }, fmt(top)),
    el("svg:text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
    el("svg:text", { x: W - 4, y: H - 3, "text-anchor": "end" }, "now"),
    el("svg:text", { x: L, y: H - 3 }, `-${n}s`)];
  series.forEach((s, k) => {
    let d = "";
    s.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return;
      d += (d ? " L " : "M ") + x(i + n - s.length).toFixed(1) + " " + y(v).toFixed(1);
    });
    if (d) parts.push(el("svg:path", { d, class: "line " + (names[k] || "") }));
  });
  svg.replaceChildren(...parts);
}

function drawCharts(series) {
  const rate = series.map((p, i) => {
    if (i === 0) return null;
    const q = series[i - 1], dt = p.t - q.t;
    return dt > 0 ? (p.events - q.events) / dt : null;
  });
  chart("chart-rate", [rate], [""]);
  const lat = (k) => series.map((p) => (p.latency_ms ? p.latency_ms[k] : null));
  chart("chart-latency", [lat("p50"), lat("p99"), lat("p999")], ["p50", "p99", "p999"]);
  chart("chart-wm", [series.map((p) => p.watermark_lag_s)], [""]);
  return rate.length ? rate[rate.length - 1] : null;
}

// -- tables and lists -------------------------------------------------------------------
function list(id, items) {
  $(id).replaceChildren(...items.map(([when, text]) => {
    const li = el("li");
    if (when) li.appendChild(el("span", { class: "when" }, when));
    li.appendChild(document.createTextNode(text));
    return li;
  }));
}

function render(snap) {
  updates += 1;
  const dt = prev ? snap.time - prev.time : 0;
  const key = JSON.stringify(snap.graph);
  if (key !== graphKey) { graphKey = key; drawGraph(snap.graph); }
  updateGraph(snap, dt);
  setText("pipeline", snap.pipeline);
  const state = $("state");
  state.textContent = snap.state; state.className = "badge " + snap.state;
  setText("events", snap.events.toLocaleString("en-US"));
  $("events").setAttribute("data-value", snap.events);
  const rate = drawCharts(snap.series || []);
  setText("rate", fmt(rate));
  const lat = snap.latency_ms || {};
  setText("latency", ms(lat.p50) + " / " + ms(lat.p99));
  const lags = Object.values(snap.sources).map((s) => s.watermark_lag_s).filter((v) => v !== null && v !== undefined);
  setText("wmlag", lags.length ? secs(Math.max(...lags)) : "-");
  setText("dead", snap.dead_letters.count.toLocaleString("en-US"));
  $("dead").setAttribute("data-value", snap.dead_letters.count);
  setText("late", String(snap.late));
  setText("alerts", snap.alerts.total.toLocaleString("en-US"));
  const c = snap.checkpoints;
  setText("checkpoints", c.count + (c.failures ? ` (${c.failures} failed)` : ""));
  rows($("steps").tBodies[0], Object.entries(snap.steps).map(([name, s]) => {
    const b = prev && prev.steps[name];
    const r = b && dt > 0 ? fmt((s.in - b.in) / dt) : "-";
    return [name, s.in.toLocaleString("en-US"), s.out.toLocaleString("en-US"), r, s.late,
      s.batches ? (1000 * s.seconds / s.batches).toFixed(3) : "-"];
  }));
  rows($("sources").tBodies[0], Object.entries(snap.sources).map(([name, s]) => [name,
    s.records.toLocaleString("en-US"),
    s.watermark_ms ? new Date(s.watermark_ms).toISOString().replace("T", " ").slice(0, 19) : "-",
    s.consumer_lag === null || s.consumer_lag === undefined ? "-" : s.consumer_lag.toLocaleString("en-US"),
    `${s.idle_partitions}/${s.partitions}`]));
  rows($("ckpt").tBodies[0], [["taken", c.count], ["failed", c.failures],
    ["last id", c.last_id ?? "-"], ["last duration", c.last_seconds === null ? "-" : ms(c.last_seconds * 1000)],
    ["last size", c.last_bytes === null ? "-" : fmt(c.last_bytes) + "B"],
    ["age", c.last_at ? secs(Math.max(0, snap.time - c.last_at)) : "-"]]);
  rows($("models").tBodies[0], Object.entries(snap.models).map(([name, m]) => [name,
    m.version ?? "-", m.calls ?? "-",
    m.shadow_agreement === null || m.shadow_agreement === undefined ? "-" : (100 * m.shadow_agreement).toFixed(1) + "%"]));
  list("history", snap.model_history.slice().reverse().map((h) =>
    [clock(h.time), `${h.step}: ${h.kind} ${h.from} → ${h.to}`]));
  list("alert-list", snap.alerts.recent.slice().reverse().map((a) => {
    const { sink, shown_at, ...rest } = a;
    return [clock(shown_at), Object.entries(rest).map(([k, v]) => `${k}=${v}`).join("  ")];
  }));
  rows($("reasons").tBodies[0], snap.dead_letters.by_reason.map((r) => [r.step, r.reason, r.count]));
  list("dead-list", snap.dead_letters.recent.slice().reverse().map((d) =>
    [d.step, `${d.reason} @ ${JSON.stringify(d.position)}` + (d.raw ? `  raw: ${d.raw}` : "")]));
  const u = $("updated");
  u.setAttribute("data-updates", updates);
  u.textContent = "updated " + clock(snap.time);
  prev = snap;
}

function connect() {
  const source = new EventSource("/events");
  source.onmessage = (msg) => { render(JSON.parse(msg.data)); };
  source.onerror = () => {
    const state = $("state");
    if (state.textContent !== "finished") { state.textContent = "reconnecting"; state.className = "badge lost"; }
  };
}

document.addEventListener("DOMContentLoaded", connect);
