"""What the loop writes a run into: a ``RunSink``. The run format itself (file names, schema, the marker) belongs to
``convolab.runs``, a higher layer, which hands the loop a sink; the loop only calls these methods."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from torch import nn

__all__ = ["RunSink", "NullSink"]


class RunSink(Protocol):
    """The run folder as the loop sees it (``convolab.runs.writer`` implements it)."""

    path: Path  # the run folder (checkpoints go to path / "checkpoints")
    plots: Path  # where plots go
    run_id: str | None  # the run's id (a checkpoint records it; resume refuses another run's)

    def write_config(self, record: dict) -> None: ...
    def append_metrics(self, row: dict) -> None: ...
    def append_steps(self, rows: list[dict]) -> None: ...
    def write_summary(self, summary: dict) -> None: ...
    def save_model(self, model: nn.Module, metadata: dict) -> None: ...
    def read_steps(self) -> list[dict]: ...
    def resume_logs(self, history: list[dict], global_step: int) -> None:
        """Drop what an interrupted session logged after its last checkpoint (and torn lines, temporary files)."""


class NullSink:
    """A sink that writes nothing: processes other than rank 0, and runs asked to leave no files."""

    run_id = None

    def __init__(self, path: str | Path = "."):
        self.path = Path(path)
        self.plots = self.path / "plots"

    def read_steps(self) -> list[dict]:
        return []

    def __getattr__(self, name):  # write_config, append_metrics, append_steps, write_summary, save_model, ...
        return lambda *args, **kwargs: None
