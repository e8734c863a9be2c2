"""A writable copy of the shared digits run, for tests that edit its files."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def run_copy(digits_run, tmp_path):
    """config.json, summary.json and model.safetensors of the shared digits run, copied into ``tmp_path/run``."""
    dst = tmp_path / "run"
    dst.mkdir()
    for name in ("config.json", "summary.json", "model.safetensors"):
        shutil.copy(digits_run.run_dir / name, dst / name)
    return dst
