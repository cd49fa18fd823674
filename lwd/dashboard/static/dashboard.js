// lwd dashboard: polls /api/state every poll_seconds (2 s by default) and /api/series when
// the run's files changed (the state's `revision`), then redraws tables and uPlot charts.
// Plain JS, no build step. Text from the run's files is set with textContent, never as HTML.
"use strict";

const DECISION_COLORS = {
  promoted: "#1e9e4a", rejected: "#d62728", canary: "#e0a800", rolled_back: "#8e44ad", undecided: "#8e8e93",
};
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

let pollMs = 2000;
let seenRevision = null;
const charts = {}; // chart id -> {plot, key}

// -- formatting ---------------------------------------------------------------------------

const dash = "–";
const pct = (x) => (x == null ? dash : `${(100 * x).toFixed(1)}%`);
const int = (x) => (x == null ? dash : Math.round(x).toLocaleString("en-US"));
const num = (x, digits = 1) => (x == null ? dash : x.toFixed(digits));
const secs = (x) => (x == null ? dash : `${x.toFixed(2)} s`);
const clock = (t) => (t == null ? dash : new Date(t * 1000).toLocaleTimeString());
function ago(s) {
  if (s == null) return dash;
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
const taskColor = (i) => (i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.5) % 360}, 60%, 45%)`);

function badge(text, cls) {
  const span = document.createElement("span");
  span.className = `badge ${cls || ""}`;
  span.textContent = text;
  return span;
}

function tag(text, cls) {
  const span = document.createElement("span");
  span.className = `tag ${cls || ""}`;
  span.textContent = text;
  return span;
}

// A table body from rows; `cells` maps a row to its cells (string or Node).
function fillTable(tableId, rows, cells, rowAttrs) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    if (rowAttrs) rowAttrs(tr, row);
    for (const cell of cells(row)) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell;
      tr.appendChild(td);
    }
    return tr;
  }));
}

// -- state: header, cards, tables -----------------------------------------------------------

const STATUS_TEXT = {
  live: () => "live",
  quiet: () => "quiet: no file changed for a while (is lwd deploy running?)",
  waiting: () => "waiting for the run to start",
  finished: (s) => `finished (${s.reason})`,
  stopped: (s) => `stopped (${s.reason}; resumable)`,
};

const CARDS = [
  ["env-steps", "env steps", (h) => int(h.env_steps)],
  ["episodes", "episodes", (h) => int(h.episodes)],
  ["learner-step", "learner step", (h) => int(h.learner_step)],
  ["deployed-version", "deployed version", (h) => (h.deployed_version == null ? dash : `v${h.deployed_version}`)
    + (h.canary_version != null ? ` (canary v${h.canary_version})` : "") + (h.pinned ? " pinned" : "")],
  ["versions", "versions published", (h) => int(h.versions)],
  ["fleet-success", "fleet success", (h) => pct(h.fleet_success)],
  ["autonomous-success", "autonomous success", (h) => pct(h.fleet_autonomous_success)],
  ["intervention-rate", "intervention rate", (h) => pct(h.fleet_intervention_rate)],
  ["env-steps-per-s", "env steps/s", (h) => num(h.env_steps_per_s, 0)],
  ["updates-per-s", "learner updates/s", (h) => num(h.updates_per_s, 2)],
  ["episode-to-learner", "episode → learner P99", (h) => secs(h.episode_to_learner_p99_s)],
  ["model-to-robot", "model → robot P99", (h) => secs(h.model_to_robot_p99_s)],
];

function renderCards(headline) {
  const box = document.getElementById("headline");
  if (!box.children.length) {
    for (const [key, label] of CARDS) {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.testid = `stat-${key}`;
      const l = document.createElement("div");
      l.className = "label";
      l.textContent = label;
      const v = document.createElement("div");
      v.className = "value";
      v.id = `stat-${key}`;
      card.append(l, v);
      box.appendChild(card);
    }
  }
  for (const [key, , value] of CARDS) document.getElementById(`stat-${key}`).textContent = value(headline);
}

function renderRobots(robots) {
  document.getElementById("robots-empty").classList.toggle("hidden", robots.length > 0);
  fillTable("robots-table", robots, (r) => {
    const state = r.stale ? badge(`${r.state}, stale`, "stale") : badge(r.state, r.state);
    const version = document.createElement("span");
    version.textContent = r.version == null ? dash : `v${r.version}`;
    if (r.canary) version.appendChild(tag("canary"));
    return [r.robot_id, r.worker == null ? dash : String(r.worker), state, r.task || dash,
      r.seq == null ? dash : String(r.seq), version, int(r.episodes), pct(r.success), ago(r.age_s)];
  }, (tr, r) => {
    tr.dataset.robotId = r.robot_id;
    if (r.stale) tr.className = "stale";
  });
}

function renderTasks(tasks) {
  fillTable("tasks-table", tasks, (t) => [t.task, int(t.episodes), pct(t.success), pct(t.autonomous_success),
    pct(t.intervention_rate), t.version == null ? dash : `v${t.version}`], (tr, t) => { tr.dataset.task = t.task; });
}

function renderVersions(versions) {
  fillTable("versions-table", versions, (v) => {
    const version = document.createElement("span");
    version.textContent = `v${v.version}`;
    if (v.deployed) version.appendChild(tag("deployed", "deployed"));
    if (v.canary) version.appendChild(tag("canary"));
    return [version, clock(v.published_at), int(v.env_steps), int(v.learner_step),
      badge(v.decision.replace("_", " "), v.decision), [v.decided_by, v.note].filter(Boolean).join(": ") || dash,
      pct(v.validation_success),
      int(v.episodes), pct(v.success)];
  }, (tr, v) => { tr.dataset.version = v.version; });
}

function renderDecisions(decisions) {
  document.getElementById("decisions-empty").classList.toggle("hidden", decisions.length > 0);
  fillTable("decisions-table", decisions, (d) => {
    const interval = Array.isArray(d.interval) ? ` [${num(d.interval[0], 3)}, ${num(d.interval[1], 3)}]` : "";
    const difference = d.difference == null ? dash : `${d.difference >= 0 ? "+" : ""}${num(d.difference, 3)}${interval}`;
    // the gate's evidence: a paired evaluation gives one episode count, a canary two (canary, rest)
    const episodes = Array.isArray(d.episodes) ? d.episodes.map(int).join(" / ") : int(d.episodes);
    const how = [d.mode && `mode: ${d.mode}`, d.margin != null && `margin ${d.margin}`].filter(Boolean).join(", ");
    const reason = [d.reason, how].filter(Boolean).join("; ");
    const successes = d.candidate_success == null ? dash : `${pct(d.candidate_success)} / ${pct(d.deployed_success)}`;
    return [clock(d.at), `v${d.version}`, badge((d.decision || "?").replace("_", " "), d.decision), d.by || dash,
      d.from_version == null ? dash : `v${d.from_version}`, difference, episodes, successes, reason];
  });
}

function renderState(state) {
  const status = document.getElementById("run-status");
  status.textContent = (STATUS_TEXT[state.status] || (() => state.status))(state);
  status.className = `badge ${state.status}`;
  status.dataset.status = state.status;
  document.getElementById("run-path").textContent = state.run;
  document.getElementById("updated").textContent = `updated ${clock(state.now)}`;
  for (const el of document.querySelectorAll(".window")) el.textContent = `(last ${state.window} episodes per task)`;
  renderCards(state.headline);
  renderRobots(state.robots);
  renderTasks(state.tasks);
  renderVersions(state.versions);
  renderDecisions(state.decisions);
  const problems = document.getElementById("problems");
  problems.classList.toggle("hidden", !state.problems.length);
  problems.replaceChildren(...state.problems.map((p) => {
    const li = document.createElement("li");
    li.textContent = p;
    return li;
  }));
}

// -- series: charts -------------------------------------------------------------------------

function chartWidth(el) {
  return Math.max(el.parentElement.clientWidth - 16, 300);
}

// Draw (or update in place) a uPlot chart; rebuilt when its series change (a new task).
function drawChart(id, series, data, extra, xLabel = "env steps") {
  const el = document.getElementById(id);
  const empty = !data[0].length;
  el.parentElement.querySelector(".empty").classList.toggle("hidden", !empty);
  const key = JSON.stringify(series.map((s) => s.label));
  const existing = charts[id];
  if (existing && existing.key === key) {
    existing.plot.setData(data);
    return;
  }
  if (existing) existing.plot.destroy();
  const opts = {
    width: chartWidth(el), height: 240, series: [{ label: xLabel }, ...series], legend: { live: true },
    cursor: { drag: { x: true, y: false } }, ...extra,
  };
  charts[id] = { plot: new uPlot(opts, data, el), key };
}

const line = (label, stroke, more) => ({ label, stroke, width: 1.5, spanGaps: true, ...more });
const rate = { values: (u, ticks) => ticks.map((t) => `${Math.round(t * 100)}%`) };
const stepsAxis = { label: "env steps", values: (u, ticks) => ticks.map((t) => (t >= 1000 ? `${t / 1000}k` : t)) };
const rateAxes = { scales: { x: { time: false }, y: { range: [0, 1] } }, axes: [stepsAxis, { ...rate, size: 50 }] };
// Intervention rates are small: from 0 to a little above the highest value, not to 100%.
const smallRateAxes = {
  scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.min(1, Math.max(0.05, (max || 0) * 1.15))] } },
  axes: [stepsAxis, { ...rate, size: 50 }],
};

function drawEpisodeCharts(e) {
  const perTask = (key) => e.tasks.map((t) => e[key][t]);
  const taskLines = e.tasks.map((t, i) => line(t, taskColor(i)));
  const fleetLine = (label) => line(label, "#000", { width: 2.5 });
  drawChart("chart-success", [...taskLines, fleetLine("fleet")],
    [e.env_steps, ...perTask("success"), e.fleet_success], rateAxes);
  drawChart("chart-interventions", [...taskLines, fleetLine("fleet")],
    [e.env_steps, ...perTask("intervention_rate"), e.fleet_intervention_rate], smallRateAxes);
  drawChart("chart-fleet", [line("success", "#1f77b4", { width: 2 }), line("autonomous success", "#2ca02c", { width: 2 }),
    line("intervention rate", "#d62728", { width: 2 })],
  [e.env_steps, e.fleet_success, e.fleet_autonomous_success, e.fleet_intervention_rate], rateAxes);
}

// Published versions as points coloured by decision (one series per decision), the
// deployed one ringed, and the version most robots ran as a stepped line; joined on env steps.
function drawTimeline(timeline, episodes) {
  const decisions = Object.keys(DECISION_COLORS);
  const x = timeline.map((v) => v.env_steps ?? 0);
  const points = decisions.map((d) => timeline.map((v) => (v.decision === d ? v.version : null)));
  const deployed = timeline.map((v) => (v.deployed ? v.version : null));
  const joined = uPlot.join([[x, ...points, deployed], [episodes.env_steps, episodes.version_run]]);
  const dot = (label, color, size) => ({
    label, stroke: color, fill: color, paths: () => null, points: { show: true, size, fill: color, stroke: color },
  });
  const series = [
    ...decisions.map((d) => dot(d.replace("_", " "), DECISION_COLORS[d], 9)),
    { label: "deployed", stroke: "#000", paths: () => null, points: { show: true, size: 17, width: 2, fill: "transparent", stroke: "#000" } },
    line("version robots ran", "#1f77b4", { paths: uPlot.paths.stepped({ align: 1 }), width: 1.5 }),
  ];
  drawChart("chart-timeline", series, joined, {
    scales: { x: { time: false } }, axes: [stepsAxis, { label: "version", size: 50 }],
  });
  document.querySelector("[data-testid=chart-timeline] .empty").classList.toggle("hidden", timeline.length > 0);
}

function drawValidation(v) {
  const taskLines = v.tasks.map((t, i) => line(t, taskColor(i), { width: 1, dash: [4, 3] }));
  drawChart("chart-validation", [line("mean over tasks", "#000", { width: 2.5, points: { show: true, size: 6 } }), ...taskLines],
    [v.env_steps, v.success, ...v.tasks.map((t) => v.per_task[t])], rateAxes);
}

function drawMetrics(m) {
  drawChart("chart-throughput", [line("env steps/s", "#1f77b4", { scale: "steps" }),
    line("learner updates/s", "#ff7f0e", { scale: "updates" })], [m.time, m.env_steps_per_s, m.updates_per_s], {
    scales: { x: { time: true } },
    axes: [{}, { scale: "steps", label: "env steps/s", size: 60 },
      { scale: "updates", side: 1, label: "updates/s", size: 50, grid: { show: false } }],
  }, "time");
  drawChart("chart-latency", [
    line("episode→learner P50", "#2ca02c", { dash: [4, 3] }), line("episode→learner P99", "#2ca02c"),
    line("model→robot P50", "#9467bd", { dash: [4, 3] }), line("model→robot P99", "#9467bd")],
  [m.time, m.episode_to_learner_p50_s, m.episode_to_learner_p99_s, m.model_to_robot_p50_s, m.model_to_robot_p99_s],
  { scales: { x: { time: true } }, axes: [{}, { label: "seconds", size: 50 }] }, "time");
}

function renderSeries(series) {
  drawEpisodeCharts(series.episodes);
  drawTimeline(series.timeline, series.episodes);
  drawValidation(series.validation);
  drawMetrics(series.metrics);
}

// -- polling --------------------------------------------------------------------------------

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setConnection(error) {
  const el = document.getElementById("connection");
  el.className = error ? "badge offline" : "badge hidden";
  // The page keeps the last numbers it got: a finished run stays readable if the server stops.
  el.textContent = error ? `server unreachable, showing the last update (${error.message})` : "";
}

async function poll() {
  try {
    const state = await getJSON("/api/state");
    pollMs = 1000 * (state.poll_seconds || 2);
    renderState(state);
    if (state.revision !== seenRevision) {
      const series = await getJSON("/api/series");
      renderSeries(series);
      seenRevision = series.revision; // the files it was computed from: asked again until it catches up
    }
    document.body.dataset.revision = seenRevision; // tests wait on this
    setConnection(null);
  } catch (error) {
    setConnection(error);
    console.warn("lwd dashboard poll failed", error);
  } finally {
    setTimeout(poll, pollMs);
  }
}

window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries(charts)) {
    chart.plot.setSize({ width: chartWidth(document.getElementById(id)), height: 240 });
  }
});

poll();
