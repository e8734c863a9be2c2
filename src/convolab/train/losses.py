"""Classification losses by name (``--loss``): the ones the tutorials compare, on logits and class or soft targets.

Every loss takes the logits ``z`` (N, K) and targets that are either class indices (N,) or one distribution per
sample (N, K), rows summing to 1: *soft targets*, what a distillation teacher gives. Class indices become the
distribution ``q = (1 - eps) one_hot(y) + eps / K`` (label smoothing, ``eps`` = ``--label-smoothing``); soft targets
are used as given. With ``p = softmax(z)``, each loss is a mean over the batch of:

* ``cross_entropy``: ``-sum_k q_k log p_k`` (torch's ``F.cross_entropy``);
* ``kl``: the Kullback-Leibler divergence ``KL(q || p) = sum_k q_k (log q_k - log p_k)`` (with ``0 log 0 = 0``):
  cross-entropy minus the targets' entropy, a constant, so the same gradient; with one-hot targets (``eps = 0``)
  it *is* cross-entropy. Distillation (Hinton et al. 2015) trains against a teacher's soft targets with it;
* ``mse``: ``mean_k (p_k - q_k)^2``, the squared error between the *probabilities* and the (one-hot) targets,
  averaged over the K classes as the tutorials compare it (Keras' ``mean_squared_error`` on a softmax output);
* ``mae``: ``mean_k |p_k - q_k|``, the absolute error, likewise;
* ``hinge``: the multi-class hinge of Weston & Watkins (1999) on the logits,
  ``sum_{j != y} max(0, 1 - z_y + z_j) / K`` (torch's ``nn.MultiMarginLoss``; Crammer & Singer's variant would take
  the largest term instead of the sum). It scores class indices: no label smoothing, no soft targets.

Written out with tensor operations for teaching (cross-entropy excepted: torch's fused kernel, as before); the
tests compare each with torch's functional form and with hand-computed values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "classification_loss", "target_distribution", "takes_label_smoothing"]

LOSSES = ("cross_entropy", "mse", "mae", "hinge", "kl")


def takes_label_smoothing(name: str) -> bool:
    """Whether the loss ``name`` compares against a target distribution that label smoothing changes."""
    return name != "hinge"


def target_distribution(targets: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """The targets as one distribution per sample (N, K) in float32: class indices (N,) one-hot, smoothed as
    ``(1 - eps) one_hot + eps / K``; soft targets (N, K) as given."""
    if targets.ndim == 2:
        return targets.float()
    q = F.one_hot(targets.long(), num_classes).float()  # (N, K)
    return q * (1 - label_smoothing) + label_smoothing / num_classes if label_smoothing else q


def classification_loss(name: str, logits: torch.Tensor, targets: torch.Tensor,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """The mean loss ``name`` (one of :data:`LOSSES`) of logits (N, K) against class indices (N,) or soft targets
    (N, K); see the module docstring for each formula.

    Raises:
        ValueError: an unknown name, or soft targets for the hinge loss.
    """
    if name == "cross_entropy":
        if targets.ndim == 2:  # probabilities as targets (torch's soft-target form), not smoothed again
            return F.cross_entropy(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    z = logits.float()  # (N, K); the sums below in float32 also under bf16/fp16 autocast
    k = z.shape[1]
    if name == "hinge":
        if targets.ndim != 1:
            raise ValueError("the hinge loss scores class indices (N,); soft targets (N, K) need --loss kl or "
                             "cross_entropy")
        y = targets.long()[:, None]  # (N, 1)
        margins = (1 - z.gather(1, y) + z).clamp_min(0)  # (N, K): max(0, 1 - z_y + z_j)
        return margins.scatter(1, y, 0.0).sum(1).mean() / k  # the j = y term left out
    q = target_distribution(targets, k, label_smoothing)  # (N, K)
    if name == "kl":
        log_p = z.log_softmax(1)
        return (torch.xlogy(q, q) - q * log_p).sum(1).mean()  # xlogy: 0 log 0 = 0
    error = z.softmax(1) - q  # (N, K)
    return (error.square() if name == "mse" else error.abs()).mean()
