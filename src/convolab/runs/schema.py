"""What a run directory's files must hold, checked before anything is built from them.

``config.json``, ``summary.json`` and the ``convolab`` metadata of ``model.safetensors`` are read back
by eval, predict, explain, report and resume. Any of them may have been edited, truncated, or written by
another version; each is checked here against a small hand-written schema (built from the spec classes of
:mod:`convolab.structure`), so that a bad value is one ``ValueError`` line naming the file, the field and
what was expected.
"""

from __future__ import annotations

import math

import torch

from convolab.structure import (  # noqa: F401  (re-exported: the run format's readers use them from here)
    MAX_DEPTH,
    AnyDict,
    AnyOf,
    AnyValue,
    Bool,
    Const,
    Int,
    ListOf,
    Null,
    Num,
    Obj,
    Plain,
    Str,
    Tensor,
    TensorDict,
    _Bad,
    describe_value,
    maybe,
    parse_json,
    read_json,
    read_json_text,
    validate,
)

__all__ = ["Int", "Num", "Str", "Bool", "Null", "Const", "AnyOf", "ListOf", "Obj", "AnyValue", "AnyDict", "Plain",
           "Tensor", "TensorDict", "maybe", "validate", "describe_value", "parse_json", "read_json", "read_json_text",
           "check_weights_metadata", "config_format", "default_build", "probe_model", "CONFIG_SCHEMA", "SUMMARY_SCHEMA",
           "WEIGHTS_META_SCHEMA", "BUILD_SCHEMA", "MODEL_KWARGS_SCHEMA", "FORMAT", "TASKS", "MAX_DEPTH", "MAX_CLASSES",
           "MAX_CHANS", "MAX_SIDE"]

FORMAT = 2  # config.json's "format": 2 adds "task" and "build"; a config.json without "format" is format 1
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more would be a classifier of gigabytes
MAX_CHANS = 64  # image channels (RGB 3, multispectral a dozen)
MAX_SIDE = 8192  # pixels per side (or frames per clip)
MAX_MODEL_NAME = 20_000  # a registry name, or a network's one-line spec (convolab.models.spec.MAX_SPEC_CHARS)
MAX_VALUES = 2**26  # values in one input image or clip (64 Mi: a 8192 x 8192 RGB image is 192 Mi)

_SIZE = ListOf(Int(1, MAX_SIDE), 1, 3)  # (H, W), (T, H, W) or one side
_NAMES = ListOf(Str(1000), 1, MAX_CLASSES)

# create_model's keyword arguments, as a run records them (sizes bounded: a model is probed before it is built)
MODEL_KWARGS_SCHEMA = Obj({"num_classes": Int(1, MAX_CLASSES), "in_chans": Int(1, MAX_CHANS),
                           "input_size": AnyOf((Int(1, MAX_SIDE), _SIZE))})

WEIGHTS_META_SCHEMA = Obj(
    fields={
        "format": Int(1, 1),
        "model": Str(MAX_MODEL_NAME),
        "model_kwargs": MODEL_KWARGS_SCHEMA,
        "classes": _NAMES,
        "mean": ListOf(Num(-1e3, 1e3), 1, MAX_CHANS),
        "std": ListOf(Num(0, 1e3, lo_open=True), 1, MAX_CHANS),
        "input_size": ListOf(Int(1, MAX_SIDE), 3, 4),  # (C, H, W), or (C, T, H, W) for clips
    },
    required=("format", "model", "model_kwargs", "classes", "mean", "std", "input_size"))

# Null is accepted wherever a reader copes with it (``command`` is null when Python, not the CLI, trained the run).
TASKS = ("classification", "segmentation", "clips")  # what config.json's "task" may name

# How the model is rebuilt: {"kind": "registry", "name": ..., "kwargs": {...}}; other kinds ("pruned", "quantized")
# carry their own fields, checked by their builder (convolab.runs.build).
BUILD_SCHEMA = Obj({"kind": Str(100), "name": Str(MAX_MODEL_NAME), "kwargs": MODEL_KWARGS_SCHEMA}, required=("kind",))

CONFIG_SCHEMA = Obj({
    "format": Int(1, FORMAT),
    "task": AnyOf(tuple(Const(t) for t in TASKS)),
    "build": BUILD_SCHEMA,
    "kind": maybe(Str(100)),
    "model": maybe(Str(MAX_MODEL_NAME)),
    "model_kwargs": maybe(Obj()),
    "dataset": maybe(Obj({"name": maybe(Str(1000)), "source": maybe(Str()), "data_dir": maybe(Str()),
                          "val_fraction": Num(0, 1), "classes": _NAMES,
                          "sizes": Obj(other=Int(0)), "input_size": ListOf(Int(1, MAX_SIDE), 1, 4),
                          "mean": ListOf(Num(), 1, MAX_CHANS), "std": ListOf(Num(), 1, MAX_CHANS)})),
    "recipe": Obj(),  # (the report lists its items)
    "augment": maybe(Obj()),
    "seed": Int(),  # (explain and eval split the data with it)
    "device": maybe(Str(100)),
    "world_size": maybe(Int(1, 1_000_000)),
    "command": maybe(ListOf(Str())),
    "versions": maybe(Obj(other=maybe(Str(200)))),
    "config": maybe(Obj()),
})

_RATE = maybe(Num(0, 1))
SUMMARY_SCHEMA = Obj({
    "model": Str(MAX_MODEL_NAME), "dataset": Str(1000), "device": Str(100), "precision": Str(100),
    "test_accuracy": _RATE, "best_val_accuracy": _RATE, "final_val_accuracy": _RATE,
    "test_loss": maybe(Num()), "best_epoch": maybe(Int(0)), "stopped_early": Bool(),
    "epochs": Int(0), "steps": Int(0), "skipped_steps": Int(0), "test_samples": Int(0), "resumes": Int(0),
    "params": Int(0), "world_size": Int(1), "train_seconds": maybe(Num(0)), "samples_per_second": maybe(Num(0)),
})


def probe_model(name: str, kwargs: dict, what: str, fields: str = "'model'/'model_kwargs'") -> torch.nn.Module | None:
    """The model ``create_model(name, **kwargs)`` builds, on the meta device: its tensors' names and shapes without
    allocating them (so that sizes read from a file are compared before anything is allocated). None when the
    model cannot be built there.

    Raises:
        ValueError: ``WHAT: fields 'model'/'model_kwargs' do not build a model (...)`` (``fields`` names them).
    """
    from convolab.models import create_model

    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except (ValueError, TypeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{what}: fields {fields} do not build a model ({first})") from None
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel: the caller goes without the probe
        return None


def check_weights_metadata(meta: object, what: str) -> dict:
    """Validate the ``convolab`` metadata of a weights file: the schema, then what its fields say together
    (class names for every output, one mean and std per channel, an input of sane size)."""
    if isinstance(meta, dict) and isinstance(meta.get("format"), int) and not isinstance(meta["format"], bool) \
            and meta["format"] > 1:
        raise ValueError(f"{what}: field 'format' is {meta['format']}, written by a newer convolab; this one reads "
                         "format 1 (upgrade convolab)")
    validate(meta, WEIGHTS_META_SCHEMA, what)
    c, *spatial = meta["input_size"]
    kw = meta["model_kwargs"]
    if math.prod(meta["input_size"]) > MAX_VALUES:
        raise ValueError(f"{what}: field 'input_size' {meta['input_size']} is {math.prod(meta['input_size']):,} "
                         f"values per input; expected at most {MAX_VALUES:,}")
    for name in ("mean", "std"):
        if len(meta[name]) != c:
            raise ValueError(f"{what}: field '{name}' has {len(meta[name])} value(s) for a {c}-channel input "
                             f"(input_size {meta['input_size']}); expected {c}")
    if kw.get("in_chans", c) != c:
        raise ValueError(f"{what}: field 'model_kwargs.in_chans' is {kw['in_chans']} but input_size "
                         f"{meta['input_size']} has {c} channel(s); expected {c}")
    outputs = kw.get("num_classes")
    if outputs is not None and len(meta["classes"]) != outputs:
        raise ValueError(f"{what}: field 'classes' names {len(meta['classes'])} class(es) for a model with {outputs} "
                         f"outputs (model_kwargs.num_classes); expected {outputs} names")
    return meta


def config_format(config: object, what: str) -> int:
    """The format of a ``config.json`` (1 when it has no ``format`` field, as before format 2 existed).

    Raises:
        ValueError: a format written by a newer convolab (this one reads up to :data:`FORMAT`).
    """
    fmt = config.get("format", 1) if isinstance(config, dict) else 1
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT:
        raise ValueError(f"{what}: field 'format' is {fmt}, written by a newer convolab; this one reads formats "
                         f"1 to {FORMAT} (upgrade convolab)")
    return fmt


def default_build(config: dict) -> dict | None:
    """How a run's model is rebuilt when its config.json does not say (format 1): the registry model ``model`` with
    ``model_kwargs``; None when the config names no model."""
    name, kwargs = config.get("model"), config.get("model_kwargs")
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        return None
    return {"kind": "registry", "name": name, "kwargs": dict(kwargs)}
