// Graph: the traced architecture as SVG (boxes, edges as paths), pan by dragging, zoom with the wheel, a node's
// figures on click, and "Export SVG".
import { api, el, fmtBig, fmtInt, guarded, on, qs, shapeText, state } from "./common.js";
import { svgEl } from "./chart.js";

const COLORS = [
  [/^input$/, "#1d2330", "#fff"],
  [/Conv/, "#dbe7ff", "#1b4aa0"],
  [/Pool/, "#dff5e4", "#137333"],
  [/relu|gelu|silu|sigmoid|tanh|elu|hardswish|mish|softmax/i, "#fff0e0", "#a64000"],
  [/Norm/, "#eeeef2", "#444"],
  [/Linear/, "#efe7ff", "#5a2ea6"],
  [/Dropout|Flatten|Identity/, "#f6f7f9", "#666"],
];
const colorOf = (type) => (COLORS.find(([re]) => re.test(type)) || [null, "#fff7d6", "#6b5400"]).slice(1);

let view = { x: 0, y: 0, k: 1 };
let drawnRef = null;

function applyView(g) { g.setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`); }

function edgePath(a, b) {
  if (b.y >= a.y + a.h - 1) {  // below: bottom centre -> top centre
    const x0 = a.x + a.w / 2, y0 = a.y + a.h, x1 = b.x + b.w / 2, y1 = b.y, dy = (y1 - y0) / 2;
    return `M${x0},${y0} C${x0},${y0 + dy} ${x1},${y1 - dy} ${x1},${y1}`;
  }
  const x0 = a.x + a.w, y0 = a.y + a.h / 2, x1 = b.x, y1 = b.y + b.h / 2, dx = (x1 - x0) / 2;  // side by side
  return `M${x0},${y0} C${x0 + dx},${y0} ${x1 - dx},${y1} ${x1},${y1}`;
}

// An edge along the layout's route (bottom centre of the source, through the lane beside the layers a long edge
// skips, to the top centre of the target): smooth vertical curves between its points.
function routePath(points) {
  let d = `M${points[0][0]},${points[0][1]}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1], [x1, y1] = points[i], dy = (y1 - y0) / 2;
    d += x0 === x1 ? ` L${x1},${y1}` : ` C${x0},${y0 + dy} ${x1},${y1 - dy} ${x1},${y1}`;
  }
  return d;
}

function showNode(n) {
  const info = document.getElementById("graph-node");
  const rf = n.receptive_field ? [].concat(n.receptive_field).join("×") : "–";
  info.replaceChildren(el("h3", { "data-testid": "graph-node-name", text: n.name }), el("dl", {},
    el("dt", { text: "type" }), el("dd", { text: n.type }),
    el("dt", { text: "output shape" }), el("dd", { "data-testid": "graph-node-shape", text: shapeText(n.shape) }),
    el("dt", { text: "parameters" }), el("dd", { "data-testid": "graph-node-params", text: fmtInt(n.params) }),
    el("dt", { text: "MACs" }), el("dd", { "data-testid": "graph-node-macs", text: `${fmtInt(n.macs)} (${fmtBig(n.macs)})` }),
    el("dt", { text: "receptive field" }), el("dd", { "data-testid": "graph-node-rf", text: rf })));
  for (const r of document.querySelectorAll('[data-testid="graph-node"] rect')) r.setAttribute("stroke-width", 1);
  const g = document.querySelector(`[data-testid="graph-node"][data-id="${CSS.escape(String(n.id))}"] rect`);
  if (g) g.setAttribute("stroke-width", 3);
}

function render(data) {
  const box = document.getElementById("graph");
  const svg = svgEl("svg", { "data-testid": "graph-svg", xmlns: "http://www.w3.org/2000/svg", "data-width": data.width,
    "data-height": data.height });
  const g = svgEl("g", { class: "viewport" });
  const byId = new Map(data.nodes.map((n) => [n.id, n]));
  const edges = svgEl("g", { fill: "none", stroke: "#98a2b3", "stroke-width": 1.4 });
  data.edges.forEach(([from, to], i) => {
    const a = byId.get(from), b = byId.get(to), route = data.routes && data.routes[i];
    const d = route && route.length >= 2 ? routePath(route) : a && b ? edgePath(a, b) : null;
    if (d) edges.append(svgEl("path", { d, "data-testid": "graph-edge" }));
  });
  g.append(edges);
  for (const n of data.nodes) {
    const [fill, ink] = colorOf(n.type);
    const node = svgEl("g", { "data-testid": "graph-node", "data-id": n.id, "data-name": n.name, cursor: "pointer" });
    node.append(svgEl("rect", { x: n.x, y: n.y, width: n.w, height: n.h, rx: 6, fill, stroke: ink, "stroke-width": 1 }));
    const title = svgEl("text", { x: n.x + n.w / 2, y: n.y + n.h / 2 - 3, "text-anchor": "middle", "font-size": 11,
      "font-family": "system-ui, sans-serif", fill: ink, "font-weight": 600 });
    title.textContent = n.type === "input" ? "input" : n.type;
    const sub = svgEl("text", { x: n.x + n.w / 2, y: n.y + n.h / 2 + 10, "text-anchor": "middle", "font-size": 9,
      "font-family": "system-ui, sans-serif", fill: ink });
    sub.textContent = shapeText(n.shape);
    const tip = svgEl("title");
    tip.textContent = `${n.name} (${n.type})`;
    node.append(title, sub, tip);
    node.addEventListener("click", (e) => { e.stopPropagation(); showNode(n); });
    g.append(node);
  }
  svg.append(g);
  box.replaceChildren(svg);
  fit();
  // pan with drag, zoom with the wheel around the pointer
  let drag = null;
  svg.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false }; });
  svg.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (!drag.moved) {
      if (Math.hypot(e.clientX - drag.x, e.clientY - drag.y) < 4) return;
      drag.moved = true;  // a drag, not a click: capture the pointer now (capturing on press would steal the click)
      svg.setPointerCapture(e.pointerId);
    }
    view.x = drag.vx + e.clientX - drag.x;
    view.y = drag.vy + e.clientY - drag.y;
    applyView(g);
  });
  svg.addEventListener("pointerup", () => { drag = null; });
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
    const k = Math.min(8, Math.max(0.05, view.k * Math.exp(-e.deltaY * 0.0015)));
    view.x = px - ((px - view.x) * k) / view.k;
    view.y = py - ((py - view.y) * k) / view.k;
    view.k = k;
    applyView(g);
  }, { passive: false });
}

function fit() {
  const data = state.graph, svg = document.querySelector('[data-testid="graph-svg"]');
  if (!data || !svg) return;
  const r = svg.getBoundingClientRect();
  const w = r.width || 800, h = r.height || 600;
  const fitW = (w - 20) / Math.max(1, data.width), fitH = (h - 20) / Math.max(1, data.height);
  // the whole graph when it is small enough to read; a tall one at a readable scale from its top (pan down)
  view.k = Math.min(1.2, fitW, Math.max(fitH, 0.5));
  view.x = (w - data.width * view.k) / 2;
  view.y = 10;
  applyView(svg.querySelector("g.viewport"));
}

async function draw() {
  if (!state.ref) throw new Error("pick a model first (the sidebar)");
  const data = await api(`/api/graph?${qs({ ref: state.ref, ...state.modelParams() })}`);
  state.graph = data;
  drawnRef = state.ref;
  render(data);
  document.getElementById("graph-node").replaceChildren(el("p", { class: "hint",
    text: `${data.nodes.length} nodes, ${data.edges.length} edges: click one` }));
}

/** The graph as a standalone SVG document (the whole drawing, not the current pan/zoom). */
export function exportSvg() {
  const data = state.graph, svg = document.querySelector('[data-testid="graph-svg"]');
  if (!data || !svg) throw new Error("draw the graph first");
  const copy = svg.cloneNode(true);
  copy.setAttribute("viewBox", `0 0 ${data.width} ${data.height}`);
  copy.setAttribute("width", data.width);
  copy.setAttribute("height", data.height);
  copy.querySelector("g.viewport").removeAttribute("transform");
  copy.insertBefore(svgEl("rect", { width: "100%", height: "100%", fill: "#fff" }), copy.firstChild);
  const text = '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(copy);
  const name = `${(state.model && state.model.name) || "graph"}.svg`.replace(/[^\w.-]+/g, "_");
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "image/svg+xml" })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  return text;
}

export function initGraph() {
  const go = document.getElementById("graph-load");
  go.addEventListener("click", () => guarded(draw, go));
  document.getElementById("graph-fit").addEventListener("click", fit);
  document.getElementById("graph-export").addEventListener("click", () => guarded(async () => exportSvg()));
  on("tab", (name) => { if (name === "graph" && state.ref && drawnRef !== state.ref) guarded(draw, go); });
  on("model", () => {
    drawnRef = null;
    if (document.body.dataset.tab === "graph") guarded(draw, go);
  });
}
