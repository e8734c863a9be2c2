"""The evaluation a macro search usually wants: train each candidate from scratch as a normal run and report its
validation accuracy (never the test split's: the search selects on it) and its MACs."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from convolab.experiments.nas.space import Genotype, macs

__all__ = ["training_evaluator"]


def training_evaluator(base, out_dir: str | os.PathLike, input_shape: tuple[int, int, int], *,
                       num_classes: int) -> Callable[[Genotype], dict]:
    """``evaluate(genotype)`` for :func:`convolab.experiments.nas.evolution.search`: trains ``genotype.to_spec()``
    with ``base`` (a :class:`convolab.train.TrainConfig`: data, epochs, recipe, seed) into
    ``out_dir/candidate-NNNN`` (one run folder per call, numbered in call order) and returns
    ``{"accuracy": best validation accuracy, "macs": MACs per image, "test_accuracy": ..., "run_dir": ...}``.
    ``test_accuracy`` is recorded for the report, not for selection.

    Raises:
        ValueError: ``out_dir`` already holds candidate runs (a search never overwrites them).
    """
    from convolab.runs.session import train

    out = Path(out_dir)
    if out.exists() and any(out.glob("candidate-*")):
        raise ValueError(f"{out} already holds candidate runs; give an empty or new folder")
    calls = [0]

    def evaluate(genotype: Genotype) -> dict:
        run_dir = out / f"candidate-{calls[0]:04d}"
        calls[0] += 1
        result = train(replace(base, model=genotype.to_spec(), out=str(run_dir)))
        return {"accuracy": float(result.summary["best_val_accuracy"]),
                "macs": macs(genotype, input_shape, num_classes),
                "test_accuracy": float(result.summary["test_accuracy"]), "run_dir": str(result.run_dir)}

    return evaluate
