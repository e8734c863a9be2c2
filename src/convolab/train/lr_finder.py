"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", sec. 3.3; fastai's ``lr_find``).

Train for a short while with a learning rate that grows from ``start_lr`` to ``end_lr``, one step per
batch, and watch the loss. The rates grow exponentially (``ramp="exponential"``, fastai's:
``lr_i = start (end / start)^(i / (n - 1))``, evenly spaced on a log axis) or linearly (``ramp="linear"``, the
ramp of Smith's paper and of the tutorials: ``lr_i = start + (end - start) i / (n - 1)``; it spends its steps
evenly across one range, so give it a narrow one, e.g. 1e-4 to 0.1). The loss stays flat while the rate is too
small, falls once the rate is useful, and shoots up once it is too large. The raw per-batch loss is noisy,
so the test follows an exponential moving average of it, bias-corrected as Adam's moments are
(``avg_i = beta avg_{i-1} + (1 - beta) loss_i``, ``smoothed_i = avg_i / (1 - beta^(i+1))``), and stops
when the smoothed loss exceeds ``diverge`` times its minimum or a loss is not finite. The default
``beta = 0.9`` averages over about the last 10 steps; fastai's 0.98 averages over about 50, which with
100 steps across 8 decades of rates shifts the curve by about 4 decades.

The suggestion is the rate at the minimum of the smoothed loss divided by 10 (the "min / 10" rule
of fastai's first course): at the minimum the rate is already at the edge of divergence, a tenth of
it still descends quickly. The rate where the smoothed loss falls fastest (steepest negative slope
against log lr) is reported too. The model's weights, the optimizer's state and the random
generators are restored afterwards, so the test leaves nothing behind.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from convolab.train.checkpoint import rng_state, set_rng_state

__all__ = ["LRFindResult", "lr_range_test", "check_range_test", "ramp_rates", "RULE", "RAMPS"]

RULE = "learning rate at the minimum of the smoothed loss / 10"
RAMPS = ("exponential", "linear")


@dataclass
class LRFindResult:
    """The learning rates tried and what the loss did."""

    lrs: list[float]  # one per step taken
    losses: list[float]  # raw per-batch loss
    smoothed: list[float]  # bias-corrected exponential moving average of the losses
    suggested_lr: float  # min_loss_lr / 10
    min_loss_lr: float  # rate at the minimum of the smoothed loss
    steepest_lr: float  # rate where the smoothed loss falls fastest against log(lr)
    diverged: bool  # stopped before the last step because the loss blew up
    rule: str = RULE
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"suggested_lr": self.suggested_lr, "rule": self.rule, "min_loss_lr": self.min_loss_lr,
                "steepest_lr": self.steepest_lr, "steps": len(self.lrs), "diverged": self.diverged,
                "settings": self.settings, "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed}


def check_range_test(start_lr: float, end_lr: float, num_steps: int, beta: float, diverge: float,
                     ramp: str = "exponential") -> None:
    """Raise ``ValueError`` with one line for settings the range test cannot run with."""
    if ramp not in RAMPS:
        raise ValueError(f"unknown --ramp {ramp!r}; choose one of {', '.join(RAMPS)}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"--start-lr must be > 0 and below --end-lr; got {start_lr} and {end_lr}")
    if num_steps < 5:
        raise ValueError(f"--num-steps must be >= 5; got {num_steps}")
    if not 0 <= beta < 1:
        raise ValueError(f"--smoothing must be in [0, 1); got {beta}")
    if diverge <= 1:
        raise ValueError(f"--diverge must be > 1; got {diverge}")


def ramp_rates(start_lr: float, end_lr: float, num_steps: int, ramp: str = "exponential") -> list[float]:
    """The ``num_steps`` rates of the ramp from ``start_lr`` to ``end_lr`` (see the module docstring)."""
    if ramp == "linear":
        return [start_lr + (end_lr - start_lr) * i / (num_steps - 1) for i in range(num_steps)]
    ratio = (end_lr / start_lr) ** (1 / (num_steps - 1))
    return [start_lr * ratio ** i for i in range(num_steps)]


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable,
                  step: Callable[[object], torch.Tensor], *, start_lr: float = 1e-7, end_lr: float = 10.0,
                  num_steps: int = 100, beta: float = 0.9, diverge: float = 4.0,
                  ramp: str = "exponential", before_step: Callable[[], None] | None = None) -> LRFindResult:
    """Run the range test with ``optimizer`` on ``model``; both are restored before returning.

    Args:
        batches: an iterable of batches, iterated again from the start when exhausted.
        step: ``step(batch) -> loss``: forward pass and loss of one batch (the backward pass and the
            optimizer step are done here).
        start_lr, end_lr: the first and the last rate of the ramp.
        num_steps: steps from ``start_lr`` to ``end_lr``.
        beta: smoothing of the loss (0: none).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum.
        ramp: ``exponential`` or ``linear`` (:func:`ramp_rates`).
        before_step: called between the backward pass and the optimizer step (e.g. to add --l1's gradient).

    Raises:
        ValueError: bad settings, or too few steps before divergence to suggest anything.
    """
    check_range_test(start_lr, end_lr, num_steps, beta, diverge, ramp)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_rng = rng_state()
    was_training = model.training
    rates = ramp_rates(start_lr, end_lr, num_steps, ramp)
    lrs, losses, smoothed = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    try:
        model.train()
        data = iter(batches)
        for i in range(num_steps):
            try:
                batch = next(data)
            except StopIteration:
                data = iter(batches)
                batch = next(data)
            lr = rates[i]
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)  # --lr-decay-per-stage: the stages keep their ratios
            optimizer.zero_grad(set_to_none=True)
            loss = step(batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = True
                break
            loss.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (i + 1))
            lrs.append(lr), losses.append(value), smoothed.append(s)
            best = min(best, s)
            if s > diverge * best:
                diverged = True
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        optimizer.zero_grad(set_to_none=True)
        set_rng_state(saved_rng)
        model.train(was_training)
    if len(lrs) < 3:
        raise ValueError(f"the loss diverged after {len(lrs)} step(s) of the range test; lower --start-lr")
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__)
    # d smoothed / d log(lr), by central differences (the exponential ramp's log-spacing is constant; the linear
    # ramp's is not, so each difference is divided by its own step in log lr)
    log_lr = [math.log(lr) for lr in lrs]
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (log_lr[i + 1] - log_lr[i - 1]) for i in range(1, i_min)]
    i_steep = 1 + min(range(len(slopes)), key=slopes.__getitem__) if slopes else i_min
    return LRFindResult(lrs=lrs, losses=losses, smoothed=smoothed, suggested_lr=lrs[i_min] / 10,
                        min_loss_lr=lrs[i_min], steepest_lr=lrs[i_steep], diverged=diverged,
                        settings={"start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps, "beta": beta,
                                  "diverge": diverge, "ramp": ramp})
