"""Errors a user can cause. The CLI prints each as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UnknownNameError", "DataNotFoundError", "close_matches"]


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Names from ``choices`` that look like ``name`` (for "did you mean" hints)."""
    choices = list(choices)
    key = name.lower()
    # Names starting with what was typed come first, shortest first ("resnet" -> resnet18, resnet20 ...),
    # then names containing it, then the closest by edit distance ("Lenet6" -> lenet5).
    prefix = sorted((c for c in choices if c.startswith(key)), key=lambda c: (len(c), c))
    inside = sorted((c for c in choices if key in c and c not in prefix), key=lambda c: (len(c), c))
    hits = prefix + inside
    hits += [c for c in difflib.get_close_matches(key, choices, n=n, cutoff=0.5) if c not in hits]
    return hits[:n]


class UnknownNameError(ValueError):
    """A model, dataset or option name that does not exist; the message suggests close matches."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], hint: str = ""):
        choices = sorted(choices)
        hits = close_matches(name, choices)
        msg = f"unknown {kind} {name!r}"
        if hits:
            msg += "; did you mean " + ", ".join(repr(h) for h in hits) + "?"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.name = name
        self.matches = hits


class DataNotFoundError(FileNotFoundError):
    """A dataset that is in none of the places convolab looks, and could not be downloaded."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:  # FileNotFoundError's default adds errno noise
        return self.args[0]
