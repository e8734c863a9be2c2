// Line charts drawn by hand as SVG: a few series over a shared x axis, with ticks and a legend.
const NS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
  return node;
}

function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function tickText(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-2 || a >= 1e5)) return v.toExponential(0);
  return String(+v.toPrecision(3));
}

/**
 * Draw (or redraw) a chart into `svg`.
 * series: [{name, color, points: [[x, y], ...], dashed?, faint?}]; logY: log10 scale for positive values.
 * The svg's data-points holds the number of points drawn (the browser tests read it).
 */
export function drawChart(svg, { title, series, xLabel = "epoch", logY = false, width = 460, height = 170 }) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const m = { l: 46, r: 12, t: 20, b: 26 };
  const ty = (y) => (logY ? Math.log10(y) : y);
  const all = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0)));
  const head = svgEl("text", { x: m.l, y: 13, class: "title" });
  head.textContent = title;
  svg.append(head);
  svg.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
  if (!all.length) {
    const none = svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle" });
    none.textContent = "no data yet";
    svg.append(none);
    return;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => ty(p[1]))), Math.max(...all.map((p) => ty(p[1])))];
  if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 0.5; y1 += Math.abs(y1) * 0.1 || 0.5; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (width - m.l - m.r);
  const sy = (y) => height - m.b - ((ty(y) - y0) / (y1 - y0)) * (height - m.t - m.b);
  const axis = svgEl("g", { stroke: "#dde1e7" });
  for (const t of niceTicks(y0, y1, 4)) {
    const y = height - m.b - ((t - y0) / (y1 - y0)) * (height - m.t - m.b);
    axis.append(svgEl("line", { x1: m.l, x2: width - m.r, y1: y, y2: y }));
    const label = svgEl("text", { x: m.l - 4, y: y + 3, "text-anchor": "end", stroke: "none" });
    label.textContent = logY ? tickText(10 ** t) : tickText(t);
    axis.append(label);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    const x = sx(t);
    const label = svgEl("text", { x, y: height - m.b + 12, "text-anchor": "middle", stroke: "none" });
    label.textContent = tickText(t);
    axis.append(label);
  }
  const xl = svgEl("text", { x: width - m.r, y: height - 2, "text-anchor": "end", stroke: "none" });
  xl.textContent = xLabel;
  axis.append(xl);
  svg.append(axis);
  let legendX = width - m.r;
  for (const s of [...series].reverse()) {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0));
    if (!pts.length) continue;
    const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    svg.append(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": s.faint ? 1 : 2,
      "stroke-opacity": s.faint ? 0.35 : 1, "stroke-dasharray": s.dashed ? "5 3" : null,
      "data-series": s.name, "data-points": pts.length }));
    if (!s.faint && pts.length <= 60) {
      for (const [x, y] of pts) svg.append(svgEl("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: s.color }));
    }
    const label = svgEl("text", { x: legendX, y: 13, "text-anchor": "end", style: `fill:${s.color}` });
    label.textContent = s.name;
    svg.append(label);
    legendX -= 8 + 6 * s.name.length;
  }
}
