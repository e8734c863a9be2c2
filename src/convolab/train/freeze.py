"""Transfer learning as the tutorials recommend it: freeze the early layers, train the rest at rates that grow
towards the classifier (``--freeze``, ``--lr-decay-per-stage``).

**Freezing** (``--freeze SPEC``). ``SPEC`` is a module name or an ``fnmatch`` pattern:

* a module name (``layer2``, ``layer3.1``, ``features.7``): every parameter up to and including that module, in
  module order (``model.named_modules()``, the order the model defines its layers): ``--freeze layer2`` on a
  ResNet freezes ``conv1``, ``bn1``, ``layer1`` and ``layer2``;
* a pattern (it holds ``*``, ``?`` or ``[``): every parameter whose name matches (``'features.*'``, ``'*.bn*'``);
  ``*`` matches dots too.

A frozen parameter gets ``requires_grad = False`` and stays out of the optimizer (so weight decay and momentum
never move it either). A BatchNorm layer whose parameters are all frozen (without affine parameters: whose
running statistics' names the spec covers) is kept in evaluation mode for the whole run: it normalises with the
running mean and variance it came with, and they do not move — in training mode a BatchNorm would re-estimate
them from the new data even with its scale and shift frozen, so the "frozen" features would drift. ``train()``
on the model leaves those layers in eval mode (their ``train`` is replaced by one that always sets eval).

**Stages** (``--lr-decay-per-stage F``). The classifier (``get_classifier()``) and anything after the last
feature stage form the head, stage ``K``; the stages before it are the model's ``feature_info`` entries in
order — for a ResNet the stem (``conv1``, ``bn1`` up to ``relu``), ``layer1`` ... ``layer4``, so ``K = 5``. A
parameter belongs to the first stage whose module ends at or after it in module order. Stage ``k`` trains at
``lr * F ** (K - k)``: the classifier at ``--lr``, ``layer4`` at ``lr * F``, the stem at ``lr * F ** 5``
(Howard & Ruder 2018, "discriminative fine-tuning", with F = 1/2.6). A model without ``feature_info`` (or whose
entries name no module) uses its top-level children that hold parameters as stages. The multipliers ride in each
optimizer group as ``lr_mult``; the schedule's rate is multiplied by it (``Trainer.set_lr``), so every group
follows the same schedule shape and steps.jsonl logs the classifier's rate.
"""

from __future__ import annotations

import difflib
import logging
import types
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FreezeResult", "freeze", "frozen_parameter_names", "parameter_stages", "stage_lr_multipliers",
           "check_transfer", "prepare_transfer"]

log = logging.getLogger(__name__)

_PATTERN_CHARS = "*?["


@dataclass
class FreezeResult:
    """What :func:`freeze` did."""

    spec: str
    frozen: list[str]  # parameter names, in model order
    batchnorms: list[str]  # BatchNorm modules kept in eval mode
    frozen_params: int  # numbers of values
    trainable_params: int


def _module_order(model: nn.Module) -> dict[str, int]:
    """Module name -> its position in ``named_modules()`` (the root, ``""``, is 0)."""
    return {name: i for i, (name, _) in enumerate(model.named_modules())}


def _end(order: dict[str, int], name: str) -> int | None:
    """The position of the last module inside ``name`` (itself included); None if there is no such module."""
    ends = [i for n, i in order.items() if n == name or n.startswith(name + ".")]
    return max(ends) if ends else None


def _owner(param_name: str) -> str:
    return param_name.rpartition(".")[0]


def _model_name(model: nn.Module) -> str:
    return getattr(model, "convolab_cfg", {}).get("name") or type(model).__name__


def frozen_parameter_names(model: nn.Module, spec: str) -> list[str]:
    """The parameters ``spec`` freezes (see the module docstring), in model order.

    Raises:
        ValueError: ``spec`` names no module / matches no parameter (one line with the close matches).
    """
    names = [n for n, _ in model.named_parameters()]
    spec = spec.strip()
    if any(c in spec for c in _PATTERN_CHARS):
        hits = [n for n in names if fnmatchcase(n, spec)]
        if not hits:  # suggest patterns of the model's layers ('layer1.*')
            patterns = [f"{n}.*" for n, _ in model.named_modules() if n]
            close = difflib.get_close_matches(spec, patterns, n=5, cutoff=0.4)
            raise ValueError(f"--freeze {spec!r} matches no parameter of {_model_name(model)}"
                             f"{'; close matches: ' + ', '.join(close) if close else ''} (patterns match parameter "
                             "names such as " + ", ".join(names[:2]) + ")")
        return hits
    order = _module_order(model)
    end = _end(order, spec) if spec else None
    if end is None:
        candidates = [n for n in order if n]
        close = difflib.get_close_matches(spec, candidates, n=5, cutoff=0.4)
        tops = [n for n, _ in model.named_children()]
        raise ValueError(f"--freeze {spec!r}: {_model_name(model)} has no layer of that name; "
                         + (f"close matches: {', '.join(close)}" if close else f"its layers: {', '.join(tops)}"))
    return [n for n in names if order[_owner(n)] <= end]


def _eval_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a frozen BatchNorm: always evaluation mode (its running statistics stay as loaded)."""
    return nn.Module.train(self, False)


def freeze(model: nn.Module, spec: str) -> FreezeResult:
    """Freeze what ``spec`` selects (see the module docstring): ``requires_grad = False``, and the frozen BatchNorm
    layers kept in eval mode.

    Raises:
        ValueError: ``spec`` selects nothing, or every parameter (nothing would train).
    """
    frozen = frozen_parameter_names(model, spec)
    chosen = set(frozen)
    params = dict(model.named_parameters())
    if len(chosen) == len(params):
        raise ValueError(f"--freeze {spec!r} freezes every parameter of {_model_name(model)}; nothing would train "
                         "(name an earlier layer)")
    for name in frozen:
        params[name].requires_grad_(False)
    pattern = any(c in spec for c in _PATTERN_CHARS)
    order = _module_order(model)
    end = None if pattern else _end(order, spec.strip())
    batchnorms = []
    for name, module in model.named_modules():
        if not isinstance(module, _BatchNorm):
            continue
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if own:
            covered = all(p in chosen for p in own)
        elif pattern:  # no affine parameters: the spec covers the layer if it covers its statistics
            covered = any(fnmatchcase(f"{name}.{b}", spec) for b, _ in module.named_buffers(recurse=False))
        else:
            covered = order[name] <= end
        if covered:
            module.train = types.MethodType(_eval_only_train, module)
            module.eval()
            batchnorms.append(name)
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    return FreezeResult(spec, frozen, batchnorms, sum(params[n].numel() for n in frozen), trainable)


def _classifier_prefix(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)
    fc = get() if get is not None else None
    if not isinstance(fc, nn.Module):
        return None
    return next((name for name, m in model.named_modules() if m is fc and name), None)


def parameter_stages(model: nn.Module) -> tuple[dict[str, int], int]:
    """Parameter name -> stage (0 = the earliest), and the head's stage ``K`` (see the module docstring)."""
    order = _module_order(model)
    head = _classifier_prefix(model)
    ends = [_end(order, info.get("module", "")) for info in getattr(model, "feature_info", None) or []]
    ends = sorted(e for e in ends if e is not None and e > 0)
    if not ends:  # top-level children with parameters, but the one holding the classifier
        tops = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
        ends = sorted(_end(order, n) for n in tops if not (head and (head == n or head.startswith(n + "."))))
    k = len(ends)
    stages = {}
    for name, _ in model.named_parameters():
        owner = _owner(name)
        if head and (owner == head or owner.startswith(head + ".")):
            stages[name] = k
        else:
            stages[name] = sum(e < order[owner] for e in ends)
    return stages, k


def stage_lr_multipliers(model: nn.Module, decay: float) -> dict[str, float]:
    """Parameter name -> ``decay ** (K - stage)``: 1 for the head, ``decay`` for the stage before it ..."""
    stages, k = parameter_stages(model)
    return {name: decay ** (k - s) for name, s in stages.items()}


def check_transfer(config) -> None:
    """Refuse, before any data loads, what ``--freeze``, ``--lr-decay-per-stage`` and ``--input-size`` cannot do:
    the numpy engine, a non-classifier with ``--input-size``, a ``--freeze`` naming no layer of the model (checked on
    the model built on the meta device, nothing allocated).

    Raises:
        ValueError: one line.
    """
    import torch

    from convolab.models import create_model, get_model_entry

    used = [flag for flag, on in (("--freeze", config.freeze is not None),
                                  ("--lr-decay-per-stage", config.lr_decay_per_stage != 1.0),
                                  ("--input-size", config.input_size is not None)) if on]
    if used and config.engine != "torch":
        raise ValueError(f"{', '.join(used)}: training with --engine {config.engine} does not support it; use "
                         "--engine torch")
    if config.freeze is not None and not config.freeze.strip():
        raise ValueError("--freeze needs a layer name (layer2) or a parameter pattern ('features.*')")
    if config.input_size is not None and (len(config.input_size) != 2 or min(config.input_size) < 1):
        raise ValueError(f"--input-size must be HxW with positive sides; got {config.input_size}")
    if not used:
        return
    try:
        entry = get_model_entry(config.model)
    except (KeyError, ValueError):  # an unknown name is the loop's to refuse, with its close matches
        return
    if config.input_size is not None and entry.input_kind != "image":
        raise ValueError(f"--input-size resizes the images of a classifier; {config.model} is a {entry.input_kind} "
                         "model (use --image-size to resize a folder's images at decode time)")
    if config.freeze is None:
        return
    kwargs = {**entry.default_cfg, **config.model_args()}
    if config.input_size is not None:
        kwargs["input_size"] = tuple(config.input_size)
    try:
        with torch.device("meta"):  # the structure only: nothing is allocated
            probe = create_model(config.model, **kwargs)
    except (RuntimeError, NotImplementedError, TypeError):  # no meta kernel: the real model is checked in setup
        return
    freeze(probe, config.freeze)


def prepare_transfer(model: nn.Module, config, fresh: bool) -> dict[str, int]:
    """``--init-from`` (a fresh run only: a resumed one has its weights from the checkpoint) and ``--freeze``, with
    their log lines; returns summary.json's ``trainable_params`` and ``frozen_params``."""
    from convolab.train.init_from import load_initial_weights

    if config.init_from and fresh:
        for note in load_initial_weights(model, config.init_from):
            log.info("--init-from: %s", note)
        log.info("initialised %s from %s", config.model, config.init_from)
    if config.freeze is not None:
        done = freeze(model, config.freeze)
        log.info("--freeze %s: %s parameters frozen (%d tensors; %d BatchNorm layers kept in eval mode), %s trainable",
                 config.freeze, f"{done.frozen_params:,}", len(done.frozen), len(done.batchnorms),
                 f"{done.trainable_params:,}")
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"trainable_params": trainable, "frozen_params": sum(p.numel() for p in params) - trainable}
