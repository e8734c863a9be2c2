// Explain a unit (CNN Explainer's elastic view): a convolution's window sliding over each input channel, the
// element-wise products, their sums, the bias and the output; an activation, a pooling window or the softmax with
// their arithmetic.
import { api, b64bytes, diverging, el, fmtNum, guarded, on, pngSrc, state } from "./common.js";

const EXPLAINABLE = /Conv\dd|ReLU|GELU|SiLU|Sigmoid|Tanh|ELU|Hardswish|Hardsigmoid|Mish|Softplus|MaxPool|AvgPool/;
const SHOWN_CHANNELS = 12;  // input channels drawn in full (the sum counts all of them)
const MIN_CELL = 14;        // px per unit of the input maps (at least; small maps get more)

let animation = null;

function layerChoices() {
  const a = state.analysis;
  if (a) return a.layers.filter((l) => EXPLAINABLE.test(l.type) && l.maps).map((l) => l.name).concat(["softmax"]);
  return state.model ? [...state.model.conv_layers, "softmax"] : [];
}

function fillLayers() {
  const sel = document.getElementById("el-layer");
  const keep = sel.value;
  sel.replaceChildren(...layerChoices().map((n) => el("option", { value: n, text: n })));
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
}

function numTable(rows, testid) {
  const flat = rows.flat();
  const span = Math.max(...flat.map(Math.abs)) || 1;
  const table = el("table", { class: "num", "data-testid": testid });
  for (const r of rows) {
    const tr = el("tr");
    for (const v of r) {
      const [cr, cg, cb] = diverging(v / span);
      tr.append(el("td", { style: `background:rgb(${cr},${cg},${cb})`, text: fmtNum(v, 2) }));
    }
    table.append(tr);
  }
  return table;
}

/** The input map a window slides over: channel `c` of layer `name` from the analysis (or the input image). */
function inputMapCanvas(name, c) {
  const a = state.analysis;
  const canvas = el("canvas");
  if (name === "input" || !a) {
    const [, h, w] = a.input.shape;
    canvas.width = w;
    canvas.height = h;
    const img = new Image();
    const ready = new Promise((resolve) => {
      img.onload = () => { canvas.getContext("2d").drawImage(img, 0, 0); resolve(); };
    });
    img.src = pngSrc(a.input.png);
    return { canvas, h, w, ready };
  }
  const layer = a.layers.find((l) => l.name === name);
  const m = layer && layer.maps;
  if (!m || c >= m.channels) return null;
  const bytes = b64bytes(m.data);
  canvas.width = m.width;
  canvas.height = m.height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(m.width, m.height);
  for (let i = 0; i < m.height * m.width; i++) {
    const v = bytes[c * m.height * m.width + i];
    img.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  return { canvas, h: m.height, w: m.width, ready: Promise.resolve() };
}

const pair = (v, fallback) => (v === undefined || v === null ? [fallback, fallback] : [].concat(v, v).slice(0, 2));

/** The window's geometry: kernel (kh, kw), stride, padding, dilation, and the taps' offsets from its origin. */
function geometry(r) {
  const w = r.window || {};
  const grid = r.kind === "conv" ? r.in_channels[0].kernel : r.patch;  // (kh, kw)
  const kh = grid.length, kw = grid[0].length;
  const [sh, sw] = pair(w.stride, 1), [ph, pw] = pair(w.padding, 0), [dh, dw] = pair(w.dilation, 1);
  const pos = r.positions || [];
  const origin = r.origin || (pos.length ? [Math.min(...pos.map((p) => p[0])), Math.min(...pos.map((p) => p[1]))] : [0, 0]);
  // the server's tap positions (input-map coordinates) relative to the window's origin; else the dilated grid
  const taps = pos.length === kh * kw
    ? pos.map(([y, x]) => [y - origin[0], x - origin[1]])
    : Array.from({ length: kh * kw }, (_, i) => [Math.floor(i / kw) * dh, (i % kw) * dw]);
  const span = [Math.max(...taps.map((t) => t[0])) + 1, Math.max(...taps.map((t) => t[1])) + 1];
  return { kh, kw, sh, sw, ph, pw, span, taps, origin };
}

/** Canvas showing the input map enlarged with the window drawn on it; returns {node, draw([y0, x0])}. */
function windowView(map, g) {
  const padY = g.ph, padX = g.pw;  // room for windows that hang over the border (zero padding)
  const CELL = Math.max(MIN_CELL, Math.floor(160 / Math.max(map.h + 2 * padY, map.w + 2 * padX)));  // small maps larger
  const view = el("canvas", { "data-testid": "el-window" });
  view.width = (map.w + 2 * padX) * CELL;
  view.height = (map.h + 2 * padY) * CELL;
  const ctx = view.getContext("2d");
  let at = g.origin;
  const draw = ([y0, x0]) => {
    at = [y0, x0];
    ctx.fillStyle = "#f0f2f5";
    ctx.fillRect(0, 0, view.width, view.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(map.canvas, padX * CELL, padY * CELL, map.w * CELL, map.h * CELL);
    ctx.fillStyle = "rgba(232, 89, 12, 0.3)";
    for (const [ty, tx] of g.taps) ctx.fillRect((x0 + tx + padX) * CELL, (y0 + ty + padY) * CELL, CELL, CELL);
    ctx.strokeStyle = "#e8590c";
    ctx.lineWidth = 2;
    ctx.strokeRect((x0 + padX) * CELL + 1, (y0 + padY) * CELL + 1, g.span[1] * CELL - 2, g.span[0] * CELL - 2);
  };
  const scale = Math.min(1, 220 / Math.max(view.width, view.height));
  view.style.width = `${view.width * scale}px`;
  view.style.height = `${view.height * scale}px`;
  map.ready.then(() => draw(at));  // the input image decodes asynchronously: draw again once it is there
  return { node: view, draw };
}

/** Every window origin in raster order (the slide), from the layer's output size. */
function slide(g, layerName) {
  const layer = state.analysis && state.analysis.layers.find((l) => l.name === layerName);
  if (!layer || layer.shape.length !== 3) return [g.origin];
  const [, oh, ow] = layer.shape;
  const out = [];
  for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) out.push([y * g.sh - g.ph, x * g.sw - g.pw]);
  return out;
}

function renderConv(box, r) {
  const g = geometry(r);
  const sumOfSums = r.in_channels.reduce((s, c) => s + c.sum, 0);
  box.append(el("div", { class: "el-total", "data-testid": "el-total" },
    `Σ over ${r.in_channels.length} input channel${r.in_channels.length > 1 ? "s" : ""} `,
    el("span", { "data-testid": "el-sum", text: fmtNum(sumOfSums, 4) }), " + bias ",
    el("span", { "data-testid": "el-bias", text: fmtNum(r.bias ?? 0, 4) }), " = ",
    el("b", { "data-testid": "el-output", text: fmtNum(r.output, 4) }),
    el("span", { class: "small", text: `   (the layer computed ${fmtNum(r.actual, 4)}; input: ${r.input_layer})` })));
  const views = [];
  const channels = el("div", { class: "el-channels" });
  for (const ch of r.in_channels.slice(0, SHOWN_CHANNELS)) {
    const card = el("div", { class: "el-channel", "data-testid": "el-in-channel", "data-channel": ch.channel });
    card.append(el("div", { class: "small", text: `input channel ${ch.channel}` }));
    const map = inputMapCanvas(r.input_layer, ch.channel);
    if (map) {
      const v = windowView(map, g);
      views.push(v);
      card.append(v.node);
    }
    card.append(el("div", { class: "el-grids" },
      numTable(ch.patch, "el-patch"), el("span", { class: "op", text: "⊙" }),
      numTable(ch.kernel, "el-kernel"), el("span", { class: "op", text: "=" }),
      numTable(ch.products, "el-products")));
    card.append(el("div", { class: "small" }, "Σ products = ", el("b", { text: fmtNum(ch.sum, 4) })));
    channels.append(card);
  }
  box.append(channels);
  if (r.in_channels.length > SHOWN_CHANNELS) {
    box.append(el("p", { class: "small", text: `${SHOWN_CHANNELS} of ${r.in_channels.length} input channels shown; the sum counts all` }));
  }
  for (const v of views) v.draw(g.origin);
  return { positions: slide(g, r.layer || document.getElementById("el-layer").value), views, final: g.origin };
}

/** The output map of the explained layer (channel `c`) with unit (y, x) marked. */
function outputMark(layerName, c, y, x) {
  const map = inputMapCanvas(layerName, c);
  if (!map) return null;
  const g = { ph: 0, pw: 0, taps: [[0, 0]], span: [1, 1], origin: [y, x] };
  return windowView(map, g).node;
}

function renderSimple(box, r) {
  const y = r.y ?? Number(document.getElementById("el-y").value);
  const x = r.x ?? Number(document.getElementById("el-x").value);
  const c = r.channel ?? Number(document.getElementById("el-channel").value);
  const figure = (node, caption) => (node ? el("figure", { class: "el-channel" }, node, el("figcaption", { text: caption })) : null);
  if (r.kind === "activation") {
    const input = r.input_layer ? inputMapCanvas(r.input_layer, c) : null;
    const inView = input ? windowView(input, { ph: 0, pw: 0, taps: [[0, 0]], span: [1, 1], origin: [y, x] }).node : null;
    box.append(el("div", { class: "el-total", "data-testid": "el-total" },
      `${r.function}${r.formula ? ` = ${r.formula}` : ""}:  ${r.function}(`, el("span", { text: fmtNum(r.input, 4) }), ") = ",
      el("b", { "data-testid": "el-output", text: fmtNum(r.output, 4) })),
    el("div", { class: "el-channels" }, figure(inView, `input: ${r.input_layer}, channel ${c}`),
      figure(outputMark(r.layer, c, y, x), `output: ${r.layer}, channel ${c}`)));
  } else if (r.kind === "pool") {
    const input = r.input_layer ? inputMapCanvas(r.input_layer, c) : null;
    const inView = input ? windowView(input, geometry(r)).node : null;
    box.append(el("div", { class: "el-total", "data-testid": "el-total" }, `${r.op} over the window = `,
      el("b", { "data-testid": "el-output", text: fmtNum(r.output, 4) })),
    el("div", { class: "el-channels" }, figure(inView, `input: ${r.input_layer}, channel ${c}`),
      el("div", { class: "el-channel" }, el("div", { class: "el-grids" }, numTable(r.patch, "el-patch"),
        el("span", { class: "op", text: `→ ${r.op} →` }), el("b", { text: fmtNum(r.output, 4) }))),
      figure(outputMark(r.layer, c, y, x), `output: ${r.layer}, channel ${c}`)));
  } else if (r.kind === "softmax") {
    const classes = (state.model && state.model.classes) || [];
    const table = el("table", { class: "num", "data-testid": "el-softmax" },
      el("tr", {}, ...["class", "logit z", "exp(z)", "exp(z) / Σ", "probability"].map((h) => el("th", { text: h }))));
    r.logits.forEach((z, i) => table.append(el("tr", {},
      el("td", { text: classes[i] ?? String(i) }), el("td", { text: fmtNum(z, 4) }), el("td", { text: fmtNum(r.exp[i], 4) }),
      el("td", { text: `${fmtNum(r.exp[i], 4)} / ${fmtNum(r.sum, 4)}` }), el("td", { text: fmtNum(r.probabilities[i], 4) }))));
    box.append(el("div", { class: "el-total", "data-testid": "el-total" }, `Σ exp(z) = `,
      el("b", { "data-testid": "el-output", text: fmtNum(r.sum, 4) })), table);
  }
}

async function explain() {
  if (!state.imageId) throw new Error("send an image first (Predict & overview)");
  const layer = document.getElementById("el-layer").value;
  const channel = Number(document.getElementById("el-channel").value);
  const y = Number(document.getElementById("el-y").value);
  const x = Number(document.getElementById("el-x").value);
  const r = await api("/api/elastic", { method: "POST",
    body: { ref: state.ref, image_id: state.imageId, layer, channel, y, x, ...state.modelParams() } });
  state.lastElastic = r;
  stopAnimation();
  const box = document.getElementById("elastic");
  box.replaceChildren();
  box.dataset.kind = r.kind;
  if (r.kind === "conv") animation = { ...renderConv(box, r), timer: null };
  else renderSimple(box, r);
}

function stopAnimation() {
  if (animation && animation.timer) clearInterval(animation.timer);
  if (animation) animation.timer = null;
}

/** Slide the window over every position, then come back to the chosen unit. */
function play() {
  if (!animation) return;
  stopAnimation();
  const { positions, views, final } = animation;
  const stepMs = Math.max(20, Math.min(250, 6000 / positions.length));
  let i = 0;
  animation.timer = setInterval(() => {
    if (i >= positions.length) { stopAnimation(); for (const v of views) v.draw(final); return; }
    for (const v of views) v.draw(positions[i]);
    i += 1;
  }, stepMs);
}

export function initElastic({ showTab }) {
  const go = document.getElementById("el-go");
  go.addEventListener("click", () => guarded(explain, go));
  document.getElementById("el-play").addEventListener("click", play);
  on("model", fillLayers);
  on("analysis", fillLayers);
  on("explain-unit", ({ layer, channel, y, x }) => {
    fillLayers();
    document.getElementById("el-layer").value = layer;
    document.getElementById("el-channel").value = channel;
    document.getElementById("el-y").value = y;
    document.getElementById("el-x").value = x;
    showTab("elastic");
    guarded(explain, go);
  });
}
