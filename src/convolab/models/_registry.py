"""The model registry: ``@register_model`` fills it, ``create_model`` and ``list_models`` read it."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

__all__ = ["ModelEntry", "register_model", "list_models", "get_model_entry", "model_entries"]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model builder."""

    name: str  # registry name, the builder function's name
    fn: Callable[..., nn.Module]  # builder: fn(*, num_classes, in_chans, input_size, **kwargs)
    family: str  # the file it lives in: "tutorial", "lenet", "resnet" ...
    description: str  # first line of the builder's docstring
    year: int | None = None  # year of the paper (or tutorial) it follows
    input_kind: str = "image"  # "image", "clip" or "segmentation"
    # The configuration the model is usually shown at (``convolab models`` counts parameters there).
    default_cfg: dict = field(default_factory=dict)

    @property
    def default_input(self) -> tuple[int, ...]:
        """The input, without the batch, the model is shown at: ``(C, H, W)``, ``(C, T, H, W)`` for clips
        (``default_cfg``'s, else 3x224x224 or 3x16x112x112)."""
        if "input_size" in self.default_cfg:
            return (self.default_cfg.get("in_chans", 3), *self.default_cfg["input_size"])
        return (3, 16, 112, 112) if self.input_kind == "clip" else (3, 224, 224)

    @property
    def default_num_classes(self) -> int:
        """The classifier size the model is shown at (``default_cfg``'s, else ImageNet's 1000)."""
        return self.default_cfg.get("num_classes", 1000)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    fn: Callable | None = None, *, year: int | None = None, input_kind: str = "image", default_cfg: dict | None = None
):
    """Decorator that registers a model builder under its function name.

    Usable bare (``@register_model``) or with metadata (``@register_model(year=1998)``).
    A second builder with the same name raises ``ValueError``.
    """

    def wrap(f: Callable) -> Callable:
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice ({_REGISTRY[name].fn.__module__} and {f.__module__})")
        doc = (f.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(
            name=name,
            fn=f,
            family=f.__module__.rsplit(".", 1)[-1],
            description=doc[0].strip() if doc else "",
            year=year,
            input_kind=input_kind,
            default_cfg=dict(default_cfg or {}),
        )
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally filtered.

    ``pattern`` is a shell-style pattern ("resnet*", "*_bn"), or a plain word that matches names in
    which a ``_``-separated part starts with it ("resnet" -> resnet18 ... and se_resnet18 ...;
    "v2" -> mobilenet_v2, shufflenet_v2_x1_0 ...).
    """
    names = sorted(_REGISTRY)
    if pattern:
        pattern = pattern.lower()
        if any(ch in pattern for ch in "*?["):
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        else:
            names = [n for n in names if n.startswith(pattern) or f"_{pattern}" in n]
    return names


def model_entries() -> list[ModelEntry]:
    """All registry entries, sorted by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get_model_entry(name: str) -> ModelEntry:
    """The entry for ``name``; an ``UnknownNameError`` with close matches when there is none."""
    from convolab.errors import UnknownNameError

    if isinstance(name, str) and name.startswith("spec:"):
        return _spec_entry(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("model", name, _REGISTRY, hint="`convolab models` lists them") from None


def _spec_entry(name: str) -> ModelEntry:
    """The entry of a ``spec:...`` network (``convolab.models.spec``): built on demand, never registered; its name is
    the spec's canonical text. Shown by default at 1x28x28 with the classes its last ``fc(N)`` gives (else 10)."""
    import functools

    from convolab.models import spec

    nodes = spec.parse_spec(name)
    text = spec.PREFIX + spec.format_spec(nodes)
    return ModelEntry(name=text, fn=functools.partial(spec.build_spec, text), family="spec",
                      description="a network from a spec", input_kind="image",
                      default_cfg=dict(num_classes=spec.final_width(nodes) or 10, in_chans=1,
                                       input_size=(28, 28)))
