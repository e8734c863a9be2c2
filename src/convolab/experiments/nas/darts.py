"""DARTS: differentiable architecture search (Liu, Simonyan & Yang 2019), first and second order, with
PC-DARTS's partial channels (Xu et al. 2020) and DARTS+'s guard against skip-connection collapse (Liang et al.
2019), trained through convolab's one training loop.

The supernet (:class:`SuperNet`) puts every operation of :data:`~convolab.models.darts.PRIMITIVES` on
every edge of its cells; an edge's output is the softmax(alpha)-weighted sum of them (:class:`MixedOp`), with
one alpha matrix shared by the normal cells and one by the reduction cells. The weights ``w`` are trained on
training batches and the alphas on validation batches (the bilevel problem of the paper's eq. 3-4):

* first order: ``grad_alpha L_val(w, alpha)``;
* second order: the gradient at the weights after one virtual SGD step,
  ``w' = w - xi grad_w L_train(w, alpha)`` (``xi``: the weights' current learning rate, as the paper sets it;
  the virtual step is plain SGD, without the momentum and weight decay the paper's code folds in):
  ``grad_alpha L_val(w', alpha) - xi H v`` with ``v = grad_w' L_val(w', alpha)`` and the mixed Hessian-vector
  product by central finite differences (eq. 8): ``H v ~ (grad_alpha L_train(w+, alpha) -
  grad_alpha L_train(w-, alpha)) / (2 eps)``, ``w+- = w +- eps v``, ``eps = 0.01 / |v|``.

:class:`DartsStep` is the step rule (a :class:`convolab.train.step.AlternatingStep`: its validation loader, its
position and the architecture optimizer's state go into the checkpoint, so a search resumes exactly); before the
first micro-batch of each weight step it takes the architecture step on the next validation batch (the
second order also uses that training batch).

Partial channels (``partial_channels=K``, PC-DARTS): only ``C/K`` channels of an edge's input go through the
mixed operation, the rest bypass it (max-pooled on a reduction edge) and the two parts are shuffled back
together; memory and time fall by about K. PC-DARTS's edge normalisation (a second set of weights over a node's
inputs) is not implemented.

Collapse guard (chosen: DARTS+'s early stop, "criterion 1"): after each epoch the genotype is derived; once the
normal cell holds ``max_skips`` (default 2) or more skip connections the search stops, and the genotype
derived *before* that epoch is the result (the collapse shows as skip connections taking over the parameter-free
path, Zela et al. 2020). :class:`SkipCollapseGuard` is the callback; its decision goes into the checkpoint.

Deriving (the paper's rule): per node, the two inputs whose strongest non-``none`` operation weighs most, each
with that operation. The result is a :class:`~convolab.models.darts.CellGenotype`, built by
:class:`~convolab.models.darts.DartsNetwork` and trained from scratch with :func:`train_network`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convolab.atomic import write_json
from convolab.layers import GlobalAvgPool2d
from convolab.models.darts import (
    OPS,
    PRIMITIVES,
    CellGenotype,
    DartsNetwork,
    FactorizedReduce,
    ReLUConvBN,
    reduction_layers,
)
from convolab.train.callbacks.base import Callback
from convolab.train.step import AlternatingStep

__all__ = ["MixedOp", "SuperNet", "derive_genotype", "first_order_arch_grad", "second_order_arch_grad",
           "DartsStep", "SkipCollapseGuard", "DartsResult", "darts_search", "train_network", "random_cell"]

log = logging.getLogger(__name__)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` groups of channels (ShuffleNet): (N, g*c, H, W) -> channels g-major to c-major."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedOp(nn.Module):
    """Every primitive on one edge; ``forward(x, weights)`` is the ``weights``-weighted sum of their outputs.
    Pools are followed by a BatchNorm without affine terms, as in the paper's search (their scale then matches
    the convolutions'). With ``partial_channels`` K > 1 only the first C/K channels go through the operations."""

    def __init__(self, channels: int, stride: int, partial_channels: int = 1):
        super().__init__()
        if channels % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must divide the cells' channels ({channels})")
        self.k, self.stride = partial_channels, stride
        c = channels // partial_channels
        ops = []
        for name in PRIMITIVES:
            op = OPS[name](c, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        c = x.shape[1] // self.k
        part, rest = x[:, :c], x[:, c:]  # (N, C/K, H, W) through the operations, (N, C - C/K, H, W) around them
        out = sum(w * op(part) for w, op in zip(weights, self.ops))
        if self.stride == 2:
            rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([out, rest], 1), self.k)


class _SearchCell(nn.Module):
    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 partial_channels: int):
        super().__init__()
        self.reduction, self.steps = reduction, steps
        self.preprocess0 = FactorizedReduce(c_pp, c, False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, False)
        self.edges = nn.ModuleList(MixedOp(c, 2 if reduction and j < 2 else 1, partial_channels)
                                   for i in range(steps) for j in range(2 + i))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            node = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], 1)  # (N, steps * C, H', W')


def num_edges(steps: int) -> int:
    """Edges of a cell of ``steps`` nodes: node i has 2 + i inputs."""
    return sum(2 + i for i in range(steps))


class SuperNet(nn.Module):
    """The search network: a stem, ``layers`` search cells (reductions at a third and two thirds), global average
    pooling and a linear classifier; ``alphas_normal`` and ``alphas_reduce`` (edges x operations) are the
    architecture weights (:meth:`arch_parameters`), everything else the weights (:meth:`weights`)."""

    input_kind = "image"

    def __init__(self, *, num_classes: int = 10, in_chans: int = 3, init_channels: int = 8, layers: int = 5,
                 steps: int = 4, stem_multiplier: int = 3, partial_channels: int = 1):
        super().__init__()
        self.num_classes, self.in_chans, self.steps = num_classes, in_chans, steps
        c = init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_multiplier * c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stem_multiplier * c))
        c_pp, c_p, c_cur = stem_multiplier * c, stem_multiplier * c, c
        self.cells, reduction_prev = nn.ModuleList(), False
        reducing = reduction_layers(layers)
        for i in range(layers):
            red = i in reducing
            c_cur = c_cur * 2 if red else c_cur
            self.cells.append(_SearchCell(steps, c_pp, c_p, c_cur, red, reduction_prev, partial_channels))
            reduction_prev = red
            c_pp, c_p = c_p, steps * c_cur
        self.pool = GlobalAvgPool2d(flatten=True)
        self.fc = nn.Linear(c_p, num_classes)
        k = num_edges(steps)
        # the paper's initialisation: 1e-3 * N(0, 1), all operations nearly equal
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, len(PRIMITIVES)))
        self.search_cfg = dict(init_channels=init_channels, layers=layers, steps=steps,
                               stem_multiplier=stem_multiplier, partial_channels=partial_channels)
        # what the run records (config.json's model_kwargs); the supernet is not a registry model
        self.convolab_cfg = {"name": "darts_supernet", "num_classes": num_classes, "in_chans": in_chans,
                             **self.search_cfg}

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weights(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("alphas_")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal, reduce = self.alphas_normal.softmax(-1), self.alphas_reduce.softmax(-1)  # (edges, ops) each
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.fc(self.pool(s1))  # (N, num_classes)

    def genotype(self) -> CellGenotype:
        """The discrete architecture the alphas say now (:func:`derive_genotype`)."""
        return CellGenotype(derive_genotype(self.alphas_normal, self.steps),
                            derive_genotype(self.alphas_reduce, self.steps),
                            tuple(range(2, 2 + self.steps)), tuple(range(2, 2 + self.steps)))


def derive_genotype(alphas: torch.Tensor, steps: int) -> tuple[tuple[str, int], ...]:
    """Per node, the two inputs whose strongest non-``none`` operation weighs most (softmax over the operations),
    each with that operation (DARTS section 2.4). ``alphas``: (edges, operations)."""
    weights = alphas.detach().float().softmax(-1).cpu()
    none = PRIMITIVES.index("none")
    out, offset = [], 0
    for i in range(steps):
        rows = weights[offset:offset + 2 + i].clone()
        rows[:, none] = -1.0
        best_w, best_op = rows.max(-1)  # per input: its strongest operation
        inputs = sorted(torch.argsort(best_w, descending=True, stable=True)[:2].tolist())
        out.extend((PRIMITIVES[int(best_op[j])], j) for j in inputs)
        offset += 2 + i
    return tuple(out)


# -- the architecture gradients --------------------------------------------------------------------------------------
def first_order_arch_grad(model: SuperNet, loss_fn, x_val, y_val) -> list[torch.Tensor]:
    """``grad_alpha L_val(w, alpha)``."""
    loss = loss_fn(model(x_val), y_val)
    return list(torch.autograd.grad(loss, model.arch_parameters()))


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def second_order_arch_grad(model: SuperNet, loss_fn, x_train, y_train, x_val, y_val, xi: float,
                           eps_scale: float = 0.01) -> list[torch.Tensor]:
    """The unrolled architecture gradient (DARTS eq. 7-8; see the module docstring), the Hessian-vector product by
    central differences at ``eps = eps_scale / |v|`` (the paper's 0.01). The weights are left as they were.

    The difference quotient is only as good as the loss is smooth on that scale: on a tiny supernet (2 channels,
    2x2 maps, batch 6) it was off by 100 % at the paper's 0.01 and agreed to 1e-6 at 1e-6 in float64 (measured
    against torch's double backward), so the test checks the formula at a small ``eps_scale`` in float64."""
    weights, alphas = model.weights(), model.arch_parameters()
    saved = [w.detach().clone() for w in weights]
    try:
        g_train = _grads(loss_fn(model(x_train), y_train), weights)
        with torch.no_grad():  # w' = w - xi grad_w L_train(w, alpha)
            for w, g in zip(weights, g_train):
                w.sub_(xi * g)
        grads = _grads(loss_fn(model(x_val), y_val), alphas + weights)
        g_alpha, v = grads[:len(alphas)], grads[len(alphas):]  # grad_alpha L_val(w'), grad_w' L_val(w')
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in v))
        eps = eps_scale / max(float(norm), 1e-12)
        with torch.no_grad():  # w+ = w + eps v
            for w, s, g in zip(weights, saved, v):
                w.copy_(s + eps * g)
        g_plus = _grads(loss_fn(model(x_train), y_train), alphas)
        with torch.no_grad():  # w- = w - eps v
            for w, s, g in zip(weights, saved, v):
                w.copy_(s - eps * g)
        g_minus = _grads(loss_fn(model(x_train), y_train), alphas)
    finally:
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
    return [ga - xi * (gp - gm) / (2 * eps) for ga, gp, gm in zip(g_alpha, g_plus, g_minus)]


class DartsStep(AlternatingStep):
    """The step rule of a DARTS search: an architecture step (first or second order) on the next validation batch
    before each weight step; ``optimizers``: ``[weights' optimizer, architecture optimizer]``.

    Args:
        trainer, optimizers, outer_loader: as :class:`AlternatingStep`.
        order: 1 or 2.
    """

    def __init__(self, trainer, optimizers: list[torch.optim.Optimizer], outer_loader, order: int = 1):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (first-order DARTS) or 2 (second order); got {order!r}")
        super().__init__(trainer, optimizers, outer_loader)
        if trainer.config.engine != "torch" or self.cuda_graphs or trainer.dist.enabled:
            raise ValueError("a DARTS search runs on the torch engine in one process without --cuda-graphs")
        self.order = order
        self._pending = False

    def before_step(self, batch_index: int) -> None:
        self._pending = True  # the architecture step needs the training batch too: taken in micro_batch

    def _loss(self, outputs, y):
        return self.t.engine.loss(self.t.task, outputs, y)

    def arch_step(self, x_train, y_train, x_val, y_val) -> None:
        model, outer = self.t.model, self.optimizers[1]
        with self.autocast():
            if self.order == 1:
                grads = first_order_arch_grad(model, self._loss, x_val, y_val)
            else:
                xi = float(self.optimizers[0].param_groups[0]["lr"])
                grads = second_order_arch_grad(model, self._loss, x_train, y_train, x_val, y_val, xi)
        if all(bool(torch.isfinite(g).all()) for g in grads):
            for p, g in zip(model.arch_parameters(), grads):
                p.grad = g.to(p.dtype)
            outer.step()
        self.zero_grad()

    def micro_batch(self, x, y, share: float, sync: bool):
        if self._pending:
            self._pending = False
            self.arch_step(x, y, *self._next_outer())
        return super().micro_batch(x, y, share, sync)


class SkipCollapseGuard(Callback):
    """DARTS+'s early stop: after each epoch, derive the genotype; stop the search once the normal cell has
    ``max_skips`` or more skip connections. ``genotypes`` holds each epoch's genotype (as dicts); ``result`` the
    last one derived before the collapse (or the last one, when none collapsed).

    Checkpoint field (under ``callbacks``): ``darts_guard``, the genotypes so far and the reason decided."""

    def __init__(self, max_skips: int | None = 2):
        self.max_skips = max_skips
        self.genotypes: list[dict] = []
        self.reason: str | None = None

    @property
    def result(self) -> CellGenotype | None:
        if not self.genotypes:
            return None
        index = len(self.genotypes) - 1
        if self.reason is not None and index > 0:
            index -= 1  # the epoch that collapsed is not the answer
        return CellGenotype.from_dict(self.genotypes[index])

    def on_epoch_end(self, trainer, row: dict, val) -> None:
        g = trainer.model.genotype()
        self.genotypes.append(g.to_dict())
        skips = g.skip_count("normal")
        row["normal_skips"] = skips
        if self.max_skips is not None and skips >= self.max_skips and self.reason is None:
            self.reason = (f"skip-connection collapse guard (DARTS+): the normal cell has {skips} skip connections "
                           f"(>= {self.max_skips}) after epoch {row['epoch']}; the genotype of the epoch before is "
                           "kept")
            trainer.stop_reason = self.reason

    def state_dict(self) -> dict:
        return {"darts_guard": {"genotypes": self.genotypes, "reason": self.reason}}

    def load_state_dict(self, state: dict, trainer) -> None:
        saved = state.get("darts_guard") or {"genotypes": [], "reason": None}
        self.genotypes, self.reason = list(saved["genotypes"]), saved["reason"]
        if self.reason is not None:
            trainer.stop_reason = self.reason


@dataclass
class DartsResult:
    """What :func:`darts_search` returns."""

    genotype: CellGenotype  # the answer (before a collapse, if the guard stopped the search)
    genotypes: list[dict] = field(default_factory=list)  # each epoch's derived genotype
    stop_reason: str | None = None
    run_dir: Path | None = None
    summary: dict = field(default_factory=dict)


def _load(config):
    """The data as the training loop loads it for ``config`` (``--image-size`` and the memory limit included)."""
    from convolab.data import load_dataset

    data = load_dataset(config.data, data_dir=config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
                        download=config.download, max_bytes=config.max_memory,
                        image_size=tuple(config.image_size) if config.image_size is not None else None)
    return data if config.train_size is None else data.with_train_size(config.train_size, config.seed)


def random_cell(rng, steps: int = 4) -> CellGenotype:
    """A cell drawn uniformly from the space DARTS derives from: per node two different earlier states, each with
    an operation other than ``none`` (the random-search baseline in DARTS's own space, Li & Talwalkar 2019)."""
    ops = [p for p in PRIMITIVES if p != "none"]

    def cell():
        edges = []
        for i in range(steps):
            for src in sorted(rng.sample(range(2 + i), 2)):
                edges.append((rng.choice(ops), src))
        return tuple(edges)

    concat = tuple(range(2, 2 + steps))
    return CellGenotype(cell(), cell(), concat, concat)


@contextlib.contextmanager
def _safe_cpu_convolutions():
    """oneDNN off where torch's CPU kernels run at AVX2 (no AVX-512). torch 2.14.1's oneDNN convolution weight
    gradient corrupted the heap during a supernet search on an AVX2-only AMD EPYC at one thread: a segfault freeing
    an ideep tensor inside ``mkldnn_convolution_backward_weights``, in tests/experiments/test_darts.py's
    forced-collapse search under ``make test``; with oneDNN off it passes. torch's own convolution kernels are
    slower there but correct. Elsewhere nothing changes. (Only the switch is set: ``torch.backends.mkldnn.flags()``
    also resets TF32 and warns about it.)"""
    before = torch.backends.mkldnn.enabled
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def darts_search(config, *, order: int = 1, partial_channels: int = 1, init_channels: int = 8, layers: int = 5,
                 steps: int = 4, arch_lr: float = 3e-4, arch_weight_decay: float = 1e-3, max_skips: int | None = 2,
                 model: SuperNet | None = None) -> DartsResult:
    """Search a cell on ``config``'s data (a :class:`convolab.train.TrainConfig`: dataset, epochs, weights'
    optimizer, rate and schedule, batch size, seed, ``out``) through the training loop; the architecture steps
    read the validation split (``config.val_fraction``). Writes the run folder of the supernet (its weights, not
    meant for reloading) with ``genotype.json`` beside it.

    Args:
        config: the search's training settings (``config.model`` is only a name for the run).
        order: 1 or 2 (second order costs about 3x the first's time per step).
        partial_channels: K of PC-DARTS (1: all channels).
        init_channels, layers, steps: the supernet's width, cells and nodes per cell.
        arch_lr, arch_weight_decay: Adam on the alphas (the paper: 3e-4, betas (0.5, 0.999), decay 1e-3).
        max_skips: the collapse guard (None: off).
        model: a supernet built by the caller (for tests), else one is built for the data.
    """
    from convolab.data import DeviceLoader
    from convolab.runs.session import make_trainer
    from convolab.train.optim import create_optimizer

    data = _load(config)
    if not len(data.val):
        raise ValueError("a DARTS search steps the architecture on validation batches; give a val_fraction > 0")
    torch.manual_seed(config.seed)
    net = model or SuperNet(num_classes=data.num_classes, in_chans=data.in_chans, init_channels=init_channels,
                            layers=layers, steps=steps, partial_channels=partial_channels)

    def optimizers(m: SuperNet) -> list[torch.optim.Optimizer]:
        for a in m.arch_parameters():  # the weights' optimizer (the config's) must not hold the alphas
            a.requires_grad_(False)
        try:
            inner = create_optimizer(m, config.optimizer, config.lr, config.momentum, config.weight_decay,
                                     config.nesterov, config.decay_norm_and_bias)
        finally:
            for a in m.arch_parameters():
                a.requires_grad_(True)
        outer = torch.optim.Adam(m.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999), weight_decay=arch_weight_decay)
        return [inner, outer]

    def step_rule(t, opts) -> DartsStep:
        outer = DeviceLoader(t.data.val, config.batch_size, mean=t.data.mean, std=t.data.std, device=t.device,
                             shuffle=True, seed=config.seed + 1)
        return DartsStep(t, opts, outer, order=order)

    guard = SkipCollapseGuard(max_skips)
    trainer = make_trainer(config, model=net, data=data, optimizers=optimizers, step_rule=step_rule,
                           callbacks=[guard])
    with _safe_cpu_convolutions():
        result = trainer.fit()
    genotype = guard.result
    out = DartsResult(genotype, guard.genotypes, guard.reason, result.run_dir, result.summary)
    if result.run_dir is not None:
        write_json(Path(result.run_dir) / "genotype.json",
                   {"genotype": genotype.to_dict(), "per_epoch": guard.genotypes, "stop_reason": guard.reason,
                    "order": order, "partial_channels": partial_channels, "supernet": net.search_cfg})
    return out


def train_network(genotype: CellGenotype, config, *, init_channels: int = 16, layers: int = 8):
    """Train the network of ``genotype`` (:class:`DartsNetwork`) from scratch with ``config`` (a ``TrainConfig``);
    returns the loop's :class:`convolab.train.loop.TrainResult`. The run records the model as the registry's
    ``darts_net`` with the genotype among its arguments, so ``convolab.load_run`` rebuilds it; ``genotype.json``
    beside it repeats the genotype. ``convolab train --model darts_net --model-arg genotype=PATH`` trains the same
    network from the command line."""
    from convolab.runs.session import make_trainer

    data = _load(config)
    torch.manual_seed(config.seed)
    net = DartsNetwork(genotype, num_classes=data.num_classes, in_chans=data.in_chans,
                       input_size=tuple(data.input_size[1:]), init_channels=init_channels, layers=layers)
    result = make_trainer(config, model=net, data=data).fit()
    if result.run_dir is not None:
        write_json(Path(result.run_dir) / "genotype.json",
                   {"genotype": genotype.to_dict(), "init_channels": init_channels, "layers": layers})
    return result
