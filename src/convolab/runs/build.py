"""How a run's model is rebuilt: a small registry of builders keyed by the ``kind`` of config.json's ``build``.

``{"kind": "registry", "name": "resnet18", "kwargs": {...}}`` is the only kind today: ``create_model(name,
**kwargs)``. A pruned architecture or a quantized graph registers its own kind with :func:`register_builder`;
:func:`convolab.runs.reader.load_run` and its callers stay as they are.

A builder gets the ``build`` object (already checked against :data:`convolab.runs.schema.BUILD_SCHEMA`), the
weights file, the file it was read from (for error messages) and the name of its field there (``build``; None
for a format-1 run, rebuilt from the weights metadata's ``model`` and ``model_kwargs``), and returns the model
with the file's weights loaded. Builders check
the file against the model before allocating anything: a run's files may have been edited.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from convolab.runs.schema import probe_model

__all__ = ["Builder", "register_builder", "builder_kinds", "build_model", "fit_problem"]

# (build, weights file, what, field) -> the model with the weights loaded
Builder = Callable[[dict, Path, str, "str | None"], nn.Module]

_BUILDERS: dict[str, Builder] = {}


def register_builder(kind: str, fn: Builder) -> Builder:
    """Register ``fn`` as the builder of ``build`` objects of ``kind``.

    Raises:
        ValueError: ``kind`` already has a builder.
    """
    if kind in _BUILDERS:
        raise ValueError(f"a builder for build kind {kind!r} is already registered")
    _BUILDERS[kind] = fn
    return fn


def builder_kinds() -> list[str]:
    """The build kinds this convolab can rebuild, sorted."""
    return sorted(_BUILDERS)


def build_model(build: dict, weights: Path, what: str, field: str | None = "build") -> nn.Module:
    """The model ``build`` describes, with the weights of ``weights`` loaded (on the CPU, in train mode).

    Args:
        build: ``{"kind": ..., ...}``.
        weights: the ``model.safetensors`` file.
        what: the file ``build`` was read from, as error messages name it.
        field: ``build``'s field in that file; None: the weights metadata's ``model``/``model_kwargs`` (format 1).

    Raises:
        ValueError: an unknown kind (naming the known ones), a kind's fields missing, or weights that do not fit.
    """
    kind = build.get("kind")
    if kind not in _BUILDERS:
        raise ValueError(f"{what}: field '{field}.kind' is {kind!r}; expected one of {', '.join(builder_kinds())} "
                         "(a newer convolab may know it)")
    return _BUILDERS[kind](build, Path(weights), what, field)


def fit_problem(own: dict[str, list[int] | None], stored: dict[str, list[int]], described: str) -> str | None:
    """Why tensors of the names and shapes ``stored`` do not fit a model with ``own`` (a shape of None: not
    compared), as the parenthesis of a one-line error; None when they fit. ``described``: where ``own`` comes from
    (the file that describes the model)."""
    for k, shape in own.items():
        if shape is not None and k in stored and stored[k] != shape:
            return f"{k} has shape {stored[k]} in the file, {shape} in the model described by {described}"
    missing, unexpected = [k for k in own if k not in stored], [k for k in stored if k not in own]
    parts = ([f"{len(missing)} missing (e.g. {', '.join(missing[:3])})"] if missing else []) + \
            ([f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})"] if unexpected else [])
    return "; ".join(parts) or None


def _file_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the safetensors header alone (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


def _registry_builder(build: dict, weights: Path, what: str, field: str | None) -> nn.Module:
    """``create_model(name, **kwargs)``, once its tensors' names and shapes are known to match the file's: the
    model is first built on the meta device (nothing allocated), so that absurd sizes never allocate memory."""
    from safetensors.torch import load_file

    from convolab.models import create_model

    names = ("model", "model_kwargs") if field is None else (f"{field}.name", f"{field}.kwargs")
    for key, shown in zip(("name", "kwargs"), names):
        if key not in build:
            raise ValueError(f"{what}: field '{shown}' is missing; expected the registry model's name and its "
                             "keyword arguments")
    name, kwargs = build["name"], dict(build["kwargs"])
    probe = probe_model(name, kwargs, what, fields=f"'{names[0]}'/'{names[1]}'")
    if probe is not None:
        problem = fit_problem({k: list(v.shape) for k, v in probe.state_dict().items()}, _file_shapes(weights), what)
        if problem:
            raise ValueError(f"{weights}: weights do not fit model {name} ({problem})")
    model = create_model(name, **kwargs)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{weights}: weights do not fit model {name} ({str(e).splitlines()[0]})") from None
    return model


register_builder("registry", _registry_builder)
