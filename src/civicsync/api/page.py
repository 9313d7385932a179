"""The operator status page at ``/``: one HTML document whose small script fetches
``/api/v1/status`` every few seconds and draws flows, lag, last runs, dead letters, reconciliation
and the service's workers. No build step, no external assets; all text is set with
``textContent`` (error messages never become markup). A flow in error gets a red row."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["operations"])

REFRESH_SECONDS = 5

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>civicsync status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; background: #fafafa; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
  #meta { color: #666; } table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e3e3; vertical-align: top; }
  th { background: #f0f0f0; font-weight: 600; }
  .badge { display: inline-block; padding: 0 .5rem; border-radius: .6rem; font-weight: 600; }
  .ok .badge, .badge.ok { background: #d7f5dd; color: #11692a; }
  .warning .badge, .badge.warning { background: #fff1c2; color: #7a5600; }
  .error .badge, .badge.error { background: #ffd6d6; color: #9b1111; }
  tr.error td { background: #fff0f0; } tr.warning td { background: #fffbea; }
  #banner { display: none; padding: .75rem 1rem; margin: 1rem 0; background: #ffd6d6; color: #9b1111;
            border: 1px solid #e99; border-radius: .3rem; font-weight: 600; }
  #login { display: none; margin: 1rem 0; } .num { text-align: right; font-variant-numeric: tabular-nums; }
  .muted { color: #888; }
</style>
</head>
<body>
<h1>civicsync <span id="overall" class="badge">loading</span></h1>
<div id="meta">refreshes every __REFRESH__ s · <span id="updated">not loaded yet</span></div>
<div id="banner" role="alert"></div>
<form id="login">This status needs an API key with admin:read:
  <input id="key" type="password" autocomplete="off" size="50"> <button>Show</button></form>
<h2>Flows</h2>
<table id="flows"><thead><tr><th>id</th><th>flow</th><th>kind</th><th>state</th><th>health</th>
<th class="num">lag</th><th class="num">dead letters</th><th>last run</th><th>problems</th></tr></thead>
<tbody></tbody></table>
<section id="kafka-section" hidden><h2>Kafka consumer groups</h2>
<div id="kafka" class="muted">not sampled yet</div></section>
<h2>Reconciliation</h2>
<div id="reconciliation" class="muted">no results yet</div>
<h2>Service</h2>
<div id="service" class="muted">the API runs on its own (no CDC workers or scheduler in this process)</div>
<script>
"use strict";
const REFRESH_MS = __REFRESH__ * 1000;
const RECONCILE_COLUMNS = ["flow", "status", "started_at", "finished_at", "source_rows", "target_rows", "missing",
                           "extra", "different", "repaired", "error"];
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function badge(health) { return el("span", health, "badge " + health); }
function lag(f) {
  if (f.kafka_lag_seconds !== null && f.kafka_lag_seconds !== undefined) return f.kafka_lag_seconds.toFixed(1) + " s";
  if (f.lag_seconds === null || f.lag_seconds === undefined) return f.slot ? "-" : "";
  return f.lag_seconds.toFixed(1) + " s";
}
function renderKafka(kafka) {
  // Shown only with a kafka: section; the lag of every partition, or why it is unknown.
  const section = document.getElementById("kafka-section");
  const box = document.getElementById("kafka");
  section.hidden = !kafka;
  if (!kafka) return;
  box.replaceChildren();
  if (kafka.error) { box.className = "error"; box.textContent = "lag unknown: " + kafka.error; return; }
  if (!kafka.partitions.length) {
    box.className = "muted"; box.textContent = "no group has applied anything yet"; return;
  }
  box.className = "";
  box.appendChild(table(kafka.partitions.map(p => ({
    group: p.group, topic: p.topic, partition: p.partition, flows: p.flows.join(", "), applied: p.applied_offset,
    "high watermark": p.high_watermark, lag: p.lag_records, "lag s": p.lag_seconds.toFixed(1), owner: p.owner}))));
  box.appendChild(el("div", "sampled " + kafka.taken_at, "muted"));
}
function lastRun(f) {
  if (f.kind === "cdc") return "";
  if (!f.last_run_status) return "never run";
  return f.last_run_status + (f.last_run ? " at " + f.last_run.replace("T", " ").slice(0, 19) : "");
}
function table(rows) {
  const t = el("table"); const head = el("tr"); const keys = Object.keys(rows[0] || {});
  keys.forEach(k => head.appendChild(el("th", k)));
  t.appendChild(head);
  rows.forEach(r => {
    const tr = el("tr");
    keys.forEach(k => {
      const v = r[k];
      tr.appendChild(el("td", v === null ? "" : (typeof v === "object" ? JSON.stringify(v) : v)));
    });
    t.appendChild(tr);
  });
  return t;
}
function render(report) {
  const body = document.querySelector("#flows tbody");
  body.replaceChildren();
  report.flows.forEach(f => {
    const tr = el("tr", null, f.health);
    tr.dataset.flow = f.id; tr.dataset.health = f.health;
    tr.append(el("td", f.id), el("td", f.flow), el("td", f.kind), el("td", f.state, "state"));
    const h = el("td"); h.appendChild(badge(f.health)); tr.appendChild(h);
    tr.append(el("td", lag(f), "num"), el("td", f.dead_letters, "num"), el("td", lastRun(f)),
              el("td", (f.problems || []).join("; "), "problems"));
    body.appendChild(tr);
  });
  const overall = document.getElementById("overall");
  const errors = report.flows.filter(f => f.health === "error").length;
  overall.textContent = errors ? errors + " flow(s) in error" : "all flows ok";
  overall.className = "badge " + (errors ? "error" : "ok");
  renderKafka(report.kafka);
  const rec = document.getElementById("reconciliation");
  rec.replaceChildren();
  if (report.reconciliation.length) {
    rec.className = "";
    rec.appendChild(table(report.reconciliation.map(r => {
      const shown = {};
      RECONCILE_COLUMNS.filter(c => c in r).forEach(c => { shown[c] = r[c]; });
      return Object.keys(shown).length ? shown : r;
    })));
  }
  else { rec.className = "muted"; rec.textContent = "no results yet"; }
  const svc = document.getElementById("service");
  if (report.service) {
    svc.className = "";
    svc.replaceChildren(el("div", "started " + report.service.started_at +
                              (report.service.stopping ? " · stopping" : "")));
    if (report.service.workers.length) svc.appendChild(table(report.service.workers.map(w => ({
      worker: w.name, flows: w.flows.join(", "), phase: w.phase, restarts: w.restarts,
      "last error": w.last_error || "", since: w.since}))));
    if (report.service.jobs.length) svc.appendChild(table(report.service.jobs.map(j => ({
      flow: j.flow, schedule: j.schedule, "next run": j.next_run || "", running: j.running}))));
  }
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}
function problem(text) {
  const b = document.getElementById("banner");
  b.textContent = text; b.style.display = text ? "block" : "none";
  if (text) {
    const o = document.getElementById("overall");
    o.textContent = "status unavailable"; o.className = "badge error";
  }
}
async function refresh() {
  const headers = {Accept: "application/json"};
  const key = sessionStorage.getItem("civicsync-key");
  if (key) headers.Authorization = "Bearer " + key;
  try {
    const response = await fetch("/api/v1/status", {headers: headers, cache: "no-store"});
    if (response.status === 401 || response.status === 403) {
      document.getElementById("login").style.display = "block";
      problem("an API key with admin:read is needed to see the status");
    } else if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      problem("status unavailable (HTTP " + response.status + "): " + (body.message || response.statusText));
    } else {
      document.getElementById("login").style.display = "none";
      problem("");
      render(await response.json());
    }
  } catch (err) {
    problem("cannot reach civicsync: " + err);
  }
  setTimeout(refresh, REFRESH_MS);
}
document.getElementById("login").addEventListener("submit", event => {
  event.preventDefault();
  sessionStorage.setItem("civicsync-key", document.getElementById("key").value.trim());
  refresh();
});
refresh();
</script>
</body>
</html>
""".replace("__REFRESH__", str(REFRESH_SECONDS))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def status_page() -> HTMLResponse:
    """The status page (the data comes from ``/api/v1/status``)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})
