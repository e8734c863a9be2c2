"""The explorer's computations on one image: every layer's output, a unit's receptive field, the arithmetic of
one output unit ("elastic explanation", as CNN Explainer shows it) and a convolution's kernels.

Pure functions: tensors in, JSON-ready dicts out (lists, floats, base64 strings), in the shapes of the serve
contract (``/api/analyze``'s LayerView, ``/api/unit``, ``/api/elastic``, ``/api/kernels``). Layers are the rows
``convolab summary`` prints at full depth (``convolab.analysis.trace``), named and ordered as it names them.

Everything here is numpy/torch/Pillow only, so that the whole of an image's analysis is one traced forward
(tutorial_cnn: milliseconds; resnet18 at 224x224: a fraction of a second on a CPU).
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convolab.analysis.trace import Row, trace_model

__all__ = ["inspect_image", "layer_view", "unit_field", "elastic", "kernels", "png_b64", "UnknownLayerError",
           "MAX_CHANNELS", "MAX_VECTOR"]

MAX_CHANNELS = 64  # feature maps sent per layer (LayerView.maps.total says how many there are)
MAX_VECTOR = 512  # values sent for a flat layer output
_UNUSED = "(parameters not used in forward)"  # the trace's synthetic row: not a layer


class UnknownLayerError(ValueError):
    """No traced layer has that name."""


# -- images --------------------------------------------------------------------------------------
def png_b64(array: np.ndarray | torch.Tensor) -> str:
    """A uint8 image, ``(C, H, W)`` with C in 1, 3, 4 or ``(H, W)``, as a base64 PNG (fast compression).

    Other channel counts are shown as the mean over channels (grey).
    """
    from PIL import Image

    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"png_b64 takes a uint8 image, got {a.dtype}")
    if a.ndim == 3:
        if a.shape[0] in (3, 4):
            a = np.ascontiguousarray(a.transpose(1, 2, 0))
        elif a.shape[0] == 1:
            a = a[0]
        else:
            a = a.mean(axis=0).round().astype(np.uint8)
    elif a.ndim != 2:
        raise ValueError(f"png_b64 takes an image (C, H, W) or (H, W), got shape {tuple(a.shape)}")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


# -- the overview: every layer's output ----------------------------------------------------------
def inspect_image(model: nn.Module, x: torch.Tensor) -> tuple[list[float], list[dict]]:
    """One traced forward of ``x`` (``[1, C, H, W]``, preprocessed, on the model's device).

    Returns:
        the logits (``K`` floats; for a segmentation output ``[1, K, H, W]`` the per-class mean over pixels)
        and one LayerView dict per traced row, in network order (see :func:`layer_view`).
    """
    if x.dim() < 3 or x.shape[0] != 1:
        raise ValueError(f"inspect_image takes one image as a batch of 1 ([1, C, H, W]), got shape {tuple(x.shape)}")
    trace, tracer = _traced(model, x)
    layers = [layer_view(r, out) for r, out in zip(trace.rows, tracer.row_outputs) if r.name != _UNUSED]
    return _logits(tracer.output), layers


def _traced(model: nn.Module, x: torch.Tensor):
    was = model.training
    model.eval()
    try:
        return trace_model(model, tuple(x.shape[1:]), device=x.device, dtype=x.dtype, x=x, keep_outputs=True,
                           features_pass=False)
    finally:
        model.train(was)


def _first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    raise ValueError("the model's output holds no tensor")


def _logits(out) -> list[float]:
    t = _first_tensor(out).detach().float()[0]
    if t.dim() > 1:  # [K, H, W]: one score per class, averaged over the map
        t = t.flatten(1).mean(1)
    return t.reshape(-1).cpu().tolist()


def _num(v: float) -> int | float:
    v = float(v)
    return int(v) if v.is_integer() else v


def layer_view(row: Row, output: torch.Tensor | None) -> dict:
    """The contract's LayerView for one traced row and its output (``[1, C, H, W]`` maps, ``[1, F]`` vectors)."""
    info = row.info
    w = row.window
    view = {
        "name": row.name, "type": row.type, "shape": list(row.out_shape[1:]),
        "params": row.params + row.frozen, "macs": row.macs,
        "window": {k: (list(v) if isinstance(v, tuple) else v) for k, v in w.items()} if w else None,
        "receptive_field": [_num(a.r) for a in info.rf] if info else None,
        "jump": [_num(a.j) for a in info.rf] if info else None,
        "start": [_num(a.start) for a in info.rf] if info else None,
        "global_context": any(a.global_context for a in info.rf) if info else None,
        # exact fields, borders followed: unit i of axis k reads input pixels lo[k][i]..hi[k][i] (null: none)
        "extent": _extent(info) if info else None,
        "maps": None, "vector": None,
    }
    if output is None or output.dim() == 0 or output.shape[0] != 1:
        return view
    if output.dim() == 4:
        view["maps"] = _maps(output[0])
    elif output.dim() == 2:
        values = torch.nan_to_num(output[0, :MAX_VECTOR].detach().float()).cpu().tolist()
        view["vector"] = {"values": values, "total": int(output.shape[1])}
    return view


def _extent(info) -> dict:
    lo, hi = [], []
    for a in info.rf:
        empty = a.lo > a.hi
        lo.append([None if e else int(v) for v, e in zip(a.lo.tolist(), empty.tolist())])
        hi.append([None if e else int(v) for v, e in zip(a.hi.tolist(), empty.tolist())])
    return {"lo": lo, "hi": hi}


def _maps(t: torch.Tensor) -> dict:
    """``[C, H, W]`` -> the first 64 channels, each scaled from its min..max to 0..255, as base64 uint8."""
    total, h, w = t.shape
    n = min(total, MAX_CHANNELS)
    flat = t[:n].detach().float().reshape(n, -1)
    lo, hi = torch.aminmax(flat, dim=1)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):  # NaN/inf would poison the scaling: shown as 0
        flat = torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = torch.aminmax(flat, dim=1)
    span = hi - lo
    scale = torch.where(span > 0, 255.0 / torch.where(span > 0, span, 1.0), 0.0)
    # (v - min) * 255 / (max - min) lies in [0, 255]; + 0.5 then truncation rounds it to the nearest level
    q = (flat - lo[:, None]).mul_(scale[:, None]).add_(0.5).to(torch.uint8)
    return {"channels": n, "total": int(total), "height": int(h), "width": int(w),
            "min": lo.cpu().tolist(), "max": hi.cpu().tolist(), "data": _b64(q.cpu().numpy())}


# -- a unit's receptive field on the input -------------------------------------------------------
def unit_field(layer: Row | dict, y: int, x: int, input_hw: tuple[int, int],
               image: np.ndarray | torch.Tensor | None = None) -> dict:
    """Where unit ``(y, x)`` of a layer's map looks in the input: the contract's ``/api/unit`` answer.

    Args:
        layer: a traced :class:`Row` or a LayerView dict (its ``extent``): the box is the exact field, borders
            followed (padding taps read nothing), clipped to the input; the size, jump and centre are the
            nominal ones ``convolab summary`` prints.
        y, x: the unit's position on the layer's map.
        input_hw: the model input's height and width.
        image: the model input as uint8 ``(C, H, W)``; its patch under the box becomes ``patch_png``
            (``None`` without an image).
    """
    name = layer.name if isinstance(layer, Row) else layer["name"]
    if isinstance(layer, Row):
        if layer.info is None:
            raise ValueError(f"layer {name!r} has no receptive field (its output is not a map); pick a conv, "
                             "pooling or activation layer before the flatten")
        axes = layer.info.rf
        sizes = [a.size for a in axes]
        nominal = [(a.r, a.j, a.start) for a in axes]
    else:
        if layer.get("receptive_field") is None:
            raise ValueError(f"layer {name!r} has no receptive field (its output is not a map); pick a conv, "
                             "pooling or activation layer before the flatten")
        sizes = list(layer["shape"][-2:])
        nominal = list(zip(layer["receptive_field"], layer["jump"], layer["start"]))
        extent = layer.get("extent")
    if len(nominal) != 2:
        raise ValueError(f"layer {name!r}: unit fields are drawn for 2-D maps, this one has {len(nominal)} axes")
    box, centre = [], []
    for k, (idx, n_in) in enumerate(zip((y, x), input_hw)):
        if not 0 <= idx < sizes[k]:
            raise ValueError(f"unit ({y}, {x}) is outside layer {name!r}'s {sizes[0]}x{sizes[1]} map")
        r, j, start = nominal[k]
        c = start + idx * j
        centre.append(_num(c))
        if isinstance(layer, Row):
            exact = axes[k].clipped(idx, n_in)
        elif extent is not None and extent["lo"][k][idx] is not None:
            exact = max(extent["lo"][k][idx], 0), min(extent["hi"][k][idx], n_in - 1)
        else:
            exact = None
        if exact is not None:
            lo, hi = exact
        else:  # the nominal field, clipped: [c - (r-1)/2, c + (r-1)/2]
            lo = math.floor(c - (r - 1) / 2 + 0.5)
            hi = lo + int(round(r)) - 1
            lo, hi = max(lo, 0), min(hi, n_in - 1)
        box.append((lo, max(hi + 1, lo)))
    (y0, y1), (x0, x1) = box
    patch = None
    if image is not None and y1 > y0 and x1 > x0:
        img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        patch = png_b64(img[..., y0:y1, x0:x1])
    return {"layer": name, "y": int(y), "x": int(x),
            "receptive_field": [_num(n[0]) for n in nominal], "jump": [_num(n[1]) for n in nominal],
            "center": centre, "box": [int(y0), int(x0), int(y1), int(x1)], "patch_png": patch}


# -- elastic explanation: the arithmetic of one output unit --------------------------------------
_ACTIVATIONS = {  # module class or functional op -> the formula shown
    "ReLU": "max(0, x)", "relu": "max(0, x)", "relu_": "max(0, x)",
    "ReLU6": "min(max(0, x), 6)", "relu6": "min(max(0, x), 6)",
    "LeakyReLU": "x if x > 0 else slope * x", "leaky_relu": "x if x > 0 else slope * x",
    "ELU": "x if x > 0 else alpha * (exp(x) - 1)", "elu": "x if x > 0 else alpha * (exp(x) - 1)",
    "GELU": "x * Phi(x)", "gelu": "x * Phi(x)",
    "SiLU": "x * sigmoid(x)", "silu": "x * sigmoid(x)",
    "Sigmoid": "1 / (1 + exp(-x))", "sigmoid": "1 / (1 + exp(-x))",
    "Tanh": "tanh(x)", "tanh": "tanh(x)",
    "Hardtanh": "min(max(x, -1), 1)", "hardtanh": "min(max(x, -1), 1)",
    "Hardswish": "x * min(max(x + 3, 0), 6) / 6", "hardswish": "x * min(max(x + 3, 0), 6) / 6",
    "Hardsigmoid": "min(max(x + 3, 0), 6) / 6", "hardsigmoid": "min(max(x + 3, 0), 6) / 6",
    "Softplus": "log(1 + exp(x))", "softplus": "log(1 + exp(x))",
    "Mish": "x * tanh(softplus(x))", "mish": "x * tanh(softplus(x))",
}
_POOL_TYPES = {"MaxPool2d": "max", "AvgPool2d": "avg", "max_pool2d": "max", "avg_pool2d": "avg",
               "AdaptiveAvgPool2d": "avg", "AdaptiveMaxPool2d": "max", "adaptive_avg_pool2d": "avg",
               "adaptive_max_pool2d": "max"}
_EXPLAINED = "Conv2d, activations (ReLU, ReLU6, LeakyReLU, ELU, GELU, SiLU, sigmoid, tanh, ...), max/avg pooling " \
             "(also adaptive) and 'softmax' (the logits)"


def elastic(model: nn.Module, inputs: torch.Tensor, layer: str, channel: int, y: int, x: int) -> dict:
    """How unit ``(channel, y, x)`` of ``layer`` is computed from its input, number by number.

    ``inputs`` is the preprocessed image ``[1, C, H, W]``. ``layer`` is a row name as ``convolab summary``
    prints it (the first call when a module runs twice), or ``"softmax"`` for the softmax over the logits
    (then ``channel``, ``y`` and ``x`` are ignored, except ``y``/``x`` pick the pixel of a segmentation
    output). The answer's ``output`` is computed here from the numbers it shows; ``actual`` is what the
    layer really produced (they agree to float error).

    Raises:
        UnknownLayerError: no traced layer has that name.
        ValueError: a layer of a type that is not explained, or a unit outside its output.
    """
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handle = None
    if layer in modules:
        def grab(module, args):  # the input as the layer saw it (a later in-place op may overwrite it)
            if "input" not in captured and args and isinstance(args[0], torch.Tensor):
                captured["input"] = args[0].detach().clone()
        handle = modules[layer].register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            trace, tracer = _traced(model, inputs)
    finally:
        if handle is not None:
            handle.remove()
    if layer == "softmax":
        return _softmax(tracer.output, y, x)
    rows = [i for i, r in enumerate(trace.rows) if r.name == layer and r.name != _UNUSED]
    if not rows:
        raise UnknownLayerError(f"no layer named {layer!r}; the layers are the rows `convolab summary` prints "
                                f"(e.g. {trace.rows[0].name!r}), or 'softmax'")
    i = rows[0]
    row = trace.rows[i]
    module = modules.get(layer) if row.module_path == layer else None
    src = row.inputs[0] if row.inputs else -1
    input_layer = "input" if src < 0 else trace.rows[src].name
    inp = captured.get("input")
    if inp is None:  # an op row (F.relu in a container's forward): its input is its producer's output
        inp = inputs.detach() if src < 0 else tracer.row_outputs[src]
    actual_t = tracer.row_outputs[i]
    if isinstance(module, nn.Conv2d):
        out = _conv(module, inp, channel, y, x, actual_t)
    elif row.type in _ACTIVATIONS:
        out = _activation(row.type, module, inp, channel, y, x, actual_t)
    elif row.type in _POOL_TYPES:
        out = _pool(row, module, inp, channel, y, x, actual_t)
    else:
        raise ValueError(f"layer {layer!r} is a {row.type}; the elastic explanation covers {_EXPLAINED}")
    out["input_layer"] = input_layer
    out["layer"] = layer
    return out


def _check_unit(t: torch.Tensor, channel: int, y: int, x: int, what: str) -> None:
    if t.dim() == 4:
        c, h, w = t.shape[1:]
        if not (0 <= channel < c and 0 <= y < h and 0 <= x < w):
            raise ValueError(f"unit (channel {channel}, y {y}, x {x}) is outside {what}'s {c}x{h}x{w} output")
    elif t.dim() == 2:
        if not 0 <= channel < t.shape[1]:
            raise ValueError(f"unit {channel} is outside {what}'s {t.shape[1]} outputs")
    else:
        raise ValueError(f"{what}'s output has shape {tuple(t.shape)}; units are explained on [1, C, H, W] maps "
                         "and [1, F] vectors")


def _at(t: torch.Tensor, channel: int, y: int, x: int) -> float:
    return float(t[0, channel, y, x] if t.dim() == 4 else t[0, channel])


def _conv(m: nn.Conv2d, inp: torch.Tensor, channel: int, y: int, x: int, actual: torch.Tensor) -> dict:
    _check_unit(actual, channel, y, x, "this convolution")
    kh, kw = m.kernel_size
    (sy, sx), (dy, dx), g = m.stride, m.dilation, m.groups
    left, right, top, bottom = m._reversed_padding_repeated_twice  # (W left, W right, H top, H bottom)
    mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
    padded = F.pad(inp, (left, right, top, bottom), mode=mode) if any((left, right, top, bottom)) else inp
    cin_g = m.in_channels // g
    first = (channel // (m.out_channels // g)) * cin_g  # the input channels this output's group reads
    ys = torch.arange(kh, device=inp.device) * dy + y * sy  # rows of the window in the padded map
    xs = torch.arange(kw, device=inp.device) * dx + x * sx
    patch = padded[0, first:first + cin_g].index_select(1, ys).index_select(2, xs).double()  # (cin_g, kh, kw)
    kernel = m.weight[channel].detach().double()  # (cin_g, kh, kw)
    products = patch * kernel
    sums = products.sum((1, 2))
    bias = float(m.bias[channel].detach()) if m.bias is not None else 0.0
    patch_l, kernel_l, prod_l, sums_l = (patch.cpu().tolist(), kernel.cpu().tolist(), products.cpu().tolist(),
                                         sums.cpu().tolist())
    return {
        "kind": "conv", "channel": channel, "y": y, "x": x,
        "in_channels": [{"channel": first + c, "patch": patch_l[c], "kernel": kernel_l[c], "products": prod_l[c],
                         "sum": sums_l[c]} for c in range(cin_g)],
        "bias": bias, "output": float(sums.sum()) + bias, "actual": _at(actual, channel, y, x),
        "window": {"kernel_size": [kh, kw], "stride": [sy, sx], "padding": [top, left], "dilation": [dy, dx],
                   "groups": g, "padding_mode": m.padding_mode},
        "origin": [y * sy - top, x * sx - left],  # the window's top-left tap on the (unpadded) input map
        "positions": [[int(a) - top, int(b) - left] for a in ys.tolist() for b in xs.tolist()],
    }


def _activation(kind: str, module: nn.Module | None, inp: torch.Tensor, channel: int, y: int, x: int,
                actual: torch.Tensor) -> dict:
    _check_unit(actual, channel, y, x, f"this {kind}")
    if inp.shape != actual.shape:
        raise ValueError(f"this {kind} changes its input's shape; only elementwise activations are explained")
    v = _at(inp, channel, y, x)
    scalar = torch.tensor([v], dtype=inp.dtype)
    if module is not None:
        with torch.no_grad():
            computed = float(_apply_module(module, scalar))
    else:  # a functional op in a container's forward, with its default settings
        computed = float(getattr(F, kind.rstrip("_"), getattr(torch, kind.rstrip("_"), None))(scalar))
    return {"kind": "activation", "function": kind, "formula": _ACTIVATIONS[kind], "channel": channel, "y": y,
            "x": x, "input": v, "output": computed, "actual": _at(actual, channel, y, x)}


def _apply_module(module: nn.Module, scalar: torch.Tensor) -> torch.Tensor:
    """The activation module on one value (a copy of the module's settings; no state changes)."""
    dev = next(iter(module.parameters()), scalar).device  # PReLU-like modules keep parameters
    return module(scalar.to(dev)).cpu()


def _pool(row: Row, module: nn.Module | None, inp: torch.Tensor, channel: int, y: int, x: int,
          actual: torch.Tensor) -> dict:
    _check_unit(actual, channel, y, x, f"this {row.type}")
    op = _POOL_TYPES[row.type]
    h, w = inp.shape[-2:]
    if "daptive" in row.type:
        oh, ow = actual.shape[-2:]
        y0, y1 = (y * h) // oh, -((-(y + 1) * h) // oh)
        x0, x1 = (x * w) // ow, -((-(x + 1) * w) // ow)
        ys, xs = list(range(y0, y1)), list(range(x0, x1))
        window = {"kernel_size": [y1 - y0, x1 - x0], "adaptive": True}
        divisor = len(ys) * len(xs)
    else:
        win = row.window or {}
        (kh, kw), (sy, sx) = win["kernel_size"], win["stride"]
        (ph, pw), (dy, dx) = win["padding"], win["dilation"]
        ys = [y * sy - ph + t * dy for t in range(kh)]
        xs = [x * sx - pw + t * dx for t in range(kw)]
        window = {k: list(v) if isinstance(v, tuple) else v for k, v in win.items()}
        divisor = None
        if op == "avg":  # torch's divisor: the window clipped to the padded map, or to the map without padding
            include = getattr(module, "count_include_pad", True)
            override = getattr(module, "divisor_override", None)
            hs, ws = y * sy - ph, x * sx - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            pool_size = (he - hs) * (we - ws)
            inside = (min(he, h) - max(hs, 0)) * (min(we, w) - max(ws, 0))
            divisor = override or (pool_size if include else inside)
            window.update(count_include_pad=include, divisor_override=override)
    plane = inp[0, channel].double().cpu()
    # taps outside the map: null in the patch (a max-pool pads with -inf; an average counts them as 0)
    patch = [[float(plane[a, b]) if 0 <= a < h and 0 <= b < w else None for b in xs] for a in ys]
    values = [v for line in patch for v in line if v is not None]
    output = max(values) if op == "max" else sum(values) / divisor
    out = {"kind": "pool", "op": op, "channel": channel, "y": y, "x": x, "patch": patch, "output": output,
           "actual": _at(actual, channel, y, x), "window": window, "positions": [[a, b] for a in ys for b in xs]}
    if divisor is not None:
        out["divisor"] = divisor
    return out


def _softmax(output, y: int, x: int) -> dict:
    t = _first_tensor(output).detach().double()[0].cpu()
    if t.dim() == 3:  # segmentation [K, H, W]: the softmax over classes at pixel (y, x)
        if not (0 <= y < t.shape[1] and 0 <= x < t.shape[2]):
            raise ValueError(f"pixel ({y}, {x}) is outside the {t.shape[1]}x{t.shape[2]} output")
        t = t[:, y, x]
    elif t.dim() != 1:
        raise ValueError(f"the softmax is explained over logits [1, K] (or [1, K, H, W]); the output is "
                         f"{tuple(t.shape)}")
    logits = t.tolist()
    shift = max(logits) if max(logits) > 50 else 0.0  # exp(x - shift): the same probabilities, no overflow
    exps = [math.exp(v - shift) for v in logits]
    total = sum(exps)
    return {"kind": "softmax", "layer": "softmax", "logits": logits, "shift": shift, "exp": exps, "sum": total,
            "probabilities": [e / total for e in exps]}


# -- kernels -------------------------------------------------------------------------------------
def kernels(model: nn.Module, layer: str) -> dict:
    """A Conv2d's weights ``[O, I/groups, kh, kw]`` as base64 little-endian float32, with their range."""
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise UnknownLayerError(f"no module named {layer!r}; kernels are shown for Conv2d layers (e.g. "
                                f"{_first_conv(model)!r})")
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"layer {layer!r} is a {type(module).__name__}; kernels are shown for Conv2d layers")
    w = module.weight.detach().float().cpu().numpy().astype("<f4")
    return {"layer": layer, "shape": list(w.shape), "data": _b64(w), "min": float(w.min()), "max": float(w.max())}


def _first_conv(model: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
