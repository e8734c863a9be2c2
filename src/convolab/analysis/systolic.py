"""The hardware view: each conv/linear layer as a matrix product on a systolic array, and a roofline bound.

A convolution is a matrix product once its input is unrolled (im2col), per group ``g``:

    A (M x K) @ B (K x N),   M = batch * H_out * W_out,   K = C_in/g * kh * kw,   N = C_out/g

(``groups`` such products per layer). A linear layer is one product with M = batch (times any leading
dims), K = in_features, N = out_features; a ``matmul`` op is one product per batch entry.

The analytical model is SCALE-Sim's (Samajdar et al., "A Systematic Methodology for Characterizing
Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020). A dataflow maps two of the three
dimensions onto the array's rows (``Sr``) and columns (``Sc``) and streams the third in time (``T``):

    weight stationary (WS):  Sr = K, Sc = N, T = M   (B's tiles sit in the PEs, A's rows stream through)
    output stationary (OS):  Sr = M, Sc = N, T = K   (each PE accumulates one output)

An ``R x C`` array runs the product in ``ceil(Sr/R) * ceil(Sc/C)`` folds, each costing

    2R + C + T - 2 cycles

— derived cycle by cycle (see ``simulate_ws``/``simulate_os``, which count exactly this):

* WS: R cycles to shift a fold's weight tile down into the array; then the input row ``m`` enters PE row
  ``r`` at cycle ``m + r`` (skewed), meets weight ``(r, c)`` at ``m + r + c`` and the finished sum leaves
  the bottom of column ``c`` at ``m + R - 1 + c``; the last (m = T-1, c = C-1) leaves at ``T + R + C - 3``,
  so streaming takes ``T + R + C - 2`` cycles: ``R + (T + R + C - 2)`` in all.
* OS: ``A[r, k]`` enters from the left at ``k + r`` and ``B[k, c]`` from the top at ``k + c``; they meet in
  PE ``(r, c)`` at ``k + r + c``; the last MAC is at ``T + R + C - 3`` (``T + R + C - 2`` cycles), then R cycles
  shift the accumulated outputs out of the bottom edge.

As in SCALE-Sim, a partial fold (fewer than R rows or C columns of work) costs as much as a full one, folds run
one after another, and the accumulation of WS partial sums across K-folds is free (it happens in the output
buffer). Utilisation is ``MACs / (cycles * R * C)``.

The roofline bound (Williams, Waterman & Patterson, CACM 2009): a layer can go no faster than
``min(peak FLOP/s, intensity * bandwidth)`` where ``intensity = FLOPs / bytes moved`` (its input, weights and
output read or written once, float32).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["MatmulShape", "HardwareLayer", "layer_matmuls", "fold_count", "array_cycles", "simulate_ws",
           "simulate_os", "simulate", "measure_machine", "Machine", "hardware_rows", "format_hardware",
           "parse_array", "DATAFLOWS"]

DATAFLOWS = ("ws", "os")
_MAX_ARRAY_SIDE = 4096
_FLOAT32 = 4


@dataclass(frozen=True)
class MatmulShape:
    """One layer's work as ``repeats`` products of (M x K) @ (K x N) (``repeats`` = groups, or matmul batch)."""

    name: str
    type: str
    m: int
    k: int
    n: int
    repeats: int = 1
    input_elements: int = 0  # elements of the layer's input it reads (for the roofline)
    weight_elements: int = 0  # parameters (weights and bias)
    output_elements: int = 0

    @property
    def macs(self) -> int:
        return self.repeats * self.m * self.k * self.n


def parse_array(text: str) -> tuple[int, int]:
    """``"16x16"`` -> (16, 16) (rows, columns). ValueError on anything else."""
    parts = text.lower().split("x")
    try:
        rows, cols = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--array must be ROWSxCOLS with positive sizes, e.g. 16x16; got {text!r}") from None
    if not (1 <= rows <= _MAX_ARRAY_SIDE and 1 <= cols <= _MAX_ARRAY_SIDE):
        raise ValueError(f"--array {text!r}: rows and columns must be 1 to {_MAX_ARRAY_SIDE}")
    return rows, cols


def _check_dataflow(dataflow: str) -> None:
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}; got {dataflow!r}")


def _mapping(m: int, k: int, n: int, dataflow: str) -> tuple[int, int, int]:
    """(Sr, Sc, T): the dimensions on the array's rows, on its columns, and in time."""
    _check_dataflow(dataflow)
    return (k, n, m) if dataflow == "ws" else (m, n, k)


def fold_count(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    """``ceil(Sr/R) * ceil(Sc/C)``: how many times the array is refilled for one (M x K) @ (K x N)."""
    sr, sc, _ = _mapping(m, k, n, dataflow)
    return math.ceil(sr / rows) * math.ceil(sc / cols)


def array_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    """Cycles of one (M x K) @ (K x N) on an R x C array: ``folds * (2R + C + T - 2)`` (module docstring)."""
    if min(m, k, n) < 1:
        raise ValueError(f"matrix sizes must be positive, got M={m}, K={k}, N={n}")
    _, _, t = _mapping(m, k, n, dataflow)
    return fold_count(m, k, n, rows, cols, dataflow) * (2 * rows + cols + t - 2)


# -- the cycle-by-cycle simulator (written by hand for teaching: registers per PE, one cycle per step) --------

def simulate_ws(a: np.ndarray, b: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, int]:
    """``a @ b`` on a weight-stationary R x C array, one cycle at a time. Returns (product, cycles).

    Per PE ``(r, c)``: a weight register ``w``, the input register ``x`` (passed right each cycle) and the
    partial-sum register ``p`` (passed down, ``p_out = p_in + x_in * w``). Exact for integer inputs.
    """
    m_total, k_total = a.shape
    n_total = b.shape[1]
    out = np.zeros((m_total, n_total), dtype=np.result_type(a, b))
    cycles = 0
    for k0 in range(0, k_total, rows):  # fold over K (array rows) ...
        for n0 in range(0, n_total, cols):  # ... and over N (array columns)
            tile = np.zeros((rows, cols), dtype=b.dtype)  # zero where the fold is partial
            kk, nn = min(rows, k_total - k0), min(cols, n_total - n0)
            tile[:kk, :nn] = b[k0:k0 + kk, n0:n0 + nn]
            # Phase 1: weights enter at the top and shift down one row per cycle (last row first).
            w = np.zeros((rows, cols), dtype=b.dtype)
            for step in range(rows):
                w = np.vstack([tile[rows - 1 - step][None, :], w[:-1]])
                cycles += 1
            assert np.array_equal(w, tile)
            # Phase 2: rows of A stream in from the left, skewed one cycle per array row.
            a_fold = np.zeros((m_total, rows), dtype=a.dtype)
            a_fold[:, :kk] = a[:, k0:k0 + kk]
            x = np.zeros((rows, cols), dtype=out.dtype)
            p = np.zeros((rows, cols), dtype=out.dtype)
            received = 0
            t = 0
            while received < m_total * cols:  # until the array has drained every column
                left = np.array([a_fold[t - r, r] if 0 <= t - r < m_total else 0 for r in range(rows)], dtype=x.dtype)
                x_in = np.hstack([left[:, None], x[:, :-1]])  # from the left neighbour's register
                p_in = np.vstack([np.zeros((1, cols), dtype=p.dtype), p[:-1]])  # from the PE above
                x, p = x_in, p_in + x_in * w
                for c in range(cols):  # the bottom edge: column c finishes input row t - (R-1) - c
                    mi = t - (rows - 1) - c
                    if 0 <= mi < m_total:
                        if c < nn:
                            out[mi, n0 + c] += p[rows - 1, c]
                        received += 1
                t += 1
                cycles += 1
    return out, cycles


def simulate_os(a: np.ndarray, b: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, int]:
    """``a @ b`` on an output-stationary R x C array, one cycle at a time. Returns (product, cycles).

    Per PE ``(r, c)``: registers ``x`` (from the left, passed right), ``y`` (from the top, passed down) and the
    accumulator ``acc += x_in * y_in``; after the last MAC the accumulators shift down out of the array.
    """
    m_total, k_total = a.shape
    n_total = b.shape[1]
    out = np.zeros((m_total, n_total), dtype=np.result_type(a, b))
    cycles = 0
    for m0 in range(0, m_total, rows):
        for n0 in range(0, n_total, cols):
            mm, nn = min(rows, m_total - m0), min(cols, n_total - n0)
            a_fold = np.zeros((rows, k_total), dtype=a.dtype)
            a_fold[:mm] = a[m0:m0 + mm]
            b_fold = np.zeros((k_total, cols), dtype=b.dtype)
            b_fold[:, :nn] = b[:, n0:n0 + nn]
            x = np.zeros((rows, cols), dtype=out.dtype)
            y = np.zeros((rows, cols), dtype=out.dtype)
            acc = np.zeros((rows, cols), dtype=out.dtype)
            macs_done = np.zeros((rows, cols), dtype=np.int64)
            t = 0
            while macs_done.min() < k_total:  # compute until every PE has done its K MACs
                left = np.array([a_fold[r, t - r] if 0 <= t - r < k_total else 0 for r in range(rows)], dtype=x.dtype)
                top = np.array([b_fold[t - c, c] if 0 <= t - c < k_total else 0 for c in range(cols)], dtype=y.dtype)
                x = np.hstack([left[:, None], x[:, :-1]])
                y = np.vstack([top[None, :], y[:-1]])
                acc = acc + x * y
                ks = t - np.arange(rows)[:, None] - np.arange(cols)[None, :]  # the k each PE sees this cycle
                macs_done += (ks >= 0) & (ks < k_total)
                t += 1
                cycles += 1
            for step in range(rows):  # drain: the bottom row leaves, the rest shift down
                r = rows - 1 - step  # the array row whose results reach the bottom edge now
                if r < mm:
                    out[m0 + r, n0:n0 + nn] = acc[rows - 1, :nn]
                acc = np.vstack([np.zeros((1, cols), dtype=acc.dtype), acc[:-1]])
                cycles += 1
    return out, cycles


def simulate(a: np.ndarray, b: np.ndarray, rows: int, cols: int, dataflow: str) -> tuple[np.ndarray, int]:
    """``simulate_ws`` or ``simulate_os`` by name."""
    _check_dataflow(dataflow)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"need A (M x K) and B (K x N), got {a.shape} and {b.shape}")
    return (simulate_ws if dataflow == "ws" else simulate_os)(a, b, rows, cols)


# -- layers as matrix products -------------------------------------------------------------------------------

def layer_matmuls(summary) -> tuple[list[MatmulShape], list[str]]:
    """The matrix products of a ``ModelSummary``'s traced rows (no second trace), and the names of rows with MACs
    that are not convolutions, linear layers or matmuls (left out, e.g. transposed convolutions).

    K comes from the trace's MAC count: a conv's MACs are ``M * C_out * (C_in/g * prod(k))``.
    """
    shapes, skipped = [], []
    for r in summary.trace.rows:
        if not r.macs:
            continue
        w = r.window or {}
        weights = r.params + r.frozen
        if "groups" in w and "output_padding" not in w:  # a convolution
            g = w["groups"]
            batch, c_out, spatial = r.out_shape[0], r.out_shape[1], r.out_shape[2:]
            m = batch * math.prod(spatial)
            k = r.macs // (m * c_out)
            c_in = k * g // math.prod(w["kernel_size"])
            # the input the windows read: ((out - 1) * s + d * (kw - 1) + 1) per axis, less the padding
            span = [max(1, (o - 1) * s + d * (kk - 1) + 1 - 2 * p) for o, s, d, kk, p in
                    zip(spatial, w["stride"], w["dilation"], w["kernel_size"], w["padding"])]
            shapes.append(MatmulShape(r.name, r.type, m, k, c_out // g, g, batch * c_in * math.prod(span), weights,
                                      math.prod(r.out_shape)))
        elif r.window is None and (r.type == "Linear" or "linear" in r.ops or r.type == "linear"):
            n = r.out_shape[-1]
            m = math.prod(r.out_shape[:-1])
            k = r.macs // (m * n)
            shapes.append(MatmulShape(r.name, r.type, m, k, n, 1, m * k, weights, m * n))
        elif r.type in ("matmul", "mm", "bmm") and len(r.out_shape) >= 2:
            reps = math.prod(r.out_shape[:-2])
            m, n = r.out_shape[-2], r.out_shape[-1]
            k = r.macs // (reps * m * n)
            shapes.append(MatmulShape(r.name, r.type, m, k, n, reps, reps * m * k + reps * k * n, weights,
                                      reps * m * n))
        else:
            skipped.append(r.name)
    return shapes, skipped


@dataclass(frozen=True)
class Machine:
    """Measured peak compute and memory bandwidth of this CPU."""

    peak_flops: float  # FLOP/s of a large float32 matmul
    bandwidth: float  # bytes/s of a large float32 copy (read + write counted)


def measure_machine(size: int = 2048, copy_elements: int = 1 << 25, repeats: int = 5) -> Machine:
    """Time a ``size``-square float32 matmul (``2 size^3`` FLOPs) and a copy of ``copy_elements`` floats
    (``8 * copy_elements`` bytes read and written); the best of ``repeats`` of each."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    peak = 2 * size**3 / best
    src, dst = torch.empty(copy_elements), torch.empty(copy_elements)
    src.fill_(1.0)
    dst.copy_(src)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return Machine(peak, 2 * _FLOAT32 * copy_elements / best)


@dataclass(frozen=True)
class HardwareLayer:
    """One layer's figures on the array (and on this CPU's roofline when a ``Machine`` is given)."""

    shape: MatmulShape
    cycles: int
    utilisation: float
    intensity: float  # FLOP per byte
    bound_flops: float | None  # min(peak, intensity * bandwidth)

    def to_dict(self) -> dict:
        s = self.shape
        return {"name": s.name, "type": s.type, "m": s.m, "k": s.k, "n": s.n, "repeats": s.repeats, "macs": s.macs,
                "cycles": self.cycles, "utilisation": self.utilisation, "intensity": self.intensity,
                "roofline_flops": self.bound_flops}


def hardware_rows(shapes: list[MatmulShape], rows: int, cols: int, dataflow: str,
                  machine: Machine | None = None) -> list[HardwareLayer]:
    """Cycles (``repeats * array_cycles``), utilisation, intensity and roofline bound of each product."""
    out = []
    for s in shapes:
        cycles = s.repeats * array_cycles(s.m, s.k, s.n, rows, cols, dataflow)
        moved = _FLOAT32 * (s.input_elements + s.weight_elements + s.output_elements)
        intensity = 2 * s.macs / moved
        bound = min(machine.peak_flops, intensity * machine.bandwidth) if machine else None
        out.append(HardwareLayer(s, cycles, s.macs / (cycles * rows * cols), intensity, bound))
    return out


def format_hardware(layers: list[HardwareLayer], rows: int, cols: int, dataflow: str,
                    machine: Machine | None = None, skipped: list[str] | None = None) -> str:
    """The per-layer table and totals that ``convolab summary --hardware`` prints."""
    header = ["Layer", "M", "K", "N", "x", "MACs", "Cycles", "Util", "FLOP/B"] + (["Roofline"] if machine else [])
    table = [header]
    for h in layers:
        s = h.shape
        row = [s.name, str(s.m), str(s.k), str(s.n), str(s.repeats), f"{s.macs:,}", f"{h.cycles:,}",
               f"{100 * h.utilisation:.1f}%", f"{h.intensity:.2f}"]
        if machine:
            row.append(f"{h.bound_flops / 1e9:.1f} GFLOP/s")
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
             for r in table]
    lines.insert(1, "-" * len(lines[0]))
    macs = sum(h.shape.macs for h in layers)
    cycles = sum(h.cycles for h in layers)
    lines.append("-" * len(lines[0]))
    lines.append(f"systolic array {rows}x{cols}, {dataflow.upper()} dataflow (SCALE-Sim's model: folds x "
                 f"(2R + C + T - 2) cycles per product, x = groups or batch): {cycles:,} cycles for {macs:,} MACs, "
                 f"utilisation {100 * macs / (cycles * rows * cols) if cycles else 0:.1f}%")
    if machine:
        flops = 2 * macs
        seconds = sum(2 * h.shape.macs / h.bound_flops for h in layers)
        lines.append(f"roofline on this CPU: peak {machine.peak_flops / 1e9:.1f} GFLOP/s (timed float32 matmul), "
                     f"bandwidth {machine.bandwidth / 1e9:.1f} GB/s (timed copy); these layers take at least "
                     f"{seconds * 1e6:.1f} us for {flops:,} FLOPs at batch 1")
    if skipped:
        lines.append("not a matrix product here (left out): " + ", ".join(skipped))
    return "\n".join(lines)
