"""Engines: the arithmetic of a training step as a strategy the loop holds (torch's, or convolab.glass's)."""

from __future__ import annotations

from convolab.train.engines.base import Engine

__all__ = ["Engine", "create_engine"]


def create_engine(name: str) -> Engine:
    """The engine ``--engine`` names: ``torch`` or ``numpy`` (imports convolab.glass only when asked for)."""
    if name == "torch":
        return Engine()
    if name == "numpy":
        from convolab.train.engines.numpy import NumpyEngine

        return NumpyEngine()
    raise ValueError(f"unknown engine {name!r}; choose torch or numpy")
