"""Loss landscapes and mode connectivity: the loss around a trained network, and between two.

Slices (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"). The loss is a function of millions of
weights; a slice looks at it along one or two directions through the trained weights ``theta``:
``L(theta + a*d)`` (1-D) or ``L(theta + a*d1 + b*d2)`` (2-D). A plain Gaussian direction would move small filters
far more, relative to their size, than large ones, and scale-invariant networks (ReLU, BatchNorm) would look sharp
or flat by their weights' scale alone. Li et al.'s *filter normalisation* removes that: each filter of the
direction (one output unit's slice of a conv or linear weight: ``weight[j]``, ``weight[:, j]`` for a transposed
convolution) is rescaled to the norm of the same filter of the trained weights. Biases, BatchNorm/LayerNorm/
GroupNorm parameters and every other parameter of one dimension get 0 in the direction, the paper's choice (its
``ignore='biasbn'``): they stay at their trained values along the slice. BatchNorm's running statistics are the
trained ones too (evaluation mode, as the paper evaluates).

Mode connectivity. Between two trained runs of one architecture, the loss along the straight line
``(1 - t) * theta1 + t * theta2`` (Goodfellow et al. 2015; Frankle et al. 2020 call the rise above the endpoints'
line the *barrier*). Interpolated BatchNorm running statistics are not the statistics of the interpolated
network, so by default they are recomputed at every point on training images (``bn_reset``, as SWA's
``update_bn`` does; only the BatchNorm layers switch to training mode, so dropout stays off); without it, the
running statistics are interpolated like the weights. The input normalisation (the runs' mean and std, computed
on each run's own training split) is interpolated too, so that each endpoint is exactly that run's network.

Every figure is the mean cross-entropy (no label smoothing: the loss ``convolab eval`` reports) and the accuracy
on a fixed subset of a split, the first ``images`` of it as training loaded it, in evaluation mode, without
gradients, in batches. The model's weights (and buffers, and training flags) are restored afterwards.

Classification and clip-classification runs only: a segmentation run is refused (its per-pixel loss with an
ignored index would be a second evaluation path to keep equal to training's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EvalImages", "Slice1D", "Slice2D", "Interpolation", "filter_normalized_direction", "direction_pair",
           "slice_coordinates", "interpolation_ts", "eval_images", "evaluate_loss", "batchnorm_layers",
           "reset_batchnorm", "check_run", "check_same_architecture", "landscape_1d", "landscape_2d", "interpolate"]

# the parameters of these modules get 0 in a direction whatever their shape (Li et al.'s "bn" in 'biasbn')
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.RMSNorm)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
SPLITS = ("train", "val", "test")
TASKS = ("classification", "clips")


@dataclass
class EvalImages:
    """The fixed subset every point is evaluated on, and the training images that recompute BatchNorm statistics."""

    images: torch.Tensor  # uint8 (N, C, H, W), or (N, C, T, H, W) clips: the first N of the split
    labels: torch.Tensor  # int64 (N,)
    split: str  # train, val or test
    dataset: str
    bn_images: torch.Tensor  # uint8: the first N images of the training split (for bn_reset)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Slice1D:
    """``L(theta + a*d)`` for ``a`` in ``alphas``."""

    alphas: list[float]
    losses: list[float]  # mean cross-entropy at each alpha
    accuracies: list[float]
    span: float
    seed: int  # of the direction
    images: int
    split: str
    seconds: float = 0.0

    @property
    def center(self) -> tuple[float, float]:
        """(loss, accuracy) at a = 0, the trained weights (``points`` odd), else ``(nan, nan)``."""
        return _at_zero(self.alphas, self.losses, self.accuracies)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Slice2D:
    """``L(theta + a*d1 + b*d2)``: ``losses[i][j]`` at ``a = alphas[i]``, ``b = betas[j]``."""

    alphas: list[float]
    betas: list[float]
    losses: list[list[float]]
    accuracies: list[list[float]]
    span: float
    seed: int  # of the directions (d1 is the 1-D slice's direction of the same seed)
    images: int
    split: str
    cosine: float  # cos(d1, d2): near 0, random high-dimensional directions are nearly orthogonal
    seconds: float = 0.0

    @property
    def center(self) -> tuple[float, float]:
        """(loss, accuracy) at a = b = 0 (``points`` odd), else ``(nan, nan)``."""
        if len(self.alphas) % 2 == 0:
            return math.nan, math.nan
        m = len(self.alphas) // 2
        return self.losses[m][m], self.accuracies[m][m]

    def slice_1d(self) -> Slice1D:
        """The row b = 0: the 1-D slice of the same seed, read off the grid (``points`` odd)."""
        if len(self.betas) % 2 == 0:
            raise ValueError(f"a grid of {len(self.betas)} points has no b = 0 row; use an odd number of points")
        m = len(self.betas) // 2
        return Slice1D(list(self.alphas), [row[m] for row in self.losses], [row[m] for row in self.accuracies],
                       self.span, self.seed, self.images, self.split)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Interpolation:
    """The loss along ``(1 - t) * theta_a + t * theta_b``; ``t`` = 0 is run A, 1 is run B."""

    ts: list[float]
    losses: list[float]
    accuracies: list[float]
    bn_reset: bool  # BatchNorm statistics recomputed at each point (False: interpolated, or no BatchNorm)
    bn_layers: int
    images: int
    split: str
    run_a: str = ""
    run_b: str = ""
    seconds: float = 0.0
    endpoints: dict = field(default_factory=dict)  # loss and accuracy at t = 0 and t = 1

    @property
    def barrier(self) -> float:
        """max over t in [0, 1] of ``L(t) - ((1 - t) L(0) + t L(1))``: the loss barrier (0 when the path is no
        higher than the straight line between the endpoints' losses)."""
        return _barrier(self.ts, self.losses, higher=True)

    @property
    def accuracy_drop(self) -> float:
        """max over t in [0, 1] of ``((1 - t) A(0) + t A(1)) - A(t)``: the accuracy barrier."""
        return _barrier(self.ts, self.accuracies, higher=False)

    def to_json(self) -> dict:
        return {**asdict(self), "barrier": self.barrier, "accuracy_drop": self.accuracy_drop}


def _at_zero(xs: Sequence[float], losses: Sequence[float], accs: Sequence[float]) -> tuple[float, float]:
    for x, loss, acc in zip(xs, losses, accs):
        if x == 0.0:
            return loss, acc
    return math.nan, math.nan


def _barrier(ts: Sequence[float], values: Sequence[float], higher: bool) -> float:
    at = dict(zip(ts, values))
    v0, v1 = at[0.0], at[1.0]
    gaps = [(v - ((1 - t) * v0 + t * v1)) * (1 if higher else -1) for t, v in zip(ts, values) if 0.0 <= t <= 1.0]
    return max([0.0, *gaps])


# ------------------------------------------------------------------------------------------------ directions

def _parameters(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Parameter]]:
    """(name, owning module, parameter) for every parameter once (a tied one under its first name)."""
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield (f"{module_name}.{name}" if module_name else name), module, p


def _filter_dim(module: nn.Module, p: torch.Tensor) -> int:
    """The dimension that indexes a weight's output units: 0, or 1 for a transposed convolution (its weight is
    (in, out / groups, k...); with groups the output units are not whole slices of either, so 0)."""
    return 1 if isinstance(module, _TRANSPOSED) and module.groups == 1 and p is module.weight else 0


def filter_normalized_direction(model: nn.Module, *, generator: torch.Generator | None = None,
                                seed: int = 0) -> dict[str, torch.Tensor]:
    """A random direction in ``model``'s parameter space, filter-normalised (Li et al. 2018).

    Each parameter of two or more dimensions gets a standard Gaussian draw whose every filter (output unit's slice)
    is rescaled to the norm of the same filter of the trained weight; parameters of one dimension (biases, a layer
    scale) and the parameters of normalisation layers get zeros (the paper's choice: along the slice they keep their
    trained values). A filter whose trained weights are all zero (pruned) stays zero.

    Args:
        model: the trained network (its parameters are read, not changed).
        generator: the CPU generator to draw from (two directions from one generator differ); default: a new one
            seeded with ``seed``.
        seed: the seed of that new generator.

    Returns:
        ``{parameter name: direction}``, float32 tensors of the parameters' shapes on their devices.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    direction = {}
    for name, module, p in _parameters(model):
        w = p.detach()
        if w.dim() <= 1 or isinstance(module, _NORMS):
            direction[name] = torch.zeros_like(w)
            continue
        # drawn on the CPU in float64 (same numbers on every device), normalised there, then cast
        d = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        dim = _filter_dim(module, p)
        d_t, w_t = d.transpose(0, dim), w.double().cpu().transpose(0, dim)  # (filters, ...)
        d_norm = d_t.reshape(len(d_t), -1).norm(dim=1)  # (filters,)
        w_norm = w_t.reshape(len(w_t), -1).norm(dim=1)
        scale = (w_norm / d_norm.clamp_min(1e-300)).view(-1, *([1] * (d_t.dim() - 1)))
        direction[name] = (d_t * scale).transpose(0, dim).to(device=w.device, dtype=w.dtype).contiguous()
    return direction


def direction_pair(model: nn.Module, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Two filter-normalised directions from one generator seeded with ``seed``: the first is the 1-D slice's."""
    gen = torch.Generator().manual_seed(seed)
    return filter_normalized_direction(model, generator=gen), filter_normalized_direction(model, generator=gen)


def _cosine(d1: dict[str, torch.Tensor], d2: dict[str, torch.Tensor]) -> float:
    dot = sum(float((d1[k].double() * d2[k].double()).sum()) for k in d1)
    n1 = math.sqrt(sum(float(d1[k].double().pow(2).sum()) for k in d1))
    n2 = math.sqrt(sum(float(d2[k].double().pow(2).sum()) for k in d2))
    return dot / (n1 * n2) if n1 and n2 else 0.0


def slice_coordinates(points: int, span: float) -> list[float]:
    """``points`` values from ``-span`` to ``span``, symmetric, with exactly 0 in the middle when ``points`` is odd
    (``span * (2i - (points - 1)) / (points - 1)``)."""
    if points < 2:
        raise ValueError(f"points must be >= 2; got {points}")
    if not (math.isfinite(span) and span > 0):
        raise ValueError(f"span must be a finite number > 0; got {span}")
    n = points - 1
    return [span * (2 * i - n) / n for i in range(points)]


def interpolation_ts(points: int, start: float = -0.25, stop: float = 1.25) -> list[float]:
    """``linspace(start, stop, points)`` with exactly 0 and 1 among them (added where the grid misses them, or put
    in place of a value within 1e-9 of them), so that both runs are points of the path."""
    if points < 2:
        raise ValueError(f"points must be >= 2; got {points}")
    ts = [float(t) for t in np.linspace(start, stop, points)]
    for exact in (0.0, 1.0):
        ts = [t for t in ts if abs(t - exact) > 1e-9] + [exact]
    return sorted(ts)


# ------------------------------------------------------------------------------------------------ evaluation

def check_run(run, verb: str = "landscape") -> None:
    """Refuse, in one line, a run the landscape cannot evaluate: an int8 graph, or a task other than
    classification and clip classification."""
    from convolab.runs.quantized import refuse_graph

    refuse_graph(run, verb)
    if run.task not in TASKS:
        raise ValueError(f"{run.path}: a {run.task} run; the landscape measures a classifier's cross-entropy "
                         "(classification and clip runs)")


def _architecture(model: nn.Module) -> list[tuple[str, str]]:
    return [(name, type(m).__name__) for name, m in model.named_modules()]


def check_same_architecture(run_a, run_b) -> None:
    """Refuse, in one line, two runs whose weights cannot be interpolated: different layers, weights' names or
    shapes, classes or input sizes."""
    a, b = run_a.model, run_b.model
    sa, sb = a.state_dict(), b.state_dict()
    what = f"{run_a.path} and {run_b.path}"
    if _architecture(a) != _architecture(b) or list(sa) != list(sb):
        name_a, name_b = (r.config.get("model") or r.build.get("name") or "?" for r in (run_a, run_b))
        raise ValueError(f"{what} are different models ({name_a} vs {name_b}); interpolation needs two runs of "
                         "one architecture")
    for key in sa:
        if sa[key].shape != sb[key].shape:
            raise ValueError(f"{what} have different weight shapes ({key}: {tuple(sa[key].shape)} vs "
                             f"{tuple(sb[key].shape)}); interpolation needs two runs of one architecture")
    if tuple(run_a.input_size) != tuple(run_b.input_size):
        raise ValueError(f"{what} take different inputs ({run_a.input_size} vs {run_b.input_size}); interpolation "
                         "needs two runs of one architecture and input size")
    if list(run_a.classes) != list(run_b.classes):
        raise ValueError(f"{what} have different classes; interpolation needs runs trained on the same classes")


def eval_images(run, *, images: int = 2048, split: str = "train", data=None) -> EvalImages:
    """The first ``images`` of ``split`` of the run's dataset, loaded and split as training loaded it
    (:func:`convolab.runs.recipe.load_data`), and the first ``images`` of its training split for BatchNorm
    statistics. ``data`` is the loaded dataset, if the caller has it. A split with fewer images gives them all.

    Raises:
        ValueError: an unknown or empty split, ``images`` below 1, or a dataset that does not fit the run.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if images < 1:
        raise ValueError(f"images must be >= 1; got {images}")
    if data is None:
        from convolab.runs.recipe import load_data, run_config

        data = load_data(run, run_config(run))
    chosen = getattr(data, split)
    if len(chosen) == 0:
        raise ValueError(f"the {split} split of {data.name} has no images (val_fraction 0?); choose another --split")
    return EvalImages(chosen.images[:images], chosen.labels[:images].long(), split, data.name,
                      data.train.images[:images])


@torch.no_grad()
def evaluate_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                  std: Sequence[float], batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` as it is (mode included) on uint8 ``images``, normalised with
    ``mean``/``std``, in batches of ``batch_size``; the sums are accumulated in float64."""
    from convolab.data.loader import Normalizer

    device = next(model.parameters()).device
    normalize = Normalizer(mean, std, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(labels), batch_size):
        x = normalize(images[start:start + batch_size].to(device)).contiguous(memory_format=_layout(model, images))
        y = labels[start:start + batch_size].to(device)
        logits = model(x).float()  # (B, K)
        total += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = len(labels)
    return float(total) / n, float(correct) / n


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that keep running statistics (the ones evaluation mode reads)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reset_batchnorm(model: nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                    batch_size: int = 1000) -> int:
    """Recompute every BatchNorm layer's running statistics on uint8 ``images``: reset, then one pass in batches
    with only the BatchNorm layers in training mode and momentum ``None`` (torch's cumulative average: the mean of
    the batches' statistics, as ``torch.optim.swa_utils.update_bn`` computes). Returns the number of layers."""
    from convolab.data.loader import Normalizer

    layers = batchnorm_layers(model)
    if not layers:
        return 0
    device = next(model.parameters()).device
    normalize = Normalizer(mean, std, device)
    momenta = [m.momentum for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for start in range(0, len(images), batch_size):
            x = normalize(images[start:start + batch_size].to(device))
            model(x.contiguous(memory_format=_layout(model, images)))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
            m.eval()
    return len(layers)


def _layout(model: nn.Module, images: torch.Tensor) -> torch.memory_format:
    """The layout a batch of ``images`` should have for ``model``: channels last where its convolution weights are
    (on the CPU that layout runs tutorial_cnn's convolutions and pooling about 2.5 times faster than NCHW)."""
    if images.dim() == 4:
        for p in model.parameters():
            if p.dim() == 4 and p[0, 0].numel() > 1:  # (a 1x1 kernel's layouts are the same strides)
                return torch.channels_last if not p.is_contiguous() and p.is_contiguous(
                    memory_format=torch.channels_last) else torch.contiguous_format
    return torch.contiguous_format


class _Restored:
    """Within ``with``: the model in evaluation mode, channels last for images (not on Apple's MPS, where that
    layout is not faster); after, its state_dict, memory layout and training flags as they were."""

    def __init__(self, model: nn.Module, images: torch.Tensor):
        self.model, self.images = model, images

    def __enter__(self) -> nn.Module:
        self.saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        params = list(self.model.parameters())
        self.relayout = (self.images.dim() == 4 and params[0].device.type != "mps"
                         and all(p.is_contiguous() for p in params))
        if self.relayout:
            self.model.to(memory_format=torch.channels_last)
        return self.model

    def __exit__(self, *exc) -> None:
        if self.relayout:
            self.model.to(memory_format=torch.contiguous_format)
        self.model.load_state_dict(self.saved)
        for m, training in self.modes:
            m.training = training


def _progress(total: int, desc: str, enabled: bool):
    from convolab.explain.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="point", enabled=enabled)


def _prepare(run, images: int, split: str, data) -> EvalImages:
    check_run(run)
    return data if isinstance(data, EvalImages) else eval_images(run, images=images, split=split, data=data)


@torch.no_grad()
def _sweep(model: nn.Module, points: Sequence[tuple[float, ...]], directions: Sequence[dict[str, torch.Tensor]],
           evaluate: Callable[[], tuple[float, float]], bar) -> tuple[list[float], list[float]]:
    """(losses, accuracies) at ``theta + sum(c_k * d_k)`` for each coordinate tuple of ``points``."""
    params = {name: p for name, _, p in _parameters(model)}
    theta = {name: p.detach().clone() for name, p in params.items()}
    losses, accs = [], []
    for coords in points:
        for name, p in params.items():
            p.copy_(theta[name])
            for c, d in zip(coords, directions):
                if c != 0.0:  # (a zero coordinate leaves the trained weight exact)
                    p.add_(d[name], alpha=c)
        loss, acc = evaluate()
        losses.append(loss)
        accs.append(acc)
        bar.update(1)
    return losses, accs


def landscape_1d(run, *, points: int = 21, span: float = 1.0, seed: int = 0, images: int = 2048,
                 split: str = "train", data=None, batch_size: int = 1000, progress: bool = False) -> Slice1D:
    """The 1-D filter-normalised slice ``L(theta + a*d)``, ``a`` in ``slice_coordinates(points, span)``.

    Args:
        run: a loaded classification run (``convolab.load_run``); its model is restored afterwards.
        points, span: the coordinates (``-span .. span``; 1.0 moves every filter by its own norm).
        seed: of the direction.
        images, split: the first ``images`` of ``split`` are evaluated (or ``data``: an :class:`EvalImages`, or the
            loaded dataset).
        batch_size: images per forward pass.
        progress: show a progress bar on a terminal.

    Raises:
        ValueError: an int8 or segmentation run, or a bad argument.
    """
    coords = slice_coordinates(points, span)
    sub = _prepare(run, images, split, data)
    start = time.perf_counter()
    with _Restored(run.model, sub.images) as model, _progress(points, "landscape 1-D", progress) as bar:
        d = filter_normalized_direction(model, seed=seed)
        losses, accs = _sweep(model, [(a,) for a in coords], [d],
                              lambda: evaluate_loss(model, sub.images, sub.labels, run.mean, run.std, batch_size), bar)
    return Slice1D(coords, losses, accs, span, seed, len(sub), sub.split, time.perf_counter() - start)


def landscape_2d(run, *, points: int = 21, span: float = 1.0, seed: int = 0, images: int = 2048,
                 split: str = "train", data=None, batch_size: int = 1000, progress: bool = False) -> Slice2D:
    """The 2-D filter-normalised slice ``L(theta + a*d1 + b*d2)`` on a ``points`` x ``points`` grid; ``d1`` is
    :func:`landscape_1d`'s direction of the same seed, so the grid's ``b = 0`` row is that slice. Arguments as
    :func:`landscape_1d`."""
    coords = slice_coordinates(points, span)
    sub = _prepare(run, images, split, data)
    start = time.perf_counter()
    with _Restored(run.model, sub.images) as model, _progress(points * points, "landscape 2-D", progress) as bar:
        d1, d2 = direction_pair(model, seed)
        grid = [(a, b) for a in coords for b in coords]  # row-major: alphas[i], betas[j]
        losses, accs = _sweep(model, grid, [d1, d2],
                              lambda: evaluate_loss(model, sub.images, sub.labels, run.mean, run.std, batch_size), bar)
        cosine = _cosine(d1, d2)
    rows = lambda flat: [flat[i * points:(i + 1) * points] for i in range(points)]  # noqa: E731
    return Slice2D(coords, list(coords), rows(losses), rows(accs), span, seed, len(sub), sub.split, cosine,
                   time.perf_counter() - start)


def interpolate(run_a, run_b, *, points: int = 21, bn_reset: bool = True, images: int = 2048, split: str = "train",
                data=None, batch_size: int = 1000, progress: bool = False) -> Interpolation:
    """The loss along ``(1 - t) * theta_a + t * theta_b`` for ``t`` in :func:`interpolation_ts` (-0.25 .. 1.25,
    with 0 and 1), evaluated on run A's images.

    Every floating-point tensor of the state (weights and BatchNorm's running statistics) and the input
    normalisation are interpolated. With ``bn_reset`` (and BatchNorm layers in the model) the running statistics
    are then recomputed at each point on the first ``images`` training images (:func:`reset_batchnorm`), the
    endpoints too, so they are each run's loss with recomputed statistics; without it the endpoints are each run's
    own loss. Run A's model is the one changed, and it is restored afterwards.

    Raises:
        ValueError: a run the landscape refuses (:func:`check_run`), two runs of different architectures, or a
            bad argument.
    """
    ts = interpolation_ts(points)
    check_run(run_a)
    check_run(run_b)
    check_same_architecture(run_a, run_b)
    sub = _prepare(run_a, images, split, data)
    mean_a, std_a, mean_b, std_b = (np.asarray(v, dtype=np.float64) for v in (run_a.mean, run_a.std, run_b.mean,
                                                                                 run_b.std))
    start = time.perf_counter()
    b_state = {k: v.to(next(run_a.model.parameters()).device) for k, v in run_b.model.state_dict().items()}
    losses, accs = [], []
    with (_Restored(run_a.model, sub.images) as model, _progress(len(ts), "interpolation", progress) as bar,
          torch.no_grad()):
        a_state = {k: v.clone() for k, v in model.state_dict().items()}
        live = model.state_dict()  # shares storage with the parameters and buffers
        layers = len(batchnorm_layers(model))
        for t in ts:
            for key, tensor in live.items():
                if tensor.is_floating_point():  # (num_batches_tracked stays run A's)
                    tensor.copy_(torch.lerp(a_state[key], b_state[key], t))  # exact at t = 0 and 1
            mean, std = (1 - t) * mean_a + t * mean_b, (1 - t) * std_a + t * std_b
            if (std <= 0).any():
                raise ValueError(f"the runs' input normalisations are too far apart to extrapolate to t = {t:g} "
                                 f"(std {std.tolist()}); is run B trained on the same data?")
            if bn_reset and layers:
                reset_batchnorm(model, sub.bn_images, mean.tolist(), std.tolist(), batch_size)
            loss, acc = evaluate_loss(model, sub.images, sub.labels, mean.tolist(), std.tolist(), batch_size)
            losses.append(loss)
            accs.append(acc)
            bar.update(1)
    at = {t: (loss, acc) for t, loss, acc in zip(ts, losses, accs)}
    endpoints = {"loss_a": at[0.0][0], "accuracy_a": at[0.0][1], "loss_b": at[1.0][0], "accuracy_b": at[1.0][1]}
    return Interpolation(ts, losses, accs, bool(bn_reset and layers), layers, len(sub), sub.split, str(run_a.path),
                         str(run_b.path), time.perf_counter() - start, endpoints)


# ------------------------------------------------------------------------------------------------ outputs

RESULTS = "landscape.json"
PLOTS = ("plots/landscape_1d.png", "plots/landscape_2d.png", "plots/interpolation.png")


def _loss_and_accuracy(ax, xs: Sequence[float], losses: Sequence[float], accs: Sequence[float], xlabel: str):
    """Loss (left axis; a log scale where it spans more than a factor 10) and accuracy (right axis) against ``xs``."""
    ax.plot(xs, losses, "-o", color="C0", markersize=3, label="loss")
    log = float(np.min(losses)) > 0 and float(np.max(losses)) > 10 * float(np.min(losses))
    if log:
        from matplotlib import ticker

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))  # 0.3, 1, 3 rather than 3 x 10^-1
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cross-entropy" + (" (log scale)" if log else ""), color="C0")
    ax.grid(alpha=0.3)
    acc_ax = ax.twinx()
    acc_ax.plot(xs, accs, "-s", color="C1", markersize=3, label="accuracy")
    acc_ax.set_ylabel("accuracy", color="C1")
    acc_ax.set_ylim(0, 1.02)
    return acc_ax


def _finite(values) -> np.ndarray:
    """An array with NaN/inf (a diverged point) replaced by the largest finite value, so log scales can draw it."""
    a = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(a)
    return np.where(ok, a, a[ok].max() if ok.any() else 1.0)


def slice_1d_figure(s: Slice1D, title: str = ""):
    """Loss and accuracy along the 1-D slice, the trained weights marked."""
    from convolab.plotting import plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    _loss_and_accuracy(ax, s.alphas, _finite(s.losses), s.accuracies, "a  (theta + a * d, d filter-normalised)")
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_title(title or f"1-D loss slice (seed {s.seed}, {s.images:,} {s.split} images)")
    return fig


def slice_2d_figure(s: Slice2D, title: str = ""):
    """Contours of the loss over the 2-D slice (log-spaced levels), the trained weights marked."""
    from matplotlib import colors, ticker

    from convolab.plotting import plt

    z = _finite(s.losses).T  # (betas, alphas): contour wants rows along y
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    low, high = max(float(z.min()), 1e-6), float(z.max())
    if high > low * 1.0001:
        levels = np.geomspace(low, high, 25)
        filled = ax.contourf(s.alphas, s.betas, z, levels=levels, norm=colors.LogNorm(low, high), cmap="viridis")
        ax.contour(s.alphas, s.betas, z, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.6)
        bar = fig.colorbar(filled, ax=ax, ticks=levels[::4], format=ticker.FormatStrFormatter("%.3g"))
        bar.minorticks_off()
        bar.set_label("cross-entropy")
    ax.plot([0], [0], "r*", markersize=10, label="trained weights")
    ax.set_xlabel("a (d1)")
    ax.set_ylabel("b (d2)")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or f"2-D loss slice (seed {s.seed}, {s.images:,} {s.split} images)")
    return fig


def interpolation_figure(r: Interpolation, title: str = ""):
    """Loss and accuracy along the line between two runs, the runs (t = 0 and 1) marked."""
    from convolab.plotting import plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    _loss_and_accuracy(ax, r.ts, _finite(r.losses), r.accuracies, "t  ((1 - t) * theta_A + t * theta_B)")
    for t, name in ((0.0, "A"), (1.0, "B")):
        ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(name, (t, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom")
    bn = "BatchNorm statistics recomputed" if r.bn_reset else (
        "BatchNorm statistics interpolated" if r.bn_layers else "no BatchNorm")
    ax.set_title(title or f"linear interpolation, barrier {r.barrier:.3g} ({bn})", pad=14)
    return fig


def existing_outputs(out) -> list:
    """The files of a landscape already in ``out`` (what a new one would replace)."""
    from pathlib import Path

    out = Path(out)
    return [out / name for name in (RESULTS, *PLOTS) if (out / name).exists()]


def write_outputs(out, record: dict, slice1d: Slice1D | None = None, slice2d: Slice2D | None = None,
                  interpolation: Interpolation | None = None, *, overwrite: bool = False) -> list:
    """Write ``record`` as ``OUT/landscape.json`` and the figures of the results given under ``OUT/plots/``, each
    atomically; a figure of an earlier landscape that this one does not draw is removed (only with ``overwrite``).
    Returns the paths written.

    Raises:
        FileExistsError: ``out`` holds a landscape and ``overwrite`` is False.
    """
    from pathlib import Path

    from convolab.atomic import write_json
    from convolab.plotting import save_figure

    out = Path(out)
    found = existing_outputs(out)
    if found and not overwrite:
        raise FileExistsError(f"{found[0]} exists; pass --overwrite to replace the landscape in {out}, or choose "
                              "another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder")
    figures = {PLOTS[0]: slice1d and slice_1d_figure(slice1d), PLOTS[1]: slice2d and slice_2d_figure(slice2d),
               PLOTS[2]: interpolation and interpolation_figure(interpolation)}
    written = []
    for name, fig in figures.items():
        if fig is not None:
            written.append(save_figure(fig, out / name))
        elif (out / name).exists():  # an earlier landscape's figure, not this one's
            (out / name).unlink()
    write_json(out / RESULTS, record)
    return [out / RESULTS, *written]
