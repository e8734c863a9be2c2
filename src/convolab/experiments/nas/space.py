"""A macro search space: a plain CNN as a few stages, each a stack of convolutions then a downsampling.

Per stage the genes are ``depth`` (convolutions), ``width`` (their output channels), ``kernel`` (their size,
``p=same``), ``down`` (how the stage ends: ``max``/``avg`` 2x2 pooling, ``stride``: its last convolution at
stride 2, or ``none``) and ``act`` (the activation after each convolution); one network-wide gene says whether
BatchNorm follows each convolution. A :class:`Genotype` is a frozen dataclass that round-trips through JSON
(:meth:`Genotype.to_dict` / :meth:`Genotype.from_dict`) and becomes a ``spec:`` model name
(:meth:`Genotype.to_spec`), so ``convolab train --model 'spec:...'`` trains the found network from scratch and
its run reloads with nothing else (the head, ``gap, fc``, is added by the spec builder)::

    space = MacroSpace(input_shape=(1, 28, 28))
    g = space.sample(random.Random(0))
    model = create_model(g.to_spec(), num_classes=10, in_chans=1, input_size=(28, 28))

Validity is computed from the sizes (a 2x2 pool floors, a stride-2 convolution with padding k//2 rounds up):
a downsampling stage needs a map at least 2 pixels on each side, otherwise the map collapses.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

__all__ = ["Stage", "Genotype", "MacroSpace", "DOWNSAMPLING", "ACTIVATIONS", "macs", "stage_sizes"]

DOWNSAMPLING = ("max", "avg", "stride", "none")
ACTIVATIONS = ("relu", "silu", "gelu", "elu", "leakyrelu", "tanh", "sigmoid")  # names the spec grammar knows
_GENES = ("depth", "width", "kernel", "down", "act")


@dataclass(frozen=True)
class Stage:
    """One stage: ``depth`` convolutions of ``width`` channels and ``kernel`` x ``kernel`` (size kept), each
    followed by BatchNorm (when the genotype has it) and ``act``; then ``down``."""

    depth: int
    width: int
    kernel: int
    down: str  # "max" / "avg": a 2x2 pool; "stride": the last convolution at stride 2; "none"
    act: str  # an activation of the spec grammar (relu, silu, gelu ...)


@dataclass(frozen=True)
class Genotype:
    """A network of the macro space: its stages in order and whether BatchNorm follows every convolution."""

    stages: tuple[Stage, ...]
    bn: bool = True

    def to_spec(self) -> str:
        """The ``spec:...`` model name of this network (no head: the spec builder adds ``gap, fc``)."""
        items = []
        for s in self.stages:
            norm = ",bn" if self.bn else ""
            plain = f"conv({s.width},{s.kernel},p=same){norm},{s.act}"
            strided = f"conv({s.width},{s.kernel},s=2,p={s.kernel // 2}){norm},{s.act}"
            n_plain = s.depth - 1 if s.down == "stride" else s.depth
            if n_plain:
                items.append(plain if n_plain == 1 else f"{n_plain}*({plain})")
            if s.down == "stride":
                items.append(strided)
            elif s.down in ("max", "avg"):
                items.append(f"{s.down}pool(2)")
        return "spec:" + ",".join(items)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``from_dict`` reads it back)."""
        return {"stages": [asdict(s) for s in self.stages], "bn": self.bn}

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        """The genotype ``to_dict`` wrote. Raises ValueError on a malformed dict."""
        try:
            stages = tuple(Stage(**{k: s[k] for k in _GENES}) for s in data["stages"])
            return cls(stages, bool(data.get("bn", True)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a macro genotype ({e}); expected {{'stages': [{{'depth', 'width', 'kernel', "
                             "'down', 'act'}}, ...], 'bn': true}}") from None


def stage_sizes(genotype: Genotype, input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The (H, W) of the map after each stage; a stage whose map collapses gets (0, 0) and ends the list."""
    h, w = input_size
    out = []
    for s in genotype.stages:
        h, w = _down(s.down, h, w)
        out.append((h, w))
        if h < 1:
            break
    return out


def _down(down: str, h: int, w: int) -> tuple[int, int]:
    if down == "none":
        return h, w
    if h < 2 or w < 2:  # nothing left to halve: a pool gives 0 pixels, a strided convolution a 1x1 map again
        return 0, 0
    if down == "stride":
        return (h + 1) // 2, (w + 1) // 2  # floor((H + 2 (k//2) - k) / 2) + 1 for an odd k
    return h // 2, w // 2


@dataclass(frozen=True)
class MacroSpace:
    """The choices per gene (the same for every stage) and the input the networks are for.

    Args:
        input_shape: (C, H, W) of the images.
        num_stages: stages per network.
        depths, widths, kernels, downs, acts, bn: the values each gene may take.
    """

    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_stages: int = 3
    depths: tuple[int, ...] = (1, 2, 3)
    widths: tuple[int, ...] = (8, 16, 32, 64)
    kernels: tuple[int, ...] = (3, 5, 7)
    downs: tuple[str, ...] = DOWNSAMPLING
    acts: tuple[str, ...] = ("relu", "silu", "gelu")
    bn: tuple[bool, ...] = (True, False)

    def __post_init__(self):
        if len(self.input_shape) != 3 or any(not isinstance(v, int) or v < 1 for v in self.input_shape):
            raise ValueError(f"input_shape must be (C, H, W) of positive integers; got {self.input_shape!r}")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"num_stages must be a positive integer; got {self.num_stages!r}")
        for name in ("depths", "widths", "kernels", "downs", "acts", "bn"):
            if not getattr(self, name):
                raise ValueError(f"{name} is empty; give at least one choice")
        if any(not isinstance(d, int) or d < 1 for d in self.depths):
            raise ValueError(f"depths must be positive integers; got {self.depths}")
        if any(not isinstance(d, int) or d < 1 for d in self.widths):
            raise ValueError(f"widths must be positive integers; got {self.widths}")
        if any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd positive integers (p=same keeps the size); got {self.kernels}")
        bad = [d for d in self.downs if d not in DOWNSAMPLING]
        if bad:
            raise ValueError(f"unknown downsampling {bad[0]!r}; choose from {', '.join(DOWNSAMPLING)}")
        bad = [a for a in self.acts if a not in ACTIVATIONS]
        if bad:
            raise ValueError(f"unknown activation {bad[0]!r}; choose from {', '.join(ACTIVATIONS)}")
        self.check()

    # -- validity ----------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a space with no valid architecture for its input: one line naming the stage where even the
        gentlest downsampling the space allows collapses the map."""
        # none keeps the map; a strided convolution rounds up; a pool rounds down
        gentlest = next(d for d in ("none", "stride", "max", "avg") if d in self.downs)
        h, w = self.input_shape[1:]
        for i in range(self.num_stages):
            nh, nw = _down(gentlest, h, w)
            if nh < 1:
                shape = "x".join(map(str, self.input_shape))
                raise ValueError(f"the search space has no valid architecture for {shape} inputs: stage {i + 1} "
                                 f"gets a {h}x{w} map and its downsampling "
                                 f"({'/'.join(self.downs)}) collapses it; allow down 'none' or 'stride', use fewer "
                                 "stages or larger inputs")
            h, w = nh, nw

    def is_valid(self, genotype: Genotype, input_size: tuple[int, int] | None = None) -> bool:
        """Whether ``genotype`` is in this space and keeps a map of at least 1x1 to the end on ``input_size``
        (H, W; default the space's)."""
        size = tuple(input_size) if input_size is not None else tuple(self.input_shape[1:])
        if len(genotype.stages) != self.num_stages or genotype.bn not in self.bn:
            return False
        for s in genotype.stages:
            if (s.depth not in self.depths or s.width not in self.widths or s.kernel not in self.kernels
                    or s.down not in self.downs or s.act not in self.acts):
                return False
        sizes = stage_sizes(genotype, size)
        return len(sizes) == self.num_stages and sizes[-1][0] >= 1

    # -- sampling ----------------------------------------------------------------------------------------------------
    def _stage(self, rng: random.Random) -> Stage:
        return Stage(rng.choice(self.depths), rng.choice(self.widths), rng.choice(self.kernels),
                     rng.choice(self.downs), rng.choice(self.acts))

    def sample(self, rng: random.Random) -> Genotype:
        """A valid genotype drawn uniformly among the valid ones (rejection sampling; the space was checked to
        hold at least one)."""
        while True:
            g = Genotype(tuple(self._stage(rng) for _ in range(self.num_stages)), rng.choice(self.bn))
            if self.is_valid(g):
                return g

    def genes(self, genotype: Genotype) -> list[tuple[int | None, str]]:
        """The mutable genes: (stage index, gene name) for each stage gene with more than one choice, and
        (None, "bn") when BatchNorm is a choice."""
        out: list[tuple[int | None, str]] = [(i, g) for i in range(len(genotype.stages)) for g in _GENES
                                             if len(self._choices(g)) > 1]
        if len(self.bn) > 1:
            out.append((None, "bn"))
        return out

    def _choices(self, gene: str) -> tuple:
        return {"depth": self.depths, "width": self.widths, "kernel": self.kernels, "down": self.downs,
                "act": self.acts, "bn": self.bn}[gene]

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """``genotype`` with exactly one gene changed to another of its values, the result valid (Real et al.
        2019's mutation, on this space's genes). Returns ``genotype`` unchanged only if no single change is
        valid (a space with one choice per gene)."""
        options = []
        for i, gene in self.genes(genotype):
            current = genotype.bn if i is None else getattr(genotype.stages[i], gene)
            for value in self._choices(gene):
                if value != current:
                    options.append((i, gene, value))
        rng.shuffle(options)
        for i, gene, value in options:
            if i is None:
                child = Genotype(genotype.stages, value)
            else:
                stages = list(genotype.stages)
                stages[i] = Stage(**{**asdict(stages[i]), gene: value})
                child = Genotype(tuple(stages), genotype.bn)
            if self.is_valid(child):
                return child
        return genotype

    def size(self) -> int:
        """How many genotypes the space holds (valid or not)."""
        per_stage = len(self.depths) * len(self.widths) * len(self.kernels) * len(self.downs) * len(self.acts)
        return per_stage ** self.num_stages * len(self.bn)


def macs(genotype: Genotype, input_shape: tuple[int, int, int], num_classes: int = 10) -> int:
    """Multiply-accumulates of one forward pass of ``genotype``'s network (head included) on one
    ``input_shape`` (C, H, W) image, counted by :func:`convolab.analysis.summarize` (convolutions and linear
    layers; normalisation and activations are not MACs, as torch's flop counter has it)."""
    from convolab.analysis import summarize
    from convolab.models import create_model

    c, h, w = input_shape
    model = create_model(genotype.to_spec(), num_classes=num_classes, in_chans=c, input_size=(h, w))
    return int(summarize(model, tuple(input_shape)).macs)
