// Shared state and helpers: the API client, the page's message line, base64 decoding, colour maps.

// What the views share, and what the browser tests read (window.__convolab).
export const state = {
  ref: null,            // the model reference in use ("run:...", "zoo:...", "spec:...")
  model: null,          // /api/model's answer
  analysis: null,       // /api/analyze's answer for the current image
  imageId: null,        // the server's key for the current image
  lastAttribution: null, // {method, target, class, height, width, data: [floats]}
  lastUnit: null,       // /api/unit's answer
  lastElastic: null,    // /api/elastic's answer
  graph: null,          // /api/graph's answer
  runs: [],
};
window.__convolab = state;

const listeners = {};
export function on(event, fn) { (listeners[event] ||= []).push(fn); }
export function emit(event, ...args) { for (const fn of listeners[event] || []) fn(...args); }

// --- the message line: API errors (4xx detail) and notes, never a blank page ---
let messageTimer = null;
export function showMessage(text, kind = "error") {
  const el = document.getElementById("message");
  el.textContent = text;
  el.className = "message" + (kind === "error" ? "" : " info");
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(messageTimer);
  if (kind !== "error") messageTimer = setTimeout(() => { el.hidden = true; }, 4000);
}
export function clearMessage() { document.getElementById("message").hidden = true; }

/** An error whose message is one line fit for the page (the API's `detail`). */
export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function detailOf(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {  // FastAPI's validation errors: [{loc, msg}]
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("; ");
  }
  if (status === 413) return "the upload is too large";
  if (status === 503) return "the server is busy: try again in a moment";
  return `the server answered ${status}`;
}

/** fetch + JSON; throws ApiError with the server's one-line detail. `body` may be FormData or a plain object. */
export async function api(path, { method = "GET", body = null } = {}) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) opts.body = body;
  else if (body !== null) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  let resp;
  try { resp = await fetch(path, opts); } catch (e) { throw new ApiError(0, "the server cannot be reached"); }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) throw new ApiError(resp.status, detailOf(resp.status, data));
  if (data === null) throw new ApiError(resp.status, `the server sent no JSON for ${path.split("?")[0]}`);
  return data;
}

/** Run an async action; any error becomes the page's message (and a busy flag on `button`). */
export async function guarded(action, button = null) {
  if (button) button.disabled = true;
  document.body.classList.add("busy");
  try {
    return await action();
  } catch (e) {
    showMessage(e instanceof ApiError ? e.message : `error: ${e.message || e}`);
    return undefined;
  } finally {
    if (button) button.disabled = false;
    document.body.classList.remove("busy");
  }
}

export function qs(params) {
  return new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined)).toString();
}

export function b64bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
export function b64float32(b64) {
  const bytes = b64bytes(b64);
  // little-endian float32, as the contract says; DataView so the host's byte order does not matter
  const view = new DataView(bytes.buffer);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}
export const pngSrc = (b64) => `data:image/png;base64,${b64}`;

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "testid") node.dataset.testid = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function fmtInt(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}
export function fmtBig(n) {
  if (n === null || n === undefined) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (a >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return String(n);
}
export function fmtNum(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
  return v.toFixed(digits);
}
export const shapeText = (s) => (s ? s.join("×") : "–");

// --- colour maps ---
/** viridis-like ramp, t in 0..1 -> [r, g, b] (a few anchor colours, linearly interpolated). */
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
export function viridis(t) {
  t = Math.min(1, Math.max(0, t));
  const x = t * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
  return VIRIDIS[i].map((c, j) => Math.round(c + f * (VIRIDIS[i + 1][j] - c)));
}
/** Diverging blue-white-red for signed values, v in -1..1. */
export function diverging(v) {
  v = Math.min(1, Math.max(-1, v));
  if (v >= 0) return [255, Math.round(255 * (1 - v * 0.85)), Math.round(255 * (1 - v))];
  return [Math.round(255 * (1 + v)), Math.round(255 * (1 + v * 0.6)), 255];
}

/** Draw H*W values onto a canvas (one pixel per value); `color(v)` -> [r,g,b]. */
export function paintGrid(canvas, values, height, width, color) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < height * width; i++) {
    const [r, g, b] = color(values[i]);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}
