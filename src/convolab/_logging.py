"""Console output for convolab's logger: plain messages on stderr."""

from __future__ import annotations

import logging
import sys

__all__ = ["ensure_console"]


def ensure_console(level: int = logging.INFO) -> None:
    """Give the ``convolab`` logger a stderr handler (once) so progress lines reach the user."""
    logger = logging.getLogger("convolab")
    if not any(getattr(h, "_convolab_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._convolab_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
