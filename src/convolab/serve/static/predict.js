// Predict and overview: an image in (upload, drawing, test image), the probabilities and the model's view out, then
// every layer's feature maps in network order; a channel enlarged; a unit's receptive field on the input.
import { api, b64bytes, clearMessage, el, emit, fmtBig, fmtNum, guarded, on, pngSrc, qs, shapeText, showMessage, state } from "./common.js";

const VIEW = 224;  // CSS/internal size of the input view
const VIRIDIS_LUT = buildLut();

function buildLut() {
  const anchors = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const lut = new Uint8Array(256 * 3);
  for (let v = 0; v < 256; v++) {
    const x = (v / 255) * (anchors.length - 1), i = Math.min(anchors.length - 2, Math.floor(x)), f = x - i;
    for (let j = 0; j < 3; j++) lut[3 * v + j] = Math.round(anchors[i][j] + f * (anchors[i + 1][j] - anchors[i][j]));
  }
  return lut;
}

/** Paint channel `c` of a uint8 (n, H, W) block onto a canvas of H x W pixels; `mark` = [y, x] highlights a unit. */
function paintChannel(canvas, bytes, c, h, w, mark = null) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const off = c * h * w;
  for (let i = 0; i < h * w; i++) {
    const v = bytes[off + i];
    img.data[4 * i] = VIRIDIS_LUT[3 * v];
    img.data[4 * i + 1] = VIRIDIS_LUT[3 * v + 1];
    img.data[4 * i + 2] = VIRIDIS_LUT[3 * v + 2];
    img.data[4 * i + 3] = 255;
  }
  if (mark) {
    const i = mark[0] * w + mark[1];
    img.data.set([255, 40, 40, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

// --- sending an image ---
async function analyze(fields) {
  if (!state.ref) { showMessage("pick a model first (the sidebar)"); return; }
  const form = new FormData();
  form.append("ref", state.ref);
  for (const [k, v] of Object.entries(state.modelParams())) if (v !== null) form.append(k, v);
  for (const [k, v] of Object.entries(fields)) {
    if (v instanceof Blob) form.append(k, v, v.name || "image.png");
    else form.append(k, v);
  }
  const result = await api("/api/analyze", { method: "POST", body: form });
  clearMessage();
  state.analysis = result;
  state.imageId = result.image_id;
  state.lastUnit = null;
  renderResult(result);
  emit("analysis", result);
  return result;
}

let inputImage = null;  // HTMLImageElement of the model's view

function drawInput(box = null) {
  const canvas = document.getElementById("input-canvas");
  canvas.width = VIEW;
  canvas.height = VIEW;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, VIEW, VIEW);
  if (!inputImage) return;
  ctx.imageSmoothingEnabled = false;
  const [, h, w] = state.analysis.input.shape;
  const scale = VIEW / Math.max(h, w);
  ctx.drawImage(inputImage, 0, 0, w * scale, h * scale);
  if (box) {  // [y0, x0, y1, x1] in input pixels, end exclusive
    const [y0, x0, y1, x1] = box;
    ctx.strokeStyle = "#ff3b30";
    ctx.lineWidth = 2;
    ctx.strokeRect(x0 * scale + 1, y0 * scale + 1, (x1 - x0) * scale - 2, (y1 - y0) * scale - 2);
  }
}

function renderProbabilities(probs) {
  const box = document.getElementById("probs");
  box.replaceChildren();
  if (!probs || !probs.length) {
    box.append(el("p", { class: "hint", text: "this model does not give class probabilities" }));
    return;
  }
  for (const p of probs) {
    box.append(el("div", { class: "prob", "data-testid": "prob-row", "data-class": p.class, "data-index": p.index,
      "data-probability": p.probability },
    el("span", { class: "name", title: p.class, text: p.class }),
    el("div", { class: "bar" }, el("div", { style: `width:${(100 * p.probability).toFixed(2)}%` })),
    el("span", { class: "value", "data-testid": "prob-value", text: `${(100 * p.probability).toFixed(2)}%` })));
  }
}

function renderResult(result) {
  document.getElementById("predict-result").hidden = false;
  document.getElementById("unit-card").hidden = true;
  document.getElementById("enlarged").hidden = true;
  renderProbabilities(result.probabilities);
  document.getElementById("input-shape").textContent = `input ${shapeText(result.input.shape)} (after resizing and normalising)`;
  const t = result.timing_ms || {};
  document.getElementById("timing").textContent = Object.entries(t).map(([k, v]) => `${k} ${fmtNum(v, 1)} ms`).join(" · ");
  inputImage = new Image();
  inputImage.onload = () => drawInput();
  inputImage.src = pngSrc(result.input.png);
  const t0 = performance.now();
  renderOverview(result.layers || []);
  state.renderMs = performance.now() - t0;  // drawing every feature map in the page
  document.getElementById("timing").textContent += ` · drawn in ${fmtNum(state.renderMs, 1)} ms`;
}

// --- overview: one block per layer ---
const layerBytes = new Map();  // layer name -> Uint8Array of its sent channels
// a big network sends thousands of maps: each canvas is painted when it first scrolls near the view
const lazy = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    lazy.unobserve(e.target);
    e.target._paint();
    e.target.dataset.painted = "1";
  }
}, { rootMargin: "600px" });

function renderOverview(layers) {
  const box = document.getElementById("overview");
  lazy.disconnect();
  box.replaceChildren();
  layerBytes.clear();
  for (const layer of layers) {
    const meta = [`shape ${shapeText(layer.shape)}`];
    if (layer.params) meta.push(`${fmtBig(layer.params)} params`);
    if (layer.macs) meta.push(`${fmtBig(layer.macs)} MACs`);
    if (layer.receptive_field) meta.push(`RF ${layer.receptive_field.join("×")}`);
    if (layer.jump) meta.push(`jump ${layer.jump.join("×")}`);
    const block = el("div", { class: "layer", "data-testid": "layer", "data-name": layer.name, "data-type": layer.type },
      el("div", { class: "layer-head" },
        el("b", { text: layer.name }), el("span", { class: "type", text: layer.type }),
        el("span", { class: "meta", text: meta.join(" · ") })));
    if (layer.maps) {
      const m = layer.maps;
      const bytes = b64bytes(m.data);
      layerBytes.set(layer.name, bytes);
      const grid = el("div", { class: "fmaps", "data-testid": "fmap-grid", "data-channels": m.channels, "data-total": m.total });
      for (let c = 0; c < m.channels; c++) {
        const canvas = el("canvas", { "data-testid": "fmap", "data-channel": c, title: `channel ${c} (${fmtNum(m.min[c])} .. ${fmtNum(m.max[c])})` });
        canvas.width = m.width;
        canvas.height = m.height;
        canvas._paint = () => paintChannel(canvas, bytes, c, m.height, m.width);
        lazy.observe(canvas);
        canvas.addEventListener("click", () => enlarge(layer, c));
        grid.append(canvas);
      }
      block.append(grid);
      if (m.channels < m.total) block.append(el("p", { class: "small", "data-testid": "fmap-count", text: `${m.channels} of ${m.total} channels` }));
    } else if (layer.vector) {
      const v = layer.vector.values;
      const lo = Math.min(...v), hi = Math.max(...v), span = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
      const canvas = el("canvas", { "data-testid": "vector", title: `${v.length} of ${layer.vector.total} values, ${fmtNum(lo)} .. ${fmtNum(hi)}` });
      canvas.width = v.length;
      canvas.height = 1;
      const ctx = canvas.getContext("2d");
      const img = ctx.createImageData(v.length, 1);
      v.forEach((x, i) => {
        const t = x / span;  // blue (negative) .. white .. red (positive)
        const rgb = t >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 + t), 255 * (1 + t), 255];
        img.data.set([...rgb.map(Math.round), 255], 4 * i);
      });
      ctx.putImageData(img, 0, 0);
      block.append(el("div", { class: "vector" }, canvas));
      block.append(el("p", { class: "small", text: `${v.length} of ${layer.vector.total} values · min ${fmtNum(lo)} · max ${fmtNum(hi)}` }));
    } else {
      block.append(el("p", { class: "small", text: "no activations to show for this layer" }));
    }
    box.append(block);
  }
}

let enlargedAt = null;  // {layer, channel}

function enlarge(layer, channel, mark = null) {
  const m = layer.maps;
  enlargedAt = { layer, channel };
  const card = document.getElementById("enlarged");
  card.hidden = false;
  document.getElementById("enlarged-title").textContent = `${layer.name} · channel ${channel} · ${m.height}×${m.width}`;
  const canvas = document.getElementById("enlarged-canvas");
  paintChannel(canvas, layerBytes.get(layer.name), channel, m.height, m.width, mark);
  const scale = Math.max(1, Math.floor(320 / Math.max(m.height, m.width)));
  canvas.style.width = `${m.width * scale}px`;
  canvas.style.height = `${m.height * scale}px`;
}

async function unitAt(y, x) {
  const { layer, channel } = enlargedAt;
  const unit = await api("/api/unit", { method: "POST",
    // the layer's position tells apart two calls of one module (resnet's relu: one name, two fields)
    body: { ref: state.ref, image_id: state.imageId, layer: layer.name, index: state.analysis.layers.indexOf(layer),
            y, x, ...state.modelParams() } });
  state.lastUnit = { ...unit, channel };
  enlarge(layer, channel, [y, x]);
  drawInput(unit.box);
  const card = document.getElementById("unit-card");
  card.hidden = false;
  const info = document.getElementById("unit-info");
  info.replaceChildren(
    el("div", {}, el("b", { text: `${unit.layer}` }), ` [${channel}, ${unit.y}, ${unit.x}]`),
    el("div", {}, "receptive field ", el("b", { "data-testid": "unit-rf", text: unit.receptive_field.join("×") })),
    el("div", {}, "jump ", el("span", { "data-testid": "unit-jump", text: unit.jump.join("×") })),
    el("div", { text: `centre (${unit.center.map((v) => fmtNum(v, 1)).join(", ")})` }),
    el("div", { "data-testid": "unit-box", text: `box rows ${unit.box[0]}..${unit.box[2] - 1}, cols ${unit.box[1]}..${unit.box[3] - 1}` }),
  );
  document.getElementById("unit-patch").src = pngSrc(unit.patch_png);
}

// --- the drawing canvas: black background, white brush ---
function initDrawing() {
  const canvas = document.getElementById("draw-canvas");
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let last = null;
  const pos = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
  };
  const stroke = (p) => {
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineCap = "round";
    ctx.lineWidth = Number(document.getElementById("brush").value);
    ctx.beginPath();
    ctx.moveTo(...(last || p));
    ctx.lineTo(...p);
    ctx.stroke();
    last = p;
  };
  canvas.addEventListener("pointerdown", (e) => { canvas.setPointerCapture(e.pointerId); last = null; stroke(pos(e)); });
  canvas.addEventListener("pointermove", (e) => { if (e.buttons) stroke(pos(e)); });
  canvas.addEventListener("pointerup", () => { last = null; });
  document.getElementById("draw-clear").addEventListener("click", clear);
  const send = document.getElementById("draw-send");
  send.addEventListener("click", () => guarded(async () => {
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const file = new File([blob], "drawing.png", { type: "image/png" });
    await analyze({ file });
  }, send));
}

function initUpload() {
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => {
    if (input.files.length) guarded(() => analyze({ file: input.files[0] }));
  });
  const zone = document.getElementById("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) guarded(() => analyze({ file }));
  });
}

async function loadTestImages() {
  const box = document.getElementById("test-images");
  box.replaceChildren(el("span", { class: "hint", text: "loading…" }));
  let data;
  try {
    data = await api(`/api/test-images?${qs({ ref: state.ref, n: 12, ...state.modelParams() })}`);
  } catch (e) {
    box.replaceChildren(el("span", { class: "hint", "data-testid": "test-images-none", text: e.message }));
    return;
  }
  box.replaceChildren();
  for (const im of data.images) {
    const fig = el("figure", { "data-testid": "test-image", "data-index": im.index, "data-label": im.label, title: `test image ${im.index}: ${im.class}` },
      el("img", { src: pngSrc(im.png), alt: im.class }), el("figcaption", { text: im.class }));
    fig.addEventListener("click", () => guarded(() => analyze({ test_index: im.index })));
    box.append(fig);
  }
}

export function initPredict() {
  initDrawing();
  initUpload();
  document.getElementById("enlarged-close").addEventListener("click", () => { document.getElementById("enlarged").hidden = true; });
  document.getElementById("enlarged-canvas").addEventListener("click", (e) => {
    if (!enlargedAt) return;
    const canvas = e.currentTarget, r = canvas.getBoundingClientRect();
    const y = Math.min(canvas.height - 1, Math.floor(((e.clientY - r.top) / r.height) * canvas.height));
    const x = Math.min(canvas.width - 1, Math.floor(((e.clientX - r.left) / r.width) * canvas.width));
    guarded(() => unitAt(y, x));
  });
  document.getElementById("unit-explain").addEventListener("click", () => {
    const u = state.lastUnit;
    if (u) emit("explain-unit", { layer: u.layer, channel: u.channel, y: u.y, x: u.x });
  });
  on("model", () => {
    document.getElementById("predict-result").hidden = true;
    document.getElementById("overview").replaceChildren();
    document.getElementById("enlarged").hidden = true;
    loadTestImages();
  });
}
