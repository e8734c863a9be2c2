"""``create_model``: the one way to build a model."""

from __future__ import annotations

import inspect
import re

from torch import nn

from convolab.models._registry import ModelEntry, get_model_entry, model_entries

__all__ = ["create_model", "normalize_input_size", "model_options", "act_families", "check_takes_act"]

_FACTORY_ARGS = ("num_classes", "in_chans", "input_size")  # create_model's own arguments


def normalize_input_size(input_size: int | tuple[int, ...] | list[int] | None,
                         clip_frames: int | None = None) -> tuple[int, ...] | None:
    """``28`` -> ``(28, 28)``; ``(C, H, W)`` -> ``(H, W)``; validates positivity.

    For a clip model (``clip_frames``: its native clip length) the size is ``(T, H, W)``: ``28`` ->
    ``(clip_frames, 28, 28)``, ``(H, W)`` -> ``(clip_frames, H, W)``, ``(T, H, W)`` as given.
    """
    if input_size is None:
        return None
    forms = "an int, (H, W) or (T, H, W)" if clip_frames else "an int, (H, W) or (C, H, W)"
    if isinstance(input_size, int):
        size: tuple[int, ...] = (input_size, input_size)
    else:
        try:
            size = tuple(int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ValueError(f"input_size must be {forms}; got {input_size!r}") from None
        if len(size) == 3 and not clip_frames:
            size = size[1:]
    if clip_frames and len(size) == 2:
        size = (clip_frames, *size)
    if len(size) != (3 if clip_frames else 2):
        raise ValueError(f"input_size must be {forms}; got {input_size!r}")
    if min(size) < 1:
        raise ValueError(f"input_size must be positive; got {input_size!r}")
    return size


def _keyword_names(fn, with_default: bool = False) -> tuple[set[str], bool]:
    """Names ``fn`` takes by keyword (only those with a default, if asked), and whether it takes ``**kwargs``."""
    params = list(inspect.signature(fn).parameters.values())
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.name != "self" and (p.default is not p.empty or not with_default)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def model_options(name: str) -> list[str] | None:
    """The model-specific keyword arguments ``create_model(name, ...)`` accepts, sorted; ``None``: not known.

    The builder's own keyword arguments, and where it passes ``**kwargs`` on to the model class its
    return annotation names, that class's arguments with a default (``drop_rate``, ``shortcut`` ...).
    ``num_classes``, ``in_chans`` and ``input_size`` are create_model's and not listed.
    """
    fn = get_model_entry(name).fn
    options, forwards = _keyword_names(fn)
    if forwards:
        cls = inspect.get_annotations(fn).get("return")
        cls = fn.__globals__.get(cls) if isinstance(cls, str) else cls  # "ResNet" under postponed annotations
        if not isinstance(cls, type):
            return None
        class_options, open_ended = _keyword_names(cls.__init__, with_default=True)
        if open_ended:
            return None
        options |= class_options
    return sorted(options - set(_FACTORY_ARGS))


def _bad_argument(entry: ModelEntry, arg: str, problem: str) -> ValueError:
    """``problem`` says what is wrong with ``arg``; the message goes on with the options that do work."""
    accepted = [o for o in model_options(entry.name) or [] if o != arg]
    return ValueError(f"{problem}; {entry.name}'s options are: {', '.join(accepted) or 'none'} "
                      f"(and create_model's num_classes, in_chans, input_size)")


def act_families() -> dict[str, list[str]]:
    """The model families whose builders take ``act`` (an activation name), each with its models that do."""
    out: dict[str, list[str]] = {}
    for entry in model_entries():
        if "act" in (model_options(entry.name) or ()):
            out.setdefault(entry.family, []).append(entry.name)
    return out


def check_takes_act(name: str) -> None:
    """``ValueError`` (one line, naming the families that take it) unless model ``name`` takes ``act``."""
    options = model_options(name)
    if options is None or "act" in options:  # an open-ended builder is left to say it itself
        return
    listed = [f"{family} ({', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''})"
              for family, names in sorted(act_families().items())]
    raise ValueError(f"{name} has no activation choice (act / --act); the families that take one: {'; '.join(listed)}")


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    input_size: int | tuple[int, ...] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (``convolab.models.list_models()`` lists them).
        num_classes: size of the classifier output.
        in_chans: input channels (1 for grayscale, 3 for colour).
        input_size: the image size the model will see, ``H`` or ``(H, W)``; models whose native
            stem would collapse a small image adapt to it (each model's docstring says how).
            Clip models take ``(T, H, W)``, or ``H`` / ``(H, W)`` with their native clip length.
            ``None``: the model's native size.
        **kwargs: model-specific options (``drop_rate`` ...; :func:`model_options` lists them); ``act``
            (an activation name, ``convolab.models._activations``) where the family takes it;
            ``resize_inputs=True`` (any image model): inputs of another size are resized to ``input_size`` on
            their device before the first layer (``--input-size``, :mod:`convolab.data.resize`).

    Raises:
        UnknownNameError: no model has that name (the message lists close matches).
        ValueError: a bad argument: an option the model does not have (the message names it and
            lists the model's options; for ``act``, the families that take it), a bad value, an input too
            small for the model.
    """
    entry = get_model_entry(name)
    resize_inputs = bool(kwargs.pop("resize_inputs", False))
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1; got {in_chans}")
    if "act" in kwargs:
        check_takes_act(name)
    options = model_options(name)
    if options is not None:
        for arg in kwargs:
            if arg not in options:
                raise _bad_argument(entry, arg, f"{name} has no option {arg!r}")
    clip_frames = entry.default_cfg["input_size"][0] if entry.input_kind == "clip" else None
    size = normalize_input_size(input_size, clip_frames)
    try:
        model = entry.fn(num_classes=num_classes, in_chans=in_chans, input_size=size, **kwargs)
    except TypeError as e:
        # The builder sets this argument of the model class itself (vgg11 sets batch_norm=False ...).
        fixed = re.search(r"got multiple values for (?:keyword )?argument '(\w+)'", str(e))
        if fixed is None or fixed.group(1) not in kwargs:
            raise
        arg = fixed.group(1)
        raise _bad_argument(entry, arg, f"{name} sets {arg!r} itself (it is part of the variant)") from None
    if resize_inputs:
        if entry.input_kind != "image":
            raise ValueError(f"resize_inputs resizes images; {name} takes {entry.input_kind} inputs")
        from convolab.data.resize import attach_input_resize

        attach_input_resize(model, model.input_size)
        kwargs["resize_inputs"] = True
    # Remember how the model was built so a run directory can rebuild it from its weights file.
    model.convolab_cfg = dict(name=entry.name, num_classes=num_classes, in_chans=in_chans,
                              input_size=list(model.input_size), **kwargs)
    return model
