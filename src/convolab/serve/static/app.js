// The explorer's entry point: tabs, the model picker, and the views wired to the shared state.
import { api, clearMessage, el, emit, fmtBig, guarded, qs, shapeText, showMessage, state } from "./common.js";
import { initRuns } from "./runs.js";
import { initPredict } from "./predict.js";
import { initElastic } from "./elastic.js";
import { initAttrib } from "./attrib.js";
import { initGraph } from "./graph.js";
import { initPlayground } from "./playground.js";

const TABS = ["runs", "predict", "elastic", "attrib", "graph", "playground"];

function showTab(name) {
  if (!TABS.includes(name)) name = "runs";
  for (const t of TABS) {
    document.getElementById(`view-${t}`).classList.toggle("active", t === name);
    document.querySelector(`.tab[data-tab="${t}"]`).classList.toggle("active", t === name);
  }
  document.body.dataset.tab = name;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  emit("tab", name);
}

/** Extra fields a zoo or spec model needs (its input size and class count); none for runs. */
export function modelParams(ref = state.ref) {
  if (!ref || ref.startsWith("run:")) return {};
  return {
    input: document.getElementById("input-size").value.trim() || null,
    classes: document.getElementById("num-classes").value.trim() || null,
  };
}
state.modelParams = modelParams;

async function fillPicker() {
  const select = document.getElementById("model-select");
  const [runs, models] = await Promise.all([
    api("/api/runs").catch((e) => { showMessage(e.message); return { runs: [] }; }),
    api("/api/models").catch((e) => { showMessage(e.message); return { zoo: [], examples: [] }; }),
  ]);
  const keep = select.value;
  select.replaceChildren();
  if (runs.runs.length) {
    const g = el("optgroup", { label: "Runs" });
    for (const r of runs.runs) g.append(el("option", { value: r.ref, text: `${r.id} (${r.model}, ${r.dataset})` }));
    select.append(g);
  }
  const families = {};
  for (const m of models.zoo || []) (families[m.family || "zoo"] ||= []).push(m);
  for (const [family, ms] of Object.entries(families)) {
    const g = el("optgroup", { label: `Zoo: ${family} (fresh weights)` });
    for (const m of ms) g.append(el("option", { value: `zoo:${m.name}`, text: `${m.name}${m.task && m.task !== "classification" ? ` (${m.task})` : ""}` }));
    select.append(g);
  }
  if ((models.examples || []).length) {
    const g = el("optgroup", { label: "Spec examples" });
    for (const s of models.examples) g.append(el("option", { value: s, text: s.replace(/^spec:/, "") }));
    select.append(g);
  }
  if (keep && [...select.options].some((o) => o.value === keep)) select.value = keep;
  state.runs = runs.runs;
  emit("runs", runs.runs);
  return runs.runs;
}

/** Load a model by reference: /api/model, then tell every view. */
export async function loadModel(ref) {
  const info = await api(`/api/model?${qs({ ref, ...modelParams(ref) })}`);
  state.ref = ref;
  state.model = info;
  state.analysis = null;
  state.imageId = null;
  const box = document.getElementById("model-info");
  box.replaceChildren(
    el("div", {}, el("b", { text: info.name }), ` (${info.kind}, ${info.task})`),
    el("div", { text: `input ${shapeText(info.input_size)} · ${info.classes.length} classes` }),
    el("div", { text: `${fmtBig(info.params)} params · ${fmtBig(info.macs)} MACs` }),
    el("div", { text: `${info.layers.length} layers, ${info.conv_layers.length} convolutions` }),
  );
  box.dataset.ref = ref;
  clearMessage();
  emit("model", info);
  return info;
}
state.loadModel = loadModel;

function pickedRef() {
  const spec = document.getElementById("spec-input").value.trim();
  if (spec) return spec.startsWith("spec:") ? spec : `spec:${spec}`;
  return document.getElementById("model-select").value;
}

async function main() {
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
  initPlayground();   // pure JS: works before (and without) any model
  initRuns({ refreshPicker: fillPicker });
  initPredict();
  initElastic({ showTab });
  initAttrib();
  initGraph();
  const loadBtn = document.getElementById("load-model");
  loadBtn.addEventListener("click", () => guarded(() => loadModel(pickedRef()), loadBtn));
  document.getElementById("model-select").addEventListener("change", () => {
    document.getElementById("spec-input").value = "";
    guarded(() => loadModel(pickedRef()), loadBtn);
  });
  document.getElementById("spec-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter") guarded(() => loadModel(pickedRef()), loadBtn);
  });
  showTab(location.hash.slice(1) || "runs");
  const runs = await guarded(fillPicker);
  // ?ref= (and ?input=, ?classes= for zoo/spec) in the address pick the model; else the first run, else the first zoo model
  const params = new URLSearchParams(location.search);
  const wanted = params.get("ref");
  if (params.get("input")) document.getElementById("input-size").value = params.get("input");
  if (params.get("classes")) document.getElementById("num-classes").value = params.get("classes");
  const first = wanted || (runs && runs.length ? runs[0].ref : document.getElementById("model-select").value);
  if (first) {
    if (wanted && wanted.startsWith("spec:")) document.getElementById("spec-input").value = wanted;
    else if ([...document.getElementById("model-select").options].some((o) => o.value === first)) {
      document.getElementById("model-select").value = first;
    }
    await guarded(() => loadModel(first));
  }
  document.body.dataset.ready = "1";
}

main();
