"""Moved to :mod:`convolab.runs.layout` (names, markers, preparing a folder) and :mod:`convolab.runs.writer` (the
writer); this name stays until every importer uses the new ones (issue 16)."""

from convolab.runs.layout import (
    CONFIG,
    MARKER,
    METRICS,
    OWN_FILES,
    STEPS,
    SUMMARY,
    WEIGHTS,
    has_convolab_config,
    is_run_dir,
    own_files,
    prepare_run_dir,
    read_marker,
    run_id,
)
from convolab.runs.writer import NullRunWriter as NullRunDir
from convolab.runs.writer import RunWriter as RunDir
from convolab.runs.writer import save_weights

__all__ = ["RunDir", "NullRunDir", "prepare_run_dir", "save_weights", "is_run_dir", "has_convolab_config",
           "read_marker", "run_id", "own_files", "WEIGHTS", "CONFIG", "METRICS", "SUMMARY", "STEPS", "MARKER",
           "OWN_FILES"]
