"""An integer-only forward of a whole glass network, and the flat graph it (and the C export) runs.

**The graph** (:func:`fold_network`). A glass model is walked into a flat list of :class:`Node`
(``conv``, ``linear``, ``maxpool``, ``avgpool``, ``relu``, ``zeropad``, ``add``), each reading earlier
tensors by index (tensor 0 is the input, node ``i`` writes tensor ``i + 1``). On the way:

- ``BatchNorm2d`` after a convolution is folded into it (evaluation statistics, float64)::

      g = gamma / sqrt(var + eps),   w'[o] = g[o] w[o],   b'[o] = g[o] (b[o] - mean[o]) + beta[o]

- a ``ReLU`` right after a conv / linear / residual add becomes that node's ``relu`` flag, and one right
  after a max pool that follows a convolution moves before the pool (``relu(max(x)) = max(relu(x))``:
  ReLU is monotone), so it too is folded;
- ``Dropout``, ``Dropout2d``, ``Identity`` and ``Flatten(1)`` vanish (evaluation; NCHW is already flat);
- ``AdaptiveAvgPool2d`` / ``GlobalAvgPool2d`` become an ``avgpool`` whose window is the whole map (or
  ``H / out`` when it divides); ResNet ``BasicBlock`` s become conv, conv, shortcut (identity, the option-A
  ``zeropad``, or a 1x1 conv + BN) and ``add`` (with the block's final ReLU).

Anything else raises ``ValueError`` naming the layer and what is supported.

**The int8 network** (:func:`quantize_network`). Activations are uint8 with one ``(s, z)`` per tensor
(asymmetric, the x86 convention of :mod:`convolab.glass.quant`), weights int8 per output channel
(symmetric, narrow), biases int32 at scale ``s_x s_w[o]``, int32 accumulation, and requantization by
an integer multiplier and shift (:func:`convolab.glass.quant.multiply_by_quantized_multiplier`)::

    q_y = clamp(z_y + requant(acc, M0[o], shift[o]), lo, 255),    lo = z_y if the node has a ReLU else 0

A conv / linear output's ``(s_y, z_y)`` comes from the calibration range of its float output *after*
its ReLU (so ``z_y = 0`` there and the clamp at ``z_y`` is the ReLU). Max pooling and a separate ReLU
(``max(q, z)``) run on the uint8 codes and keep ``(s, z)``; so does average pooling, whose integer rule is::

    q_y = floor((2 * sum(q) + n) / (2 * n))      (the mean of the n codes, rounded half up; sum(q) >= 0)

which keeps ``(s, z)`` because the mean of ``q`` is ``z`` plus the mean of ``q - z``. The option-A
shortcut (``zeropad``) subsamples the codes and fills the new channels with ``z`` (the value 0). A residual
``add`` rescales both inputs to a common fixed-point scale first (TFLite's reference ``Add``, ``2^20``
headroom, ``s_max = 2 max(s_a, s_b)``)::

    A = requant((q_a - z_a) 2^20, s_a / s_max),   B = requant((q_b - z_b) 2^20, s_b / s_max)
    q_y = clamp(z_y + requant(A + B, s_max / (2^20 s_y)), lo, 255)

A network ending in a ``linear`` returns its int32 accumulator (no requantization; logits
``acc * s_x s_w[o]``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from convolab.glass.activation import ReLU
from convolab.glass.blocks import BasicBlock, ZeroPadShortcut
from convolab.glass.conv import Conv2d
from convolab.glass.dropout import Dropout, Dropout2d
from convolab.glass.im2col import conv_output_size
from convolab.glass.linear import Flatten, Linear
from convolab.glass.module import Identity, Module, Sequential
from convolab.glass.norm import BatchNorm2d
from convolab.glass.pool import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convolab.glass.quant import (
    INT32_MAX,
    Int8Conv2d,
    Int8Linear,
    dequantize,
    multiply_by_quantized_multiplier,
    quant_params,
    quantize,
    quantize_multiplier,
)

__all__ = ["Node", "fold_network", "run_float", "Int8Network", "quantize_network", "SUPPORTED"]

ADD_SHIFT = 20   # headroom of the residual add's common fixed-point scale (TFLite's left_shift)
SUPPORTED = ("Conv2d (zero padding, + BatchNorm2d), Linear, ReLU, MaxPool2d, AvgPool2d (no padding), "
             "AdaptiveAvgPool2d / GlobalAvgPool2d, Flatten(1), Dropout, Identity, ResNet BasicBlock")


@dataclass
class Node:
    """One step of the flat graph: ``kind`` applied to tensors ``inputs``, giving a tensor of ``shape``."""

    kind: str                     # conv | linear | maxpool | avgpool | relu | zeropad | add
    name: str                     # the glass layer's qualified name (for messages and C comments)
    inputs: tuple[int, ...]       # tensor indices (0: the network input)
    shape: tuple[int, ...]        # output (C, H, W), or (K,) after a linear
    layer: object = None          # conv/linear: folded float64 glass layer; maxpool: MaxPool2d; zeropad: the module
    relu: bool = False            # ReLU fused at the output (conv, linear, add)
    attrs: dict = field(default_factory=dict)   # avgpool: kernel, stride


def _unsupported(m: Module, name: str, purpose: str) -> ValueError:
    return ValueError(f"{name or '<model>'} ({type(m).__name__}) is not supported by {purpose}; supported: {SUPPORTED}")


def _float64_copy(layer: Module) -> Module:
    twin = copy.copy(layer)
    twin.params = {k: np.array(v, dtype=np.float64) for k, v in layer.params.items()}
    twin.grads = {k: np.zeros_like(v) for k, v in twin.params.items()}
    twin._cache = None
    return twin


class _Builder:
    def __init__(self, input_shape: tuple[int, int, int], purpose: str):
        self.nodes: list[Node] = []
        self.shapes: list[tuple[int, ...]] = [tuple(int(s) for s in input_shape)]
        self.uses: list[int] = [0]
        self.purpose = purpose

    def add(self, node: Node) -> int:
        for i in node.inputs:
            self.uses[i] += 1
        self.nodes.append(node)
        self.shapes.append(node.shape)
        self.uses.append(0)
        return len(self.nodes)

    def producer(self, t: int) -> Node | None:
        return self.nodes[t - 1] if t > 0 else None

    def chw(self, t: int, m: Module, name: str) -> tuple[int, int, int]:
        shape = self.shapes[t]
        if len(shape) != 3:
            raise ValueError(f"{name} ({type(m).__name__}) gets a flat tensor of shape {shape}; {self.purpose} "
                             "needs (C, H, W) there")
        return shape

    def walk(self, m: Module, name: str, t: int) -> int:
        """Add the nodes of ``m`` reading tensor ``t``; return the tensor it outputs."""
        def sub(key: str) -> str:
            return f"{name}.{key}" if name else key

        kind = type(m)
        if kind is Sequential:
            for key, child in m.named_children():
                t = self.walk(child, sub(key), t)
            return t
        if kind in (Dropout, Dropout2d, Identity):
            return t
        if kind is Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"{name} (Flatten) must flatten dims 1..-1 for {self.purpose}; got "
                                 f"{m.start_dim}..{m.end_dim}")
            return t
        if kind is Conv2d:
            c, h, w = self.chw(t, m, name)
            if c != m.in_channels:
                raise ValueError(f"{name} (Conv2d) expects {m.in_channels} channels, gets {c}")
            ho, wo = m.output_size(h, w)
            if ho < 1 or wo < 1:
                raise ValueError(f"{name} (Conv2d): a {h}x{w} input is smaller than the kernel's reach")
            layer = _float64_copy(m)
            if "bias" not in layer.params:
                layer.params["bias"] = np.zeros(m.out_channels)
            return self.add(Node("conv", name, (t,), (m.out_channels, ho, wo), layer))
        if kind is Linear:
            size = int(np.prod(self.shapes[t]))
            if size != m.in_features:
                raise ValueError(f"{name} (Linear) expects {m.in_features} features, gets {size} "
                                 f"(shape {self.shapes[t]})")
            layer = _float64_copy(m)
            if "bias" not in layer.params:
                layer.params["bias"] = np.zeros(m.out_features)
            return self.add(Node("linear", name, (t,), (m.out_features,), layer))
        if kind is BatchNorm2d:
            return self.fold_bn(m, name, t)
        if kind is ReLU:
            return self.relu(m, name, t)
        if kind is MaxPool2d:
            c, h, w = self.chw(t, m, name)
            if m.dilation != (1, 1):
                raise ValueError(f"{name} (MaxPool2d) with dilation {m.dilation} is not supported by {self.purpose}")
            size = [conv_output_size(s, k, st, p, 1, m.ceil_mode)
                    for s, k, st, p in zip((h, w), m.kernel_size, m.stride, m.padding)]
            return self.add(Node("maxpool", name, (t,), (c, *size), m))
        if kind is AvgPool2d:
            c, h, w = self.chw(t, m, name)
            if m.padding != (0, 0) or m.ceil_mode or m.divisor_override is not None:
                raise ValueError(f"{name} (AvgPool2d) needs padding 0, ceil_mode False and no divisor_override "
                                 f"for {self.purpose}")
            size = [conv_output_size(s, k, st, 0) for s, k, st in zip((h, w), m.kernel_size, m.stride)]
            return self.add(Node("avgpool", name, (t,), (c, *size), attrs=dict(kernel=m.kernel_size,
                                                                               stride=m.stride)))
        if kind in (AdaptiveAvgPool2d, GlobalAvgPool2d):
            c, h, w = self.chw(t, m, name)
            out = (1, 1) if kind is GlobalAvgPool2d else tuple(s if o is None else o
                                                               for o, s in zip(m.output_size, (h, w)))
            if h % out[0] or w % out[1]:
                raise ValueError(f"{name} ({kind.__name__}): {self.purpose} needs the {h}x{w} map to divide into "
                                 f"{out[0]}x{out[1]} equal bins")
            k = (h // out[0], w // out[1])
            return self.add(Node("avgpool", name, (t,), (c, *out), attrs=dict(kernel=k, stride=k)))
        if kind is BasicBlock:
            return self.basic_block(m, name, t)
        raise _unsupported(m, name, self.purpose)

    def fold_bn(self, m: BatchNorm2d, name: str, t: int) -> int:
        node = self.producer(t)
        if node is None or node.kind != "conv" or node.relu or self.uses[t] or not m.track_running_stats:
            raise ValueError(f"{name} (BatchNorm2d) must follow a convolution directly (and use running "
                             f"statistics) to be folded for {self.purpose}")
        g = np.ones(m.num_features) if not m.affine else np.asarray(m.params["weight"], np.float64)
        beta = np.zeros(m.num_features) if not m.affine else np.asarray(m.params["bias"], np.float64)
        scale = g / np.sqrt(np.asarray(m.buffers["running_var"], np.float64) + m.eps)          # (O,)
        p = node.layer.params
        p["weight"] = p["weight"] * scale[:, None, None, None]
        p["bias"] = (p["bias"] - np.asarray(m.buffers["running_mean"], np.float64)) * scale + beta
        node.name += f"+{name.rsplit('.', 1)[-1]}"
        return t

    def relu(self, m: ReLU, name: str, t: int) -> int:
        node = self.producer(t)
        if node is not None and not self.uses[t] and node.kind in ("conv", "linear", "add") and not node.relu:
            node.relu = True
            return t
        if node is not None and node.kind == "maxpool" and not self.uses[t]:   # relu(maxpool(y)) = maxpool(relu(y))
            before = self.producer(node.inputs[0])
            if before is not None and before.kind == "conv" and not before.relu and self.uses[node.inputs[0]] == 1:
                before.relu = True
                return t
        return self.add(Node("relu", name, (t,), self.shapes[t]))

    def basic_block(self, m: BasicBlock, name: str, t: int) -> int:
        if type(m.relu) is not ReLU or type(m.relu_out) is not ReLU:
            raise ValueError(f"{name} (BasicBlock) with a {type(m.relu).__name__} activation is not supported by "
                             f"{self.purpose}; only ReLU")
        branch = self.walk(m.conv1, f"{name}.conv1", t)
        branch = self.walk(m.bn1, f"{name}.bn1", branch)
        branch = self.walk(m.relu, f"{name}.relu", branch)
        branch = self.walk(m.conv2, f"{name}.conv2", branch)
        branch = self.walk(m.bn2, f"{name}.bn2", branch)
        if m.downsample is None:
            shortcut = t
        elif type(m.downsample) is ZeroPadShortcut:
            d = m.downsample
            c, h, w = self.chw(t, d, f"{name}.downsample")
            shape = (d.out_channels, -(-h // d.stride), -(-w // d.stride))
            shortcut = self.add(Node("zeropad", f"{name}.downsample", (t,), shape, d))
        else:
            shortcut = self.walk(m.downsample, f"{name}.downsample", t)
        if self.shapes[branch] != self.shapes[shortcut]:
            raise ValueError(f"{name} (BasicBlock): the branch gives {self.shapes[branch]} but the shortcut "
                             f"{self.shapes[shortcut]}")
        return self.add(Node("add", name, (branch, shortcut), self.shapes[branch], relu=True))


def fold_network(model: Module, input_shape: tuple[int, int, int], purpose: str = "the int8 network") -> list[Node]:
    """The flat graph of ``model`` for one (C, H, W) input (see the module docstring); ``model`` is not modified.

    Raises:
        ValueError: a layer the graph cannot express; the message names it (``purpose`` says for what).
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W); got {input_shape!r}")
    builder = _Builder(tuple(input_shape), purpose)
    out = builder.walk(model, "", 0)
    if out == 0:
        raise ValueError(f"the model computes nothing {purpose} can run (no layer left after folding)")
    return builder.nodes


def _avgpool(x: np.ndarray, attrs: dict) -> np.ndarray:
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    n, c, h, w = x.shape
    ho, wo = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
    total = np.zeros((n, c, ho, wo), dtype=np.float64 if x.dtype.kind == "f" else np.int64)
    for i in range(kh):
        for j in range(kw):
            total += x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
    return total


def run_float(nodes: list[Node], x: np.ndarray) -> list[np.ndarray]:
    """Every tensor of the graph (index 0: ``x``) for a float batch ``x`` (N, C, H, W), in float64."""
    values = [np.asarray(x, dtype=np.float64)]
    for node in nodes:
        a = values[node.inputs[0]]
        if node.kind == "conv":
            y = node.layer.forward(a)
        elif node.kind == "linear":
            y = node.layer.forward(a.reshape(len(a), -1))
        elif node.kind == "maxpool":
            y = node.layer.forward(a)
        elif node.kind == "avgpool":
            kh, kw = node.attrs["kernel"]
            y = _avgpool(a, node.attrs) / (kh * kw)
        elif node.kind == "zeropad":
            y = node.layer.forward(a)
        elif node.kind == "add":
            y = a + values[node.inputs[1]]
        else:  # relu
            y = a
        values.append(np.maximum(y, 0.0) if node.relu or node.kind == "relu" else np.ascontiguousarray(y))
    return values


def _requalify(q: Int8Conv2d | Int8Linear, bias: np.ndarray, s_x: float, z_x: int, s_y: float, z_y: int,
               name: str) -> None:
    """Point an Int8 layer at the network's activation parameters: its input ``(s_x, z_x)`` is the previous
    tensor's, its output ``(s_y, z_y)`` the range after the fused ReLU; re-derive ``q_b``, ``M0`` and ``shift``."""
    q.input_scale, q.input_zero_point, q.output_scale, q.output_zero_point = s_x, z_x, s_y, z_y
    acc_scale = s_x * q.weight_scale                                             # (O,)
    qb = np.rint(bias / acc_scale)
    if (np.abs(qb) > INT32_MAX).any():
        raise ValueError(f"{name}: the bias does not fit int32 at scale s_x * s_w")
    q.bias_q = qb.astype(np.int32)
    k = int(np.prod(q.weight_q.shape[1:]))
    if k * 255 * 127 + int(np.abs(q.bias_q.astype(np.int64)).max()) > INT32_MAX:
        raise ValueError(f"{name}: {k} products per output can overflow the int32 accumulator")
    pairs = [quantize_multiplier(m) for m in acc_scale / s_y]
    q.multiplier = np.array([p[0] for p in pairs], dtype=np.int64)
    q.shift = np.array([p[1] for p in pairs], dtype=np.int64)


@dataclass
class QStep:
    """One integer step: the graph node, its int8 layer (conv/linear) and the output's ``(s, z)``."""

    node: Node
    qlayer: Int8Conv2d | Int8Linear | None
    scale: float
    zero_point: int
    lo: int = 0          # lower clamp of the requantized output (z_y with a fused ReLU)
    add: tuple[tuple[int, int], ...] = ()   # add: (M0, shift) of input a, input b and the output


class Int8Network:
    """The integer-only forward of a folded network (built by :func:`quantize_network`).

    ``forward_int``: uint8 (N, C, H, W) codes -> int32 (N, K) accumulators when the network ends in a linear
    layer (else the uint8 codes of its last tensor). ``forward``: float input -> quantize -> integers ->
    float64 logits.
    """

    def __init__(self, nodes: list[Node], steps: list[QStep], input_scale: float, input_zero_point: int):
        self.nodes, self.steps = nodes, steps
        self.input_scale, self.input_zero_point = input_scale, input_zero_point
        last = steps[-1]
        self.returns_accumulator = last.node.kind == "linear"
        if self.returns_accumulator:
            self.output_scale = last.qlayer.input_scale * last.qlayer.weight_scale          # (K,) s_x s_w[o]
            self.output_zero_point = 0
        else:
            self.output_scale, self.output_zero_point = last.scale, last.zero_point

    def zero_point(self, t: int) -> int:
        """The zero point of tensor ``t`` (0: the input; ``i + 1``: step ``i``'s output)."""
        return self.input_zero_point if t == 0 else self.steps[t - 1].zero_point

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float (normalised) input -> uint8 ``clamp(rint(x / s) + z, 0, 255)`` (float64 division)."""
        return quantize(x, self.input_scale, self.input_zero_point, 8, signed=False)

    def forward_int(self, qx: np.ndarray) -> np.ndarray:
        qx = np.asarray(qx)
        if qx.dtype != np.uint8 or qx.ndim != 4:
            raise ValueError(f"forward_int takes uint8 (N, C, H, W) codes (quantize_input gives them); got "
                             f"{qx.dtype} of shape {qx.shape}")
        values = [qx]
        for i, step in enumerate(self.steps):
            node, a = step.node, values[step.node.inputs[0]]
            if node.kind in ("conv", "linear"):
                ql = step.qlayer
                a = a.reshape(len(a), -1) if node.kind == "linear" else a
                if i == len(self.steps) - 1 and node.kind == "linear":
                    values.append(ql.accumulate(a))                                     # int32 (N, K)
                    continue
                acc = ql.accumulate(a)
                acc = acc.transpose(0, 2, 3, 1) if node.kind == "conv" else acc       # channels last for (O,)
                y = step.zero_point + multiply_by_quantized_multiplier(acc, ql.multiplier, ql.shift)
                y = np.clip(y, step.lo, 255).astype(np.uint8)
                values.append(np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if node.kind == "conv" else y)
            elif node.kind == "maxpool":
                y = node.layer.forward(a.astype(np.float64))      # max of small integers: exact in float64
                values.append(y.astype(np.uint8))
            elif node.kind == "avgpool":
                kh, kw = node.attrs["kernel"]
                n = kh * kw
                values.append(((2 * _avgpool(a.astype(np.int64), node.attrs) + n) // (2 * n)).astype(np.uint8))
            elif node.kind == "relu":
                values.append(np.maximum(a, step.zero_point).astype(np.uint8))
            elif node.kind == "zeropad":
                st = node.layer.stride
                y = np.full((len(a), *node.shape), step.zero_point, dtype=np.uint8)
                y[:, :a.shape[1]] = a[:, :, ::st, ::st]
                values.append(y)
            elif node.kind == "add":
                (ma, sa), (mb, sb), (mo, so) = step.add
                b = values[node.inputs[1]]
                za, zb = (self.zero_point(t) for t in node.inputs)
                qa = multiply_by_quantized_multiplier((a.astype(np.int64) - za) << ADD_SHIFT, ma, sa)
                qb = multiply_by_quantized_multiplier((b.astype(np.int64) - zb) << ADD_SHIFT, mb, sb)
                y = step.zero_point + multiply_by_quantized_multiplier(qa + qb, mo, so)
                values.append(np.clip(y, step.lo, 255).astype(np.uint8))
            else:
                raise ValueError(f"{node.name} ({node.kind}) has no integer version")
        return values[-1]

    def dequantize_output(self, out: np.ndarray) -> np.ndarray:
        """int32 accumulators or uint8 codes -> float64 (``acc * s_x s_w[o]`` or ``s (q - z)``)."""
        if self.returns_accumulator:
            return np.asarray(out, dtype=np.int64) * self.output_scale
        return dequantize(out, self.output_scale, self.output_zero_point)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float input (N, C, H, W) -> float64 logits."""
        return self.dequantize_output(self.forward_int(self.quantize_input(x)))


def quantize_network(model: Module, calibration: np.ndarray, input_shape: tuple[int, int, int] | None = None
                     ) -> Int8Network:
    """Fold ``model`` (:func:`fold_network`) and calibrate every activation's ``(s, z)`` on ``calibration``.

    Args:
        model: a glass model (evaluation statistics are used for BatchNorm).
        calibration: float (N, C, H, W) inputs, normalised as the model expects (a few hundred images).
        input_shape: (C, H, W); default ``calibration.shape[1:]``.

    Raises:
        ValueError: a layer the int8 network cannot run (named), or a bad calibration array.
    """
    calibration = np.asarray(calibration, dtype=np.float64)
    if calibration.ndim != 4 or not len(calibration) or not np.isfinite(calibration).all():
        raise ValueError(f"calibration must be a finite float (N, C, H, W) batch; got shape {calibration.shape}")
    nodes = fold_network(model, input_shape or calibration.shape[1:], "the int8 network")
    values = run_float(nodes, calibration)
    params = [tuple(quant_params(values[0], 8, symmetric=False))]                # per tensor (s, z)
    steps = []
    for node, y in zip(nodes, values[1:]):
        s_x, z_x = params[node.inputs[0]]
        s_x, z_x = float(s_x), int(z_x)
        if node.kind in ("conv", "linear"):
            s_y, z_y = (float(v) for v in quant_params(y, 8, symmetric=False))
            z_y = int(z_y)
            cal = values[node.inputs[0]]
            cal = cal.reshape(len(cal), -1) if node.kind == "linear" else cal
            ql = (Int8Conv2d if node.kind == "conv" else Int8Linear)(node.layer, cal)
            _requalify(ql, node.layer.params["bias"], s_x, z_x, s_y, z_y, node.name)
            steps.append(QStep(node, ql, s_y, z_y, z_y if node.relu else 0))
        elif node.kind == "add":
            s_b, z_b = params[node.inputs[1]]
            s_y, z_y = (float(v) for v in quant_params(y, 8, symmetric=False))
            z_y = int(z_y)
            s_max = 2 * max(s_x, float(s_b))
            mults = tuple(quantize_multiplier(m) for m in (s_x / s_max, float(s_b) / s_max,
                                                          s_max / (2 ** ADD_SHIFT * s_y)))
            steps.append(QStep(node, None, s_y, z_y, z_y if node.relu else 0, mults))
        else:  # maxpool, avgpool, relu, zeropad: the codes keep their (s, z)
            s_y, z_y = s_x, z_x
            steps.append(QStep(node, None, s_y, z_y))
        params.append((s_y, z_y))
    return Int8Network(nodes, steps, float(params[0][0]), int(params[0][1]))
