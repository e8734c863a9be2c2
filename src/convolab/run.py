"""Moved to :mod:`convolab.runs.reader`; this name stays until every importer uses the new one (issue 16)."""

from convolab.runs.reader import Run, load_run, read_weights_metadata

__all__ = ["Run", "load_run", "read_weights_metadata"]
