"""Optimizers by name, with weight decay kept off norm and bias parameters by default."""

from __future__ import annotations

import sys

import torch
from torch import nn

__all__ = ["create_optimizer", "param_groups", "OPTIMIZERS", "is_decayed", "l1_parameters", "add_l1_gradient",
           "without_dynamo_import"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def is_decayed(name: str, p: torch.Tensor) -> bool:
    """Whether the parameter ``name`` gets weight decay (and L1) by default: a weight, not a bias or a
    normalisation layer's scale/shift (those have fewer than two dimensions)."""
    return p.ndim > 1 and not name.endswith(".bias")


def l1_parameters(model: nn.Module, decay_norm_and_bias: bool = False) -> list[nn.Parameter]:
    """The trainable parameters ``--l1`` regularises: those :func:`param_groups` decays (all with
    ``decay_norm_and_bias``)."""
    return [p for n, p in model.named_parameters() if p.requires_grad and (decay_norm_and_bias or is_decayed(n, p))]


@torch.no_grad()
def add_l1_gradient(params: list[torch.Tensor], lam: float) -> None:
    """Add the gradient of the L1 penalty ``lam * sum_i |w_i|`` to each parameter's gradient: ``lam * sign(w)``
    (the subgradient 0 at w = 0, as autograd takes it). Called after clipping, before the optimizer step, as the
    optimizers add L2 weight decay; parameters without a gradient are left alone."""
    for p in params:
        if p.grad is not None:
            p.grad.add_(p.sign(), alpha=lam)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False,
                 lr_decay_per_stage: float = 1.0) -> list[dict]:
    """The model's trainable parameters as optimizer groups: decayed, and not decayed (frozen parameters,
    ``requires_grad=False``, are in none).

    Biases and the scale/shift of normalisation layers (every parameter with fewer than two
    dimensions) get no weight decay unless ``decay_norm_and_bias``: shrinking a BatchNorm scale or a
    bias towards zero does not regularise the function the way shrinking a weight matrix does, and
    with BatchNorm after a layer the decay mostly changes the effective learning rate (Goyal et al.
    2017, "Accurate, Large Minibatch SGD", sec. 5; timm's ``param_groups_weight_decay``). With no
    weight decay, or ``decay_norm_and_bias``, there is one group.

    ``lr_decay_per_stage`` F < 1 (discriminative fine-tuning): those groups per stage of the model, earliest first,
    each with ``lr_mult = F ** (K - stage)`` (1 for the classifier; stages as
    :func:`convolab.train.freeze.parameter_stages` defines them); the optimizer's rate is ``lr * lr_mult``.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if lr_decay_per_stage != 1.0:
        from convolab.train.freeze import parameter_stages

        stages, k = parameter_stages(model)
        by_stage: dict[int, list] = {}
        for n, p in params:
            by_stage.setdefault(stages[n], []).append((n, p))
        return [{**g, "lr_mult": lr_decay_per_stage ** (k - s)} for s in sorted(by_stage)
                for g in _decay_groups(by_stage[s], weight_decay, decay_norm_and_bias)]
    return _decay_groups(params, weight_decay, decay_norm_and_bias)


def _decay_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float,
                  decay_norm_and_bias: bool) -> list[dict]:
    """``params`` (name, parameter) as :func:`param_groups`' decayed and not-decayed groups."""
    if weight_decay == 0 or decay_norm_and_bias:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    decay = [p for n, p in params if is_decayed(n, p)]
    no_decay = [p for n, p in params if not is_decayed(n, p)]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]


def _unwrapped(fn, wrapper_name: str):
    """``fn``'s undecorated function when ``fn`` is torch's wrapper named ``wrapper_name``; else None."""
    code = getattr(fn, "__code__", None)
    return getattr(fn, "__wrapped__", None) if code is not None and code.co_name == wrapper_name else None


def _dynamo_free(stock, raw):
    """A method that calls ``raw`` (torch's own method without its dynamo wrapper) while ``torch._dynamo`` is not
    loaded, and torch's ``stock`` method once it is."""
    def method(self, *args, **kwargs):
        if raw is None or "torch._dynamo" in sys.modules or self.defaults.get("differentiable"):
            return stock(self, *args, **kwargs)
        return raw(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = stock.__name__
    method.__doc__ = stock.__doc__
    return method


def _step_without_dynamo(cls):
    stock = cls.step
    raw = _unwrapped(stock, "_use_grad")  # torch's step under _use_grad_for_differentiable

    @torch.no_grad()  # what that wrapper does for an optimizer that is not differentiable, less its graph break
    def raw_step(self, closure=None):
        return raw(self, closure)

    return _dynamo_free(stock, raw_step if raw is not None else None)


_DYNAMO_FREE_CLASSES: dict[type, type] = {}


def without_dynamo_import(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` (a torch optimizer) as a subclass that does not import ``torch._dynamo`` in a process that compiles
    nothing; the same arithmetic, state and checkpoints.

    torch wraps every optimizer's ``step`` in ``_use_grad_for_differentiable``, which imports ``torch._dynamo`` and
    calls its ``graph_break()``, and ``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` in
    ``torch._disable_dynamo``, which imports it on the first call. That import took 2.2-3.2 s of every ``convolab
    train`` on a 2-core AVX2 machine (torch itself 2.5-3.5 s), in runs that compile nothing. Until ``torch._dynamo``
    is loaded nothing can be compiling, and those wrappers only set grad mode (off, for an optimizer that is not
    ``differentiable``): the subclass's methods call torch's undecorated ones under ``torch.no_grad()`` then, and
    torch's own methods once ``torch._dynamo`` is loaded (``--compile``, the ONNX exporter, anything). A torch whose
    methods are wrapped otherwise gets its own methods throughout.
    """
    if cls not in _DYNAMO_FREE_CLASSES:
        base = torch.optim.Optimizer
        methods = {name: _dynamo_free(getattr(base, name), _unwrapped(getattr(base, name), "inner"))
                   for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict")}
        methods["step"] = _step_without_dynamo(cls)
        # named as torch names it (repr, profiler labels), found by pickle under a name of this module's own
        qualname = f"_DynamoFree{cls.__name__}"
        sub = type(cls.__name__, (cls,), {**methods, "__module__": __name__, "__qualname__": qualname,
                                          "__doc__": cls.__doc__})
        globals()[qualname] = _DYNAMO_FREE_CLASSES[cls] = sub
    return _DYNAMO_FREE_CLASSES[cls]


def create_optimizer(model: nn.Module, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                     nesterov: bool = False, decay_norm_and_bias: bool = False,
                     lr_decay_per_stage: float = 1.0) -> torch.optim.Optimizer:
    """``sgd`` (momentum, optionally Nesterov's), ``adam``, ``adamw`` or ``rmsprop`` over the trainable parameters.

    ``weight_decay`` is L2 added to the gradient for sgd, adam and rmsprop, and decoupled for adamw
    (Loshchilov & Hutter 2019); see :func:`param_groups` for which parameters get it, and for
    ``lr_decay_per_stage`` (each group starts at ``lr * lr_mult``). ``momentum``
    is used by sgd and rmsprop. SGD, Adam and AdamW use torch's fused kernels where the device has
    them (one kernel for all parameters instead of several per parameter; same arithmetic).

    Raises:
        ValueError: an unknown name, or ``nesterov`` for an optimizer other than sgd (or without momentum).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if nesterov and (name != "sgd" or momentum <= 0):
        raise ValueError("--nesterov needs --optimizer sgd with --momentum > 0")
    groups = param_groups(model, weight_decay, decay_norm_and_bias, lr_decay_per_stage)
    for g in groups:
        if "lr_mult" in g:
            g["lr"] = lr * g["lr_mult"]
    first = next((p for g in groups for p in g["params"]), None)
    device = first.device if first is not None else torch.device("cpu")
    fused = device.type in ("cpu", "cuda")
    if name == "rmsprop":
        return without_dynamo_import(torch.optim.RMSprop)(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        cls, kwargs = torch.optim.SGD, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    else:
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        kwargs = dict(lr=lr, weight_decay=weight_decay)  # explicit: AdamW's own default would be 0.01
    cls = without_dynamo_import(cls)
    try:
        return cls(groups, fused=fused, **kwargs)
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return cls(groups, **kwargs)
