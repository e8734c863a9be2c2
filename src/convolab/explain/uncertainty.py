"""How sure a classifier is: Monte Carlo dropout and calibration (expected calibration error, reliability bins).

**MC dropout** (Gal & Ghahramani 2016, "Dropout as a Bayesian approximation"): keep dropout on at test time and
average ``S`` stochastic forward passes. With ``p_s = softmax(f_s(x))`` the class probabilities of pass ``s``
(its own dropout masks; every other layer, BatchNorm included, in evaluation mode):

- mean probabilities  ``p̄ = (1/S) Σ_s p_s``: the prediction (its top-k classes);
- spread  ``σ_k = sqrt( Σ_s (p_s,k − p̄_k)² / (S − 1) )``: the sample standard deviation of class ``k``'s
  probability over the passes (reported for the top class of ``p̄``);
- predictive entropy  ``H[p̄] = −Σ_k p̄_k log p̄_k`` (nats): all the uncertainty of the averaged prediction;
- mutual information  ``I = H[p̄] − (1/S) Σ_s H[p_s]`` (BALD, Houlsby et al. 2011): the part of it that comes
  from the passes disagreeing (the model's own uncertainty), 0 when every pass says the same, never negative.

The passes draw their masks from torch's generator forked and seeded with ``seed``
(``torch.random.fork_rng``): the same seed, inputs and batch size give the same output, and the caller's random
state is left as it was.

**Calibration** (Guo et al. 2017, "On calibration of modern neural networks"): the confidence of a prediction is
its top probability ``c_i = max_k p_i,k``, its prediction ``ŷ_i = argmax_k p_i,k``. The ``M`` equal-width bins
are ``B_1 = [0, 1/M]`` and ``B_m = ((m−1)/M, m/M]``; per bin ``acc(B_m)`` is the fraction of its predictions that
are right and ``conf(B_m)`` their mean confidence, and

    ECE = Σ_m (|B_m| / n) · |acc(B_m) − conf(B_m)|

(0 for a perfectly calibrated model; empty bins add nothing). The reliability diagram plots ``acc`` against
``conf`` per bin beside the diagonal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ECE_BINS", "MCDropout", "Calibration", "dropout_layers", "check_dropout", "mc_dropout",
           "mc_dropout_batches", "calibration", "expected_calibration_error"]

ECE_BINS = 15  # equal-width confidence bins of the ECE, as Guo et al. 2017


def dropout_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the dropout layers of ``model`` that drop something: torch's ``Dropout``,
    ``Dropout1d/2d/3d``, ``AlphaDropout`` and ``FeatureAlphaDropout`` with ``p > 0``. (Stochastic depth,
    ``DropPath``, is not dropout of units and does not count.)"""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def check_dropout(model: nn.Module, samples: int) -> None:
    """Refuse MC dropout that cannot work: fewer than 2 samples (one pass has no spread) or a model without
    dropout layers (every pass would be the same).

    Raises:
        ValueError: one line saying which, and what would work.
    """
    if int(samples) < 2:
        raise ValueError(f"--mc-samples must be at least 2 (one pass has no spread); got {samples}")
    if not dropout_layers(model):
        raise ValueError(f"MC dropout needs dropout layers, and this {type(model).__name__} has none with p > 0; "
                         "use a model trained with dropout (mnist_cnn, mlp, alexnet, vgg ... or a spec with "
                         "dropout)")


@dataclass
class MCDropout:
    """The summary of ``S`` MC-dropout passes over ``n`` inputs (float64, on the CPU; see the module's formulas)."""

    probabilities: torch.Tensor  # (n, K) mean probabilities p̄ over the passes
    std: torch.Tensor  # (n, K) sample standard deviation of each class's probability over the passes
    entropy: torch.Tensor  # (n,) predictive entropy H[p̄] in nats
    mutual_information: torch.Tensor  # (n,) H[p̄] − mean_s H[p_s] in nats
    samples: int  # S

    @property
    def top_std(self) -> torch.Tensor:
        """(n,) the spread of the top class of p̄."""
        return self.std.gather(1, self.probabilities.argmax(1, keepdim=True)).squeeze(1)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """−Σ_k p_k log p_k over the last dimension, with 0 log 0 = 0."""
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(-1)


def _summarise(stack: torch.Tensor) -> MCDropout:
    """(S, n, K) probabilities of the passes -> their :class:`MCDropout` summary (in float64)."""
    stack = stack.double()
    mean = stack.mean(0)  # (n, K)
    entropy = _entropy(mean)  # (n,)
    mutual = (entropy - _entropy(stack).mean(0)).clamp_min(0)  # (n,) (clamped: rounding can make it -1e-17)
    return MCDropout(mean, stack.std(0, correction=1), entropy, mutual, stack.shape[0])


def _passes(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """(S, N, K) softmax probabilities of ``samples`` passes of ``x`` (dropout as the model's flags are set)."""
    def probs(out: torch.Tensor) -> torch.Tensor:  # float32 at least (a half-precision model's too), float64 kept
        return out.to(torch.promote_types(out.dtype, torch.float32)).softmax(1)

    first = model(x)
    if first.dim() != 2:
        raise ValueError(f"MC dropout is for classifiers (class scores (N, K)); this model gives scores of shape "
                         f"{tuple(first.shape)}")
    return torch.stack([probs(first), *(probs(model(x)) for _ in range(samples - 1))])


class _DropoutOn:
    """Within the block: the model in evaluation mode except its dropout layers, in training mode; the torch
    generator forked and seeded (all modes and the caller's random state restored after)."""

    def __init__(self, model: nn.Module, seed: int, device: torch.device):
        self.model, self.seed, self.device = model, int(seed), device

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        for _, m in dropout_layers(self.model):
            m.train()
        cuda = self.device.type == "cuda"  # (the CPU's state is always forked; a CUDA device's too)
        devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()] if cuda else []
        self.rng = torch.random.fork_rng(devices=devices)
        self.rng.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        self.rng.__exit__(*exc)
        for m, mode in self.modes:
            m.training = mode
        return False


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def mc_dropout(model: nn.Module, x: torch.Tensor, samples: int = 30, seed: int = 0) -> MCDropout:
    """``samples`` stochastic passes of the batch ``x`` (N, ...) through a classifier with its dropout layers on
    (and everything else in evaluation mode): mean probabilities, their spread, entropy and mutual information.

    Raises:
        ValueError: ``samples`` < 2, or the model has no dropout layer (:func:`check_dropout`).
    """
    check_dropout(model, samples)
    with _DropoutOn(model, seed, _device(model)):
        stack = _passes(model, x, samples)
    return _summarise(stack.cpu())


@torch.inference_mode()
def mc_dropout_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], samples: int = 30,
                       seed: int = 0) -> tuple[MCDropout, torch.Tensor]:
    """:func:`mc_dropout` over ``(inputs, labels)`` batches (a split's loader), seeded once for the whole pass:
    the summary of all inputs in order, and their labels (n,) on the CPU."""
    check_dropout(model, samples)
    parts, labels = [], []
    with _DropoutOn(model, seed, _device(model)):
        for x, y in batches:
            stack = _passes(model, x, samples)  # (S, B, K)
            parts.append(_summarise(stack.cpu()))
            labels.append(y.cpu())
    if not parts:
        raise ValueError("MC dropout over an empty split: no inputs")
    cat = {f: torch.cat([getattr(p, f) for p in parts]) for f in ("probabilities", "std", "entropy",
                                                                   "mutual_information")}
    return MCDropout(**cat, samples=int(samples)), torch.cat(labels)


@dataclass
class Calibration:
    """Predictions sorted into equal-width confidence bins (see the module's formulas)."""

    ece: float  # expected calibration error, 0..1
    edges: torch.Tensor  # (M + 1,) bin edges 0, 1/M, ..., 1
    counts: torch.Tensor  # (M,) predictions per bin (long)
    accuracy: torch.Tensor  # (M,) fraction right per bin (float64; NaN for an empty bin)
    confidence: torch.Tensor  # (M,) mean confidence per bin (float64; NaN for an empty bin)
    n: int  # predictions
    accuracy_all: float  # fraction right over all
    confidence_all: float  # mean confidence over all


def calibration(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> Calibration:
    """The reliability bins and the ECE of class probabilities ``probabilities`` (n, K) against ``labels`` (n,).

    Raises:
        ValueError: ``bins`` < 1, shapes that do not match, or no predictions.
    """
    if int(bins) < 1:
        raise ValueError(f"the number of calibration bins must be at least 1; got {bins}")
    p = torch.as_tensor(probabilities).detach().cpu().double()
    y = torch.as_tensor(labels).detach().cpu().long()
    if p.dim() != 2 or y.shape != p.shape[:1]:
        raise ValueError(f"calibration needs probabilities (n, K) and labels (n,); got {tuple(p.shape)} and "
                         f"{tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError("calibration of no predictions: the split is empty")
    confidence, predicted = p.max(1)  # (n,) c_i and ŷ_i
    right = (predicted == y).double()
    edges = torch.linspace(0, 1, int(bins) + 1, dtype=torch.float64)
    # B_1 = [0, 1/M], B_m = ((m-1)/M, m/M]: bucketize (right=False) finds i with edges[i] < c <= edges[i+1]
    which = torch.bucketize(confidence, edges[1:-1], right=False)  # (n,) in 0..M-1
    counts = torch.bincount(which, minlength=int(bins))
    hits = torch.zeros(int(bins), dtype=torch.float64).index_add_(0, which, right)
    conf_sum = torch.zeros(int(bins), dtype=torch.float64).index_add_(0, which, confidence)
    filled = counts > 0
    acc = torch.where(filled, hits / counts.clamp_min(1), torch.nan)
    conf = torch.where(filled, conf_sum / counts.clamp_min(1), torch.nan)
    n = len(y)
    ece = float((counts[filled].double() / n * (acc[filled] - conf[filled]).abs()).sum())
    return Calibration(ece, edges, counts, acc, conf, n, float(right.mean()), float(confidence.mean()))


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """The ECE of ``probabilities`` (n, K) against ``labels`` (n,) with ``bins`` equal-width confidence bins."""
    return calibration(probabilities, labels, bins).ece
