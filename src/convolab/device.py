"""Choosing the compute device."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "DEVICE_CHOICES"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else Apple's MPS, else the CPU; an explicit choice is checked.

    Raises:
        ValueError: an unknown name, or a device this machine does not have.
    """
    name = (name or "auto").lower()
    base = name.split(":", 1)[0]
    if base not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here (no GPU or driver); use --device cpu or auto")
    if base == "mps" and not has_mps:
        raise ValueError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto")
    return torch.device(name)
