"""``create_model``: the one way to build a model."""

from __future__ import annotations

from torch import nn

from convolab.models._registry import get_model_entry

__all__ = ["create_model", "normalize_input_size"]


def normalize_input_size(input_size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``28`` -> ``(28, 28)``; ``(C, H, W)`` -> ``(H, W)``; validates positivity."""
    if input_size is None:
        return None
    if isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        size = tuple(int(v) for v in input_size)
        if len(size) == 3:
            size = size[1:]
        if len(size) != 2:
            raise ValueError(f"input_size must be an int, (H, W) or (C, H, W); got {input_size!r}")
    if min(size) < 1:
        raise ValueError(f"input_size must be positive; got {input_size!r}")
    return size  # type: ignore[return-value]


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    input_size: int | tuple[int, int] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (``convolab.models.list_models()`` lists them).
        num_classes: size of the classifier output.
        in_chans: input channels (1 for grayscale, 3 for colour).
        input_size: the image size the model will see, ``H`` or ``(H, W)``; models whose native
            stem would collapse a small image adapt to it (each model's docstring says how).
            ``None``: the model's native size.
        **kwargs: model-specific options (``drop_rate`` ...).

    Raises:
        UnknownNameError: no model has that name (the message lists close matches).
        ValueError: a bad argument, e.g. an input too small for the model.
    """
    entry = get_model_entry(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1; got {in_chans}")
    model = entry.fn(num_classes=num_classes, in_chans=in_chans, input_size=normalize_input_size(input_size), **kwargs)
    # Remember how the model was built so a run directory can rebuild it from its weights file.
    model.convolab_cfg = dict(name=name, num_classes=num_classes, in_chans=in_chans,
                              input_size=list(model.input_size), **kwargs)
    return model
