// percept's live page: server-sent events from /api/events (see publish/src/web.rs).
"use strict";

const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const $ = (id) => document.getElementById(id);
const WINDOW_S = 300;
let frameInfo = null;
let served = 0; // the page's clock (s) when percept started serving
const points = []; // [wall time s, latency ms, kind]

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// What a record says, in one line: the caption, the answer, the action or the text.
function said(r) {
  const b = r.body || {};
  switch (r.kind) {
    case "caption": return b.caption;
    case "answer": return b.answer;
    case "action": return JSON.stringify(b.action);
    case "transcript": return "(not a request: no reply)";
    default: return b.text !== undefined ? b.text : JSON.stringify(b);
  }
}

function addRecord(r) {
  const li = el("li");
  li.dataset.kind = r.kind;
  li.dataset.seq = r.seq;
  li.append(el("time", null, r.t_s.toFixed(2) + " s "));
  if (r.body && r.body.transcript !== undefined) li.append(el("span", "heard", "\u201c" + r.body.transcript + "\u201d"));
  li.append(el("span", "text", said(r)));
  li.append(el("span", "meta", " " + r.kind + ", " + Math.round(r.latency_ms) + " ms"));
  $("history").prepend(li);
  while ($("history").children.length > 100) $("history").lastChild.remove();
  points.push([served + r.at_s, r.latency_ms, r.kind]);
  plot();
}

function showFrame(info) {
  frameInfo = info;
  const img = $("frame");
  img.onload = drawBoxes;
  img.src = "api/frame.jpg?seq=" + info.seq + (token ? "&token=" + encodeURIComponent(token) : "");
  $("noframe").hidden = true;
  $("labels").textContent = info.labels && info.labels.length ? "looks like: " + info.labels.join(", ") : "";
}

function drawBoxes() {
  const img = $("frame"), c = $("boxes");
  c.width = img.clientWidth;
  c.height = img.clientHeight;
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!frameInfo || !Array.isArray(frameInfo.objects)) return;
  const sx = c.width / frameInfo.width, sy = c.height / frameInfo.height;
  g.lineWidth = 2;
  g.font = "13px system-ui, sans-serif";
  for (const o of frameInfo.objects) {
    const b = o.box;
    if (!b) continue;
    const x = b.x1 * sx, y = b.y1 * sy, w = (b.x2 - b.x1) * sx, h = (b.y2 - b.y1) * sy;
    g.strokeStyle = o.label === "person" ? "#ffb74d" : "#4fc3f7";
    g.strokeRect(x, y, w, h);
    const tag = o.label + " " + Math.round(o.score * 100) + "%";
    const tw = g.measureText(tag).width + 6;
    g.fillStyle = g.strokeStyle;
    g.fillRect(x, Math.max(0, y - 16), tw, 16);
    g.fillStyle = "#000";
    g.fillText(tag, x + 3, Math.max(12, y - 4));
  }
}

function cell(row, text, cls) {
  const td = el("td", cls, String(text));
  row.append(td);
}

function showMetrics(m) {
  const stages = $("stages").tBodies[0];
  stages.replaceChildren();
  for (const s of m.stages || []) {
    const tr = el("tr");
    cell(tr, s.stage);
    cell(tr, s.items_in);
    cell(tr, s.items_out);
    cell(tr, (s.busy_ms / 1000).toFixed(1));
    cell(tr, s.latency.count ? s.latency.p50_ms.toFixed(0) : "-");
    cell(tr, s.latency.count ? s.latency.p95_ms.toFixed(0) : "-");
    stages.append(tr);
  }
  const edges = $("edges").tBodies[0];
  edges.replaceChildren();
  for (const e of m.edges || []) {
    const tr = el("tr");
    cell(tr, e.edge);
    cell(tr, e.sent);
    cell(tr, e.received);
    cell(tr, e.dropped, e.dropped ? "drops" : "");
    cell(tr, e.queued);
    edges.append(tr);
  }
  const w = m.web || {};
  $("web").textContent = "pages open: " + w.clients + "; events sent to pages: " + w.sent +
    ", dropped for slow pages: " + w.dropped + "; up " + Math.round(m.uptime_s) + " s";
  plot();
}

function plot() {
  const c = $("plot");
  c.width = c.clientWidth;
  const g = c.getContext("2d");
  const now = Date.now() / 1000;
  while (points.length && points[0][0] < now - WINDOW_S) points.shift();
  g.clearRect(0, 0, c.width, c.height);
  const top = Math.max(100, ...points.map((p) => p[1])) * 1.1;
  g.fillStyle = "#8a929c";
  g.font = "11px system-ui, sans-serif";
  g.fillText(Math.round(top) + " ms", 4, 12);
  g.fillText("-5 min", 4, c.height - 4);
  g.fillText("now", c.width - 28, c.height - 4);
  g.strokeStyle = "#4fc3f7";
  g.beginPath();
  points.forEach((p, i) => {
    const x = c.width * (1 - (now - p[0]) / WINDOW_S), y = c.height * (1 - p[1] / top);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#4fc3f7";
  for (const p of points) {
    const x = c.width * (1 - (now - p[0]) / WINDOW_S), y = c.height * (1 - p[1] / top);
    g.fillRect(x - 2, y - 2, 4, 4);
  }
}

function connect() {
  const events = new EventSource("api/events" + q);
  events.addEventListener("hello", (e) => {
    const s = JSON.parse(e.data);
    $("title").textContent = s.title;
    document.title = s.title;
    served = Date.now() / 1000 - s.metrics.uptime_s;
    $("history").replaceChildren();
    points.length = 0;
    for (const r of s.records) addRecord(r);
    if (s.frame) showFrame(s.frame);
    showMetrics(s.metrics);
  });
  events.addEventListener("frame", (e) => showFrame(JSON.parse(e.data)));
  events.addEventListener("record", (e) => addRecord(JSON.parse(e.data)));
  events.addEventListener("metrics", (e) => showMetrics(JSON.parse(e.data)));
  events.onopen = () => { $("link").textContent = "live"; $("link").className = "up"; };
  // EventSource reconnects by itself; the page says so meanwhile.
  events.onerror = () => { $("link").textContent = "reconnecting"; $("link").className = "down"; };
}

window.addEventListener("resize", drawBoxes);
connect();
