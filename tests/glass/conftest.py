"""One BLAS thread for the glass tests: their matrices are small, and on a shared or busy machine
OpenBLAS's worker threads spend more time waiting for each other than computing. Results do not
depend on it (the tests compare against references, not timings)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _single_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it the tests just run with NumPy's default
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
