"""Receptive fields along one spatial axis, two ways at once.

**Nominal** (what the tutorials and Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill 2019, compute): borders ignored, every unit alike.
For a layer l with kernel k_l, stride s_l, padding p_l and dilation d_l, starting from the input
(r_0 = 1, j_0 = 1, start_0 = 0):

    r_l     = r_(l-1) + (k_l - 1) * d_l * j_(l-1)          receptive field size
    j_l     = j_(l-1) * s_l                               effective stride ("jump")
    start_l = start_(l-1) + ((k_l - 1) * d_l / 2 - p_l) * j_(l-1)   centre of the first unit's field

Where paths meet (a residual add, an Inception concat) the field of a unit is the union of the
paths' fields: with u = start - (r - 1)/2 and v = start + (r - 1)/2 per path, the merged field runs
from min(u) to max(v). Paths with different jumps, or whose centres differ, are "misaligned": the
result is still the union, and a warning says so.

**Exact** (what an impulse measurement sees): for every unit i of the axis, the first and last
input pixel it depends on (``lo[i]``, ``hi[i]``), following the real borders: padding contributes
nothing, windows are clipped to the map, upsampling and adaptive pooling follow PyTorch's index
rules. This is what ``--verify`` compares with the gradient of a unit with respect to the input.

Both are written by hand: no library follows receptive fields through branches (see DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["AxisRF", "EMPTY_LO", "EMPTY_HI"]

# A unit that depends on no input pixel (a padding unit) has the empty interval [EMPTY_LO, EMPTY_HI].
EMPTY_LO = np.iinfo(np.int64).max // 4
EMPTY_HI = -EMPTY_LO


@dataclass
class AxisRF:
    """The receptive field of every unit along one spatial axis of a tensor."""

    lo: np.ndarray  # (n,) int64: first input pixel unit i depends on (exact, borders followed)
    hi: np.ndarray  # (n,) int64: last input pixel unit i depends on
    r: float = 1.0  # nominal receptive field size (borders ignored)
    j: float = 1.0  # nominal effective stride: input pixels between neighbouring units
    start: float = 0.0  # nominal centre of unit 0's field, in input pixels (negative: it reaches into padding)
    global_context: bool = False  # a global path (squeeze-excitation, global pooling) was merged in
    irregular: bool = False  # units are not alike (upsampling, uneven adaptive pooling): nominal figures approximate
    notes: list[str] = field(default_factory=list)

    @classmethod
    def input(cls, n: int) -> AxisRF:
        idx = np.arange(n, dtype=np.int64)
        return cls(lo=idx, hi=idx.copy())

    @property
    def size(self) -> int:
        return len(self.lo)

    # -- layers ------------------------------------------------------------------------------
    def window(self, kernel: int, stride: int, padding: int, dilation: int, n_out: int) -> AxisRF:
        """A convolution or pooling window (also adaptive pooling with even windows)."""
        # Exact: unit o reads input units o*s - p + t*d, t = 0..k-1, those inside the map.
        taps = np.arange(n_out, dtype=np.int64)[:, None] * stride - padding + np.arange(kernel)[None, :] * dilation
        lo, hi = self._gather(taps)
        r = self.r + (kernel - 1) * dilation * self.j
        start = self.start + ((kernel - 1) * dilation / 2 - padding) * self.j
        return replace(self, lo=lo, hi=hi, r=r, j=self.j * stride, start=start, notes=list(self.notes))

    def transposed_window(self, kernel: int, stride: int, padding: int, dilation: int, n_out: int) -> AxisRF:
        """A transposed convolution: output o receives input i when o = i*s - p + t*d for some tap t."""
        num = np.arange(n_out, dtype=np.int64)[:, None] + padding - np.arange(kernel)[None, :] * dilation
        ok = (num % stride == 0)
        taps = np.where(ok, num // stride, -1)
        lo, hi = self._gather(taps)
        # Nominal: an output unit hears at most ceil(k*d/s) neighbouring inputs; unit 0 the valid ones at its left.
        first = [t for t in taps[0] if 0 <= t] if n_out else []
        span = (math.ceil((kernel - 1) * dilation / stride))
        r = self.r + span * self.j
        start = self.start + (np.mean(first) if first else 0.0) * self.j
        return replace(self, lo=lo, hi=hi, r=r, j=self.j / stride, start=float(start),
                       irregular=self.irregular or stride > 1, notes=list(self.notes))

    def adaptive(self, n_out: int) -> AxisRF:
        """Adaptive pooling: output i pools input [floor(i*n/m), ceil((i+1)*n/m)) (PyTorch's rule)."""
        n = self.size
        if n % n_out == 0:
            k = n // n_out
            return self.window(k, k, 0, 1, n_out)
        starts = (np.arange(n_out) * n) // n_out
        ends = -((-(np.arange(n_out) + 1) * n) // n_out)  # ceil
        kmax = int((ends - starts).max())
        taps = starts[:, None] + np.arange(kmax)[None, :]
        taps = np.where(taps < ends[:, None], taps, -1)
        lo, hi = self._gather(taps)
        out = replace(self, lo=lo, hi=hi, r=self.r + (kmax - 1) * self.j, j=self.j * n / n_out,
                      start=self.start + (kmax - 1) / 2 * self.j, irregular=True, notes=list(self.notes))
        return out

    def interpolate(self, n_out: int, mode: str, align_corners: bool | None, scale: float | None) -> AxisRF:
        """Upsampling by ``F.interpolate``: which input units each output unit reads (PyTorch's index rules)."""
        n = self.size
        o = np.arange(n_out, dtype=np.float64)
        if mode in ("nearest", "nearest-exact"):
            ratio = (1.0 / scale) if scale else n / n_out
            src = np.floor((o + 0.5) * ratio) if mode == "nearest-exact" else np.floor(o * ratio)
            i0 = np.minimum(src.astype(np.int64), n - 1)
            taps = i0[:, None]
            reach = 0
        elif mode in ("linear", "bilinear", "trilinear"):
            if align_corners:
                ratio = (n - 1) / (n_out - 1) if n_out > 1 else 0.0
                src = o * ratio
            else:
                ratio = (1.0 / scale) if scale else n / n_out
                src = np.maximum((o + 0.5) * ratio - 0.5, 0.0)
            i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
            i1 = np.minimum(i0 + 1, n - 1)
            lam = src - i0
            taps = np.stack([i0, np.where(lam > 0, i1, -1)], axis=1)
            reach = 1
        else:
            raise NotImplementedError(f"interpolate mode {mode!r}")
        lo, hi = self._gather(taps)
        factor = n_out / n
        return replace(self, lo=lo, hi=hi, r=self.r + reach * self.j, j=self.j / factor,
                       irregular=self.irregular or factor != 1, notes=list(self.notes))

    def pad(self, left: int, right: int) -> AxisRF:
        """Constant padding (negative values crop)."""
        lo, hi = self.lo, self.hi
        if left < 0:
            lo, hi = lo[-left:], hi[-left:]
        if right < 0:
            lo, hi = lo[:len(lo) + right], hi[:len(hi) + right]
        lo = np.concatenate([np.full(max(left, 0), EMPTY_LO), lo, np.full(max(right, 0), EMPTY_LO)])
        hi = np.concatenate([np.full(max(left, 0), EMPTY_HI), hi, np.full(max(right, 0), EMPTY_HI)])
        return replace(self, lo=lo, hi=hi, start=self.start - left * self.j, notes=list(self.notes))

    def slice(self, start: int, stop: int, step: int) -> AxisRF:
        return replace(self, lo=self.lo[start:stop:step], hi=self.hi[start:stop:step],
                       start=self.start + start * self.j, j=self.j * step, notes=list(self.notes))

    def broadcast_to(self, n: int) -> AxisRF:
        """A size-1 axis broadcast against a size-n one (e.g. a squeeze-excitation gate)."""
        if self.size == n:
            return self
        return replace(self, lo=np.repeat(self.lo, n), hi=np.repeat(self.hi, n), notes=list(self.notes))

    # -- paths meeting -----------------------------------------------------------------------
    @staticmethod
    def merge(paths: list[AxisRF], n: int) -> AxisRF:
        """Union of the fields of several paths that meet elementwise (add, mul) or by concatenation."""
        local = [p for p in paths if p.size == n] or paths
        broadcast = [p for p in paths if p.size != n]
        lo = np.minimum.reduce([p.broadcast_to(n).lo for p in paths])
        hi = np.maximum.reduce([p.broadcast_to(n).hi for p in paths])
        # Nominal union over the local (non-broadcast) paths, per Araujo et al.
        u = min(p.start - (p.r - 1) / 2 for p in local)
        v = max(p.start + (p.r - 1) / 2 for p in local)
        notes = sorted({note for p in paths for note in p.notes})
        jumps = {p.j for p in local}
        centres = {p.start for p in local}
        if len(jumps) > 1:
            notes.append(f"paths with different effective strides meet ({', '.join(f'{x:g}' for x in sorted(jumps))})")
        elif len(centres) > 1:
            notes.append("misaligned paths meet: their fields' centres differ by "
                         f"{max(centres) - min(centres):g} pixels")
        return AxisRF(lo=lo, hi=hi, r=v - u + 1, j=max(jumps), start=(u + v) / 2,
                      global_context=any(p.global_context for p in paths) or bool(broadcast and n > 1),
                      irregular=any(p.irregular for p in paths), notes=notes)

    # -- helpers -----------------------------------------------------------------------------
    def _gather(self, taps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Min of ``lo`` and max of ``hi`` over each row of input indices; out-of-map taps contribute nothing."""
        n = self.size
        valid = (taps >= 0) & (taps < n)
        safe = np.clip(taps, 0, max(n - 1, 0))
        lo = np.where(valid, self.lo[safe], EMPTY_LO).min(axis=1)
        hi = np.where(valid, self.hi[safe], EMPTY_HI).max(axis=1)
        return lo.astype(np.int64), hi.astype(np.int64)

    def clipped(self, i: int, n_input: int) -> tuple[int, int] | None:
        """Unit i's exact field clipped to the input, or None when it depends on no pixel."""
        lo, hi = int(self.lo[i]), int(self.hi[i])
        if lo > hi:
            return None
        return max(lo, 0), min(hi, n_input - 1)
