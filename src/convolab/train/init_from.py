"""``--init-from``: start training from weights on disk (a convolab run, or torchvision's files).

Reads safetensors files with safetensors and ``.pth``/``.pt`` files with ``torch.load(weights_only=True)``
(no code runs on load), telling them apart by content. The classifier is replaced when the class count differs; a first
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

from convolab.tensor_files import file_kind, torch_load

__all__ = ["read_state_dict", "check_state_dict", "load_initial_weights"]

log = logging.getLogger(__name__)


_WRAPPERS = ("state_dict", "model", "model_state_dict")  # where training scripts nest the state dict


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or ``.pth``/``.pt`` file (a plain state dict, or one under a ``state_dict``/
    ``model`` key, as a convolab checkpoint has it); a DistributedDataParallel ``module.`` prefix is removed.

    The format is judged by content, not by the extension (a ``.pt`` that is really safetensors is read as
    safetensors); a pickle is read with ``torch.load(weights_only=True)``: no code runs.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a weights file, a pickle that would run code, or contents that are no state dict
            (integer keys, values that are no tensors, meta or sparse tensors, NaN or inf).
    """
    path = Path(path).expanduser()
    what = f"--init-from {path}"
    if path.is_dir():
        raise IsADirectoryError(f"{what}: a folder; expected a weights file (a run's {path / 'model.safetensors'}, "
                                "or a .pth state dict)")
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file")
    if file_kind(path) == "safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{what}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None
    else:
        state = torch_load(path, what, noun="safetensors or .pth weights file")
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            for key in _WRAPPERS:
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
    check_state_dict(state, what)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_state_dict(state: object, what: str) -> None:
    """Refuse what ``load_state_dict`` would choke on or train from silently (NaN weights look like divergence).

    Raises:
        ValueError: one line starting with ``what`` that names the key and the problem.
    """
    expected = "expected a state dict (tensor names to tensors, as model.state_dict() gives)"
    if not isinstance(state, dict):
        raise ValueError(f"{what}: holds a {type(state).__name__}, not a state dict; {expected}")
    if not state:
        raise ValueError(f"{what}: holds an empty dict; {expected}")
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(repr(k) for k in list(state)[:5])
        raise ValueError(f"{what}: holds a dict without tensors (keys {keys}); {expected}, or one under "
                         f"{' or '.join(repr(k) for k in _WRAPPERS)}")
    for k, v in state.items():
        if not isinstance(k, str):
            raise ValueError(f"{what}: key {k!r} is a {type(k).__name__}; {expected}")
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{what}: {k} is a {type(v).__name__}, not a tensor; {expected}")
        if v.is_meta:
            raise ValueError(f"{what}: {k} is a meta tensor (a shape without values); expected real weights")
        if v.layout != torch.strided:
            raise ValueError(f"{what}: {k} is a {str(v.layout).removeprefix('torch.')} tensor; expected dense "
                             "tensors")
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise ValueError(f"{what}: {k} holds NaN or inf ({bad:,} of {v.numel():,} values); expected finite "
                             "weights (a model saved after training diverged?)")


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
            if weight is not None and weight.dim() != own[f"{fc}.weight"].dim():  # not a classifier's weight at all
                raise ValueError(f"--init-from {path}: {fc}.weight has shape {tuple(weight.shape)}, not a classifier's "
                                 f"{own[f'{fc}.weight'].dim()}-d weight like {tuple(own[f'{fc}.weight'].shape)}")
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
                                 f"{list(target)} in {type(model).__name__} (a different architecture or input size? "
                                 "--input-size HxW builds the model at the checkpoint's size, e.g. 224x224, and "
                                 "resizes the data to it)")
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
