"""The engine's random numbers: one NumPy generator, seeded like ``torch.manual_seed``.

Weight initialisation and dropout draw from it, so ``manual_seed(s)`` makes a run repeatable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "get_generator"]

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the engine's generator (PCG64) and return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def get_generator() -> np.random.Generator:
    """The generator initialisation and dropout draw from."""
    return _generator
