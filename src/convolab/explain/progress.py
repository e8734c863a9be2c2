"""Progress bars for the long explanation and report work (tqdm on stderr).

A bar is shown only on a terminal (tqdm's ``disable=None``) and never when the caller asks for
quiet (``enabled=False``), so logs, pipes and ``--json`` output stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
                 enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr that disappears when done; disabled without a terminal or when not ``enabled``."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled else True)
