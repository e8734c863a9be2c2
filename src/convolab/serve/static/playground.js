// Convolution playground: input size, kernel, stride, padding, dilation, groups and channels -> the output size by
// the formula, the parameter and MAC counts, and the window animated over the (padded) input grid. Pure JS.
import { state } from "./common.js";

/** floor((n + 2p - d(k-1) - 1) / s) + 1, as convolab.models._sizes.conv_output_size (may be <= 0). */
export function convOutputSize(n, k, s = 1, p = 0, d = 1) {
  return Math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1;
}

/** weights out*(in/groups)*k*k plus one bias per output channel. */
export function convParams({ k, groups, inCh, outCh }) {
  return outCh * (inCh / groups) * k * k + outCh;
}

/** one multiply-accumulate per weight per output position: out_h*out_w*out*(in/groups)*k*k. */
export function convMacs({ outSize, k, groups, inCh, outCh }) {
  return outSize * outSize * outCh * (inCh / groups) * k * k;
}

/** Validate settings; returns {error} or {outSize, params, macs}. */
export function playground(cfg) {
  const { n, k, s, p, d, groups, inCh, outCh } = cfg;
  const ints = { input: n, kernel: k, stride: s, dilation: d, groups, "in channels": inCh, "out channels": outCh };
  for (const [name, v] of Object.entries(ints)) {
    if (!Number.isInteger(v) || v < 1) return { error: `${name} must be a whole number >= 1 (got ${Number.isNaN(v) ? "nothing" : v})` };
  }
  if (!Number.isInteger(p) || p < 0) return { error: `padding must be a whole number >= 0 (got ${Number.isNaN(p) ? "nothing" : p})` };
  if (inCh % groups || outCh % groups) {
    return { error: `in channels (${inCh}) and out channels (${outCh}) must both be divisible by groups (${groups})` };
  }
  const outSize = convOutputSize(n, k, s, p, d);
  if (outSize < 1) {
    return { error: `the window does not fit: the dilated kernel spans ${d * (k - 1) + 1} but the padded input is ${n + 2 * p} (output size ${outSize})` };
  }
  return { outSize, params: convParams({ k, groups, inCh, outCh }), macs: convMacs({ outSize, k, groups, inCh, outCh }) };
}

const FIELDS = { n: "pg-n", k: "pg-k", s: "pg-s", p: "pg-p", d: "pg-d", groups: "pg-g", inCh: "pg-in", outCh: "pg-out" };
let timer = null;

function read() {
  const cfg = {};
  for (const [key, id] of Object.entries(FIELDS)) {
    const raw = document.getElementById(id).value.trim();
    cfg[key] = raw === "" ? NaN : Number(raw);
  }
  return cfg;
}

function drawFrame(ctx, cfg, res, t) {
  const { n, k, s, p, d } = cfg;
  const N = n + 2 * p, out = res.outSize;
  const W = ctx.canvas.width, H = ctx.canvas.height;
  ctx.clearRect(0, 0, W, H);
  const cell = Math.max(2, Math.min(28, Math.floor(Math.min((W * 0.55) / N, (H - 40) / N))));
  const ocell = Math.max(2, Math.min(28, Math.floor(Math.min((W * 0.35) / out, (H - 40) / out))));
  const ox = 10, oy = 28, gx = ox + N * cell + 40;
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#667085";
  ctx.fillText(`input ${n}×${n}${p ? ` + padding ${p}` : ""}`, ox, 16);
  ctx.fillText(`output ${out}×${out}`, gx, 16);
  const grid = cell >= 6;
  for (let y = 0; y < N; y++) {
    for (let x = 0; x < N; x++) {
      const pad = y < p || x < p || y >= p + n || x >= p + n;
      ctx.fillStyle = pad ? "#eef1f5" : "#c9d7f2";
      ctx.fillRect(ox + x * cell, oy + y * cell, cell - (grid ? 1 : 0), cell - (grid ? 1 : 0));
    }
  }
  const i = t % (out * out), oyi = Math.floor(i / out), oxi = i % out;
  // the window's taps: k x k cells, d apart, starting at (oyi*s, oxi*s) in the padded grid
  ctx.fillStyle = "rgba(232, 89, 12, 0.75)";
  for (let a = 0; a < k; a++) {
    for (let b = 0; b < k; b++) {
      ctx.fillRect(ox + (oxi * s + b * d) * cell, oy + (oyi * s + a * d) * cell, cell - (grid ? 1 : 0), cell - (grid ? 1 : 0));
    }
  }
  ctx.strokeStyle = "#e8590c";
  ctx.lineWidth = 2;
  const span = d * (k - 1) + 1;
  ctx.strokeRect(ox + oxi * s * cell, oy + oyi * s * cell, span * cell - 1, span * cell - 1);
  for (let y = 0; y < out; y++) {
    for (let x = 0; x < out; x++) {
      const done = y * out + x < i, now = y === oyi && x === oxi;
      ctx.fillStyle = now ? "#e8590c" : done ? "#7fa6ea" : "#eef1f5";
      ctx.fillRect(gx + x * ocell, oy + y * ocell, ocell - (ocell >= 6 ? 1 : 0), ocell - (ocell >= 6 ? 1 : 0));
    }
  }
}

export function update() {
  const cfg = read();
  const res = playground(cfg);
  const msg = document.getElementById("pg-message");
  const canvas = document.getElementById("pg-canvas");
  const ctx = canvas.getContext("2d");
  clearInterval(timer);
  state.playground = { cfg, ...res };
  if (res.error) {
    msg.textContent = res.error;
    msg.hidden = false;
    for (const id of ["pg-outsize", "pg-params", "pg-macs"]) document.getElementById(id).textContent = "–";
    document.getElementById("pg-formula").textContent = "";
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    return res;
  }
  msg.hidden = true;
  document.getElementById("pg-outsize").textContent = String(res.outSize);
  document.getElementById("pg-params").textContent = res.params.toLocaleString("en-US");
  document.getElementById("pg-macs").textContent = res.macs.toLocaleString("en-US");
  const { n, k, s, p, d } = cfg;
  document.getElementById("pg-formula").textContent =
    `⌊(${n} + 2·${p} − ${d}·(${k}−1) − 1) / ${s}⌋ + 1 = ⌊${n + 2 * p - d * (k - 1) - 1} / ${s}⌋ + 1 = ${res.outSize}`;
  let t = 0;
  drawFrame(ctx, cfg, res, t);
  const frames = res.outSize * res.outSize;
  const step = Math.max(30, Math.min(400, 8000 / frames));
  timer = setInterval(() => { t += 1; drawFrame(ctx, cfg, res, t); }, step);
  return res;
}

export function initPlayground() {
  for (const id of Object.values(FIELDS)) document.getElementById(id).addEventListener("input", update);
  state.playgroundApi = { convOutputSize, convParams, convMacs, playground, update };
  update();
}
