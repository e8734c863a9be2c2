"""A macro search space: a plain CNN as a few stages, each a stack of convolutions then a downsampling.

Per stage the genes are ``depth`` (convolutions), ``width`` (their output channels), ``kernel`` (their size,
``p=same``), ``down`` (how the stage ends: ``max``/``avg`` 2x2 pooling, ``stride``: its last convolution at
stride 2, or ``none``) and ``act`` (the activation after each convolution); one network-wide gene says whether
BatchNorm follows each convolution, and one which head ends the network: ``gap`` (global average pooling, then the
classifier: NiN's head) or ``fc`` (flatten, a hidden layer of :data:`HIDDEN` units with the last stage's
activation, then the classifier: the tutorials' head, which holds many weights for few MACs). A
:class:`Genotype` is a frozen dataclass that round-trips through JSON (:meth:`Genotype.to_dict` /
:meth:`Genotype.from_dict`) and becomes a ``spec:`` model name (:meth:`Genotype.to_spec`), so ``convolab train
--model 'spec:...'`` trains the found network from scratch and its run reloads with nothing else (the classifier
is added by the spec builder)::

    space = MacroSpace(input_shape=(1, 28, 28))
    g = space.sample(random.Random(0))
    model = create_model(g.to_spec(), num_classes=10, in_chans=1, input_size=(28, 28))

Validity is computed from the sizes (a 2x2 pool floors, a stride-2 convolution with padding k//2 rounds up):
a downsampling stage needs a map at least 2 pixels on each side, otherwise the map collapses.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

__all__ = ["Stage", "Genotype", "MacroSpace", "DOWNSAMPLING", "ACTIVATIONS", "HEADS", "HIDDEN", "macs", "count_macs",
           "stage_sizes"]

DOWNSAMPLING = ("max", "avg", "stride", "none")
ACTIVATIONS = ("relu", "silu", "gelu", "elu", "leakyrelu", "tanh", "sigmoid")  # names the spec grammar knows
_GENES = ("depth", "width", "kernel", "down", "act")
HEADS = ("gap", "fc")
HIDDEN = 128  # the fc head's hidden units


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
    head: str = "gap"  # "gap" or "fc" (see the module docstring)

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
        if self.head == "fc":  # (the spec builder adds the classifier after the hidden layer, gap and fc otherwise)
            items.append(f"flatten,fc({HIDDEN}),{self.stages[-1].act}")
        return "spec:" + ",".join(items)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``from_dict`` reads it back)."""
        return {"stages": [asdict(s) for s in self.stages], "bn": self.bn, "head": self.head}

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        """The genotype ``to_dict`` wrote. Raises ValueError on a malformed dict."""
        try:
            stages = tuple(Stage(**{k: s[k] for k in _GENES}) for s in data["stages"])
            return cls(stages, bool(data.get("bn", True)), str(data.get("head", "gap")))
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
        depths, widths, kernels, downs, acts, bn, heads: the values each gene may take.
        max_macs: when given, only networks of at most this many multiply-accumulates per image are in the space
            (to search at the cost of a hand-designed network or below); counted by :func:`count_macs`.
        num_classes: the classifier's outputs (its MACs count towards ``max_macs``).
    """

    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_stages: int = 3
    depths: tuple[int, ...] = (1, 2, 3)
    widths: tuple[int, ...] = (8, 16, 32, 64)
    kernels: tuple[int, ...] = (3, 5, 7)
    downs: tuple[str, ...] = DOWNSAMPLING
    acts: tuple[str, ...] = ("relu", "silu", "gelu")
    bn: tuple[bool, ...] = (True, False)
    heads: tuple[str, ...] = HEADS
    max_macs: int | None = None
    num_classes: int = 10

    def __post_init__(self):
        if len(self.input_shape) != 3 or any(not isinstance(v, int) or v < 1 for v in self.input_shape):
            raise ValueError(f"input_shape must be (C, H, W) of positive integers; got {self.input_shape!r}")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"num_stages must be a positive integer; got {self.num_stages!r}")
        for name in ("depths", "widths", "kernels", "downs", "acts", "bn", "heads"):
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
        bad = [h for h in self.heads if h not in HEADS]
        if bad:
            raise ValueError(f"unknown head {bad[0]!r}; choose from {', '.join(HEADS)}")
        if self.max_macs is not None and (not isinstance(self.max_macs, int) or self.max_macs < 1):
            raise ValueError(f"max_macs must be a positive integer; got {self.max_macs!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {self.num_classes!r}")
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
        if self.max_macs is not None:
            cheapest = self.cheapest()
            cost = count_macs(cheapest, self.input_shape, self.num_classes)
            if cost > self.max_macs:
                raise ValueError(f"the search space has no architecture of at most {self.max_macs:,} MACs: the "
                                 f"cheapest needs {cost:,}; raise --max-macs or allow narrower, shallower or "
                                 "smaller-kernel stages")

    def cheapest(self) -> Genotype:
        """The valid genotype of fewest MACs (narrowest, shallowest, smallest kernels; the downsampling that costs
        least, found by trying every combination)."""
        import itertools

        best, best_cost = None, None
        for downs, head in itertools.product(itertools.product(self.downs, repeat=self.num_stages), self.heads):
            g = Genotype(tuple(Stage(min(self.depths), min(self.widths), min(self.kernels), d, self.acts[0])
                               for d in downs), self.bn[0], head)
            if not self._fits(g):
                continue
            cost = count_macs(g, self.input_shape, self.num_classes)
            if best_cost is None or cost < best_cost:
                best, best_cost = g, cost
        if best is None:  # (check() refused such a space before)
            raise ValueError("the search space has no valid architecture")
        return best

    def _fits(self, genotype: Genotype) -> bool:
        sizes = stage_sizes(genotype, tuple(self.input_shape[1:]))
        return len(sizes) == self.num_stages and sizes[-1][0] >= 1

    def is_valid(self, genotype: Genotype, input_size: tuple[int, int] | None = None) -> bool:
        """Whether ``genotype`` is in this space, keeps a map of at least 1x1 to the end on ``input_size`` (H, W;
        default the space's) and costs at most ``max_macs`` (when set) on it."""
        size = tuple(input_size) if input_size is not None else tuple(self.input_shape[1:])
        if (len(genotype.stages) != self.num_stages or genotype.bn not in self.bn
                or genotype.head not in self.heads):
            return False
        for s in genotype.stages:
            if (s.depth not in self.depths or s.width not in self.widths or s.kernel not in self.kernels
                    or s.down not in self.downs or s.act not in self.acts):
                return False
        sizes = stage_sizes(genotype, size)
        if not (len(sizes) == self.num_stages and sizes[-1][0] >= 1):
            return False
        return self.max_macs is None or count_macs(genotype, (self.input_shape[0], *size),
                                                    self.num_classes) <= self.max_macs

    # -- sampling ----------------------------------------------------------------------------------------------------
    def _stage(self, rng: random.Random) -> Stage:
        return Stage(rng.choice(self.depths), rng.choice(self.widths), rng.choice(self.kernels),
                     rng.choice(self.downs), rng.choice(self.acts))

    def sample(self, rng: random.Random) -> Genotype:
        """A valid genotype drawn uniformly among the valid ones (rejection sampling; the space was checked to
        hold at least one)."""
        while True:
            g = Genotype(tuple(self._stage(rng) for _ in range(self.num_stages)), rng.choice(self.bn),
                         rng.choice(self.heads))
            if self.is_valid(g):
                return g

    def genes(self, genotype: Genotype) -> list[tuple[int | None, str]]:
        """The mutable genes: (stage index, gene name) for each stage gene with more than one choice, and
        (None, "bn") when BatchNorm is a choice, (None, "head") when the head is."""
        out: list[tuple[int | None, str]] = [(i, g) for i in range(len(genotype.stages)) for g in _GENES
                                             if len(self._choices(g)) > 1]
        if len(self.bn) > 1:
            out.append((None, "bn"))
        if len(self.heads) > 1:
            out.append((None, "head"))
        return out

    def _choices(self, gene: str) -> tuple:
        return {"depth": self.depths, "width": self.widths, "kernel": self.kernels, "down": self.downs,
                "act": self.acts, "bn": self.bn, "head": self.heads}[gene]

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """``genotype`` with exactly one gene changed to another of its values, the result valid (Real et al.
        2019's mutation, on this space's genes). Returns ``genotype`` unchanged only if no single change is
        valid (a space with one choice per gene)."""
        options = []
        for i, gene in self.genes(genotype):
            current = getattr(genotype, gene) if i is None else getattr(genotype.stages[i], gene)
            for value in self._choices(gene):
                if value != current:
                    options.append((i, gene, value))
        rng.shuffle(options)
        for i, gene, value in options:
            if i is None:
                child = replace(genotype, **{gene: value})
            else:
                stages = list(genotype.stages)
                stages[i] = Stage(**{**asdict(stages[i]), gene: value})
                child = replace(genotype, stages=tuple(stages))
            if self.is_valid(child):
                return child
        return genotype

    def size(self) -> int:
        """How many genotypes the space holds (valid or not)."""
        per_stage = len(self.depths) * len(self.widths) * len(self.kernels) * len(self.downs) * len(self.acts)
        return per_stage ** self.num_stages * len(self.bn) * len(self.heads)


def macs(genotype: Genotype, input_shape: tuple[int, int, int], num_classes: int = 10) -> int:
    """Multiply-accumulates of one forward pass of ``genotype``'s network (head included) on one
    ``input_shape`` (C, H, W) image, counted by :func:`convolab.analysis.summarize` (convolutions and linear
    layers; normalisation and activations are not MACs, as torch's flop counter has it)."""
    from convolab.analysis import summarize
    from convolab.models import create_model

    c, h, w = input_shape
    model = create_model(genotype.to_spec(), num_classes=num_classes, in_chans=c, input_size=(h, w))
    return int(summarize(model, tuple(input_shape)).macs)


def count_macs(genotype: Genotype, input_shape: tuple[int, int, int], num_classes: int = 10) -> int:
    """The same count as :func:`macs` from the sizes alone, without building the network (microseconds: the
    search tests ``max_macs`` on every draw). Per convolution ``H_out * W_out * C_out * C_in * k * k``, and the
    classifier's ``width * num_classes`` (the ``fc`` head: ``features * HIDDEN + HIDDEN * num_classes``); pooling,
    BatchNorm and activations cost none."""
    c, h, w = input_shape
    total = 0
    for s in genotype.stages:
        for i in range(s.depth):
            if s.down == "stride" and i == s.depth - 1:
                h, w = (h + 1) // 2, (w + 1) // 2  # (the stage's last convolution is the strided one)
            total += h * w * s.width * c * s.kernel * s.kernel
            c = s.width
        if s.down in ("max", "avg"):
            h, w = h // 2, w // 2
    if genotype.head == "fc":
        return total + c * h * w * HIDDEN + HIDDEN * num_classes
    return total + c * num_classes
