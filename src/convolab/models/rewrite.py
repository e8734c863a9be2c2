"""Exact rewrites of a trained model into an equivalent one that int8 kernels run faster.

Each rewrite changes how a model computes, never what: the rewritten float32 model gives the same outputs up to
float rounding (the tests compare them on real images). They exist because oneDNN's int8 convolutions and inductor's
generated code are fast on some shapes and slow on others; measured on this project's 2-core AVX512-VNNI CPU, the
three together took ``tutorial_cnn``'s int8 graph from 1.6-1.75x to 1.9-2.7x (median 2.2x) faster than compiled
float32 at batch 256, while the rewritten float32 model was no faster than the original
(``benchmarks/compress_speed.py`` prints both).

- ``relu-before-maxpool``: a max-pool followed by a ReLU becomes the ReLU then the pool (max commutes with any
  non-decreasing function). The quantizer then fuses the ReLU into the convolution before it, and the pool runs on
  the int8 output.
- ``channels-last-flatten``: a ``Flatten`` of ``[N, C, H, W]`` maps followed by a ``Linear`` flattens in
  ``(H, W, C)`` order instead, with the linear layer's input columns permuted to match. int8 convolutions write
  channels-last maps; flattening them in channel-first order was a strided copy that took a fifth of the int8 time.
- ``space-to-depth-stem``: a first convolution on at most 3 channels (stride 1) followed by a 2x2 max-pool
  (with or without a ReLU) becomes one convolution on the image rearranged into 2x2 blocks (``pixel_unshuffle``:
  4x the channels, half the size) that computes the four pre-pool values of each pooled position as four groups of
  output channels, then a maximum over the groups. The int8 dot-product instructions take groups of 4 input
  channels: on 1 channel the convolution wasted three quarters of them and was slower in int8 than float32; on 4 it
  is quantized like the rest, and the full-size pre-pool maps are never written. It computes 4x the multiplies of
  the original layer (its kernel covers the 4 positions of the pool window), which the wider int8 products repay.

:func:`inference_rewrites` applies whichever fit and returns their names, which an int8 run records so that it is
rebuilt the same way (:mod:`convolab.runs.quantized`). The rewritten stem's weights are four shifted copies of the
original kernel; training them would untie the copies, so quantization-aware training does not use that rewrite.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REWRITES", "SpaceToDepthConvPool", "ChannelsLastFlatten", "inference_rewrites"]

REWRITES = ("relu-before-maxpool", "space-to-depth-stem", "channels-last-flatten")


class ChannelsLastFlatten(nn.Module):
    """``[N, C, H, W] -> [N, H*W*C]``: a flatten in channels-last order (a view when the maps are channels-last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class SpaceToDepthConvPool(nn.Module):
    """``maxpool2x2(act(conv(x)))`` for a stride-1 convolution, computed as one convolution on the 2x2
    space-to-depth image followed by a maximum over 4 groups of output channels (see the module docstring).

    Pool output ``(i, j)`` is the maximum of the convolution at ``(2i+a, 2j+b)``, ``a, b`` in ``{0, 1}``, which reads
    padded input rows ``2i .. 2i+k`` and the same columns: a ``(k+1) x (k+1)`` window starting at an even position,
    that is a ``ceil((k+1)/2)``-square window of the space-to-depth image. Output channel ``(2a+b)*F + f`` holds the
    original filter ``f`` shifted to offset ``(a, b)`` in that window; zeros elsewhere.

    Args:
        conv: the original convolution (stride 1, dilation 1, one group, zero padding).
        relu: whether a ReLU sits between the convolution and the pool (or after the pool: the same thing).
    """

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        if not _stem_conv_fits(conv):
            raise ValueError(f"{conv} cannot be rewritten: stride 1, dilation 1, one group and zero padding needed")
        out_ch, in_ch, kh, kw = conv.weight.shape
        self.filters, self.relu = out_ch, bool(relu)
        self.kernel_size, self.padding = (kh, kw), tuple(conv.padding)
        big_h, big_w = kh + 1, kw + 1  # the window of one pooled position, in padded input pixels
        k2h, k2w = (big_h + 1) // 2, (big_w + 1) // 2
        self.conv = nn.Conv2d(4 * in_ch, 4 * out_ch, (k2h, k2w), bias=conv.bias is not None)
        weight = torch.zeros(4, out_ch, in_ch, 2 * k2h, 2 * k2w, dtype=conv.weight.dtype)
        with torch.no_grad():
            for a in range(2):
                for b in range(2):
                    weight[2 * a + b, :, :, a:a + kh, b:b + kw] = conv.weight
            # window pixel (r, c) of input channel ch -> space-to-depth channel ch*4 + (r%2)*2 + c%2 at (r//2, c//2)
            weight = weight.view(4 * out_ch, in_ch, k2h, 2, k2w, 2).permute(0, 1, 3, 5, 2, 4)
            self.conv.weight.copy_(weight.reshape(4 * out_ch, 4 * in_ch, k2h, k2w))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.repeat(4))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, padding={self.padding}, relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        h, w = x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw
        out_h, out_w = (h - kh + 1) // 2, (w - kw + 1) // 2  # the original conv then a floor-mode 2x2 pool
        x = F.pad(x, (pw, pw + w % 2, ph, ph + h % 2))  # zero padding, made even for the 2x2 blocks
        y = self.conv(F.pixel_unshuffle(x, 2))
        if self.relu:
            y = F.relu(y)
        n, _, yh, yw = y.shape
        y = y.view(n, 4, self.filters, yh, yw).amax(1)
        return y[..., :out_h, :out_w] if (yh, yw) != (out_h, out_w) else y


def _stem_conv_fits(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple))


def _is_pool2(m: nn.Module) -> bool:
    def two(v):
        return v in (2, (2, 2))

    return (type(m) is nn.MaxPool2d and two(m.kernel_size) and two(m.stride or m.kernel_size)
            and m.padding in (0, (0, 0)) and m.dilation in (1, (1, 1)) and not m.ceil_mode
            and not m.return_indices)


def _sequentials(model: nn.Module) -> list[nn.Sequential]:
    return [m for m in model.modules() if isinstance(m, nn.Sequential)]


def _relu_before_maxpool(model: nn.Module) -> bool:
    changed = False
    for seq in _sequentials(model):
        items = list(seq._modules.items())
        i = 0
        while i < len(items) - 1:
            (_, first), (_, second) = items[i], items[i + 1]
            if type(first) is nn.MaxPool2d and type(second) is nn.ReLU:
                items[i], items[i + 1] = items[i + 1], items[i]
                changed = True
                i += 2
            else:
                i += 1
        if changed:
            seq._modules = OrderedDict(items)
    return changed


def _space_to_depth_stem(model: nn.Module, max_in_channels: int = 3) -> bool:
    """conv (<= 3 input channels) -> [ReLU] -> 2x2 max-pool, or conv -> pool -> ReLU, inside one Sequential: the
    conv's slot gets the :class:`SpaceToDepthConvPool`, the ReLU's and pool's slots an ``nn.Identity`` (names, and so
    every other module's state-dict key, stay)."""
    changed = False
    for seq in _sequentials(model):
        names = list(seq._modules)
        for i, name in enumerate(names):
            conv = seq._modules[name]
            if not (_stem_conv_fits(conv) and conv.in_channels <= max_in_channels):
                continue
            nxt = [seq._modules[n] for n in names[i + 1:i + 3]]
            kinds = ["relu" if type(m) is nn.ReLU else "pool" if _is_pool2(m) else "other" for m in nxt]
            if kinds[:1] == ["pool"]:
                span = 2 if kinds[1:2] == ["relu"] else 1
            elif kinds[:2] == ["relu", "pool"]:
                span = 2
            else:
                continue
            seq._modules[name] = SpaceToDepthConvPool(conv, relu=span == 2)
            for n in names[i + 1:i + 1 + span]:
                seq._modules[n] = nn.Identity()
            changed = True
    return changed


def _channels_last_flatten(model: nn.Module, example: torch.Tensor) -> bool:
    """Each ``Flatten(1)`` directly followed by a ``Linear`` in a Sequential, that sees 4-D maps larger than 1x1."""
    pairs = []
    for seq in _sequentials(model):
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            flat, fc = seq._modules[a], seq._modules[b]
            if type(flat) is nn.Flatten and flat.start_dim == 1 and flat.end_dim == -1 and type(fc) is nn.Linear:
                pairs.append((seq, a, flat, fc))
    if not pairs:
        return False
    shapes: dict[int, tuple[int, ...]] = {}
    def record(module, args):
        shapes[id(module)] = tuple(args[0].shape)  # (returns None: the input goes on unchanged)

    hooks = [flat.register_forward_pre_hook(record) for _, _, flat, _ in pairs]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    changed = False
    for seq, name, flat, fc in pairs:
        shape = shapes.get(id(flat))
        if shape is None or len(shape) != 4 or shape[2] * shape[3] == 1 or shape[1] == 1:  # (else a no-op)
            continue
        _, c, h, w = shape
        with torch.no_grad():
            fc.weight.copy_(fc.weight.view(fc.out_features, c, h, w).permute(0, 2, 3, 1).reshape(fc.out_features, -1))
        seq._modules[name] = ChannelsLastFlatten()
        changed = True
    return changed


def inference_rewrites(model: nn.Module, example: torch.Tensor, *, only: tuple[str, ...] | list[str] | None = None,
                       exclude: tuple[str, ...] = ()) -> list[str]:
    """Apply the exact rewrites (module docstring) that fit ``model``, in place; returns their names in order.

    Args:
        model: a float32 model in eval mode (its weights are rearranged where a rewrite needs it).
        example: an input batch (the flatten rewrite needs the maps' shape).
        only: apply exactly these (an int8 run's record, rebuilding on a fresh model); default all that fit.
        exclude: rewrites not to try (QAT leaves out ``space-to-depth-stem``).

    Raises:
        ValueError: an unknown rewrite name, or one of ``only`` that does not fit the model.
    """
    wanted = list(REWRITES if only is None else only)
    unknown = [w for w in [*wanted, *exclude] if w not in REWRITES]
    if unknown:
        raise ValueError(f"unknown model rewrite {unknown[0]!r}; known: {', '.join(REWRITES)}")
    applied = []
    for name in REWRITES:  # a fixed order: the stem is found after ReLUs moved, the flatten sees the final maps
        if name not in wanted or name in exclude:
            continue
        if name == "relu-before-maxpool":
            done = _relu_before_maxpool(model)
        elif name == "space-to-depth-stem":
            done = _space_to_depth_stem(model)
        else:
            done = _channels_last_flatten(model, example)
        if done:
            applied.append(name)
        elif only is not None:
            raise ValueError(f"the model rewrite {name!r} does not fit {type(model).__name__}")
    return applied
