"""Hostile and broken files for the loaders' tests: pickles that would run a shell command when loaded.

Each payload calls ``os.system("touch MARKER")`` (``posix.system`` in the pickle) on load; a test asserts
that the marker file never appears. Nothing here loads them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch


class ShellCommand:
    """Pickles as a call of ``os.system(command)``: what an attacker puts in a .pth file."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def touch_command(marker: Path) -> ShellCommand:
    return ShellCommand(f"touch {marker}")


def write_raw_pickle(path: Path, marker: Path, protocol: int = 2) -> Path:
    """A plain pickle (torch's legacy format starts as one) whose loading runs ``touch marker``.
    Protocol 2 names the function with GLOBAL, protocol 4 with STACK_GLOBAL."""
    path.write_bytes(pickle.dumps({"state_dict": {"w": touch_command(marker)}}, protocol=protocol))
    return path


def write_torch_zip(path: Path, marker: Path) -> Path:
    """torch.save's zip format with the payload beside real tensors."""
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": touch_command(marker)}, path)
    return path


def write_safetensors_bytes(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """A safetensors file under whatever name ``path`` has."""
    from safetensors.torch import save

    path.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}))
    return path
