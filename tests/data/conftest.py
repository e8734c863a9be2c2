"""Fixtures for the data tests: an isolated user cache, tiny IDX datasets, a log capture.

Every data test runs with ``$XDG_CACHE_HOME`` in a temporary folder and ``$CONVOLAB_DATA`` unset,
so neither the user's cache nor their data folders are read or written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from convolab.data.idx import write_idx
from convolab.data.named import DATASETS

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch) -> Path:
    """``$XDG_CACHE_HOME/convolab`` in a fresh temporary folder; ``$CONVOLAB_DATA`` unset."""
    base = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(base))
    monkeypatch.delenv("CONVOLAB_DATA", raising=False)
    return base / "convolab"


@pytest.fixture
def mnist_system_dir(tmp_path, monkeypatch) -> Path:
    """Point the ``mnist`` spec's system copy at an (empty) temporary folder instead of /usr/share."""
    system = tmp_path / "system-mnist"
    system.mkdir()
    monkeypatch.setitem(DATASETS, "mnist", replace(DATASETS["mnist"], system_dirs=(str(system),)))
    return system


IdxWriter = Callable[..., dict[str, np.ndarray]]


@pytest.fixture
def write_mnist() -> IdxWriter:
    """Write a small MNIST-like set (four IDX files) into a folder; returns the arrays written.

    ``write_mnist(folder, seed=0, n_train=50, n_test=20, gz=True)``; ``gz`` may also be a tuple of
    four booleans (one per file). Images are random uint8 (N, 28, 28), labels cover all 10 classes.
    """

    def write(folder: Path, seed: int = 0, n_train: int = 50, n_test: int = 20, gz=True) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        arrays = {
            "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_y": (np.arange(n_train) % 10).astype(np.uint8)[rng.permutation(n_train)],
            "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_y": (np.arange(n_test) % 10).astype(np.uint8)[rng.permutation(n_test)],
        }
        gzs = gz if isinstance(gz, tuple) else (gz,) * 4
        folder.mkdir(parents=True, exist_ok=True)
        for name, key, z in zip(IDX_NAMES, ("train_x", "train_y", "test_x", "test_y"), gzs):
            write_idx(folder / (name + ".gz" if z else name), arrays[key])
        return arrays

    return write


@pytest.fixture
def convolab_log(caplog, monkeypatch):
    """caplog that sees INFO and above from the ``convolab`` logger, even after the CLI has set it up."""
    monkeypatch.setattr(logging.getLogger("convolab"), "propagate", True)  # ensure_console turns this off
    caplog.set_level(logging.INFO, logger="convolab")
    return caplog
