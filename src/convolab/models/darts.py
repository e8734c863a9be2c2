"""DARTS's cell space (Liu, Simonyan & Yang 2019, "DARTS: Differentiable Architecture Search"): the operations,
the cell genotype, and the discrete network a genotype describes (trained from scratch after a search).

A cell takes the outputs of the two cells before it (``s0``, ``s1``), first brought to ``C`` channels (a 1x1
convolution, or a factorized reduction when the cell before reduced the map), and computes ``steps``
intermediate nodes; node ``i`` sums two operations, each on one earlier state (``s0``, ``s1`` or an earlier
node). The cell's output concatenates its intermediate nodes (``steps * C`` channels). A *reduction* cell
applies its operations on ``s0``/``s1`` at stride 2, halving the map. Operations, as in the paper's code:
``sep_conv`` is (ReLU, depthwise, pointwise, BN) twice; ``dil_conv`` once with dilation 2; pools 3x3 (padding 1,
average without the padding); ``skip_connect`` is the identity (a factorized reduction at stride 2); ``none``
is zero (used only inside the search).

The search itself (the supernet, the architecture steps) is :mod:`convolab.experiments.nas.darts`; it imports the
operations and :class:`CellGenotype` from here, so a found cell and the network trained from it share one definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from convolab.layers import GlobalAvgPool2d
from convolab.models._base import ConvClassifier

__all__ = ["PRIMITIVES", "OPS", "CellGenotype", "DartsNetwork", "ReLUConvBN", "FactorizedReduce", "Zero"]

PRIMITIVES = ("none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
              "max_pool_3x3", "avg_pool_3x3")


class ReLUConvBN(nn.Sequential):
    """ReLU, k x k convolution, BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(out_channels, affine=affine))


class DilConv(nn.Sequential):
    """ReLU, depthwise k x k (dilation d), pointwise 1x1, BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True):
        super().__init__(nn.ReLU(),
                         nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=False),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels, affine=affine))


class SepConv(nn.Sequential):
    """Two dilation-1 :class:`DilConv` (the first carries the stride): the paper's separable convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True):
        super().__init__(DilConv(in_channels, in_channels, kernel_size, stride, padding, 1, affine),
                         DilConv(in_channels, out_channels, kernel_size, 1, padding, 1, affine))


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output's shape (strided when the edge reduces)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0) if self.stride == 1 else x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the map, keeping every pixel's information: two 1x1 stride-2 convolutions, the second on the map
    shifted by one pixel, concatenated (``out_channels`` even), then BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, affine: bool = True):
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"a factorized reduction needs an even number of output channels; got {out_channels}")
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(in_channels, out_channels // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # (N, C, H, W), one pixel down and right
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], 1))  # (N, out, ceil(H/2), ceil(W/2))


OPS = {
    "none": lambda c, stride, affine: Zero(stride),
    "skip_connect": lambda c, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride, 1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride, 1, count_include_pad=False),
}


@dataclass(frozen=True)
class CellGenotype:
    """A discrete DARTS architecture: per cell type, two ``(operation, input)`` pairs per intermediate node
    (input 0: ``s0``, 1: ``s1``, 2 + i: node i), and the nodes concatenated into the output."""

    normal: tuple[tuple[str, int], ...]
    reduce: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        for name in ("normal", "reduce"):
            edges = getattr(self, name)
            if len(edges) % 2 or not edges:
                raise ValueError(f"{name} cell: expected two (operation, input) pairs per node; got {len(edges)}")
            for j, (op, src) in enumerate(edges):
                if op not in PRIMITIVES or op == "none":
                    raise ValueError(f"{name} cell: unknown operation {op!r}; choose from "
                                     f"{', '.join(p for p in PRIMITIVES if p != 'none')}")
                if not (isinstance(src, int) and 0 <= src < 2 + j // 2):
                    raise ValueError(f"{name} cell: node {j // 2} reads state {src!r}; it may read 0 to {1 + j // 2}")

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def skip_count(self, cell: str = "normal") -> int:
        """How many of the cell's edges are skip connections (DARTS's collapse shows here first)."""
        return sum(op == "skip_connect" for op, _ in getattr(self, cell))

    def to_dict(self) -> dict:
        return {"normal": [list(e) for e in self.normal], "reduce": [list(e) for e in self.reduce],
                "normal_concat": list(self.normal_concat), "reduce_concat": list(self.reduce_concat)}

    @classmethod
    def from_dict(cls, data: dict | str) -> CellGenotype:
        """The genotype :meth:`to_dict` wrote (or its JSON text)."""
        if isinstance(data, str):
            data = json.loads(data)
        try:
            return cls(tuple((str(op), int(src)) for op, src in data["normal"]),
                       tuple((str(op), int(src)) for op, src in data["reduce"]),
                       tuple(int(i) for i in data["normal_concat"]), tuple(int(i) for i in data["reduce_concat"]))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ValueError) and "cell" in str(e):
                raise
            raise ValueError(f"not a DARTS genotype ({e}); expected normal, reduce, normal_concat and "
                             "reduce_concat") from None


def reduction_layers(layers: int) -> tuple[int, ...]:
    """The cells that reduce: at a third and two thirds of the depth, as the paper's networks (none below 3)."""
    return tuple(sorted({layers // 3, 2 * layers // 3})) if layers >= 3 else ()


class _Cell(nn.Module):
    def __init__(self, genotype: CellGenotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.inputs = [src for _, src in edges]
        self.ops = nn.ModuleList(OPS[op](c, 2 if reduction and src < 2 else 1, True) for op, src in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # (N, C, H, W) each
        for i in range(len(self.ops) // 2):
            a, b = 2 * i, 2 * i + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat([states[i] for i in self.concat], 1)  # (N, len(concat) * C, H', W')


class _CellStack(nn.Module):
    """The stem and the cells: an image batch to the last cell's map."""

    def __init__(self, stem: nn.Module, cells: nn.ModuleList):
        super().__init__()
        self.stem, self.cells = stem, cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1


class DartsNetwork(ConvClassifier):
    """The network a :class:`CellGenotype` describes: a 3x3 convolution stem (``stem_multiplier * C`` channels),
    ``layers`` cells (reductions at a third and two thirds, doubling ``C``), global average pooling and a linear
    classifier. ``genotype`` (and ``self.convolab_genotype``, its dict) records the architecture.

    Args:
        genotype: the cells.
        num_classes, in_chans, input_size: as every classifier.
        init_channels: ``C`` of the first cells.
        layers: number of cells.
        stem_multiplier: the stem's width over ``C``.
    """

    def __init__(self, genotype: CellGenotype, *, num_classes: int = 10, in_chans: int = 3,
                 input_size: tuple[int, int] = (32, 32), init_channels: int = 16, layers: int = 8,
                 stem_multiplier: int = 3):
        super().__init__()
        self.genotype = genotype
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        c = init_channels
        stem = nn.Sequential(nn.Conv2d(in_chans, stem_multiplier * c, 3, padding=1, bias=False),
                             nn.BatchNorm2d(stem_multiplier * c))
        c_pp, c_p, c_cur = stem_multiplier * c, stem_multiplier * c, c
        cells, reduction_prev, reduction = nn.ModuleList(), False, 1
        reducing = reduction_layers(layers)
        for i in range(layers):
            red = i in reducing
            if red:
                c_cur *= 2
                reduction *= 2
            cell = _Cell(genotype, c_pp, c_p, c_cur, red, reduction_prev)
            cells.append(cell)
            reduction_prev = red
            c_pp, c_p = c_p, len(cell.concat) * c_cur
        self.features = _CellStack(stem, cells)
        self.classifier = nn.Sequential(GlobalAvgPool2d(flatten=True), nn.Linear(c_p, num_classes))
        self.feature_info = [dict(module="features", num_chs=c_p, reduction=reduction)]
        # What a run records: the registry form ``darts_net(genotype=..., ...)`` this family would have once it is
        # registered in convolab.models (until then load_run refuses the run with "unknown model darts_net").
        kwargs = {"num_classes": num_classes, "in_chans": in_chans, "input_size": list(self.input_size),
                  "genotype": genotype.to_dict(), "init_channels": init_channels, "layers": layers,
                  "stem_multiplier": stem_multiplier}
        self.convolab_cfg = {"name": "darts_net", **kwargs}
        self.convolab_build = {"kind": "registry", "name": "darts_net", "kwargs": kwargs}
