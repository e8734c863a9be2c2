"""Stratified, seeded splits: each class keeps its share in every part."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["stratified_split"]


def stratified_split(labels: torch.Tensor, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held_out) with ``fraction`` of each class held out.

    Each class contributes ``round(fraction * n_class)`` samples to the held-out part (at least one
    when the class has two or more and ``fraction > 0``). The result depends only on the labels,
    the fraction and the seed. Both index arrays are sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1); got {fraction}")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) >= 2:
            n = 1
        held.append(rng.permutation(idx)[:n])
    held_idx = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    mask = np.ones(len(y), bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx
