"""Check the analytic figures against execution.

* Shapes: every row's analytic output shape (the size formulas, traced on the meta device)
  against a real forward on the CPU.
* MACs: every leaf module's count, and the total, against ``torch.utils.flop_counter``
  (which counts FLOPs = 2 x MACs of its aten ops).
* Receptive fields: a gradient-impulse measurement. A float64 copy of the model gets positive
  weights that average their inputs (so no activation dies and no gradient underflows), max-pools
  run as average pools (the same windows, but every input gets a gradient), BatchNorm is the
  identity and dropout is off. The gradient of one output unit with respect to the input is then
  non-zero exactly on the pixels that unit depends on; its extent along each axis is compared with
  the analytic one, for the first, the centre and the last unit of the map.

Every mismatch is reported, never hidden.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from convolab.analysis.trace import Row, Trace, trace_model

__all__ = ["Verification", "verify", "measure_receptive_fields", "positive_averaging_copy"]


@dataclass
class Verification:
    shapes_checked: int = 0
    macs_checked: int = 0
    rf_checked: int = 0  # (row, unit, axis) extents compared
    rf_rows: list[str] = field(default_factory=list)
    flop_counter_macs: int = 0
    analytic_macs: int = 0
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict:
        return dict(ok=self.ok, shapes_checked=self.shapes_checked, macs_checked=self.macs_checked,
                    receptive_field_extents_checked=self.rf_checked, receptive_field_rows=self.rf_rows,
                    flop_counter_macs=self.flop_counter_macs, analytic_macs=self.analytic_macs,
                    mismatches=self.mismatches, notes=self.notes)


def _key_rows(rows: list[Row]) -> dict[tuple[str, int], Row]:
    seen: dict[str, int] = {}
    out = {}
    for r in rows:
        seen[r.name] = seen.get(r.name, 0) + 1
        out[(r.name, seen[r.name])] = r
    return out


def verify(model: nn.Module, analytic: Trace, *, rf_rows: str = "stages") -> Verification:
    """Verify ``analytic`` (a meta-device trace of ``model``) by running ``model`` for real on the CPU.

    ``rf_rows``: which rows get an impulse measurement — ``"stages"`` (the last row before each
    change of effective stride, and the feature map), ``"all"`` (every row with a field) or
    ``"none"`` (shapes and MACs only: the impulse runs in float64 and dominates the time).
    """
    model = copy.deepcopy(model).to("cpu").eval()
    result = Verification()
    input_shape = analytic.input_shape

    # 1. shapes against a real forward
    real, _ = trace_model(model, input_shape, device="cpu")
    real_rows = _key_rows(real.rows)
    for key, row in _key_rows(analytic.rows).items():
        if row.type == "-":
            continue
        other = real_rows.get(key)
        shape = row.expected_shape or row.out_shape
        if other is None:
            result.mismatches.append(f"shape: row {row.name} did not run in the real forward")
            continue
        result.shapes_checked += 1
        if tuple(shape) != tuple(other.out_shape):
            result.mismatches.append(f"shape: {row.name}: analytic {_fmt(shape)}, real forward {_fmt(other.out_shape)}")

    # 2. MACs against torch's flop counter (imported here: it pulls in torch._decomp and triton, ~0.25 s that
    # every `convolab` command would otherwise pay at start-up)
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand((1, *input_shape))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    result.flop_counter_macs = counter.get_total_flops() // 2
    result.analytic_macs = sum(r.macs for r in analytic.rows)
    if result.flop_counter_macs != result.analytic_macs:
        diff = result.analytic_macs - result.flop_counter_macs
        rel = abs(diff) / max(result.flop_counter_macs, 1)
        result.mismatches.append(f"MACs: total {result.analytic_macs:,} analytic vs {result.flop_counter_macs:,} "
                                 f"from torch.utils.flop_counter ({rel:.2%})")
    leaf_macs: dict[str, int] = {}
    for row in analytic.rows:
        if row.module_path == row.name:  # a leaf module call
            leaf_macs[row.name] = leaf_macs.get(row.name, 0) + row.macs
    for name, macs in leaf_macs.items():
        measured = sum(counts.get(f"{root}.{name}", {}).values()) // 2
        result.macs_checked += 1
        if measured != macs:
            result.mismatches.append(f"MACs: {name}: analytic {macs:,}, flop counter {measured:,}")
    ops = {str(op) for d in counts.values() for op in d}
    if analytic.uncounted:
        result.notes.append("ops not counted as MACs: " + ", ".join(f"{k} x{v}" for k, v in analytic.uncounted.items()))
    result.notes.append("flop counter ops: " + ", ".join(sorted(ops)) if ops else "flop counter saw no countable op")

    # 3. receptive fields against a gradient impulse
    if rf_rows != "none":
        measure_receptive_fields(model, analytic, result, rows=rf_rows)
    return result


def positive_averaging_copy(model: nn.Module) -> nn.Module:
    """A float64 copy whose every output is a positive weighted average of its inputs (see the module doc)."""
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                if m.running_mean is not None:
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0 - m.eps)  # (x - 0) / sqrt(var + eps) = x
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                continue
            for name, p in m.named_parameters(recurse=False):
                if p.dim() >= 2:  # conv / linear weight: (out, in, *k) -> rows of positive weights summing to 1
                    w = torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.5
                    w /= w.flatten(1).sum(1).view(-1, *([1] * (p.dim() - 1)))
                    p.copy_(w)
                elif name == "bias":
                    p.fill_(0.01)
                else:  # norm scales, layer-scale gammas: positive, varied
                    p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.5)
    return model


def measure_receptive_fields(model: nn.Module, analytic: Trace, result: Verification, rows: str = "stages") -> None:
    """Compare analytic per-unit extents with gradient-impulse measurements (see the module doc)."""
    probe = positive_averaging_copy(model)
    x = torch.rand((3, *analytic.input_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5
    x.requires_grad_(True)
    try:
        measured, tracer = trace_model(probe, analytic.input_shape, device="cpu", dtype=torch.float64, impulse=True,
                                       x=x)
    except NotImplementedError as e:
        result.mismatches.append(f"receptive field: cannot be measured ({e})")
        return
    outputs = {}
    seen: dict[str, int] = {}
    for row, out in zip([r for r in measured.rows if r.out_shape], tracer.outputs):
        seen[row.name] = seen.get(row.name, 0) + 1
        outputs[(row.name, seen[row.name])] = out
    keyed = _key_rows(analytic.rows)
    chosen = _choose_rows(analytic.rows, rows)
    spatial_in = analytic.input_shape[1:]
    for key in chosen:
        row = keyed[key]
        out = outputs.get(key)
        if out is None or row.info is None or not out.requires_grad:
            continue
        info = row.info
        units = []
        for b in range(3):
            unit = []
            for ax in info.axes:
                n = out.shape[ax]
                unit.append((0, n // 2, n - 1)[b])
            units.append(unit)
        grad_out = torch.zeros_like(out)
        for b, unit in enumerate(units):
            index: list = [slice(None)] * out.dim()
            index[0] = b
            for ax, i in zip(info.axes, unit):
                index[ax] = i
            grad_out[tuple(index)] = 1.0
        (grad,) = torch.autograd.grad(out, x, grad_out, retain_graph=True)
        result.rf_rows.append(row.name)
        for b, unit in enumerate(units):
            mask = grad[b].abs().sum(0) > 0  # (H, W) or (T, H, W): pixels unit b depends on
            for k, (axis_rf, i) in enumerate(zip(info.rf, unit)):
                other = tuple(d for d in range(mask.dim()) if d != k)
                hit = mask.any(dim=other) if other else mask
                idx = torch.nonzero(hit).flatten()
                got = (int(idx.min()), int(idx.max())) if len(idx) else None
                want = axis_rf.clipped(i, spatial_in[k])
                result.rf_checked += 1
                if got != want:
                    result.mismatches.append(f"receptive field: {row.name}, unit {i} of axis {k}: analytic "
                                             f"{_span(want)}, measured {_span(got)}")
        # Nominal size against the exact field of units that lie wholly inside the input.
        for k, axis_rf in enumerate(info.rf):
            if axis_rf.irregular or axis_rf.global_context:
                continue
            n_in = spatial_in[k]
            for i in range(axis_rf.size):
                left = axis_rf.start + i * axis_rf.j - (axis_rf.r - 1) / 2
                right = axis_rf.start + i * axis_rf.j + (axis_rf.r - 1) / 2
                if left >= 0 and right <= n_in - 1:
                    span = (int(axis_rf.lo[i]), int(axis_rf.hi[i]))
                    if span != (left, right):
                        result.mismatches.append(f"receptive field: {row.name}, unit {i} of axis {k}: nominal "
                                                 f"[{left:g}, {right:g}] but exact {_span(span)}")
    del tracer


def _choose_rows(rows: list[Row], which: str) -> list[tuple[str, int]]:
    keyed = list(_key_rows(rows).items())
    with_info = [(k, r) for k, r in keyed if r.info is not None and r.type != "-"]
    if which == "all":
        return [k for k, _ in with_info]
    # Stage ends: maps wider than one unit (global pools and gates are followed, not chosen).
    with_info = [(k, r) for k, r in with_info if any(a.size > 1 for a in r.info.rf)]
    chosen = []
    for (k, r), nxt in zip(with_info, with_info[1:] + [(None, None)]):
        if nxt[1] is None or [a.j for a in nxt[1].info.rf] != [a.j for a in r.info.rf]:
            chosen.append(k)
    # the last row whose map is wider than one unit: the model's feature map
    spatial = [k for k, r in with_info if any(a.size > 1 for a in r.info.rf)]
    if spatial and spatial[-1] not in chosen:
        chosen.append(spatial[-1])
    return chosen


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def _span(s) -> str:
    return "none" if s is None else f"[{s[0]}, {s[1]}]"
