// Weir's dashboard: polls the admin API (the same REST calls `weir ctl`
// makes) every two seconds and renders the job, its partitions, workers,
// checkpoints, rescales and coordinators. No framework, no build step: the
// browser runs this file as it is, and the coordinator serves it from its
// binary (an air-gapped cluster needs nothing else).
"use strict";

const REFRESH_MS = 2000;
const HISTORY = 150; // samples in the throughput chart (5 minutes)

const state = {
  token: sessionStorage.getItem("weir-admin-token") || "",
  updates: 0,
  throughput: [[], [], []], // unix seconds, records in/s, rows out/s
  charts: {},
};

function $(id) {
  return document.getElementById(id);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    if (response.status === 401) $("token").focus();
    const message = json && json.error ? json.error : text || response.statusText;
    throw new ApiError(response.status, message);
  }
  return json;
}

// Formatting.
const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

function duration(ms) {
  if (ms === undefined || ms === null || !isFinite(ms)) return "–";
  if (ms < 1000) return integer.format(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return decimal.format(s) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + Math.floor(s % 60) + " s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + " h " + (m % 60) + " min";
  return Math.floor(h / 24) + " d " + (h % 24) + " h";
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return decimal.format(n) + " " + units[i];
}

function percent(share) {
  return decimal.format(share * 100) + " %";
}

function time(ms) {
  if (!ms || ms <= 0) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function lag(watermark, now) {
  return watermark > 0 ? Math.max(0, now - watermark) : null;
}

// Sets a number's text, and its raw value for tests and scripts.
function show(id, text, raw) {
  const el = $(id);
  el.textContent = text;
  el.dataset.value = raw === undefined ? text : String(raw);
}

function cell(row, text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  row.appendChild(td);
  return td;
}

function fill(tableId, items, render) {
  const body = $(tableId).tBodies[0];
  const rows = items.map((item) => {
    const row = document.createElement("tr");
    render(row, item);
    return row;
  });
  body.replaceChildren(...rows);
}

function renderJob(job, cluster, now) {
  $("job-name").textContent = job.name;
  const badge = $("job-state");
  badge.textContent = job.state;
  badge.className = "state " + job.state;
  show("v-state", job.state);
  show("v-phase", job.phase || "–", job.phase);
  show("v-generation", String(job.generation), job.generation);
  show("v-uptime", duration(cluster.uptime_ms), cluster.uptime_ms);
  const wanted = job.desired_workers && job.desired_workers !== job.workers ? " (wanted " + job.desired_workers + ")" : "";
  show("v-workers", job.workers + wanted, job.workers);
  show("v-in-rate", decimal.format(job.records_in_per_second), job.records_in_per_second);
  show("v-out-rate", decimal.format(job.rows_out_per_second), job.rows_out_per_second);
  show("v-records-in", integer.format(job.records_in), job.records_in);
  show("v-rows-written", integer.format(job.rows_written), job.rows_written);
  show("v-watermark", time(job.watermark), job.watermark);
  const l = lag(job.watermark, now);
  show("v-lag", l === null ? "–" : duration(l), l === null ? "" : l);
  show("v-late", integer.format(job.late_records), job.late_records);
  show("v-bad", integer.format(job.bad_records), job.bad_records);
  show("v-dead-letters", integer.format(job.dead_letters), job.dead_letters);
  show("v-open-windows", integer.format(job.open_windows), job.open_windows);
  show("v-sink-retries", integer.format(job.sink_retries), job.sink_retries);
  const error = $("v-error");
  error.hidden = !job.error;
  error.textContent = job.error || "";
  if (job.rescaling) show("v-workers", job.workers + " (rescaling: " + job.rescaling + ")", job.workers);

  fill("partitions", job.partitions || [], (row, p) => {
    row.dataset.partition = p.name;
    cell(row, String(p.input), true);
    cell(row, p.name);
    cell(row, p.worker_id || "–");
    cell(row, integer.format(p.records), true).dataset.value = String(p.records);
    cell(row, time(p.watermark));
    const pl = lag(p.watermark, now);
    cell(row, pl === null ? "–" : duration(pl), true);
    cell(row, p.finished ? "yes" : "no");
    cell(row, p.checkpointed || "–");
  });
  const letters = job.latest_dead_letters || [];
  $("dead-letter-summary").textContent = job.dead_letters
    ? integer.format(job.dead_letters) + (job.dead_letters === 1 ? " dead letter (" : " dead letters (") + integer.format(job.bad_records) +
      " records lost) in this generation; the latest " + letters.length + " below, their bytes in the dead-letter output."
    : "No dead letters in this generation.";
  fill("dead-letters", letters, (row, l) => {
    cell(row, time(l.at_ms));
    cell(row, l.worker_id);
    cell(row, l.source);
    cell(row, l.position);
    cell(row, l.kind);
    cell(row, integer.format(l.records), true);
    cell(row, integer.format(l.payload_len), true);
    cell(row, l.error).className = "cause";
  });
  fill("rescales", job.rescales || [], (row, r) => {
    cell(row, time(r.started_ms));
    cell(row, String(r.from), true);
    cell(row, String(r.to), true);
    cell(row, r.cause);
    cell(row, r.checkpoint ? String(r.checkpoint) : "–", true);
    cell(row, r.generation ? String(r.generation) : "–", true);
    cell(row, r.duration_ms ? duration(r.duration_ms) : "–", true);
    cell(row, r.outcome || "under way");
  });
  const raft = job.raft;
  if (raft) {
    $("coordinator-summary").textContent =
      "term " + raft.term + ", leader " + (raft.has_leader ? raft.leader : "none") +
      "; answered by coordinator " + raft.node_id + " (" + raft.role + ")";
  } else {
    $("coordinator-summary").textContent = "One coordinator at " + cluster.coordinator_address + " (no raft group), version " + cluster.version + ".";
  }
  fill("coordinators", raft ? raft.members : [], (row, m) => {
    cell(row, String(m.id), true);
    cell(row, m.address);
    cell(row, m.leader ? "leader" : "");
    cell(row, integer.format(m.matched_index), true);
  });
}

function renderWorkers(cluster) {
  fill("workers", cluster.workers || [], (row, w) => {
    row.dataset.worker = w.worker_id;
    cell(row, w.worker_id);
    cell(row, w.data_address);
    cell(row, w.state);
    cell(row, w.key_group_start + "–" + w.key_group_end);
    cell(row, (w.partitions || []).join(", ") || "–");
    cell(row, duration(w.last_heartbeat_ms_ago) + " ago", true);
    cell(row, w.resident_bytes ? bytes(w.resident_bytes) : "–", true);
    const bp = cell(row, percent(w.backpressure || 0), true);
    bp.dataset.value = String(w.backpressure || 0);
    if ((w.backpressure || 0) >= 0.5) bp.classList.add("warn");
    cell(row, integer.format(w.records_in), true);
  });
}

function renderCheckpoints(list) {
  const since = list.since_last_completed_ms === undefined || list.since_last_completed_ms === null
    ? "none completed yet"
    : "last completed " + duration(list.since_last_completed_ms) + " ago";
  $("checkpoint-summary").textContent =
    integer.format(list.completed) + " completed, " + integer.format(list.failed) + " failed; interval " +
    duration(list.interval_ms) + "; " + since + "; store " + list.store +
    (list.stopping_after_savepoint ? "; stopping after the savepoint in flight" : "");
  $("checkpoint-summary").dataset.completed = String(list.completed);
  const checkpoints = list.checkpoints || [];
  fill("checkpoints", checkpoints, (row, c) => {
    row.className = c.state;
    row.dataset.checkpoint = String(c.id);
    cell(row, c.id + (c.savepoint ? " (savepoint)" : ""), true);
    cell(row, c.state);
    cell(row, time(c.triggered_ms));
    cell(row, duration(c.duration_ms), true);
    cell(row, bytes(c.bytes), true);
    cell(row, bytes(c.incremental_bytes), true);
    cell(row, duration(c.alignment_ms), true);
    cell(row, c.failure || "");
  });
  // The timeline: one bar per checkpoint at its trigger time, its height
  // the duration (completed and failed apart).
  const ordered = checkpoints.slice().sort((a, b) => a.triggered_ms - b.triggered_ms);
  const x = ordered.map((c) => c.triggered_ms / 1000);
  const completed = ordered.map((c) => (c.state === "COMPLETED" ? c.duration_ms : null));
  const failed = ordered.map((c) => (c.state === "FAILED" ? Math.max(c.duration_ms, 1) : null));
  chart("checkpoint-chart", [x, completed, failed], () => ({
    height: 220,
    scales: { x: { time: true, range: timeRange } },
    series: [
      {},
      { label: "completed (ms)", stroke: "#1c7c3c", fill: "rgba(28,124,60,.35)", paths: uPlot.paths.bars({ size: [0.6, 24] }) },
      { label: "failed (ms)", stroke: "#b3261e", fill: "rgba(179,38,30,.35)", paths: uPlot.paths.bars({ size: [0.6, 24] }) },
    ],
    axes: [{}, { label: "duration (ms)" }],
  }));
}

// The time axis of a chart: with a single sample uPlot would spread the
// axis over years; show a minute around it instead.
function timeRange(u, min, max) {
  return min === max ? [min - 60, max + 60] : [min, max];
}

// Creates a chart the first time, then only swaps its data.
function chart(id, data, options) {
  const el = $(id);
  const width = Math.max(300, el.clientWidth || 600);
  if (!state.charts[id]) {
    state.charts[id] = new uPlot(Object.assign({ width }, options()), data, el);
  } else {
    state.charts[id].setData(data);
  }
}

function renderThroughput(job, now) {
  const [t, inRate, outRate] = state.throughput;
  t.push(now / 1000);
  inRate.push(job.records_in_per_second);
  outRate.push(job.rows_out_per_second);
  if (t.length > HISTORY) {
    t.shift();
    inRate.shift();
    outRate.shift();
  }
  chart("throughput-chart", state.throughput, () => ({
    height: 220,
    scales: { x: { time: true, range: timeRange } },
    series: [
      {},
      { label: "records in / s", stroke: "#2f6fdf", width: 2 },
      { label: "rows out / s", stroke: "#1c7c3c", width: 2 },
    ],
    axes: [{}, { label: "per second" }],
  }));
}

async function refresh() {
  try {
    const [job, cluster, checkpoints] = await Promise.all([
      api("GET", "/api/v1/job"),
      api("GET", "/api/v1/cluster"),
      api("GET", "/api/v1/checkpoints"),
    ]);
    const now = Date.now();
    renderJob(job, cluster, now);
    renderWorkers(cluster);
    renderCheckpoints(checkpoints);
    renderThroughput(job, now);
    state.updates += 1;
    document.body.dataset.updates = String(state.updates);
    const connection = $("connection");
    connection.className = "connection";
    connection.textContent = "updated " + new Date(now).toLocaleTimeString();
  } catch (e) {
    const connection = $("connection");
    connection.className = "connection lost";
    connection.textContent = e instanceof ApiError ? e.message : "cannot reach the coordinator: " + e.message;
  }
}

// "60s", "1m", "1500ms", "2h" → milliseconds.
function parseInterval(text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$/.exec(text || "");
  if (!m) return null;
  const scale = { ms: 1, s: 1000, m: 60000, min: 60000, h: 3600000 }[m[2] || "s"];
  return Math.round(parseFloat(m[1]) * scale);
}

const ACTIONS = {
  checkpoint: () => ({ ask: "Take a checkpoint now?", method: "POST", path: "/api/v1/checkpoints", body: { savepoint: false }, done: "checkpoint requested" }),
  savepoint: () => ({ ask: "Take a savepoint now? It is kept until deleted by hand.", method: "POST", path: "/api/v1/checkpoints", body: { savepoint: true }, done: "savepoint requested" }),
  "stop-savepoint": () => ({ ask: "Stop the job after a savepoint?", method: "POST", path: "/api/v1/job/stop", body: { savepoint: true }, done: "stopping after a savepoint" }),
  stop: () => ({ ask: "Stop the job now? Closed windows are written.", method: "POST", path: "/api/v1/job/stop", body: {}, done: "stopping" }),
  resume: () => ({ ask: "Resume the job from its latest completed checkpoint?", method: "POST", path: "/api/v1/job/resume", body: {}, done: "resuming" }),
  rescale: () => {
    const workers = parseInt($("rescale-workers").value, 10);
    if (!(workers >= 1)) return { invalid: "Give the number of workers (1 or more)." };
    return { ask: "Rescale the job to " + workers + " workers?", method: "POST", path: "/api/v1/job/rescale", body: { workers }, done: "rescaling to " + workers + " workers" };
  },
  interval: () => {
    const ms = parseInterval($("interval").value);
    if (ms === null || ms <= 0) return { invalid: "Give an interval such as 30s, 5m or 1500ms." };
    return { ask: "Set the checkpoint interval to " + duration(ms) + "?", method: "PUT", path: "/api/v1/checkpoints/interval", body: { interval_ms: ms }, done: "interval set to " + duration(ms) };
  },
};

async function act(name) {
  const result = $("action-result");
  const action = ACTIONS[name]();
  if (action.invalid) {
    result.className = "result failed";
    result.textContent = action.invalid;
    return;
  }
  if (!window.confirm(action.ask)) return;
  try {
    await api(action.method, action.path, action.body);
    result.className = "result";
    result.textContent = action.done;
    await refresh();
  } catch (e) {
    result.className = "result failed";
    result.textContent = name + " refused: " + e.message;
  }
}

document.querySelectorAll("button[data-action]").forEach((button) => {
  button.addEventListener("click", () => act(button.dataset.action));
});
// The token stays in this tab's session storage, never in the page.
function tokenSet() {
  $("token").value = "";
  $("token").placeholder = state.token ? "token set" : "Bearer token";
}
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("weir-admin-token", state.token);
  tokenSet();
  refresh();
});
tokenSet();

refresh();
setInterval(refresh, REFRESH_MS);
