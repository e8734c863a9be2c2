"""Translation equivariance of convolution and the invariance pooling adds, measured layer by layer.

The tutorials' claim: a convolution is *equivariant* to translation (shift the input, the feature map shifts the
same way), and pooling makes the network *invariant* to small shifts (the output barely changes). Both are measured
here on real images, away from the borders, where the claim is meant:

- **equivariance error** of a layer for a shift of ``s`` pixels, when ``s`` is a multiple of the layer's effective
  stride ``S``: ``||f(shift_s x) - shift_{s/S} f(x)|| / ||f(x)||`` over the units whose receptive field lies inside
  the image and away from the strip the shift brings in (from :mod:`convolab.analysis`'s exact receptive fields).
  Convolution, ReLU and BatchNorm give float rounding (about 1e-7); so does a 2x2 max-pool for even shifts.
- **change** of a layer for a shift of ``s`` pixels: ``||f(shift_s x) - f(x)|| / ||f(x)||`` over the same units,
  the map not shifted back -- how invariant the layer is. Each pooling lowers it; a shift that is not a multiple of
  the stride breaks exact equivariance (Azulay & Weiss 2019: "Why do deep convolutional networks generalize so
  poorly to small image transformations?").
- for the logits: their relative change, and how many predictions stay the same.

Shifts are horizontal, with the image's own background (0 in pixel space) brought in at the left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = ["LayerShift", "EquivarianceResult", "measure_equivariance", "format_equivariance"]


@dataclass
class LayerShift:
    """One layer's figures: by shift (pixels) -> value; ``equivariance`` only for shifts the stride divides."""

    name: str
    type: str
    stride: int
    equivariance: dict[int, float] = field(default_factory=dict)
    change: dict[int, float] = field(default_factory=dict)
    units: int = 0  # interior units compared (per image, per channel) at the smallest shift


@dataclass
class EquivarianceResult:
    layers: list[LayerShift]
    shifts: list[int]
    logits_change: dict[int, float]
    same_prediction: dict[int, float]
    images: int

    def to_dict(self) -> dict:
        return asdict(self)


def _shift_pixels(raw: torch.Tensor, s: int) -> torch.Tensor:
    """uint8/float images shifted right by ``s`` pixels, zeros (the background) brought in at the left."""
    out = torch.zeros_like(raw)
    out[..., s:] = raw[..., :raw.shape[-1] - s]
    return out


def _interior(rf, width: int, s: int, shift_units: int) -> np.ndarray:
    """Units ``i`` (along W) whose field lies inside the image in both passes: unit ``i`` of the shifted pass reads
    pixels ``lo_i..hi_i``, which must not reach the strip ``[0, s)`` brought in, nor the padding; unit
    ``i - shift_units`` of the plain pass must be inside too."""
    lo, hi = rf.lo, rf.hi
    full = (hi - lo + 1) >= min(int(round(rf.r)), width)  # the whole nominal field, no padding reached
    n = len(lo)
    idx = np.arange(n)
    ok = full & (lo >= s) & (idx - shift_units >= 0)
    ok[ok] &= full[idx[ok] - shift_units]
    return idx[ok]


def measure_equivariance(model: nn.Module, raw_images: torch.Tensor, mean, std, shifts=(1, 2, 4)
                         ) -> EquivarianceResult:
    """Measure every leaf layer with a 4-D output, and the logits, for horizontal shifts of ``raw_images``.

    Args:
        model: an image classifier (eval mode is set; weights unchanged).
        raw_images: uint8 images ``[N, C, H, W]`` (their background must be 0: shifting brings in zeros).
        mean, std: the per-channel normalisation the model was trained with.
        shifts: pixel shifts (positive, smaller than the width).
    """
    from convolab.analysis.trace import trace_model

    model.eval()
    shifts = sorted({int(s) for s in shifts})
    width = raw_images.shape[-1]
    if not shifts or shifts[0] < 1 or shifts[-1] >= width:
        raise ValueError(f"shifts must be between 1 and {width - 1} pixels; got {shifts}")
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def norm(raw):
        return (raw.float() / 255 - m) / sd

    import copy

    trace, _ = trace_model(copy.deepcopy(model).to("meta"), tuple(raw_images.shape[1:]))  # shapes and fields only
    fields = {r.name: r for r in trace.rows if r.info is not None and len(r.out_shape) == 4}
    leaves = [(n, mod) for n, mod in model.named_modules() if n in fields and not list(mod.children())]
    outputs: dict[str, torch.Tensor] = {}
    hooks = [mod.register_forward_hook(lambda mod, args, out, n=n: outputs.__setitem__(n, out.detach().clone()))
             for n, mod in leaves]
    try:
        with torch.no_grad():
            base_logits = model(norm(raw_images))
            base = dict(outputs)
            shifted = {}
            for s in shifts:
                outputs.clear()
                shifted[s] = (model(norm(_shift_pixels(raw_images, s))), dict(outputs))
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for n, mod in leaves:
        row = fields[n]
        rf = row.info.rf[-1]  # the W axis
        stride = max(1, int(round(rf.j)))
        item = LayerShift(n, type(mod).__name__, stride)
        y = base[n]
        for s in shifts:
            ys = shifted[s][1][n]
            k = s // stride if s % stride == 0 else 0
            idx = _interior(rf, width, s, k)
            if len(idx) == 0:
                continue
            idx_t = torch.as_tensor(idx)
            ref = y[..., idx_t]
            scale = ref.norm().item() or 1.0
            item.change[s] = (ys[..., idx_t] - ref).norm().item() / scale
            if s % stride == 0:
                back = y[..., idx_t - k]
                item.equivariance[s] = (ys[..., idx_t] - back).norm().item() / (back.norm().item() or 1.0)
            if not item.units:
                item.units = len(idx)
        layers.append(item)
    logits_change, same = {}, {}
    for s in shifts:
        out = shifted[s][0]
        logits_change[s] = (out - base_logits).norm().item() / (base_logits.norm().item() or 1.0)
        same[s] = (out.argmax(1) == base_logits.argmax(1)).float().mean().item()
    return EquivarianceResult(layers, shifts, logits_change, same, len(raw_images))


def format_equivariance(result: EquivarianceResult) -> str:
    """The per-layer table: equivariance error where the stride divides the shift, change otherwise."""
    head = ["layer", "type", "stride"] + [f"equiv. error @{s}px" for s in result.shifts] + \
        [f"change @{s}px" for s in result.shifts]
    rows = [head]
    for r in result.layers:
        rows.append([r.name, r.type, str(r.stride)]
                    + [f"{r.equivariance[s]:.1e}" if s in r.equivariance else "-" for s in result.shifts]
                    + [f"{r.change[s]:.3f}" if s in r.change else "-" for s in result.shifts])
    rows.append(["logits", "", ""] + ["-" for _ in result.shifts]
                + [f"{result.logits_change[s]:.3f}" for s in result.shifts])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("same prediction: " + ", ".join(f"{100 * result.same_prediction[s]:.1f} % at {s}px"
                                                 for s in result.shifts) + f" ({result.images:,} test images)")
    return "\n".join(lines)
