"""Which full-size zoo models the slow suite (CI) checks, and which only ``make test-full`` does.

A model above ``BIG`` parameters runs in CI only when it is the smallest of its family (the file it lives in): the
deeper and wider members of a family build from the same classes as the smallest one, so checking each of them
again repeats the same code paths at several times the cost (convnext_large's four zoo checks took 60 s of a
worker on a 2-core AVX2 machine). They are marked ``exhaustive`` and run in ``make test-full``.
"""

from __future__ import annotations

import functools

import pytest
import torch

from convolab.models import create_model, get_model_entry, list_models

BIG = 30_000_000  # parameters at a model's usual configuration: above this a zoo check is slow


@functools.cache
def params_at_default(name: str) -> int:
    """Parameters at the model's usual configuration (built on the meta device: shapes only, no memory)."""
    with torch.device("meta"):
        model = create_model(name, **get_model_entry(name).default_cfg)
    return sum(p.numel() for p in model.parameters())


@functools.cache
def family_smallest() -> frozenset[str]:
    """The smallest model of each family (ties by name)."""
    best: dict[str, tuple[int, str]] = {}
    for name in list_models():
        family = get_model_entry(name).family
        best[family] = min(best.get(family, (params_at_default(name), name)), (params_at_default(name), name))
    return frozenset(name for _, name in best.values())


def big_model_marks(name: str) -> tuple:
    """``()`` for a model up to BIG; ``slow`` for a big one that is its family's smallest; else ``slow`` and
    ``exhaustive``."""
    if params_at_default(name) <= BIG:
        return ()
    return (pytest.mark.slow,) if name in family_smallest() else (pytest.mark.slow, pytest.mark.exhaustive)
