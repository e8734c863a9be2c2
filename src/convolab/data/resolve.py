"""Where convolab looks for data, in order.

1. ``data_dir`` (the CLI's ``--data-dir``), 2. ``$CONVOLAB_DATA``, 3. the user cache
(``$XDG_CACHE_HOME/convolab`` or ``~/.cache/convolab``), 4. system copies (e.g. Debian's
``dataset-fashion-mnist`` package), 5. a download through torchvision into the user cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["user_cache_dir", "SearchPlace", "search_places", "recorded_data_dir"]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/convolab``, else ``~/.cache/convolab``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convolab"


@dataclass(frozen=True)
class SearchPlace:
    """One folder searched for a dataset, and why it is searched."""

    path: Path | None  # None when the place is not set (no --data-dir, no $CONVOLAB_DATA)
    label: str  # "--data-dir", "$CONVOLAB_DATA", "user cache", "system copy"

    def describe(self) -> str:
        return f"{self.label} (not set)" if self.path is None else f"{self.label} {self.path}"


def search_places(data_dir: str | os.PathLike | None, system_dirs: tuple[str, ...] = ()) -> list[SearchPlace]:
    """The ordered places for one dataset (``system_dirs`` come from its spec)."""
    env = os.environ.get("CONVOLAB_DATA")
    return [
        SearchPlace(Path(data_dir).expanduser() if data_dir else None, "--data-dir"),
        SearchPlace(Path(env).expanduser() if env else None, "$CONVOLAB_DATA"),
        SearchPlace(user_cache_dir(), "user cache"),
        *[SearchPlace(Path(d), "system copy") for d in system_dirs],
    ]


def recorded_data_dir(data_dir: str | os.PathLike | None) -> str | os.PathLike | None:
    """A run's recorded ``--data-dir`` while that folder still exists, else None: reloading the run's data
    (``--resume``, eval, explain) then looks in the other places instead of refusing a folder the user did
    not name this time."""
    return data_dir if data_dir and Path(data_dir).expanduser().is_dir() else None
