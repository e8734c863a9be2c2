// Runs: the table of runs with their summaries; a run's curves (loss, accuracy, learning rate), streamed live while
// the run trains; two runs side by side.
import { api, el, fmtBig, guarded, on, state } from "./common.js";
import { drawChart, svgEl } from "./chart.js";

const COLORS = { train: "#2f6fde", val: "#e8590c", step: "#2f6fde", lr: "#7048e8" };
const panels = new Map();  // run id -> {run, epochs, steps, source, charts}
let picked = [];           // ids ticked for the side-by-side view (at most two)

export const runPath = (id) => id.split("/").map(encodeURIComponent).join("/");

function pct(v) { return typeof v === "number" ? `${(100 * v).toFixed(2)}%` : "–"; }

function renderTable(runs) {
  const body = document.querySelector('[data-testid="runs-table"] tbody');
  body.replaceChildren();
  if (!runs.length) {
    body.append(el("tr", {}, el("td", { colspan: 9, class: "hint", text: "no runs are served: start `convolab serve RUN_FOLDER` (zoo and spec models still work)" })));
    return;
  }
  for (const r of runs) {
    const s = r.summary || {};
    const box = el("input", { type: "checkbox", "data-testid": "run-pick", title: "compare" });
    box.checked = picked.includes(r.id);
    box.addEventListener("click", (e) => { e.stopPropagation(); togglePick(r.id, box.checked); });
    const row = el("tr", { "data-testid": "run-row", "data-run": r.id, class: panels.has(r.id) ? "selected" : null },
      el("td", {}, box),
      el("td", { text: r.id }),
      el("td", { text: r.model || "–" }),
      el("td", { text: r.dataset || "–" }),
      el("td", {}, el("span", { class: `status ${r.status}`, "data-testid": "run-status", text: r.status })),
      el("td", { text: `${r.epochs_done ?? "–"} / ${r.epochs ?? "–"}` }),
      el("td", { text: pct(s.test_accuracy) }),
      el("td", { text: pct(s.best_val_accuracy) }),
      el("td", { text: fmtBig(s.params) }),
    );
    row.addEventListener("click", () => { picked = []; openRuns([r.id]); });
    body.append(row);
  }
}

function togglePick(id, on_) {
  picked = picked.filter((p) => p !== id);
  if (on_) picked.push(id);
  if (picked.length > 2) picked = picked.slice(-2);
  for (const b of document.querySelectorAll('[data-testid="run-pick"]')) {
    b.checked = picked.includes(b.closest("tr").dataset.run);
  }
  if (picked.length) openRuns(picked);
}

function closePanel(id) {
  const p = panels.get(id);
  if (p && p.source) p.source.close();
  panels.delete(id);
}

async function openRuns(ids) {
  for (const id of [...panels.keys()]) if (!ids.includes(id)) closePanel(id);
  const box = document.getElementById("run-curves");
  box.replaceChildren();
  for (const id of ids) {
    const run = state.runs.find((r) => r.id === id);
    if (!run) continue;
    const panel = el("div", { class: "run-panel card", "data-testid": "run-panel", "data-run": id });
    const charts = {
      loss: svgEl("svg", { class: "chart", "data-testid": "chart-loss" }),
      acc: svgEl("svg", { class: "chart", "data-testid": "chart-accuracy" }),
      lr: svgEl("svg", { class: "chart", "data-testid": "chart-lr" }),
    };
    const live = el("span", { "data-testid": "run-live" });
    panel.append(el("h3", {}, `${id} `, el("span", { text: `${run.model} on ${run.dataset} · ` }), live),
      el("div", { class: "charts" }, charts.loss, charts.acc, charts.lr));
    box.append(panel);
    let p = panels.get(id);
    if (!p) {
      p = { run, epochs: [], steps: [], source: null };
      panels.set(id, p);
      const data = await guarded(() => api(`/api/runs/${runPath(id)}/metrics`));
      if (!data) continue;
      p.epochs = data.epochs || [];
      p.steps = data.steps || [];
    }
    p.charts = charts;
    p.live = live;
    redraw(p);
    if (run.status === "running" && !p.source) stream(p);
    else live.textContent = run.status === "running" ? "● live" : run.status;
  }
  for (const row of document.querySelectorAll('[data-testid="run-row"]')) {
    row.classList.toggle("selected", ids.includes(row.dataset.run));
  }
}

function redraw(p) {
  const ep = p.epochs;
  const xy = (key, xs = ep, xkey = "epoch") => xs.filter((r) => typeof r[key] === "number").map((r) => [r[xkey], r[key]]);
  // steps are drawn against fractional epochs so they share the epoch axis
  const perEpoch = {};
  for (const s of p.steps) perEpoch[s.epoch] = Math.max(perEpoch[s.epoch] || 0, s.step);
  const epochStart = {};
  let prev = 0;
  for (const e of Object.keys(perEpoch).map(Number).sort((a, b) => a - b)) { epochStart[e] = prev; prev = perEpoch[e]; }
  const stepX = (s) => {
    const start = epochStart[s.epoch] ?? 0, end = perEpoch[s.epoch] || s.step;
    return s.epoch - 1 + (s.step - start) / Math.max(1, end - start);
  };
  const stepSeries = (key) => p.steps.filter((s) => typeof s[key] === "number").map((s) => [stepX(s), s[key]]);
  drawChart(p.charts.loss, { title: "loss", series: [
    { name: "step", color: COLORS.step, points: stepSeries("loss"), faint: true },
    { name: "train", color: COLORS.train, points: xy("train_loss") },
    { name: "val", color: COLORS.val, points: xy("val_loss") },
  ] });
  drawChart(p.charts.acc, { title: "accuracy", series: [
    { name: "train", color: COLORS.train, points: xy("train_accuracy") },
    { name: "val", color: COLORS.val, points: xy("val_accuracy") },
  ] });
  const lrSteps = stepSeries("lr");
  drawChart(p.charts.lr, { title: "learning rate", logY: true, series: [
    lrSteps.length ? { name: "lr", color: COLORS.lr, points: lrSteps } : { name: "lr", color: COLORS.lr, points: xy("lr") },
  ] });
  p.charts.loss.dataset.epochs = String(ep.length);
}

function stream(p) {
  // the stream skips the rows we hold; /metrics thins steps to 2000, so past that the last step number stands in
  const last = p.steps[p.steps.length - 1];
  const fromStep = p.steps.length < 2000 || !last ? p.steps.length : last.step;
  const url = `/api/runs/${runPath(p.run.id)}/stream?from_epoch=${p.epochs.length}&from_step=${fromStep}`;
  const source = new EventSource(url);
  p.source = source;
  p.live.textContent = "● live";
  p.live.className = "status running";
  let pending = false;
  const schedule = () => {  // one redraw per frame however many rows arrive
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; if (p.charts) redraw(p); });
  };
  source.addEventListener("epoch", (e) => { p.epochs.push(JSON.parse(e.data)); schedule(); });
  source.addEventListener("step", (e) => { p.steps.push(JSON.parse(e.data)); schedule(); });
  source.addEventListener("done", () => {
    source.close();
    p.source = null;
    p.live.textContent = "finished";
    p.live.className = "status finished";
    refresh();
  });
  source.onerror = () => {
    // the browser would reconnect with the first URL and get rows twice: reopen from the rows held instead
    source.close();
    p.source = null;
    p.live.textContent = "reconnecting…";
    setTimeout(() => {
      if (panels.get(p.run.id) === p && !p.source) stream(p);
    }, 2000);
  };
}

let refreshPicker = async () => state.runs;

/** Re-read /api/runs (the picker's fill does it and announces "runs"). */
export async function refresh() { await refreshPicker(); }

export function initRuns(opts) {
  refreshPicker = opts.refreshPicker;
  on("runs", (runs) => {
    renderTable(runs);
    for (const [id, p] of panels) {
      const r = runs.find((x) => x.id === id);
      if (!r) continue;
      p.run = r;
      if (r.status === "running" && !p.source && p.charts) stream(p);  // a run that started training again
    }
  });
  on("tab", (name) => { if (name === "runs" && document.body.dataset.ready) guarded(refresh); });
  // new runs and status changes show up while the tab is open
  setInterval(() => {
    if (document.body.dataset.tab === "runs" && document.body.dataset.ready && !document.hidden) refresh().catch(() => {});
  }, 15000);
}
