"""``summarize``: a model's layers, parameters, MACs, memory and receptive fields, as data and as a table.

The figures come from one traced forward on the meta device (see ``trace.py``); ``verify=True``
checks them against execution (see ``verify.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from convolab.analysis.trace import InputTooSmallError, Row, Trace, trace_model
from convolab.analysis.verify import Verification
from convolab.analysis.verify import verify as verify_trace

__all__ = ["ModelSummary", "summarize", "looks_like_run", "build_stack", "parse_input", "format_side_by_side",
           "STACK_HELP"]

STACK_HELP = ("a layer stack such as 'conv5' or 'conv3,conv3' (convK[sS][pP][dD], poolK[sS], avgpoolK[sS], relu; "
              "channels kept at the input's, padding K//2 unless given)")
_STACK_ITEM = re.compile(r"^(conv|pool|maxpool|avgpool)(\d+)(?:s(\d+))?(?:p(\d+))?(?:d(\d+))?$|^relu$")


def parse_input(text: str) -> tuple[int, ...]:
    """``"3,224,224"`` -> (3, 224, 224); also ``(C, T, H, W)`` for clips. ValueError on anything else."""
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) not in (3, 4) or min(dims) < 1:
        raise ValueError(f"--input must be C,H,W (or C,T,H,W for clips) with positive sizes, e.g. 3,224,224; "
                         f"got {text!r}")
    # Bounds a real input has; past them torch's own size arithmetic overflows (a TypeError, not an answer).
    if max(dims) > _MAX_SIDE or _product(dims) > _MAX_ELEMENTS:
        raise ValueError(f"--input {text!r}: at most {_MAX_SIDE:,} per dimension and {_MAX_ELEMENTS:,} values in "
                         "all (an input of that size would not fit in memory)")
    return dims


_MAX_SIDE, _MAX_ELEMENTS = 1 << 16, 1 << 31
_MAX_STACK_NUMBER = 4096  # kernel size, stride, padding or dilation in a layer stack
_MAX_STACK_WEIGHTS = 1 << 28  # 1 GiB of float32 weights


def _product(dims: tuple[int, ...]) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def build_stack(spec: str, in_chans: int) -> nn.Sequential:
    """A plain stack of layers from a spec like ``"conv3,conv3"`` (the tutorials' 5x5-versus-two-3x3 example).

    Convolutions keep ``in_chans`` channels, so their weights are ``K*K*C*C`` (+ C biases) each.
    """
    layers: list[nn.Module] = []
    weights = 0
    for item in spec.replace(" ", "").split(","):
        m = _STACK_ITEM.match(item)
        if not m:
            raise ValueError(f"cannot read {item!r} in layer stack {spec!r}; write {STACK_HELP}")
        if item == "relu":
            layers.append(nn.ReLU())
            continue
        kind, k = m.group(1), int(m.group(2))
        s = int(m.group(3)) if m.group(3) else (1 if kind == "conv" else k)
        p = int(m.group(4)) if m.group(4) else (k // 2 if kind == "conv" else 0)
        d = int(m.group(5)) if m.group(5) else 1
        if min(k, s, d) < 1 or max(k, s, p, d) > _MAX_STACK_NUMBER:
            raise ValueError(f"{item!r} in layer stack {spec!r}: kernel size, stride and dilation must be 1 to "
                             f"{_MAX_STACK_NUMBER}, padding 0 to {_MAX_STACK_NUMBER}")
        if kind == "avgpool" and d != 1:
            raise ValueError(f"{item!r} in layer stack {spec!r}: average pooling has no dilation; drop 'd{d}'")
        if kind != "conv" and p > k // 2:  # torch's rule for pooling: a window is never mostly padding
            raise ValueError(f"{item!r} in layer stack {spec!r}: a pooling window of {k} takes a padding of at most "
                             f"{k // 2}, got {p}")
        if kind == "conv":
            weights += in_chans * in_chans * k * k
            if weights > _MAX_STACK_WEIGHTS:  # built for real (verify runs it): refuse before allocating gigabytes
                raise ValueError(f"layer stack {spec!r} at {in_chans} channels: {item!r} brings its weights past "
                                 f"{_MAX_STACK_WEIGHTS:,}; use smaller kernels or fewer --input channels")
            layers.append(nn.Conv2d(in_chans, in_chans, k, stride=s, padding=p, dilation=d))
        elif kind == "avgpool":
            layers.append(nn.AvgPool2d(k, s, p))
        else:
            layers.append(nn.MaxPool2d(k, s, p, dilation=d))
    return nn.Sequential(*layers)


def _looks_like_stack(name: str) -> bool:
    """A layer-stack spec, or an attempt at one ("conv3,conv" gets the spec's error, not "unknown model")."""
    if name.startswith("spec:"):  # a network from the spec grammar: a model, not a layer stack
        return False
    first = name.replace(" ", "").split(",")[0]
    return bool(re.match(r"^(conv|pool|maxpool|avgpool)\d|^relu$", first)) or "," in name


@dataclass
class ModelSummary:
    """What ``convolab summary`` prints for one model."""

    name: str
    input_shape: tuple[int, ...]
    trace: Trace
    verification: Verification | None = None
    notes: list[str] = field(default_factory=list)

    # -- figures -----------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.trace.rows)

    @property
    def receptive_field(self) -> tuple[list[float], list[float], list[float], bool] | None:
        """(size, effective stride, centre of the first unit) per axis of the feature map, and global-context flag."""
        info = self.trace.features
        if info is None:
            return None
        return ([a.r for a in info.rf], [a.j for a in info.rf], [a.start for a in info.rf],
                any(a.global_context for a in info.rf))

    def totals(self) -> dict:
        rf = self.receptive_field
        return {
            "params": self.trace.params + self.trace.frozen,
            "trainable_params": self.trace.params,
            "frozen_params": self.trace.frozen,
            "macs": self.macs,
            "flops": 2 * self.macs,
            "activation_bytes": self.trace.peak_bytes,
            "output_activation_bytes": sum(r.out_bytes for r in self.trace.rows),
            "receptive_field": _collapse(rf[0]) if rf else None,
            "effective_stride": _collapse(rf[1]) if rf else None,
            "receptive_field_start": _collapse(rf[2]) if rf else None,
            "global_context": rf[3] if rf else None,
            "feature_shape": list(self.trace.features_shape) if self.trace.features_shape else None,
            "output_shape": list(self.trace.output_shape),
        }

    def layers(self, depth: int | None = None) -> list[dict]:
        return [_row_dict(r) for r in _grouped(self.trace.rows, depth, self.trace.module_types)]

    def to_dict(self, depth: int | None = None) -> dict:
        out = {"model": self.name, "input": list(self.input_shape), "layers": self.layers(depth),
               "totals": self.totals(), "warnings": self.trace.warnings + self.notes,
               "uncounted_ops": self.trace.uncounted}
        if self.verification is not None:
            out["verification"] = self.verification.to_dict()
        return out

    # -- text --------------------------------------------------------------------------------
    def format(self, depth: int | None = None) -> str:
        rows = _grouped(self.trace.rows, depth, self.trace.module_types)
        header = ["Layer", "Type", "Window", "Output", "Params", "MACs", "RF", "Jump", "Start"]
        table = [header]
        for r in rows:
            d = _row_dict(r)
            table.append([
                "  " * max(r.depth - 1, 0) + (r.name or "(model)"), r.type, _window_text(r.window),
                "x".join(str(s) for s in r.out_shape[1:]) if r.out_shape else "-",
                _count(d["params"] + d["frozen_params"]) if d["params"] + d["frozen_params"] else "-",
                _si(r.macs) if r.macs else "-",
                _rf_text(d["receptive_field"], d["global_context"]), _rf_text(d["effective_stride"]),
                _rf_text(d["receptive_field_start"]),
            ])
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        right = {4, 5, 6, 7, 8}
        lines = []
        for k, row in enumerate(table):
            cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
            lines.append("  ".join(cells).rstrip())
            if k == 0:
                lines.append("-" * len(lines[0]))
        t = self.totals()
        lines.append("-" * len(lines[0]))
        lines += self._totals_lines(t)
        for w in self.trace.warnings + self.notes:
            lines.append(f"warning: {w}")
        if self.verification is not None:
            lines += _verification_lines(self.verification)
        return "\n".join(lines)

    def _totals_lines(self, t: dict) -> list[str]:
        dtype_bytes = 4
        lines = [
            f"{self.name}, input {'x'.join(map(str, self.input_shape))} (batch 1, float32)",
            f"parameters: {t['params']:,} (trainable {t['trainable_params']:,}, frozen {t['frozen_params']:,}; "
            f"{_bytes(t['params'] * dtype_bytes)} as float32)",
            f"MACs: {_si(t['macs'])} ({t['macs']:,}); FLOPs = 2 x MACs = {_si(t['flops'])}. MACs count "
            "convolutions and matrix products, as torch.utils.flop_counter does.",
            f"activation memory: peak {_bytes(t['activation_bytes'])} during an inference forward; "
            f"{_bytes(t['output_activation_bytes'])} summed over the layer outputs",
        ]
        if t["receptive_field"] is not None:
            g = " plus global context (a squeeze-excitation or global path sees the whole input)" \
                if t["global_context"] else ""
            lines.append(f"receptive field: {_rf_text(t['receptive_field'])} pixels, effective stride "
                         f"{_rf_text(t['effective_stride'])}, first unit centred at "
                         f"{_rf_text(t['receptive_field_start'])} "
                         f"(of the {'x'.join(map(str, t['feature_shape'][1:]))} feature map){g}")
        if self.trace.uncounted:
            lines.append("not counted as MACs: " + ", ".join(f"{k} (x{v})" for k, v in self.trace.uncounted.items()))
        return lines


def _verification_lines(v: Verification) -> list[str]:
    status = "all figures match" if v.ok else f"{len(v.mismatches)} MISMATCHES"
    lines = [f"verify: {status} — {v.shapes_checked} shapes against a real forward, {v.macs_checked} layers' MACs "
             f"and the total against torch.utils.flop_counter ({v.flop_counter_macs:,}), {v.rf_checked} receptive-"
             f"field extents against gradient impulses ({len(v.rf_rows)} layers)"]
    lines += [f"  mismatch: {m}" for m in v.mismatches]
    lines += [f"  note: {n}" for n in v.notes]
    return lines


def looks_like_run(target: str) -> bool:
    """Whether ``target`` (a ``convolab summary`` argument) names a run directory or weights file rather than a
    registered model or a layer stack: an existing path, a path with a ``/``, or a ``.safetensors`` file."""
    from convolab.models._registry import _REGISTRY

    return target not in _REGISTRY and (Path(target).expanduser().exists() or "/" in target
                                        or target.endswith(".safetensors"))


def summarize(model: nn.Module | str | object, input_shape: tuple[int, ...] | str | None = None, *,
              num_classes: int | None = None, verify: bool = False, rf_rows: str = "stages",
              **model_kwargs) -> ModelSummary:
    """Analyse a model: a registry name, a run directory, a layer stack (``"conv3,conv3"``) or an ``nn.Module``.

    Args:
        model: what to analyse; also a loaded run (anything with ``.model`` and ``.input_size``, as
            ``convolab.load_run`` returns).
        input_shape: ``(C, H, W)`` (``(C, T, H, W)`` for clips) or ``"3,224,224"``; defaults to the
            size a run directory was trained on, or the input a registered model is made for (its
            ``ModelEntry.default_input``, as ``convolab models`` counts it: 1x28x28 for tutorial_cnn,
            3x224x224 for resnet18).
        num_classes: classifier size when building a model by name (default: the model's own, else 1000).
        verify: check every figure against execution (slower: a real forward and backward passes).
        rf_rows: which layers get a receptive-field measurement when verifying (``"stages"`` or ``"all"``).

    Raises:
        ValueError: a bad input shape, an input too small for the model (naming the layer where the
            map collapses and the smallest input that works), an unknown model.
    """
    if isinstance(input_shape, str):
        input_shape = parse_input(input_shape)
    name, module, input_shape = _resolve(model, input_shape, num_classes, model_kwargs, real_weights=verify)
    module = module.eval()
    meta = _to_meta(module)
    try:
        trace, _ = trace_model(meta, input_shape)
    except InputTooSmallError as e:
        smallest = _smallest_input(meta, input_shape)
        hint = f"; the smallest input that works is {'x'.join(map(str, smallest))}" if smallest else ""
        raise ValueError(f"{name}: input {'x'.join(map(str, input_shape))} is too small: {e}{hint}") from None
    summary = ModelSummary(name=name, input_shape=tuple(input_shape), trace=trace)
    if verify:
        summary.verification = verify_trace(module, trace, rf_rows=rf_rows)
    return summary


def _resolve(model, input_shape, num_classes, model_kwargs,
             real_weights: bool = True) -> tuple[str, nn.Module, tuple[int, ...]]:
    from convolab.models import create_model
    from convolab.models._registry import _REGISTRY

    if isinstance(model, nn.Module):
        if input_shape is None:
            raise ValueError("input_shape is needed to analyse a module")
        return type(model).__name__, model, tuple(input_shape)
    if isinstance(getattr(model, "model", None), nn.Module) and hasattr(model, "input_size"):  # a loaded run
        name = Path(getattr(model, "path", "run")).name
        input_shape = tuple(input_shape or model.input_size)
        _check_rank(name, input_shape, len(model.input_size))
        return name, model.model, input_shape
    text = str(model)
    if looks_like_run(text):  # analysis sits below the run format (DESIGN.md): the caller loads the run
        raise ValueError(f"{text}: a run directory or weights file; load it first and pass the run "
                         "(summarize(convolab.load_run(PATH)))")
    if text not in _REGISTRY and _looks_like_stack(text):
        if input_shape is None:
            raise ValueError(f"a layer stack needs --input C,H,W (e.g. 64,32,32) to know its channels: {text!r}")
        _check_rank(text, input_shape, 3)
        return text, build_stack(text, input_shape[0]), tuple(input_shape)
    from convolab.models._registry import get_model_entry

    entry = get_model_entry(text)  # unknown names: UnknownNameError with close matches
    input_shape = entry.default_input if input_shape is None else input_shape
    _check_rank(text, input_shape, len(entry.default_input))
    num_classes = entry.default_num_classes if num_classes is None else num_classes
    spatial = tuple(input_shape[-2:])
    # Without --verify only shapes are needed: build on the meta device (VGG-16's 138M weights cost nothing).
    with torch.device("meta" if not real_weights else "cpu"):
        module = create_model(text, num_classes=num_classes, in_chans=input_shape[0], input_size=spatial,
                              **model_kwargs)
    return text, module, tuple(input_shape)


def _check_rank(name: str, input_shape: tuple[int, ...], rank: int) -> None:
    """Refuse an image shape for a clip model and the other way round (torch's conv text is no help there)."""
    if len(input_shape) != rank:
        want = "C,H,W: it takes images" if rank == 3 else "C,T,H,W: it takes clips"
        raise ValueError(f"--input {','.join(map(str, input_shape))} does not fit {name}: give {want}")


def _to_meta(module: nn.Module) -> nn.Module:
    import copy

    if all(p.is_meta for p in module.parameters()):
        return module
    return copy.deepcopy(module).to("meta")


def _smallest_input(meta: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The smallest square spatial size (same channels/time) at which the trace runs, by doubling then bisection."""
    def works(s: int) -> bool:
        try:
            trace_model(meta, (*input_shape[:-2], s, s))
        except InputTooSmallError:
            return False
        except Exception:  # noqa: BLE001 - any other failure counts as "does not work"
            return False
        return True

    lo, hi = max(input_shape[-2:]), max(input_shape[-2:]) * 2
    while not works(hi):
        lo, hi = hi, hi * 2
        if hi > 8192:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    return (*input_shape[:-2], hi, hi)


def _grouped(rows: list[Row], depth: int | None, types: dict[str, str] | None = None) -> list[Row]:
    """Rows deeper than ``depth`` folded into their ancestor at that depth (params and MACs summed)."""
    if depth is None:
        return rows
    out: list[Row] = []
    for r in rows:
        parts = r.name.split(".") if r.name else []
        if len(parts) <= depth:
            out.append(r)
            continue
        key = ".".join(parts[:depth])
        last = out[-1] if out else None
        if last is not None and getattr(last, "_group", None) == key:
            last.params += r.params
            last.frozen += r.frozen
            last.macs += r.macs
            last.out_shape, last.out_bytes, last.info = r.out_shape, r.out_bytes, r.info
            last.window = None
        else:
            g = Row(name=key, type=(types or {}).get(key, "…"), module_path=key,
                    out_shape=r.out_shape, params=r.params, frozen=r.frozen, macs=r.macs, out_bytes=r.out_bytes,
                    info=r.info, window=r.window)
            g._group = key  # type: ignore[attr-defined]
            out.append(g)
    return out


def _row_dict(r: Row) -> dict:
    info = r.info
    w = r.window or {}
    return {
        "name": r.name, "type": r.type,
        "kernel_size": _collapse(w.get("kernel_size")), "stride": _collapse(w.get("stride")),
        "padding": _collapse(w.get("padding")), "dilation": _collapse(w.get("dilation")), "groups": w.get("groups"),
        "output_shape": list(r.out_shape), "params": r.params, "frozen_params": r.frozen, "macs": r.macs,
        "activation_bytes": r.out_bytes,
        "receptive_field": _collapse([a.r for a in info.rf]) if info else None,
        "effective_stride": _collapse([a.j for a in info.rf]) if info else None,
        "receptive_field_start": _collapse([a.start for a in info.rf]) if info else None,
        "global_context": any(a.global_context for a in info.rf) if info else None,
    }


def _collapse(values):
    """One number for square windows/fields (as an int when whole), else the list."""
    if values is None:
        return None
    values = [int(v) if float(v).is_integer() else float(v) for v in values]
    return values[0] if len(set(values)) == 1 else values


def _rf_text(v, glob: bool | None = False) -> str:
    if v is None:
        return "-"
    text = "x".join(_num(x) for x in v) if isinstance(v, list) else _num(v)
    return text + ("+g" if glob else "")


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _window_text(w: dict | None) -> str:
    if not w:
        return ""
    k = w["kernel_size"]
    parts = ["x".join(map(str, k)) if len(set(k)) > 1 else f"{k[0]}x{k[0]}" if len(k) == 2 else "x".join(map(str, k))]
    for key, tag, default in (("stride", "s", 1), ("padding", "p", 0), ("dilation", "d", 1)):
        v = w.get(key)
        if v is not None and any(x != default for x in v):
            parts.append(tag + ("x".join(map(str, v)) if len(set(v)) > 1 else str(v[0])))
    if w.get("groups", 1) > 1:
        parts.append(f"g{w['groups']}")
    return " ".join(parts)


def _count(n: int) -> str:
    return f"{n:,}"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def _ratio(a: float, b: float) -> str:
    """``a / b`` to three significant figures, as ``2.59x`` (``n/a`` when ``b`` is 0)."""
    return f"{a / b:.3g}x" if b else "n/a"


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def format_side_by_side(summaries: list[ModelSummary]) -> str:
    """The totals of several models in columns (the tutorials' comparisons: 5x5 against two 3x3 ...), then one
    line per later model: the first model's parameters and MACs as a multiple of that model's."""
    labels = ["input", "parameters", "MACs", "FLOPs", "peak activations", "output", "receptive field",
              "effective stride"]
    cols = []
    for s in summaries:
        t = s.totals()
        cols.append([
            "x".join(map(str, s.input_shape)), f"{t['params']:,}", _si(t["macs"]), _si(t["flops"]),
            _bytes(t["activation_bytes"]), "x".join(map(str, t["output_shape"][1:])),
            _rf_text(t["receptive_field"], t["global_context"]), _rf_text(t["effective_stride"]),
        ])
    names = [s.name for s in summaries]
    width0 = max(len(x) for x in labels)
    widths = [max(len(n), *(len(c) for c in col)) for n, col in zip(names, cols)]
    lines = ["".ljust(width0) + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
    for i, label in enumerate(labels):
        lines.append(label.ljust(width0) + "  " + "  ".join(col[i].rjust(w) for col, w in zip(cols, widths)))
    first = summaries[0].totals()
    for s in summaries[1:]:  # the comparison the tutorials make: how many times the first model's cost
        t = s.totals()
        lines.append(f"{names[0]} / {s.name}: parameters {_ratio(first['params'], t['params'])} "
                     f"({first['params']:,} / {t['params']:,}), MACs {_ratio(first['macs'], t['macs'])} "
                     f"({_si(first['macs'])} / {_si(t['macs'])})")
    if any(s.totals()["global_context"] for s in summaries):
        lines.append("+g: the field also has global context (squeeze-excitation or global pooling on the path)")
    return "\n".join(lines)
