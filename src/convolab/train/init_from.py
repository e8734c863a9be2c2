"""``--init-from``: start training from weights on disk (a convolab run, or torchvision's files).

Reads ``.safetensors`` with safetensors and ``.pth``/``.pt`` with ``torch.load(weights_only=True)``
(no code runs on load). The classifier is replaced when the class count differs; a first
convolution trained on RGB is summed over its colour channels for a grayscale model (timm's
``adapt_input_conv`` rule: the response to a gray image, whose three channels are equal, is
unchanged). Every other tensor must match by name and shape.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["read_state_dict", "load_initial_weights"]

log = logging.getLogger(__name__)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file (a plain state dict, or one under a
    ``state_dict``/``model`` key); a DistributedDataParallel ``module.`` prefix is removed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"--init-from {path}: not a readable safetensors file ({e})") from None
    elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling errors come in many types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"--init-from {path}: cannot load it safely with torch.load(weights_only=True) "
                             f"({first})") from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    else:
        raise ValueError(f"--init-from {path}: expected a .safetensors or .pth file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--init-from {path}: does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _classifier_prefix(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)
    if get is None:
        return None
    fc = get()
    for name, module in model.named_modules():
        if module is fc:
            return name
    return None


def load_initial_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load ``path`` into ``model`` as described in the module docstring; returns what was adapted.

    Raises:
        ValueError: missing or unexpected tensors, or shapes that no rule explains.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    notes: list[str] = []
    fc = _classifier_prefix(model)
    if fc:
        keys = [k for k in state if k.startswith(fc + ".")]
        if any(k in own and state[k].shape != own[k].shape for k in keys):
            weight = state.get(f"{fc}.weight")
            file_classes = weight.shape[0] if weight is not None else "other"
            for k in keys:
                state[k] = own[k]  # keep the model's fresh initialisation
            notes.append(f"classifier {fc} re-initialised: {file_classes} classes in the file, "
                         f"{own[f'{fc}.weight'].shape[0]} here")
    for k, v in list(state.items()):
        if k in own and v.shape != own[k].shape:
            target = own[k].shape
            if v.dim() == 4 and v.shape[0] == target[0] and v.shape[2:] == target[2:] and target[1] == 1:
                state[k] = v.sum(dim=1, keepdim=True)  # RGB filters -> grayscale filters
                notes.append(f"{k}: {v.shape[1]} input channels summed to 1")
            else:
                raise ValueError(f"--init-from {path}: {k} has shape {list(v.shape)} in the file but "
                                 f"{list(target)} in {type(model).__name__} (a different architecture or input size?)")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ValueError(f"--init-from {path}: tensors do not match the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return notes
