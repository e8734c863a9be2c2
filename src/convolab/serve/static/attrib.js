// Attributions (CAM family, gradient methods, occlusion, deconvnet, guided backpropagation) for the current image,
// the sanity check figure, and the kernels of any convolution as a grid.
import { api, b64float32, diverging, el, fmtNum, guarded, on, paintGrid, pngSrc, qs, state, viridis } from "./common.js";

// convolab.explain.attribution.METHODS (the contract's list)
export const METHODS = ["gradcam", "gradcam++", "cam", "saliency", "smoothgrad", "integrated-gradients", "occlusion",
  "deconvnet", "guided-backprop"];
const CAM_METHODS = ["cam", "gradcam", "gradcam++"];
const MAX_OUT = 64, MAX_IN = 16;  // kernels drawn: rows (output channels) x columns (input channels)

function fillControls() {
  const m = state.model;
  const method = document.getElementById("at-method");
  if (!method.options.length) method.append(...METHODS.map((n) => el("option", { value: n, text: n })));
  const target = document.getElementById("at-target");
  target.replaceChildren(el("option", { value: "", text: "the prediction" }),
    ...(m ? m.classes.map((c, i) => el("option", { value: i, text: `${i}: ${c}` })) : []));
  const convs = m ? m.conv_layers : [];
  document.getElementById("at-layer").replaceChildren(el("option", { value: "", text: "default (last features)" }),
    ...convs.map((n) => el("option", { value: n, text: n })));
  document.getElementById("k-layer").replaceChildren(...convs.map((n) => el("option", { value: n, text: n })));
  syncLayer();
}

function syncLayer() {
  const cam = CAM_METHODS.includes(document.getElementById("at-method").value);
  const layer = document.getElementById("at-layer");
  layer.disabled = !cam;
  if (!cam) layer.value = "";
}

async function attribute() {
  if (!state.imageId) throw new Error("send an image first (Predict & overview)");
  const method = document.getElementById("at-method").value;
  const t = document.getElementById("at-target").value;
  const layer = document.getElementById("at-layer").value;
  const r = await api("/api/attribution", { method: "POST", body: { ref: state.ref, image_id: state.imageId, method,
    target: t === "" ? null : Number(t), layer: layer || null, ...state.modelParams() } });
  const values = b64float32(r.map.data);
  state.lastAttribution = { method: r.method, target: r.target, class: r.class, height: r.map.height,
    width: r.map.width, data: Array.from(values) };
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const canvas = el("canvas", { "data-testid": "at-canvas" });
  const span = hi - lo || 1;
  paintGrid(canvas, values, r.map.height, r.map.width, (v) => viridis((v - lo) / span));
  const box = document.getElementById("attrib");
  box.replaceChildren(
    el("figure", {}, el("img", { src: pngSrc(r.overlay_png), "data-testid": "at-overlay", alt: "overlay" }),
      el("figcaption", { text: `${r.method} for ${r.class} (class ${r.target})` })),
    el("figure", {}, el("img", { src: pngSrc(r.map_png), "data-testid": "at-map", alt: "map" }),
      el("figcaption", { text: "the map" })),
    el("figure", {}, canvas, el("figcaption", { "data-testid": "at-stats",
      text: `${r.map.height}×${r.map.width} values, ${fmtNum(lo)} .. ${fmtNum(hi)}` })),
  );
}

async function sanity() {
  if (!state.imageId) throw new Error("send an image first (Predict & overview)");
  const method = document.getElementById("at-method").value;
  const r = await api("/api/sanity", { method: "POST",
    body: { ref: state.ref, image_id: state.imageId, method, ...state.modelParams() } });
  document.getElementById("attrib").append(el("figure", { class: "sanity" },
    el("img", { src: pngSrc(r.png), "data-testid": "at-sanity-img", alt: "sanity check" }),
    el("figcaption", { text: `sanity check (model randomisation) for ${method}: a faithful map changes as the weights are randomised` })));
}

async function kernels() {
  const layer = document.getElementById("k-layer").value;
  if (!layer) throw new Error("this model has no convolution");
  const r = await api(`/api/kernels?${qs({ ref: state.ref, layer, ...state.modelParams() })}`);
  const [O, I, kh, kw] = r.shape;
  const w = b64float32(r.data);
  const span = Math.max(Math.abs(r.min), Math.abs(r.max)) || 1;
  const rows = Math.min(O, MAX_OUT), cols = Math.min(I, MAX_IN);
  // one row per output channel, one column per input channel; one input channel: a flat grid of 16 a row
  const across = cols === 1 ? Math.min(rows, 16) : cols;
  const grid = el("div", { class: "kernel-grid", "data-testid": "kernel-grid", style: `grid-template-columns:repeat(${across}, 28px)` });
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) {
      const off = (o * I + i) * kh * kw;
      const c = el("canvas", { "data-testid": "kernel", title: `out ${o}, in ${i}` });
      paintGrid(c, w.subarray(off, off + kh * kw), kh, kw, (v) => diverging(v / span));
      grid.append(c);
    }
  }
  const box = document.getElementById("kernels");
  box.replaceChildren(el("p", { class: "small", text: `${layer}: ${O}×${I}×${kh}×${kw}, weights ${fmtNum(r.min)} .. ${fmtNum(r.max)} (blue negative, red positive)${rows < O || cols < I ? `; ${rows} of ${O} outputs × ${cols} of ${I} inputs shown` : ""}` }), grid);
}

export function initAttrib() {
  const go = document.getElementById("at-go");
  go.addEventListener("click", () => guarded(attribute, go));
  const san = document.getElementById("at-sanity");
  san.addEventListener("click", () => guarded(sanity, san));
  const k = document.getElementById("k-go");
  k.addEventListener("click", () => guarded(kernels, k));
  document.getElementById("at-method").addEventListener("change", syncLayer);
  on("model", () => { fillControls(); document.getElementById("attrib").replaceChildren(); document.getElementById("kernels").replaceChildren(); });
  fillControls();
}
