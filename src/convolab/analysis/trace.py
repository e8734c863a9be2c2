"""Follow one forward pass op by op: shapes, parameters, MACs, activation memory and receptive fields.

The tracer runs the model once under a ``TorchFunctionMode`` (every torch function and tensor
method call passes through it) with forward hooks on every module (for names). By default it runs on
the ``meta`` device: shapes only, no arithmetic, so ResNet-152 at 1024x1024 costs milliseconds.

Each row of the result is one call of a leaf module (``layer1.0.conv1``) or one op written directly
in a container's ``forward`` (``layer1.0.add`` for ``out + identity``, ``Mixed_5b.cat``). Tensors
carry their receptive fields (``AxisRF`` per spatial axis) from op to op, which is how the fields
follow residual additions, Inception concatenations and squeeze-excitation gates.

Tensors also carry their producers (the rows that wrote them; -1 for the model input), so each
row knows which rows it reads (``Row.inputs``): the edges of the network's graph. Ops that make no
row of their own (layout ops, copies, ops inside a leaf module) hand their input's producers on.

What the rows count:
  * MACs: multiply-accumulates of convolutions (also transposed and grouped) and matrix products
    (linear layers, matmul) — what ``torch.utils.flop_counter`` counts, computed here from the
    layer hyper-parameters and shapes. Pooling, normalization and activations are not MACs.
  * activation bytes: the size of the row's output at the traced batch size.
  * peak activation memory: the largest total of live op outputs during an inference forward
    (``torch.no_grad``), found by following when each output's storage is freed.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from convolab.analysis.fields import AxisRF
from convolab.analysis.formulas import conv_output_size

__all__ = ["Row", "Trace", "trace_model", "InputTooSmallError"]


class InputTooSmallError(ValueError):
    """The input is too small: a feature map collapses to nothing at ``layer``."""

    def __init__(self, message: str, layer: str):
        super().__init__(message)
        self.layer = layer


@dataclass
class TensorInfo:
    """What the tracer knows about one tensor: which dims are spatial and their receptive fields."""

    axes: tuple[int, ...]  # positions of the spatial dims (H, W) or (T, H, W) in the tensor's shape
    rf: list[AxisRF]  # one per spatial dim, same order


@dataclass
class Row:
    """One traced layer (a leaf module call, or an op in a container's forward)."""

    name: str  # module path ("layer1.0.conv1") or container path + op ("layer1.0.add")
    type: str  # module class ("Conv2d") or op name ("add", "cat")
    module_path: str  # path of the module the row belongs to ("" for the model itself)
    window: dict | None = None  # kernel_size/stride/padding/dilation/groups of a conv or pool
    out_shape: tuple[int, ...] = ()
    params: int = 0  # trainable parameters first counted at this row
    frozen: int = 0  # parameters with requires_grad=False
    macs: int = 0
    out_bytes: int = 0
    info: TensorInfo | None = None  # receptive fields of the output (None after flattening)
    expected_shape: tuple[int, ...] | None = None  # shape from the size formulas, where one applies
    ops: list[str] = field(default_factory=list)  # ops that ran inside (for leaf modules)
    inputs: list[int] = field(default_factory=list)  # rows whose outputs this row reads (indices; -1: the input)

    @property
    def depth(self) -> int:
        return 0 if not self.name else self.name.count(".") + 1


@dataclass
class Trace:
    rows: list[Row]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    frozen: int
    peak_bytes: int  # peak of live activations during the forward (inference, batch as traced)
    features: TensorInfo | None  # receptive fields of forward_features' output (or of the output)
    features_shape: tuple[int, ...] | None
    uncounted: dict[str, int]  # ops that may do arithmetic the MAC count leaves out -> calls
    warnings: list[str]
    module_types: dict[str, str] = field(default_factory=dict)  # module path -> class name


# Ops that only read metadata or move data without changing what depends on what.
_QUIET = {"dim", "size", "get", "numel", "contiguous", "detach", "to", "float", "double", "half", "bfloat16",
          "clone", "type", "is_contiguous", "element_size", "len", "requires_grad_", "cpu", "cuda",
          "format", "bool", "index", "is_floating_point", "stride", "data_ptr", "storage_offset",
          "iter", "dtype", "shape", "device", "tolist", "item", "int", "float_", "repr", "hash"}
# Ops that reshape without being worth a row of their own.
_LAYOUT = {"view", "reshape", "permute", "transpose", "chunk", "split", "__getitem__", "unsqueeze", "squeeze",
           "expand", "expand_as", "flatten", "unflatten", "movedim", "narrow", "unbind", "t"}
_ROW_OPS_HIDDEN = _QUIET | (_LAYOUT - {"flatten"})

_POOLS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
    torch.max_pool1d: 1, torch.max_pool2d: 2, torch.max_pool3d: 3, torch.avg_pool1d: 1,
    F.lp_pool1d: 1, F.lp_pool2d: 2,
}
_ADAPTIVE = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
             F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
             torch.adaptive_avg_pool1d: 1}
_CONVS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_TCONVS = {F.conv_transpose1d: 1, F.conv_transpose2d: 2, F.conv_transpose3d: 3,
           torch.conv_transpose1d: 1, torch.conv_transpose2d: 2, torch.conv_transpose3d: 3}
_MAX_TO_AVG = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d,
               F.adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
               F.adaptive_max_pool3d: F.adaptive_avg_pool3d}
# Elementwise, monotone and saturating: replaced by the identity when measuring receptive fields.
_SATURATING = {"hardtanh", "hardtanh_", "relu6", "hardsigmoid", "sigmoid", "sigmoid_", "tanh", "tanh_"}
# Ops whose arithmetic torch's flop counter ignores too, so leaving them out of MACs is the convention.
_NOT_MACS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm", "softmax",
             "log_softmax", "dropout", "dropout2d", "dropout3d", "scaled_dot_product_attention"}


def _name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return "getitem" if name == "__getitem__" else name.strip("_") if name.startswith("__") else name


def _tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return (int(v),) * n


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _bind(func, args, kwargs, names: Iterable[str], defaults: dict):
    """Positional + keyword arguments of a functional op, by name."""
    out = dict(defaults)
    for name, value in zip(names, args):
        out[name] = value
    out.update(kwargs)
    return out


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: _Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.tracer.on_op(func, args, kwargs or {})


class _Tracer:
    def __init__(self, model: nn.Module, impulse: bool = False, keep_outputs: bool = False):
        self.model = model
        self.impulse = impulse  # measuring receptive fields: max-pools run as average pools
        self.names = {m: n for n, m in model.named_modules()}
        self.stack: list[nn.Module] = []
        self.rows: list[Row] = []
        self.info: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.counted: set[int] = set()  # id(param) already attributed to a row
        self.param_storages = {p.untyped_storage()._cdata for p in model.parameters()} | \
                               {b.untyped_storage()._cdata for b in model.buffers()}
        self.live: dict[int, list[int]] = {}  # storage key -> [bytes, tensors alive]
        self.live_bytes = 0
        self.peak = 0
        self.uncounted: dict[str, int] = {}
        self.warnings: list[str] = []
        self.leaf_ops: list[str] = []
        self.leaf_macs = 0
        self.leaf_window: dict | None = None
        self.leaf_expected: tuple | None = None
        self.outputs: list[torch.Tensor] = []  # kept only when impulse-measuring
        self.producers: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> rows that wrote it
        self.leaf_inputs: list[int] = []
        self.keep_outputs = keep_outputs
        self.row_outputs: list[torch.Tensor | None] = []  # a copy of each row's output, when keep_outputs
        self.output = None  # the model's output, when keep_outputs
        self.op_counts: dict[tuple[str, str], int] = {}

    # -- module hooks ------------------------------------------------------------------------
    def pre_hook(self, module, args):
        self.stack.append(module)
        if _is_leaf(module):
            self.leaf_ops, self.leaf_macs, self.leaf_window, self.leaf_expected = [], 0, None, None
            self.leaf_inputs = self._producers_of(args)

    def post_hook(self, module, args, output):
        self.stack.pop()
        if not _is_leaf(module):
            return None
        name = self.names.get(module, "?")
        row = Row(name=name, type=type(module).__name__, module_path=name, window=self.leaf_window,
                  macs=self.leaf_macs, ops=self.leaf_ops, expected_shape=self.leaf_expected,
                  inputs=self.leaf_inputs)
        self._attribute_params(module, row)
        self._finish_row(row, output)
        return None

    # -- ops ---------------------------------------------------------------------------------
    def on_op(self, func, args, kwargs):
        name = _name(func)
        window, expected, macs = self._before(func, name, args, kwargs)
        if self.impulse and func in _MAX_TO_AVG:
            out = self._as_average_pool(func, args, kwargs, window)
        elif self.impulse and name in _SATURATING:
            # Monotone squashing (ReLU6, sigmoid ...) has zero or vanishing slope where it saturates,
            # which would hide a dependency from the gradient; the identity has the same dependencies.
            x = args[0] if args else kwargs["input"]
            out = x if kwargs.get("inplace") or name.endswith("_") else x.clone()
        else:
            out = func(*args, **kwargs)
        if name in _QUIET:
            # copies and conversions (contiguous, clone, to) keep the fields of their input
            if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor) and out is not args[0]:
                if args[0] in self.info:
                    self.info[out] = self.info[args[0]]
                self._pass_producers(args[0], out)
                self._track(out)
            return out
        self._propagate(func, name, args, kwargs, out, window)
        leaf = bool(self.stack) and _is_leaf(self.stack[-1])
        if leaf:
            self.leaf_ops.append(name)
            self.leaf_macs += macs
            if window is not None:
                self.leaf_window, self.leaf_expected = window, expected
        elif name not in _ROW_OPS_HIDDEN and _tensors(out):
            parent = self.stack[-1] if self.stack else self.model
            path = self.names.get(parent, "")
            key = (path, name)
            self.op_counts[key] = self.op_counts.get(key, 0) + 1
            suffix = name if self.op_counts[key] == 1 else f"{name}_{self.op_counts[key]}"
            row = Row(name=f"{path}.{suffix}" if path else suffix, type=name, module_path=path, window=window,
                      macs=macs, expected_shape=expected, inputs=self._producers_of((args, kwargs)))
            self._attribute_params(parent, row, recurse=False)
            self._finish_row(row, out)
        else:  # a layout op or an op inside a leaf: its output holds what its first tensor argument held
            first = _tensors((args, kwargs))
            if first:
                self._pass_producers(first[0], out)
        for t in _tensors(out):
            self._track(t)
        return out

    def _before(self, func, name, args, kwargs):
        """Window, formula-computed output shape and MACs of a conv/pool/linear/matmul call."""
        x = args[0] if args else kwargs.get("input")
        if func in _CONVS or func in _TCONVS:
            nd = _CONVS.get(func) or _TCONVS[func]
            transposed = func in _TCONVS
            names = (("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
                     if transposed else ("input", "weight", "bias", "stride", "padding", "dilation", "groups"))
            a = _bind(func, args, kwargs, names, dict(bias=None, stride=1, padding=0, dilation=1, groups=1,
                                                      output_padding=0))
            w = a["weight"]
            k = tuple(w.shape[2:])
            s, d = _tuple(a["stride"], nd), _tuple(a["dilation"], nd)
            if isinstance(a["padding"], str):
                p = (0,) * nd if a["padding"] == "valid" else tuple((d[i] * (k[i] - 1)) // 2 for i in range(nd))
                if a["padding"] == "same" and any((d[i] * (k[i] - 1)) % 2 for i in range(nd)):
                    self.warnings.append(f"{self._where()}: padding='same' with an even window pads unevenly")
            else:
                p = _tuple(a["padding"], nd)
            window = dict(kernel_size=k, stride=s, padding=p, dilation=d, groups=int(a["groups"]))
            spatial = tuple(x.shape[-nd:])
            if transposed:
                op = _tuple(a["output_padding"], nd)
                window["output_padding"] = op
                sizes = tuple((spatial[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(nd))
                out_ch = w.shape[1] * int(a["groups"])
                # each input element is scattered through Cout/g * prod(k) weights
                macs = x.numel() * w.shape[1] * math.prod(k)
            else:
                sizes = tuple(conv_output_size(spatial[i], k[i], s[i], p[i], d[i]) for i in range(nd))
                out_ch = w.shape[0]
                macs = x.shape[0] * out_ch * math.prod(max(v, 0) for v in sizes) * w.shape[1] * math.prod(k)
            self._check_collapse(name, spatial, sizes, window)
            return window, (x.shape[0], out_ch, *sizes), macs
        if func in _POOLS:
            nd = _POOLS[func]
            a = _bind(func, args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"),
                      dict(stride=None, padding=0, dilation=1, ceil_mode=False))
            if "avg" in name:  # avg_pool's 5th positional argument is ceil_mode, it has no dilation
                a = _bind(func, args, kwargs, ("input", "kernel_size", "stride", "padding", "ceil_mode"),
                          dict(stride=None, padding=0, ceil_mode=False))
                a["dilation"] = 1
            if name.startswith("lp_pool"):
                a = _bind(func, args, kwargs, ("input", "norm_type", "kernel_size", "stride", "ceil_mode"),
                          dict(stride=None, ceil_mode=False))
                a.update(padding=0, dilation=1)
            k = _tuple(a["kernel_size"], nd)
            s = k if a["stride"] in (None, [], ()) else _tuple(a["stride"], nd)
            p, d = _tuple(a["padding"], nd), _tuple(a["dilation"], nd)
            window = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=bool(a["ceil_mode"]))
            spatial = tuple(x.shape[-nd:])
            sizes = tuple(conv_output_size(spatial[i], k[i], s[i], p[i], d[i], bool(a["ceil_mode"])) for i in range(nd))
            self._check_collapse(name, spatial, sizes, window)
            return window, (*x.shape[:-nd], *sizes), 0
        if func in _ADAPTIVE:
            nd = _ADAPTIVE[func]
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            size = _tuple(size, nd) if not isinstance(size, (list, tuple)) or None not in size else tuple(
                x.shape[-nd + i] if v is None else v for i, v in enumerate(size))
            return None, (*x.shape[:-nd], *size), 0
        if func in (F.linear, torch.nn.functional.linear):
            w = args[1] if len(args) > 1 else kwargs["weight"]
            return None, (*x.shape[:-1], w.shape[0]), x.numel() // x.shape[-1] * w.shape[0] * w.shape[1]
        if name in ("matmul", "mm", "bmm", "addmm", "baddbmm", "einsum"):
            return None, None, self._matmul_macs(name, args)
        if name not in _QUIET and name not in _LAYOUT and name not in _NOT_MACS and name not in _ELEMENTWISE_OK:
            self.uncounted[name] = self.uncounted.get(name, 0) + 1
        return None, None, 0

    def _matmul_macs(self, name, args) -> int:
        if name == "einsum":
            self.uncounted["einsum"] = self.uncounted.get("einsum", 0) + 1
            return 0
        a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
        if a.dim() == 1 or b.dim() == 1:
            return a.numel() if b.dim() == 1 else b.numel()
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]

    def _as_average_pool(self, func, args, kwargs, window):
        """A max-pool run as an average pool over the same windows (every input then gets a gradient).

        Average pools refuse windows that overhang the input (max-pools allow it with ceil_mode), so
        the input is zero-padded on the far side to hold the last window and pooled without ceil_mode:
        the same outputs, the same inputs per output.
        """
        x = args[0] if args else kwargs["input"]
        avg = _MAX_TO_AVG[func]
        if func not in _POOLS:  # adaptive: the same windows by definition
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            return avg(x, size)
        k, s, p, d = window["kernel_size"], window["stride"], window["padding"], window["dilation"]
        if any(v != 1 for v in d):
            raise NotImplementedError("a dilated max-pool has no average-pool twin to measure with")
        nd = len(k)
        sizes = [conv_output_size(x.shape[-nd + i], k[i], s[i], p[i], 1, window["ceil_mode"]) for i in range(nd)]
        extra = [max(0, (sizes[i] - 1) * s[i] + k[i] - (x.shape[-nd + i] + 2 * p[i])) for i in range(nd)]
        if any(extra):
            pads = []
            for e in reversed(extra):
                pads += [0, e]
            x = F.pad(x, pads)
        return avg(x, k, s, p, ceil_mode=False, count_include_pad=True)

    def _check_collapse(self, op: str, spatial, sizes, window) -> None:
        if min(sizes) >= 1:
            return
        where = self._where() or op
        raise InputTooSmallError(
            f"the feature map collapses at {where} ({op} with kernel {window['kernel_size']}, stride "
            f"{window['stride']}, padding {window['padding']}): its {'x'.join(map(str, spatial))} input gives "
            f"{'x'.join(map(str, sizes))}", where)

    def _where(self) -> str:
        return self.names.get(self.stack[-1], "") if self.stack else ""

    # -- receptive fields --------------------------------------------------------------------
    def _propagate(self, func, name, args, kwargs, out, window) -> None:
        outs = _tensors(out)
        if not outs:
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        xi = self.info.get(x) if x is not None else None
        try:
            infos = self._rule(func, name, args, kwargs, x, xi, outs, window)
        except NotImplementedError as e:
            self.warnings.append(f"{self._where() or name}: receptive field not followed through {name} ({e})")
            infos = [None] * len(outs)
        for t, info in zip(outs, infos):
            if info is not None and [t.shape[a] for a in info.axes] == [r.size for r in info.rf]:
                self.info[t] = info
            elif info is not None:
                self.warnings.append(f"{self._where() or name}: {name} changed a spatial size unexpectedly; "
                                     "receptive field not followed")
                self.info.pop(t, None)
            else:
                self.info.pop(t, None)

    def _rule(self, func, name, args, kwargs, x, xi, outs, window) -> list[TensorInfo | None]:
        if func in _CONVS or func in _TCONVS or func in _POOLS:
            if xi is None:
                return [None] * len(outs)
            nd = len(window["kernel_size"])
            rf = []
            for i in range(nd):
                axis = xi.rf[len(xi.rf) - nd + i]
                n_out = outs[0].shape[xi.axes[len(xi.rf) - nd + i]]
                if func in _TCONVS:
                    rf.append(axis.transposed_window(window["kernel_size"][i], window["stride"][i],
                                                     window["padding"][i], window["dilation"][i], n_out))
                else:
                    rf.append(axis.window(window["kernel_size"][i], window["stride"][i], window["padding"][i],
                                          window["dilation"][i], n_out))
            return [TensorInfo(xi.axes, rf)] + [None] * (len(outs) - 1)  # pools' indices carry no field
        if func in _ADAPTIVE:
            if xi is None:
                return [None] * len(outs)
            nd = _ADAPTIVE[func]
            rf = xi.rf[:-nd] + [a.adaptive(outs[0].shape[ax]) for a, ax in zip(xi.rf[-nd:], xi.axes[-nd:])]
            return [TensorInfo(xi.axes, rf)] + [None] * (len(outs) - 1)
        if name in ("interpolate", "upsample", "upsample_bilinear", "upsample_nearest"):
            if xi is None:
                return [None]
            a = _bind(func, args, kwargs, ("input", "size", "scale_factor", "mode", "align_corners"),
                      dict(size=None, scale_factor=None, mode="nearest", align_corners=None))
            nd = len(xi.rf)
            scales = None if a["scale_factor"] is None or kwargs.get("recompute_scale_factor") else \
                _tuple_f(a["scale_factor"], nd)
            rf = [r.interpolate(outs[0].shape[ax], a["mode"], a["align_corners"], scales[i] if scales else None)
                  for i, (ax, r) in enumerate(zip(xi.axes, xi.rf))]
            return [TensorInfo(xi.axes, rf)]
        if name == "pad":
            if xi is None:
                return [None]
            pads = list(args[1] if len(args) > 1 else kwargs["pad"])
            rf = list(xi.rf)
            for k in range(len(pads) // 2):
                dim = x.dim() - 1 - k
                if dim in xi.axes:
                    i = xi.axes.index(dim)
                    rf[i] = rf[i].pad(pads[2 * k], pads[2 * k + 1])
                elif pads[2 * k] or pads[2 * k + 1]:
                    pass  # padding channels: fields unchanged
            return [TensorInfo(xi.axes, rf)]
        if name in ("permute", "transpose", "movedim", "t", "swapaxes", "swapdims"):
            if xi is None:
                return [None]
            perm = _permutation(name, x.dim(), args[1:], kwargs)
            return [TensorInfo(tuple(perm.index(a) for a in xi.axes), xi.rf)]
        if name == "getitem":
            return [self._getitem(x, xi, args[1], outs[0])]
        if name == "cat" or name == "concat" or name == "stack":
            seq = args[0] if args else kwargs["tensors"]
            infos = [self.info.get(t) for t in seq]
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            known = [i for i in infos if i is not None]
            if not known:
                return [None]
            dim = dim % outs[0].dim()
            if name == "cat" and dim in known[0].axes:
                raise NotImplementedError("concatenation along a spatial dimension")
            axes = known[0].axes if name == "cat" else tuple(a + (a >= dim) for a in known[0].axes)
            return [self._merge(known, axes, outs[0])]
        if name in ("mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm", "prod", "nansum"):
            return [self._reduce(x, xi, args, kwargs, outs[0])] + [None] * (len(outs) - 1)
        if name in ("flatten", "view", "reshape", "unflatten", "unsqueeze", "squeeze", "expand", "expand_as",
                    "chunk", "split", "unbind", "narrow"):
            return [self._relayout(x, xi, t) for t in outs]
        if name in ("layer_norm", "group_norm", "instance_norm", "batch_norm", "softmax", "log_softmax"):
            return [self._norm(name, x, xi, args, kwargs, outs[0])]
        # Elementwise ops and anything else whose output keeps the spatial layout: the union of the
        # fields of the tensor arguments, broadcast where needed (a [N, C, 1, 1] gate times a map).
        ins = [(t, self.info.get(t)) for t in _tensors(list(args) + list(kwargs.values()))]
        known = [i for _, i in ins if i is not None]
        if not known:
            return [None] * len(outs)
        return [self._merge(known, known[0].axes, t) if t.dim() == outs[0].dim() else None for t in outs]

    def _merge(self, infos: list[TensorInfo], axes: tuple[int, ...], out: torch.Tensor) -> TensorInfo | None:
        infos = [i for i in infos if len(i.rf) == len(axes)]
        if not infos:
            return None
        rf = []
        for k, ax in enumerate(axes):
            if ax >= out.dim():
                return None
            rf.append(AxisRF.merge([i.rf[k] for i in infos], out.shape[ax]))
        return TensorInfo(axes, rf)

    def _norm(self, name, x, xi, args, kwargs, out) -> TensorInfo | None:
        if xi is None:
            return None
        if name == "batch_norm":
            training = args[5] if len(args) > 5 else kwargs.get("training", False)
            if not training:
                return xi  # per-channel affine in eval mode
            normalized = set(range(x.dim())) - {1}
        elif name == "layer_norm":
            shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
            normalized = set(range(x.dim() - len(shape), x.dim()))
        elif name in ("softmax", "log_softmax"):
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            normalized = {dim % x.dim()} if dim is not None else set(range(x.dim()))
        else:  # group_norm / instance_norm: statistics over the spatial dims
            normalized = set(range(2, x.dim()))
        if not normalized & set(xi.axes):
            return xi
        # Statistics over spatial dims make every unit depend on the whole map.
        return TensorInfo(xi.axes, [_global(a) if xi.axes[k] in normalized else a for k, a in enumerate(xi.rf)])

    def _reduce(self, x, xi, args, kwargs, out) -> TensorInfo | None:
        if xi is None:
            return None
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None:
            return None
        dims = {d % x.dim() for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
        keep = args[2] if len(args) > 2 and isinstance(args[2], bool) else kwargs.get("keepdim", False)
        rf, axes = [], []
        for a, r in zip(xi.axes, xi.rf):
            if a in dims:
                if keep:
                    axes.append(a)
                    rf.append(r.adaptive(1))
                continue
            axes.append(a if keep else a - sum(d < a for d in dims))
            rf.append(r)
        if not axes:
            return None
        return TensorInfo(tuple(axes), rf)

    def _relayout(self, x, xi, out) -> TensorInfo | None:
        """view/reshape/flatten/...: spatial dims survive when their sizes reappear at the same end of the shape."""
        if xi is None:
            return None
        sizes = [x.shape[a] for a in xi.axes]
        n = len(sizes)
        # trailing spatial dims (NCHW-like layouts)
        if list(xi.axes) == list(range(x.dim() - n, x.dim())) and list(out.shape[out.dim() - n:]) == sizes:
            return TensorInfo(tuple(range(out.dim() - n, out.dim())), xi.rf)
        # spatial dims right after the batch dim (NHWC-like layouts)
        if list(xi.axes) == list(range(1, 1 + n)) and list(out.shape[1:1 + n]) == sizes and out.dim() > n:
            return TensorInfo(xi.axes, xi.rf)
        # same rank, spatial sizes unchanged in place (a channel split)
        if out.dim() == x.dim() and all(out.shape[a] == s for a, s in zip(xi.axes, sizes)):
            return xi
        return None  # the spatial dims were flattened away

    def _getitem(self, x, xi, index, out) -> TensorInfo | None:
        if xi is None:
            return None
        index = index if isinstance(index, tuple) else (index,)
        if any(i is None or isinstance(i, torch.Tensor) or isinstance(i, list) for i in index):
            return self._relayout(x, xi, out)
        # expand an Ellipsis into full slices
        if any(i is Ellipsis for i in index):
            k = index.index(Ellipsis)
            fill = x.dim() - (len(index) - 1)
            index = index[:k] + (slice(None),) * fill + index[k + 1:]
        index = index + (slice(None),) * (x.dim() - len(index))
        rf, axes, removed = list(xi.rf), [], 0
        new_rf = []
        for dim, idx in enumerate(index):
            if isinstance(idx, int):
                if dim in xi.axes:
                    return None
                removed += 1
                continue
            if dim in xi.axes:
                k = xi.axes.index(dim)
                start, stop, step = idx.indices(x.shape[dim])
                new_rf.append(rf[k].slice(start, stop, step) if (start, stop, step) != (0, x.shape[dim], 1) else rf[k])
                axes.append(dim - removed)
        return TensorInfo(tuple(axes), new_rf)

    # -- bookkeeping -------------------------------------------------------------------------
    def _attribute_params(self, module: nn.Module, row: Row, recurse: bool = False) -> None:
        for p in module.parameters(recurse=recurse):
            if id(p) in self.counted:
                continue
            self.counted.add(id(p))
            if p.requires_grad:
                row.params += p.numel()
            else:
                row.frozen += p.numel()

    def _finish_row(self, row: Row, output) -> None:
        outs = _tensors(output)
        if outs:
            row.out_shape = tuple(outs[0].shape)
            row.out_bytes = sum(t.numel() * t.element_size() for t in outs)
            row.info = self.info.get(outs[0])
            if self.impulse:
                self.outputs.append(outs[0])
        if self.keep_outputs:  # a copy: a later in-place op (ReLU(inplace=True), +=) would change the tensor
            with torch._C.DisableTorchFunction():
                self.row_outputs.append(outs[0].detach().clone() if outs else None)
        for t in outs:
            self.producers[t] = (len(self.rows),)
        self.rows.append(row)

    # -- producers (the graph's edges) -------------------------------------------------------
    def _producers_of(self, obj) -> list[int]:
        """Rows that wrote the tensors in ``obj`` (args, lists, dicts), in order, each once."""
        out: dict[int, None] = {}
        for t in _tensors(obj):
            for p in self.producers.get(t, ()):
                out[p] = None
        return list(out)

    def _pass_producers(self, source: torch.Tensor, out) -> None:
        rows = self.producers.get(source)
        if rows is None:
            return
        for t in _tensors(out):
            if t is not source:
                self.producers[t] = rows

    def _track(self, t: torch.Tensor) -> None:
        """Count a new op output towards live activation memory until its storage is freed."""
        try:
            key = t.untyped_storage()._cdata
        except (RuntimeError, NotImplementedError):
            return
        if key in self.param_storages:
            return
        entry = self.live.get(key)
        if entry is None:
            nbytes = t.untyped_storage().nbytes()
            entry = self.live[key] = [nbytes, 0]
            self.live_bytes += nbytes
            self.peak = max(self.peak, self.live_bytes)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.live_bytes -= entry[0]
            del self.live[key]


# Elementwise ops: no MACs by torch's convention either.
_ELEMENTWISE_OK = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "silu", "sigmoid", "tanh", "hardswish",
                   "hardsigmoid", "elu", "leaky_relu", "mish", "softplus", "add", "add_", "sub", "mul", "mul_",
                   "div", "iadd", "imul", "radd", "rmul", "truediv", "neg", "pad", "cat", "stack", "interpolate",
                   "mean", "sum", "amax", "sigmoid_", "exp", "sqrt", "rsqrt", "pow", "abs", "clamp", "clamp_",
                   "where", "zeros_like", "ones_like", "empty_like", "flatten", "getitem", "lt", "gt", "le", "ge",
                   "eq", "ne", "sub_", "div_", "floor", "ceil", "round", "bernoulli_", "masked_fill", "rand_like",
                   "randn_like", "max", "min", "new_zeros", "new_empty", "fill_", "zero_", "copy_", "sign",
                   "adaptive_avg_pool2d", "adaptive_max_pool2d", "channel_shuffle"}


def _tuple_f(v, n: int) -> tuple[float, ...]:
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),) * n


def _global(a: AxisRF) -> AxisRF:
    g = a.adaptive(1).broadcast_to(a.size)
    g.global_context = True
    g.r, g.j, g.start = a.r, a.j, a.start  # the local field stays the nominal one; the flag says "global"
    return g


def _permutation(name, ndim, args, kwargs) -> list[int]:
    if name == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args or kwargs.get("dims")
        return [d % ndim for d in dims]
    if name == "t":
        return [1, 0]
    if name == "movedim":
        src, dst = (args[0], args[1]) if len(args) >= 2 else (kwargs["source"], kwargs["destination"])
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        src, dst = [s % ndim for s in src], [d % ndim for d in dst]
        rest = [d for d in range(ndim) if d not in src]
        perm = [None] * ndim
        for s, d in zip(src, dst):
            perm[d] = s
        it = iter(rest)
        return [p if p is not None else next(it) for p in perm]
    a, b = (args[0], args[1]) if len(args) >= 2 else (kwargs["dim0"], kwargs["dim1"])
    perm = list(range(ndim))
    perm[a % ndim], perm[b % ndim] = perm[b % ndim], perm[a % ndim]
    return perm


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def trace_model(model: nn.Module, input_shape: tuple[int, ...], *, device: str | torch.device = "meta",
                dtype: torch.dtype = torch.float32, batch_size: int = 1, impulse: bool = False,
                x: torch.Tensor | None = None, keep_outputs: bool = False,
                features_pass: bool = True) -> tuple[Trace, _Tracer]:
    """Run ``model`` once on an input of ``(C, H, W)`` (or ``(C, T, H, W)``) and trace it.

    The model must already be on ``device`` (``"meta"`` for shapes only). Returns the trace and the
    tracer (which holds the outputs when ``impulse`` is set). With ``keep_outputs`` the tracer also
    keeps a copy of each row's output (``tracer.row_outputs[i]`` for ``trace.rows[i]``) and the
    model's output (``tracer.output``). ``features_pass=False`` skips the second, hook-free forward that
    finds the field of ``forward_features``' map (``trace.features`` is then that of the output).
    """
    if x is None:
        factory = torch.rand if str(device) != "meta" else torch.empty
        x = factory((batch_size, *input_shape), device=device, dtype=dtype)
    tracer = _Tracer(model, impulse=impulse, keep_outputs=keep_outputs)
    spatial = tuple(range(2, x.dim()))
    tracer.info[x] = TensorInfo(spatial, [AxisRF.input(x.shape[a]) for a in spatial])
    tracer.producers[x] = (-1,)
    tracer._track(x)
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(tracer.pre_hook))
        handles.append(m.register_forward_hook(tracer.post_hook))
    try:
        grad = torch.enable_grad() if impulse else torch.no_grad()
        with grad, _Mode(tracer):
            out = model(x)
            if keep_outputs:
                tracer.output = out
            outs = _tensors(out)
            output_shape = tuple(outs[0].shape) if outs else ()
            feats = outs[0] if outs else None
        peak = tracer.peak
    finally:
        for h in handles:
            h.remove()
    # The field reported for the model: that of forward_features' map (classification models),
    # else of the output (segmentation). A second, hook-free pass finds the former.
    warnings: list[str] = []
    probed = hasattr(model, "forward_features") and not impulse and features_pass
    if probed:
        probe = _Tracer(model)
        probe.info[x] = tracer.info[x]
        with torch.no_grad(), _Mode(probe):
            feats = model.forward_features(x)
        warnings = probe.warnings
    features = probe.info.get(feats) if probed else tracer.info.get(feats)
    features_shape = tuple(feats.shape) if feats is not None else None
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    counted = sum(r.params for r in tracer.rows)
    if counted != total:  # parameters used outside any traced op (or never used)
        tracer.rows.append(Row(name="(parameters not used in forward)", type="-", module_path="",
                               params=total - counted, frozen=frozen - sum(r.frozen for r in tracer.rows)))
    trace = Trace(rows=tracer.rows, input_shape=tuple(x.shape[1:]), output_shape=output_shape, params=total,
                  frozen=frozen, peak_bytes=peak, features=features, features_shape=features_shape,
                  uncounted=dict(tracer.uncounted), warnings=_dedupe(tracer.warnings + warnings),
                  module_types={n: type(m).__name__ for n, m in model.named_modules()})
    return trace, tracer


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
