"""segmentation datasets (being written: see issue 16)."""

from __future__ import annotations


def is_segmentation_source(name: str) -> bool:
    """Whether ``name`` is a segmentation dataset name or folder."""
    return False


def load_segmentation(name: str, **kwargs):
    raise NotImplementedError
