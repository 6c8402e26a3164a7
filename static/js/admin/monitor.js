// The live monitoring page (/admin/monitor/): a WebSocket on the dashboard protocol,
// subscribed to the staff-only `monitor` context, whose `monitor` messages (every
// MONITOR_INTERVAL_S) update the figures, tables and live charts without a reload; plus
// the refresh patterns of the last day from GET /api/admin/refresh-metrics.
// No build step, no CDN: uPlot is vendored under static/vendor/uplot/.

import uPlot from "../../vendor/uplot/uPlot.esm.js";
import { parseMessage } from "../transport.js";

const root = document.getElementById("monitor");
const LIVE_POINTS = 150; // 5 minutes at one snapshot every 2 s
const SERIES_REFRESH_MS = 5 * 60 * 1000;
const RECONNECT_MAX_MS = 30000;
const COLOURS = ["#2f6b4f", "#3b6fb6", "#c0792b", "#8e44ad", "#b33", "#555"];

function setLiveState(state) {
  document.body.dataset.liveState = state;
  const label = { connecting: "connecting…", live: "live", offline: "offline, reconnecting…" };
  setFigure("live", label[state] || state);
}

function setFigure(name, value, { bad = false } = {}) {
  for (const element of root.querySelectorAll(`[data-figure="${name}"]`)) {
    element.textContent = value === null || value === undefined ? "—" : String(value);
    element.classList.toggle("bad", bad);
  }
}

function number(value, digits = 0) {
  if (value === null || value === undefined) return null;
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function fillTable(name, rows) {
  const body = root.querySelector(`[data-table="${name}"]`);
  const fresh = document.createDocumentFragment();
  for (const cells of rows) {
    const tr = document.createElement("tr");
    cells.forEach((cell, index) => {
      const td = document.createElement("td");
      td.textContent = cell === null || cell === undefined ? "—" : String(cell);
      if (index > 0) td.className = "num";
      tr.append(td);
    });
    fresh.append(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 3;
    td.textContent = "none";
    tr.append(td);
    fresh.append(tr);
  }
  body.replaceChildren(fresh);
}

function total(counts) {
  return Object.values(counts || {}).reduce((sum, n) => sum + n, 0);
}

function health(check) {
  if (!check) return ["—", false];
  return check.ok ? [`ok, ${number(check.latency_ms, 1)} ms`, false] : [`down (${check.error})`, true];
}

function celeryHealth(status) {
  if (!status) return ["—", false];
  if (!status.broker_ok) return [`broker down (${status.error || "no answer"})`, true];
  if (!status.workers) return ["no worker", true];
  const seen = `seen ${number(status.worker_seen_s, 0)} s ago`;
  return [`${status.workers} worker${status.workers === 1 ? "" : "s"}, ${seen}`, false];
}

// -- live charts ---------------------------------------------------------------------------

function chart(name, series, height = 180) {
  const element = root.querySelector(`[data-chart="${name}"]`);
  const options = {
    width: Math.max(320, element.clientWidth || 480),
    height,
    series: [{}, ...series.map((label, i) => ({ label, stroke: COLOURS[i % COLOURS.length], width: 1.5 }))],
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
  };
  const data = [[], ...series.map(() => [])];
  return { plot: new uPlot(options, data, element), data };
}

const live = {
  deliveries: chart("deliveries", ["deliveries/s"]),
  lag: chart("lag", ["oldest pending", "last batch"]),
};

function pushPoint(target, time, values) {
  target.data[0].push(time);
  values.forEach((value, i) => target.data[i + 1].push(value ?? null));
  if (target.data[0].length > LIVE_POINTS) target.data.forEach((column) => column.shift());
  target.plot.setData(target.data);
}

// -- applying a snapshot ---------------------------------------------------------------------

function applySnapshot(snapshot) {
  const connections = snapshot.connections || {};
  for (const transport of ["websocket", "sse", "polling", "total"]) {
    setFigure(`connections.${transport}`, number(connections[transport]));
  }
  setFigure("deliveries_per_s", number(snapshot.deliveries_per_s, 1));
  setFigure("deliveries_total", number(snapshot.deliveries_total));
  const publisher = snapshot.publisher || {};
  setFigure("publisher.lag_ms", number(publisher.lag_ms), { bad: publisher.lag_ms > 30000 });
  setFigure("publisher.pending", publisher.pending_capped ? `${number(publisher.pending)}+` : number(publisher.pending));
  setFigure("publisher.batches_per_s", number(publisher.batches_per_s, 2));
  setFigure("publisher.mean_batch_size", number(publisher.mean_batch_size, 1));
  setFigure("publisher.last_batch_size", number(publisher.last_batch_size));
  setFigure("publisher.last_lag_ms", number(publisher.last_lag_ms, 1));
  setFigure("publisher.batches", number(publisher.batches));
  setFigure("publisher.changes", number(publisher.changes));
  const [database, databaseBad] = health(snapshot.health && snapshot.health.database);
  const [redis, redisBad] = health(snapshot.health && snapshot.health.redis);
  setFigure("health.database", database, { bad: databaseBad });
  setFigure("health.redis", redis, { bad: redisBad });
  const [celery, celeryBad] = celeryHealth(snapshot.health && snapshot.health.celery);
  setFigure("health.celery", celery, { bad: celeryBad });
  setFigure("errors.total", number(total(snapshot.errors)));
  setFigure("rate_limited.total", number(total(snapshot.rate_limited)));
  setFigure("at", snapshot.at ? new Date(snapshot.at).toLocaleTimeString() : null);
  applyMaintenance(snapshot.maintenance);

  fillTable("top_contexts", (snapshot.top_contexts || []).map((row) => [row.context, row.connections]));
  fillTable("processes", (snapshot.processes || []).map((p) => [p.server, p.connections, number(p.deliveries_per_s, 1)]));
  fillTable("refusals", [
    ...Object.entries(snapshot.errors || {}).map(([code, n]) => [`error: ${code}`, n]),
    ...Object.entries(snapshot.rate_limited || {}).map(([limit, n]) => [`rate limit: ${limit}`, n]),
    ...Object.entries(snapshot.maintenance_refusals || {}).map(([t, n]) => [`maintenance: ${t}`, n]),
  ]);

  const time = snapshot.at ? Date.parse(snapshot.at) / 1000 : Date.now() / 1000;
  pushPoint(live.deliveries, time, [snapshot.deliveries_per_s]);
  pushPoint(live.lag, time, [publisher.lag_ms, publisher.last_lag_ms]);
}

function applyMaintenance(maintenance) {
  if (!maintenance) return;
  const banner = root.querySelector('[data-figure="maintenance"]');
  banner.classList.toggle("on", Boolean(maintenance.active));
  let text = maintenance.active ? "Maintenance is on" : "Maintenance is off";
  if (maintenance.active && maintenance.message) text += `: ${maintenance.message}`;
  if (maintenance.active && maintenance.until) text += ` (until ${new Date(maintenance.until).toLocaleString()})`;
  banner.textContent = text;
}

// -- the connection -----------------------------------------------------------------------------

let attempts = 0;

function connect() {
  setLiveState("connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${root.dataset.wsPath}`);
  socket.addEventListener("message", (event) => {
    const message = parseMessage(event.data);
    if (message === undefined) return;
    if (message.type === "hello") {
      socket.send(JSON.stringify({ type: "subscribe", contexts: ["monitor"], ref: "monitor" }));
    } else if (message.type === "subscribed") {
      const refused = (message.rejected || []).some((r) => r.context === "monitor");
      if (refused) {
        setFigure("live", "not allowed: staff only");
        socket.close(1000);
        return;
      }
      attempts = 0;
      setLiveState("live");
    } else if (message.type === "monitor") {
      applySnapshot(message);
    } else if (message.type === "maintenance") {
      applyMaintenance(message);
    }
  });
  socket.addEventListener("close", (event) => {
    setLiveState("offline");
    // Full jitter on an exponential backoff; a close reason `retry_after=N` sets the floor.
    const hint = /retry_after=(\d+)/.exec(event.reason || "");
    const base = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** attempts);
    const wait = Math.max(hint ? Number(hint[1]) * 1000 : 0, Math.random() * base);
    attempts += 1;
    setTimeout(connect, wait);
  });
}

// -- the day's refresh patterns ------------------------------------------------------------------

const ENGAGEMENT = ["pause", "resume", "manual_refresh", "notification_opened", "transport_fallback"];
const TRANSPORTS = ["websocket", "sse", "polling"];
let day = null;

async function loadSeries() {
  try {
    const response = await fetch(`${root.dataset.seriesUrl}?hours=24&bucket=600`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    if (!day) {
      day = {
        engagement: chart("engagement", ENGAGEMENT, 200),
        connections: chart("connections", TRANSPORTS, 200),
      };
    }
    day.engagement.plot.setData([body.times, ...ENGAGEMENT.map((k) => body.series[`engagement.${k}`] || body.times.map(() => null))]);
    day.connections.plot.setData([body.times, ...TRANSPORTS.map((t) => body.series[`connections.${t}`] || body.times.map(() => null))]);
    setFigure("series-note", `Recorded every minute by the refresh_metrics snapshot; ${body.times.length} buckets of ${body.bucket_s / 60} minutes.`);
  } catch (error) {
    setFigure("series-note", `Refresh patterns unavailable (${error.message}).`);
  }
}

async function firstPaint() {
  try {
    const response = await fetch(root.dataset.snapshotUrl, { credentials: "same-origin" });
    if (response.ok) applySnapshot(await response.json());
  } catch {
    // The live snapshots fill the page anyway.
  }
}

firstPaint();
connect();
loadSeries();
setInterval(loadSeries, SERIES_REFRESH_MS);
