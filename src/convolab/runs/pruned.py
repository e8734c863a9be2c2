"""The ``pruned`` build kind: a registry model whose channels structured pruning removed.

config.json's ``build`` is ``{"kind": "pruned", "base": {"name", "kwargs"}, "modules": {layer: {attr: int}},
"shapes": {tensor: [sizes]}}`` (written by :func:`convolab.compress.prune.pruned_build`): the registry model it
started from, the size attributes pruning changed (a convolution's ``in_channels``/``out_channels``/``groups``, a
linear layer's ``in_features``/``out_features``, a norm's ``num_features`` ...) and the tensors whose shapes it
changed.

The builder makes the base model on the meta device, applies the attributes and shapes there, and compares every
tensor with the safetensors header before anything is allocated. Pruning only removes channels, so every recorded
size must be at most the base model's: an edited config.json can never make a model larger than its base (whose
size :func:`convolab.runs.schema.probe_model` bounds as for any registry model).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from convolab.runs.build import _file_shapes, fit_problem, register_builder
from convolab.runs.schema import MAX_MODEL_NAME, MODEL_KWARGS_SCHEMA, Obj, Str, probe_model, validate

__all__ = ["BASE_SCHEMA"]

BASE_SCHEMA = Obj({"name": Str(MAX_MODEL_NAME), "kwargs": MODEL_KWARGS_SCHEMA}, required=("name", "kwargs"))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _size_value(v: object) -> int | list[int] | None:
    """A module attribute that pruning may change: an int, or a tuple/list of ints (LayerNorm's shape)."""
    if _is_int(v):
        return v
    if isinstance(v, (tuple, list, torch.Size)) and v and all(_is_int(x) for x in v):
        return list(v)
    return None


def _apply_modules(model: nn.Module, modules: object, where: str, f: str, name: str) -> None:
    """Set the recorded size attributes, each checked: a layer and attribute of the base model, a size of at least
    1 and at most the base's."""
    if not isinstance(modules, dict):
        raise ValueError(f"{where}: field '{f}.modules' must be an object of layer name -> {{attribute: size}}")
    layers = dict(model.named_modules())
    for layer, attrs in modules.items():
        field = f"{f}.modules.{layer}"
        if layer not in layers or not layer:
            raise ValueError(f"{where}: field '{field}' names a layer that {name} does not have")
        if not isinstance(attrs, dict) or not attrs:
            raise ValueError(f"{where}: field '{field}' must be an object of attribute -> size")
        m = layers[layer]
        for attr, value in attrs.items():
            base = _size_value(getattr(m, attr, None)) if not attr.startswith("_") and attr != "training" else None
            if base is None:
                raise ValueError(f"{where}: field '{field}.{attr}' is not a size attribute of {type(m).__name__}")
            ok = (_is_int(base) and _is_int(value) and 1 <= value <= base) or \
                (isinstance(base, list) and isinstance(value, list) and len(value) == len(base)
                 and all(_is_int(v) and 1 <= v <= b for v, b in zip(value, base)))
            if not ok:
                raise ValueError(f"{where}: field '{field}.{attr}' is {value!r}; expected "
                                 f"{'an integer' if _is_int(base) else f'{len(base)} integers'} from 1 to {base} "
                                 f"(pruning only removes channels from {name}'s)")
            current = getattr(m, attr)
            setattr(m, attr, tuple(value) if isinstance(current, (tuple, torch.Size)) else value)


def _apply_shapes(model: nn.Module, shapes: object, where: str, f: str, name: str) -> None:
    """Replace the recorded parameters and buffers by empty tensors of their recorded shapes (no larger than the
    base's, dimension by dimension)."""
    if not isinstance(shapes, dict):
        raise ValueError(f"{where}: field '{f}.shapes' must be an object of tensor name -> list of sizes")
    own = model.state_dict(keep_vars=True)
    for key, shape in shapes.items():
        field = f"{f}.shapes.{key}"
        if key not in own or not isinstance(own[key], torch.Tensor):
            raise ValueError(f"{where}: field '{field}' names a tensor that {name} does not have")
        base = list(own[key].shape)
        if not isinstance(shape, list) or len(shape) != len(base) \
                or not all(_is_int(s) and 1 <= s <= b for s, b in zip(shape, base)):
            raise ValueError(f"{where}: field '{field}' is {shape!r}; expected {len(base)} integers, each from 1 to "
                             f"{name}'s {base}")
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        old = own[key]
        new = torch.empty(shape, dtype=old.dtype, device=old.device)
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(new, requires_grad=old.requires_grad)
        elif attr in owner._buffers:
            owner._buffers[attr] = new
        else:
            raise ValueError(f"{where}: field '{field}' names a tensor that is neither a parameter nor a buffer")


def _reshape(model: nn.Module, build: dict, where: str, f: str, name: str) -> nn.Module:
    _apply_modules(model, build.get("modules", {}), where, f, name)
    _apply_shapes(model, build.get("shapes", {}), where, f, name)
    return model


def _check_runs(probe: nn.Module, input_size: list[int], where: str, f: str, name: str) -> None:
    """A forward on the meta device (no memory): the recorded sizes must make a network whose layers fit."""
    probe.eval()
    try:
        with torch.no_grad():
            probe(torch.empty(1, *input_size, device="meta"))
    except (NotImplementedError, TypeError):  # an op without a meta kernel: the real load below still checks
        return
    except RuntimeError as e:
        raise ValueError(f"{where}: the sizes field '{f}' records do not make a working {name} "
                         f"({(str(e).splitlines() or [''])[0]})") from None


def _pruned_builder(build: dict, weights: Path, what: str, field: str | None) -> nn.Module:
    """The base registry model with the recorded sizes, its weights loaded once names and shapes are known to
    match the file's (see the module docstring)."""
    from safetensors.torch import load_file

    from convolab.models import create_model
    from convolab.runs.reader import read_weights_metadata

    f = field or "build"
    if "base" not in build:
        raise ValueError(f"{what}: field '{f}.base' is missing; expected the registry model pruning started from "
                         "({'name': ..., 'kwargs': ...})")
    validate(build["base"], BASE_SCHEMA, f"{what} (field '{f}.base')")
    for key in ("modules", "shapes"):
        if not isinstance(build.get(key, {}), dict):
            raise ValueError(f"{what}: field '{f}.{key}' must be an object")
    name, kwargs = build["base"]["name"], dict(build["base"]["kwargs"])
    meta = read_weights_metadata(weights)
    if (meta["model"], meta["model_kwargs"]) != (name, kwargs):
        raise ValueError(f"{what}: field '{f}.base' describes {name} {kwargs}, but {weights} holds weights of "
                         f"{meta['model']} {meta['model_kwargs']}; expected the same model in both")
    probe = probe_model(name, kwargs, what, fields=f"'{f}.base.name'/'{f}.base.kwargs'")
    if probe is None:
        raise ValueError(f"{what}: {name} cannot be built on the meta device, so its pruned sizes cannot be checked "
                         "before loading; a pruned run needs a model that can")
    _reshape(probe, build, what, f, name)
    problem = fit_problem({k: list(v.shape) for k, v in probe.state_dict().items()}, _file_shapes(weights), what)
    if problem:
        raise ValueError(f"{weights}: weights do not fit the pruned {name} ({problem})")
    if math.prod(meta["input_size"]) > 0:
        _check_runs(probe, meta["input_size"], what, f, name)
    model = _reshape(create_model(name, **kwargs), build, what, f, name)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{weights}: weights do not fit the pruned {name} ({str(e).splitlines()[0]})") from None
    model.convolab_build = {"kind": "pruned", "base": {"name": name, "kwargs": kwargs},
                            "modules": build.get("modules", {}), "shapes": build.get("shapes", {})}
    return model


register_builder("pruned", _pruned_builder)
