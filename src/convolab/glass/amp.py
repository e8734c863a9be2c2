"""Mixed precision: dynamic loss scaling (Micikevicius et al., "Mixed Precision Training", ICLR 2018).

The recipe, as the engine runs it (see ``convolab.glass.train``):

1. Master weights stay float32. Each forward casts them to float16 and computes in float16
   (products summed in float32, see ``convolab.glass.precision``).
2. float16 has 5 exponent bits: gradients below ~6e-8 flush to zero. So the backward pass starts
   from ``scale * dL/d(logits)`` instead of ``dL/d(logits)``, lifting small gradients into range;
   every gradient is then ``scale`` times too large.
3. Before the update, the float32 gradients are divided by ``scale`` (``unscale``) and checked:
   if any is inf or NaN, the scale was too large and something overflowed. The step is **skipped**
   (the weights are not touched) and the scale is **halved**.
4. After ``growth_interval`` consecutive clean steps the scale is **doubled** again, so it settles
   just below the overflow point.

(A fixed scale, or one that doubles on every step and never skips an overflowing one, either
underflows or sooner or later writes inf into the weights.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

__all__ = ["LossScaler"]

log = logging.getLogger(__name__)


class LossScaler:
    """Dynamic loss scale, torch's ``GradScaler`` rules and argument names.

    Attributes:
        scale: the current scale (multiply the loss gradient by it).
        history: one ``(step, scale used, skipped)`` tuple per optimizer step: the logged scale.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000):
        if init_scale <= 0 or growth_factor <= 1 or not 0 < backoff_factor < 1 or growth_interval < 1:
            raise ValueError("LossScaler: need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and "
                             "growth_interval >= 1")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.clean_steps = 0  # consecutive steps without overflow since the last change
        self.steps = 0
        self.history: list[tuple[int, float, bool]] = []

    def unscale(self, params: Iterable[tuple[np.ndarray, np.ndarray]]) -> bool:
        """Divide every gradient by ``scale`` in place; True if any is inf or NaN (an overflow)."""
        inv = 1.0 / self.scale
        found_inf = False
        for _, g in params:
            g *= inv
            if not found_inf and not np.isfinite(g).all():
                found_inf = True
        return found_inf

    def update(self, found_inf: bool) -> None:
        """Halve after an overflow; double after ``growth_interval`` clean steps in a row. Records the step."""
        self.steps += 1
        self.history.append((self.steps, self.scale, found_inf))
        if found_inf:
            new = self.scale * self.backoff_factor
            log.info("step %d: gradient overflow at loss scale %g; step skipped, scale -> %g", self.steps,
                     self.scale, new)
            self.scale, self.clean_steps = new, 0
            return
        self.clean_steps += 1
        if self.clean_steps == self.growth_interval:
            new = self.scale * self.growth_factor
            log.debug("step %d: %d clean steps; loss scale %g -> %g", self.steps, self.clean_steps, self.scale, new)
            self.scale, self.clean_steps = new, 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "clean_steps": self.clean_steps, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.clean_steps, self.steps = float(state["scale"]), int(state["clean_steps"]), int(state["steps"])
