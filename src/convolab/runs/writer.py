"""The writer of a run directory: every file a run produces is written through :class:`RunWriter`.

Where the files go and what they are called is :mod:`convolab.runs.layout`; what they must hold is
:mod:`convolab.runs.schema`; :mod:`convolab.runs.reader` reads them back. Every write is atomic
(:mod:`convolab.atomic`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from convolab.atomic import append_jsonl, atomic_path, write_json
from convolab.runs.layout import CONFIG, METRICS, PLOTS, STEPS, SUMMARY, WEIGHTS
from convolab.runs.schema import FORMAT, default_build

__all__ = ["RunWriter", "NullRunWriter", "save_weights", "save_state"]


def save_weights(model: nn.Module, path: str | Path, metadata: dict) -> None:
    """Write the model's state dict as safetensors, atomically, with ``metadata`` as JSON.

    Raises:
        ValueError: a floating-point tensor holds NaN or inf (training diverged; such weights are never saved).
    """
    save_state(model.state_dict(), path, metadata)


def save_state(state: dict[str, torch.Tensor], path: str | Path, metadata: dict) -> None:
    """Write named tensors as safetensors, atomically, with ``metadata`` as JSON (:func:`save_weights` for a state
    dict that is not a module's: an int8 graph's stored tensors).

    Raises:
        ValueError: a floating-point tensor holds NaN or inf.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"refusing to save non-finite weights ({k} has NaN or inf); training diverged")
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"convolab": json.dumps(metadata)})


class RunWriter:
    """Writes the files of one run directory (made by :func:`convolab.runs.layout.prepare_run_dir`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.plots = self.path / PLOTS

    def write_config(self, config: dict) -> None:
        """Write ``config.json``, adding what the format needs when the caller left it out: the format version,
        the task (classification) and how the model is rebuilt (from ``model`` and ``model_kwargs``)."""
        config = {"format": FORMAT, "task": "classification", **config}
        if "build" not in config:
            build = default_build(config)
            if build is not None:
                config["build"] = build
        write_json(self.path / CONFIG, config)

    def append_metrics(self, row: dict) -> None:
        """Append one epoch's row to ``metrics.jsonl``."""
        append_jsonl(self.path / METRICS, row)

    def append_steps(self, rows: list[dict]) -> None:
        """Append optimizer steps' rows to ``steps.jsonl``."""
        append_jsonl(self.path / STEPS, rows)

    def write_summary(self, summary: dict) -> None:
        """Write ``summary.json`` (the final figures)."""
        write_json(self.path / SUMMARY, summary)

    def save_model(self, model: nn.Module, metadata: dict) -> None:
        """Write ``model.safetensors``: the weights and the metadata that alone rebuilds and feeds the model."""
        save_weights(model, self.path / WEIGHTS, metadata)


class NullRunWriter(RunWriter):
    """The run directory as seen by a data-parallel process other than rank 0: it writes nothing."""

    def write_config(self, config: dict) -> None:
        pass

    def append_metrics(self, row: dict) -> None:
        pass

    def append_steps(self, rows: list[dict]) -> None:
        pass

    def write_summary(self, summary: dict) -> None:
        pass

    def save_model(self, model: nn.Module, metadata: dict) -> None:
        pass
