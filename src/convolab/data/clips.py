"""clips datasets (being written: see issue 16)."""

from __future__ import annotations


def is_clip_source(name: str) -> bool:
    """Whether ``name`` is a clips dataset name or folder."""
    return False


def load_clips(name: str, *, frames: int = 16, **kwargs):
    raise NotImplementedError
