"""The run format in one place (DESIGN.md, "Run"): file names and folders (:mod:`~convolab.runs.layout`), the
writer (:mod:`~convolab.runs.writer`), what the files must hold (:mod:`~convolab.runs.schema`), how a model is
rebuilt (:mod:`~convolab.runs.build`) and the reader (:mod:`~convolab.runs.reader`: ``load_run``, ``Run``)."""

from convolab.runs import quantized  # noqa: F401  (registers the "int8-pt2e" build kind)
from convolab.runs.build import register_builder
from convolab.runs.layout import is_run_dir, prepare_run_dir, run_id
from convolab.runs.reader import Run, load_run, read_weights_metadata
from convolab.runs.writer import NullRunWriter, RunWriter

__all__ = ["Run", "load_run", "read_weights_metadata", "RunWriter", "NullRunWriter", "prepare_run_dir", "is_run_dir",
           "run_id", "register_builder"]

from convolab.runs import pruned  # noqa: E402,F401  (registers the "pruned" build kind; here: after the package's names)
