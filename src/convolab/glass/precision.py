"""Arithmetic precision: which dtype a computation accumulates in.

NumPy has no half-precision BLAS: a float16 ``matmul`` runs a plain C loop that is both slow and
rounds every partial sum to float16. Mixed-precision hardware (tensor cores) instead multiplies
float16 inputs and *accumulates in float32*, rounding only the result. ``matmul`` here does the
same, and the reductions of BatchNorm and the losses run in float32 for float16 inputs (as
``torch.autocast`` does). float32 and float64 compute in their own precision.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accumulate_dtype", "matmul", "sum_rows"]


def accumulate_dtype(dtype: np.dtype) -> np.dtype:
    """float16 -> float32 (sums of many float16 terms lose too much); otherwise the dtype itself."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (with NumPy's broadcasting); float16 operands are multiplied and summed in float32."""
    if a.dtype == np.float16 or b.dtype == np.float16:
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
    return np.matmul(a, b)


def sum_rows(a: np.ndarray) -> np.ndarray:
    """Column sums of an (M, K) matrix, ``a.sum(axis=0)``, in the accumulation dtype.

    Computed as the product ``ones(M) @ a`` (a BLAS matrix-vector product, which reads ``a`` once):
    NumPy's own reduction over the first axis of a tall matrix is several times slower.
    """
    acc = accumulate_dtype(a.dtype)
    return np.ones(a.shape[0], dtype=acc) @ a.astype(acc, copy=False)
