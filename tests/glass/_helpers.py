"""Helpers for the glass tests: torch references, finite differences, relative errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from convolab import glass

# Tolerances of issue 7: normwise relative error against PyTorch.
TOL = {np.float64: 1e-6, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (normwise; 0 when both are all zero)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.abs(want).max() if want.size else 0.0
    diff = np.abs(got - want).max() if want.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def compare_with_torch(layer: glass.Module, torch_layer: torch.nn.Module, x: np.ndarray,
                       dtype=np.float64, seed: int = 0) -> dict[str, float]:
    """Forward and backward of ``layer`` and ``torch_layer`` (same weights) on ``x`` with a random upstream
    gradient; returns the relative error of the output, dx and every parameter gradient."""
    tdtype = TORCH_DTYPE[dtype]
    torch_layer = torch_layer.to(tdtype)
    layer.to(dtype)
    layer.load_state_dict({k: v.detach().numpy() for k, v in torch_layer.state_dict().items()})
    x = x.astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch_layer(xt)
    out = layer.forward(x)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    out_t.backward(torch.tensor(dout))
    layer.zero_grad()
    dx = layer.backward(dout)
    errors = {"out": rel_err(out, out_t.detach().numpy()), "dx": rel_err(dx, xt.grad.numpy())}
    torch_grads = {k: p.grad for k, p in torch_layer.named_parameters()}
    for name, _, grad in layer.named_parameters():
        errors[name] = rel_err(grad, torch_grads[name].numpy())
    for name, buf in layer.state_dict().items():  # running statistics after the forward pass
        if buf.dtype.kind == "f" and name not in torch_grads:
            errors[name] = rel_err(buf, torch_layer.state_dict()[name].numpy())
    return errors


def numeric_grad(f: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to every element of ``a`` (perturbed in place)."""
    grad = np.zeros_like(a, dtype=np.float64)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, a), "a must be contiguous"
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def finite_difference_errors(layer: glass.Module, x: np.ndarray, seed: int = 0,
                             reseed: int | None = None) -> dict[str, float]:
    """float64 finite-difference check of ``layer``: analytic dx and parameter gradients of
    ``L = sum(forward(x) * R)`` against central differences. ``reseed``: reset the glass generator
    before every forward (fixes dropout's mask)."""
    layer.to(np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)

    def forward():
        if reseed is not None:
            glass.manual_seed(reseed)
        return layer.forward(x)

    r = np.random.default_rng(seed).standard_normal(forward().shape)

    def loss() -> float:
        return float(np.sum(forward() * r))

    forward()
    layer.zero_grad()
    dx = layer.backward(r)
    analytic = {name: g.copy() for name, _, g in layer.named_parameters()}
    errors = {"dx": rel_err(dx, numeric_grad(loss, x))}
    for name, p, _ in layer.named_parameters():
        errors[name] = rel_err(analytic[name], numeric_grad(loss, p))
    return errors
