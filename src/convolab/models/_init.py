"""Weight initialisation schemes applied to a built model (``--init``; ``init_weights(model, "he")``).

Each scheme sets the weight of every convolution (``nn.Conv1d/2d/3d`` and the transposed ones) and every
``nn.Linear`` in the model, and zeroes their biases; norm layers and anything else keep the family's own
initialisation. Fans are torch's (``nn.init._calculate_fan_in_and_fan_out``): ``fan_in = weight.shape[1] x
kernel elements`` (in features for a linear layer, in channels / groups for a convolution, out channels /
groups for a transposed one) and ``fan_out = weight.shape[0] x kernel elements``:

- ``he``: He et al., "Delving Deep into Rectifiers", ICCV 2015 — ``nn.init.kaiming_normal_`` with
  ``mode="fan_in"``, ``nonlinearity="relu"``: W ~ N(0, 2 / fan_in), std sqrt(2 / fan_in), whatever the
  activation (the ReLU gain sqrt(2)).
- ``xavier``: Glorot & Bengio, AISTATS 2010 — ``nn.init.xavier_uniform_`` with gain 1:
  W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)), variance 2 / (fan_in + fan_out).
- ``normal``: W ~ N(0, 0.01^2), std 0.01 (the small Gaussian of AlexNet-era code).
- ``default``: nothing changes: the family's own scheme (torch's default, a uniform
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, unless the family sets another).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["INIT_SCHEMES", "init_weights", "init_targets"]

INIT_SCHEMES = ("default", "he", "xavier", "normal")
NORMAL_STD = 0.01  # the ``normal`` scheme's standard deviation


def init_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers a scheme initialises: every convolution and linear layer, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def init_weights(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise ``model``'s convolution and linear weights by ``scheme`` (see the module docstring), in place.

    Args:
        model: any ``nn.Module``.
        scheme: one of ``INIT_SCHEMES``; ``"default"`` leaves the model as it is.
        generator: the random source (default: torch's global one, so ``torch.manual_seed`` fixes the draw).

    Returns:
        ``model``.

    Raises:
        ValueError: an unknown scheme.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return model
    with torch.no_grad():
        for _, m in init_targets(model):
            if m.weight.is_meta:  # a structure-only model (torch.device("meta")) has no values to set
                continue
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight, gain=1.0, generator=generator)
            else:
                nn.init.normal_(m.weight, 0.0, NORMAL_STD, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
