"""Learning-rate schedules as closed forms of the optimizer step, stepped once per optimizer step.

A schedule is a pure function ``lr(t)`` of the step counter ``t`` (0 for the first optimizer step),
so its whole state is that counter: a resumed run computes the same rates without replaying
anything. Each schedule equals one of ``torch.optim.lr_scheduler``'s, stepped per batch (the
tests compare them value by value):

=========  =================================================  ==========================================
name       lr(t), T = total steps, S = steps per epoch          torch equivalent
=========  =================================================  ==========================================
constant   lr                                                  ConstantLR(factor=1)
step       lr * gamma ** (t // (decay_epochs * S))             StepLR
multistep  lr * gamma ** (milestones passed)                   MultiStepLR
cosine     min + (lr - min) (1 + cos(pi t / T)) / 2            CosineAnnealingLR(T_max=T)
onecycle   cosine up from lr/25 to lr over pct_start T, then     OneCycleLR (Smith & Topin 2019)
           down to lr/25/1e4
cyclic     triangle between min and lr, up and down in          CyclicLR(mode="triangular") (Smith 2017)
           cycle_epochs S steps
sgdr       cosine from lr to min, restarting after restart     CosineAnnealingWarmRestarts
           epochs, each period restart_mult times longer        (Loshchilov & Hutter 2017)
=========  =================================================  ==========================================

A linear warmup of ``W`` steps multiplies any schedule but onecycle (which has its own) by
``min(1, (t + 1) / (W + 1))``: the first step uses ``lr(0) / (W + 1)`` and step ``W`` the schedule's
own value — torch's ``ChainedScheduler([LinearLR(1 / (W + 1), total_iters=W), schedule])``
(Goyal et al. 2017). The schedule itself keeps running on the absolute step, so milestones stay
where they were given.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SCHEDULES", "LRSchedule"]

SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle", "cyclic", "sgdr")

_ONECYCLE_DIV, _ONECYCLE_FINAL_DIV = 25.0, 1e4  # torch's (and fastai's) defaults


def _cos_between(start: float, end: float, fraction: float) -> float:
    """Cosine interpolation from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    return end + (start - end) / 2.0 * (1.0 + math.cos(math.pi * fraction))


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate of every optimizer step of one run.

    Args:
        name: one of ``SCHEDULES``.
        lr: the base (peak) learning rate.
        total_steps: optimizer steps in the whole run.
        steps_per_epoch: optimizer steps per epoch (converts the epoch arguments to steps).
        warmup_steps: linear warmup length in steps (not with onecycle).
        min_lr: floor of cosine and sgdr (default 0) and bottom of the cyclic triangle (default lr / 10).
        gamma: decay factor of step and multistep.
        decay_epochs: step's period in epochs (default: a third of the run).
        milestones: multistep's decay points in epochs (default: half and three quarters of the run).
        pct_start: onecycle's share of the run spent rising.
        cycle_epochs: cyclic's full period (up and down) in epochs (default 4).
        restart_epochs: sgdr's first period in epochs (default: a quarter of the run).
        restart_mult: sgdr's period multiplier after each restart (an integer >= 1, as in torch).
    """

    name: str
    lr: float
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int = 0
    min_lr: float | None = None
    gamma: float = 0.1
    decay_epochs: float | None = None
    milestones: Sequence[float] | None = None
    pct_start: float = 0.3
    cycle_epochs: float | None = None
    restart_epochs: float | None = None
    restart_mult: int = 1

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; choose one of {', '.join(SCHEDULES)}")
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError(f"a schedule needs at least one step; got {self.total_steps} total, "
                             f"{self.steps_per_epoch} per epoch")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup must be >= 0 steps; got {self.warmup_steps}")
        if self.name == "onecycle" and self.warmup_steps:
            raise ValueError("onecycle has its own warmup (--pct-start); drop --warmup-epochs/--warmup-steps")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"the warmup (--warmup-steps/--warmup-epochs: {self.warmup_steps} steps) must be shorter "
                             f"than the run ({self.total_steps} steps: {self.epochs:g} epoch(s) of "
                             f"{self.steps_per_epoch} steps)")
        if self.name == "onecycle" and not 0 < self.pct_start < 1:
            raise ValueError(f"--pct-start must be in (0, 1); got {self.pct_start}")
        if self.min_lr is not None and not 0 <= self.min_lr < self.lr:
            raise ValueError(f"--min-lr must be in [0, --lr); got {self.min_lr} with --lr {self.lr}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"--gamma must be in (0, 1]; got {self.gamma}")
        if self.restart_mult < 1 or int(self.restart_mult) != self.restart_mult:
            raise ValueError(f"--restart-mult must be an integer >= 1; got {self.restart_mult}")
        for label, value in (("--decay-epochs", self.decay_epochs), ("--cycle-epochs", self.cycle_epochs),
                             ("--restart-epochs", self.restart_epochs)):
            if value is not None and value * self.steps_per_epoch < 1:
                raise ValueError(f"{label} must cover at least one step; got {value}")
        for name, used_by in (("min_lr", ("cosine", "cyclic", "sgdr")), ("gamma", ("step", "multistep")),
                              ("decay_epochs", ("step",)), ("milestones", ("multistep",)),
                              ("pct_start", ("onecycle",)), ("cycle_epochs", ("cyclic",)),
                              ("restart_epochs", ("sgdr",)), ("restart_mult", ("sgdr",))):
            # an option the schedule never reads would be dropped silently
            if getattr(self, name) != getattr(type(self), name) and self.name not in used_by:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} belongs to --schedule {' or '.join(used_by)}; --schedule {self.name} does "
                                 f"not use it: drop it or choose --schedule {used_by[0]}")
        if self.milestones is not None and any(m <= 0 for m in self.milestones):
            raise ValueError(f"--milestones must be positive epochs; got {list(self.milestones)}")
        # A decay or restart point the run never reaches would be dropped silently (the defaults always fit).
        epochs = f"{self.epochs:g}"
        if self.milestones is not None and any(self._steps(m) >= self.total_steps for m in self.milestones):
            late = [m for m in self.milestones if self._steps(m) >= self.total_steps]
            raise ValueError(f"--milestones {' '.join(f'{m:g}' for m in late)}: past the last epoch of the run "
                             f"({epochs} epochs), so the rate would never decay there; give milestones below "
                             f"{epochs} or raise --epochs")
        if self.decay_epochs is not None and self.decay_steps >= self.total_steps:
            raise ValueError(f"--decay-epochs {self.decay_epochs:g}: the run ends first ({epochs} epochs), so the "
                             f"rate would never decay; give fewer than {epochs} or raise --epochs")
        if self.restart_epochs is not None and self.restart_steps >= self.total_steps:
            raise ValueError(f"--restart-epochs {self.restart_epochs:g}: the run ends first ({epochs} epochs), so "
                             f"sgdr would never restart; give fewer than {epochs} (or use --schedule cosine)")

    # -- the step lengths the epoch arguments give ----------------------------------------------
    def _steps(self, epochs: float) -> int:
        return max(1, round(epochs * self.steps_per_epoch))

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    @property
    def floor(self) -> float:
        """The schedule's lower bound: ``min_lr``, or its per-schedule default."""
        if self.min_lr is not None:
            return self.min_lr
        return self.lr / 10 if self.name == "cyclic" else 0.0

    @property
    def decay_steps(self) -> int:
        return self._steps(self.decay_epochs if self.decay_epochs is not None else max(1.0, self.epochs / 3))

    @property
    def milestone_steps(self) -> list[int]:
        epochs = self.milestones if self.milestones is not None else (self.epochs / 2, self.epochs * 3 / 4)
        return sorted(self._steps(m) for m in epochs)

    @property
    def half_cycle_steps(self) -> int:
        """Steps of one rising (or falling) half of the cyclic triangle (torch's ``step_size_up``)."""
        return max(1, self._steps(self.cycle_epochs if self.cycle_epochs is not None else 4.0) // 2)

    @property
    def restart_steps(self) -> int:
        return self._steps(self.restart_epochs if self.restart_epochs is not None else max(1.0, self.epochs / 4))

    # -- values -----------------------------------------------------------------------------------
    def base(self, t: int) -> float:
        """The schedule without warmup at step ``t``."""
        lr, low, total = self.lr, self.floor, self.total_steps
        if self.name == "constant":
            return lr
        if self.name == "step":
            return lr * self.gamma ** (t // self.decay_steps)
        if self.name == "multistep":
            return lr * self.gamma ** bisect.bisect_right(self.milestone_steps, t)
        if self.name == "cosine":
            return _cos_between(lr, low, t / total)
        if self.name == "onecycle":
            initial = lr / _ONECYCLE_DIV
            up_end = self.pct_start * total - 1  # torch's phase boundaries, in steps
            if t <= up_end:
                return _cos_between(initial, lr, t / up_end)
            return _cos_between(lr, initial / _ONECYCLE_FINAL_DIV, (t - up_end) / (total - 1 - up_end))
        if self.name == "cyclic":
            half = self.half_cycle_steps
            x = abs(t / half % 2 - 1)  # 1 at the bottom of the triangle, 0 at its top
            return low + (lr - low) * (1 - x)
        # sgdr: find the period that holds step t, periods restart_steps * restart_mult ** i
        period, t_cur = self.restart_steps, t
        while t_cur >= period:
            t_cur -= period
            period *= self.restart_mult
        return _cos_between(lr, low, t_cur / period)

    def __call__(self, t: int) -> float:
        """The learning rate of optimizer step ``t`` (0-based)."""
        factor = min(1.0, (t + 1) / (self.warmup_steps + 1)) if self.warmup_steps else 1.0
        return self.base(t) * factor
