"""Fixtures for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module whose tensors are tiny: on a shared, loaded CPU the
    threads only spin against each other (measured: a small FCN's forward and backward took 5 s with
    2 threads and 0.01 s with 1). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
