"""The NumPy training loop: every step spelled out, in float32 or in mixed precision.

One training step is::

    optimizer.zero_grad()
    logits = model.forward(x)                  # (N, num_classes)
    loss = criterion.forward(logits, y)
    model.backward(criterion.backward(scale))  # gradients accumulate in model.grads (float32 masters)
    scaler.unscale(...); skip on overflow      # mixed precision only
    optimizer.step()

``convolab train --engine numpy`` runs this loop through :class:`convolab.train.numpy_engine.GlassTrainer`,
which adds the data, the run directory and the plots; the functions here need NumPy only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from convolab.glass.amp import LossScaler
from convolab.glass.loss import CrossEntropyLoss
from convolab.glass.module import Module, Sequential
from convolab.glass.optim import Optimizer, clip_grad_norm

__all__ = ["StepResult", "Evaluation", "skip_input_grad", "forward_backward", "optimizer_step", "train_step",
           "train_epoch", "evaluate"]


@dataclass
class StepResult:
    """What one training step reports."""

    loss: float  # the batch's mean loss
    correct: int  # correct top-1 predictions in the batch
    n: int  # batch size
    stepped: bool = True  # False: mixed precision skipped the update after an overflow
    scale: float = 1.0  # the loss scale the step used


@dataclass
class Evaluation:
    """Figures of one pass over a split (NumPy arrays; ``predictions``... only when asked for)."""

    loss: float
    accuracy: float
    n: int
    predictions: np.ndarray | None = None  # (n,) int64
    probabilities: np.ndarray | None = None  # (n, num_classes) float32
    labels: np.ndarray | None = None  # (n,) int64


def skip_input_grad(model: Module) -> Module | None:
    """Let the layer that receives the data skip dL/d(input), which training never uses; returns that layer.

    Follows the first child of nested ``Sequential``s (whose input goes to that child alone) down to a
    ``Conv2d`` or ``Linear`` and sets its ``input_grad = False``: its backward then computes the weight
    gradients only and returns None -- torch does the same for an input that does not require grad.
    Returns None (and changes nothing) for a model that starts otherwise.
    """
    from convolab.glass.conv import Conv2d
    from convolab.glass.linear import Linear

    m = model
    while isinstance(m, Sequential) and len(m):
        m = m[0]
    if isinstance(m, (Conv2d, Linear)):
        m.input_grad = False
        return m
    return None


def forward_backward(model: Module, criterion: CrossEntropyLoss, x: np.ndarray, y: np.ndarray,
                     grad_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """Forward, loss, backward: adds ``grad_scale * dL/dparam`` into the model's gradients.

    Returns the loss and the logits.
    """
    logits = model.forward(x)
    loss = criterion.forward(logits, y)
    model.backward(criterion.backward(grad_scale))
    return loss, logits


def optimizer_step(model: Module, optimizer: Optimizer, scaler: LossScaler | None = None,
                   max_grad_norm: float | None = None) -> bool:
    """Unscale and check (with a scaler), clip (with ``max_grad_norm``), update. False if the step was skipped."""
    params = model.parameters()
    if scaler is not None:
        found_inf = scaler.unscale(params)
        scaler.update(found_inf)
        if found_inf:
            return False
    if max_grad_norm is not None:
        clip_grad_norm(params, max_grad_norm)
    optimizer.step()
    return True


def train_step(model: Module, criterion: CrossEntropyLoss, optimizer: Optimizer, x: np.ndarray, y: np.ndarray, *,
               dtype=np.float32, scaler: LossScaler | None = None, max_grad_norm: float | None = None) -> StepResult:
    """One optimizer step on batch ``(x, y)``.

    Args:
        dtype: the compute dtype; ``np.float16`` with a ``scaler`` is mixed precision (the model's
            parameters stay in their own dtype, float32 by default, and receive the gradients).
        scaler: dynamic loss scaling (required in practice for float16).
        max_grad_norm: clip the gradients' joint L2 norm first.
    """
    x = np.asarray(x).astype(dtype, copy=False)
    optimizer.zero_grad()
    scale = scaler.scale if scaler is not None else 1.0
    # With a scaler an overflow to inf is expected now and then: the scaler detects it and skips the step.
    with np.errstate(over="ignore", invalid="ignore") if scaler is not None else contextlib.nullcontext():
        loss, logits = forward_backward(model, criterion, x, y, grad_scale=scale)
    stepped = optimizer_step(model, optimizer, scaler, max_grad_norm)
    correct = int((logits.argmax(axis=1) == y).sum()) if np.asarray(y).ndim == 1 else 0
    return StepResult(loss, correct, len(x), stepped, scale)


def train_epoch(model: Module, criterion: CrossEntropyLoss, optimizer: Optimizer,
                batches: Iterable[tuple[np.ndarray, np.ndarray]], *, dtype=np.float32,
                scaler: LossScaler | None = None, max_grad_norm: float | None = None,
                on_step: Callable[[StepResult], None] | None = None) -> tuple[float, float]:
    """One pass over ``batches`` in training mode; returns (mean loss, accuracy) over the samples seen."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        r = train_step(model, criterion, optimizer, x, y, dtype=dtype, scaler=scaler, max_grad_norm=max_grad_norm)
        loss_sum += r.loss * r.n
        correct += r.correct
        seen += r.n
        if on_step is not None:
            on_step(r)
    if seen == 0:
        return float("nan"), float("nan")
    return loss_sum / seen, correct / seen


def evaluate(model: Module, batches: Iterable[tuple[np.ndarray, np.ndarray]], *, dtype=np.float32,
             keep_predictions: bool = False) -> Evaluation:
    """Mean cross-entropy and accuracy of ``model`` in evaluation mode (its mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    criterion = CrossEntropyLoss(reduction="sum")
    loss_sum, correct, n = 0.0, 0, 0
    preds, probs, labels = [], [], []
    try:
        for x, y in batches:
            y = np.asarray(y)
            logits = model.forward(np.asarray(x).astype(dtype, copy=False)).astype(np.float32)
            loss_sum += criterion.forward(logits, y)
            p = logits.argmax(axis=1)
            correct += int((p == y).sum())
            n += len(y)
            if keep_predictions:
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                preds.append(p.astype(np.int64))
                probs.append(e / e.sum(axis=1, keepdims=True))
                labels.append(y.astype(np.int64))
    finally:
        model.train(was_training)
    if n == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    result = Evaluation(loss_sum / n, correct / n, n)
    if keep_predictions:
        result.predictions, result.probabilities, result.labels = (np.concatenate(preds), np.concatenate(probs),
                                                                   np.concatenate(labels))
    return result
