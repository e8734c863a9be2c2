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

The registered model ``darts_net`` builds :class:`DartsNetwork` from a genotype: by default the paper's published
second-order CIFAR-10 cell (:data:`DARTS_V2`), or one that ``convolab search --strategy darts`` found (its
``genotype.json``, given as a path, a dict or JSON text). A run records the genotype itself, so it reloads without
the file. The search (the supernet, the architecture steps) is :mod:`convolab.experiments.nas.darts`; it takes the
operations and :class:`CellGenotype` from here, so a found cell and the network trained from it share one definition.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from convolab.layers import GlobalAvgPool2d
from convolab.models._base import ConvClassifier
from convolab.models._registry import register_model

__all__ = ["PRIMITIVES", "OPS", "CellGenotype", "DARTS_V2", "DartsNetwork", "ReLUConvBN", "FactorizedReduce", "Zero",
           "resolve_genotype", "darts_net"]

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


# The cell the paper reports for CIFAR-10 with the second-order architecture gradient ("DARTS (second order)",
# Liu et al. 2019, Fig. 4 and 5; "DARTS_V2" in the authors' code): the normal cell mostly 3x3 separable convolutions,
# the reduction cell max-pools and skips. Index 0/1: the cells' inputs s0/s1; 2 + i: intermediate node i.
DARTS_V2 = CellGenotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1),   # node 0
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),   # node 1
            ("sep_conv_3x3", 1), ("skip_connect", 0),   # node 2
            ("skip_connect", 0), ("dil_conv_3x3", 2)),  # node 3
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1),
            ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2),
            ("skip_connect", 2), ("max_pool_3x3", 1)),
    normal_concat=(2, 3, 4, 5), reduce_concat=(2, 3, 4, 5))

_GENOTYPE_FORMS = ("None (the paper's DARTS_V2 cell), a CellGenotype, a genotype dict, its JSON text, or the path of "
                   "a JSON file holding one (bare or under \"genotype\", as `convolab search --strategy darts` writes)")


def resolve_genotype(genotype: CellGenotype | dict | str | os.PathLike | None) -> CellGenotype:
    """The :class:`CellGenotype` that ``genotype`` gives: ``None`` -> :data:`DARTS_V2`; a :class:`CellGenotype`;
    a dict (:meth:`CellGenotype.to_dict`'s, or a ``{"genotype": {...}}`` wrapper as ``genotype.json``); JSON text of
    either; or the path of a JSON file holding either.

    Raises:
        ValueError: ``genotype`` is none of these, or not a valid genotype (one line).
        FileNotFoundError: a path that does not exist.
    """
    if genotype is None:
        return DARTS_V2
    if isinstance(genotype, CellGenotype):
        return genotype
    if isinstance(genotype, str) and genotype.lstrip().startswith("{"):
        genotype = _parse_json(genotype, "genotype's JSON text")
    elif isinstance(genotype, (str, os.PathLike)):
        path = Path(genotype).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"genotype file {str(path)!r} does not exist; expected {_GENOTYPE_FORMS}")
        genotype = _parse_json(path.read_text(encoding="utf-8"), f"genotype file {str(path)!r}")
    if not isinstance(genotype, dict):
        raise ValueError(f"genotype must be {_GENOTYPE_FORMS}; got {type(genotype).__name__} {genotype!r:.80}")
    if isinstance(genotype.get("genotype"), dict):  # genotype.json of a search: the cell and what led to it
        genotype = genotype["genotype"]
    return CellGenotype.from_dict(genotype)


def _parse_json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not JSON ({e}); expected {_GENOTYPE_FORMS}") from None


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
        for arg, value in (("init_channels", init_channels), ("layers", layers), ("stem_multiplier", stem_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer; got {value!r}")
        if not isinstance(genotype, CellGenotype):
            raise ValueError(f"genotype must be a CellGenotype (resolve_genotype reads the other forms); got "
                             f"{type(genotype).__name__}")
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
        # What a run records: the registry form ``darts_net(genotype=..., ...)`` (create_model records its own
        # arguments over it, through the setter below).
        self.convolab_build = None
        self.convolab_cfg = {"name": "darts_net", "num_classes": num_classes, "in_chans": in_chans,
                             "input_size": list(self.input_size), "init_channels": init_channels, "layers": layers,
                             "stem_multiplier": stem_multiplier}

    @property
    def convolab_cfg(self) -> dict:
        """How the network is rebuilt (``create_model``'s name and arguments), the genotype as its dict."""
        return self._convolab_cfg

    @convolab_cfg.setter
    def convolab_cfg(self, cfg: dict) -> None:
        # create_model records the arguments it was given: a genotype given as a file's path (or JSON text) is
        # recorded as the genotype itself, so the run reloads without the file.
        self._convolab_cfg = {**cfg, "genotype": self.genotype.to_dict()}
        if self.convolab_build is None or self.convolab_build.get("kind") == "registry":  # pruning etc. set their own
            kwargs = {k: v for k, v in self._convolab_cfg.items() if k != "name"}
            self.convolab_build = {"kind": "registry", "name": self._convolab_cfg["name"], "kwargs": kwargs}


@register_model(year=2019, default_cfg=dict(num_classes=10, in_chans=3, input_size=(32, 32)))
def darts_net(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
              genotype: CellGenotype | dict | str | os.PathLike | None = None, init_channels: int = 16,
              layers: int = 8, stem_multiplier: int = 3, **kwargs) -> DartsNetwork:
    """DARTS: a stack of searched cells, by default the paper's second-order CIFAR-10 cell (Liu et al., 2019).

    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019. ``genotype``: ``None`` (the
    paper's cell, :data:`DARTS_V2`), a dict, its JSON text, or the path of ``genotype.json`` that ``convolab search
    --strategy darts`` wrote (see :func:`resolve_genotype`). The defaults (16 channels, 8 cells) are the search
    network's size; the paper's CIFAR-10 network is ``init_channels=36, layers=20`` (3.3M parameters, without its
    auxiliary head and drop-path, which this model does not have).
    """
    return DartsNetwork(resolve_genotype(genotype), num_classes=num_classes, in_chans=in_chans,
                        input_size=input_size or (32, 32), init_channels=init_channels, layers=layers,
                        stem_multiplier=stem_multiplier, **kwargs)
