"""``convolab train --engine numpy``: the training loop's run, with every step computed by convolab.glass.

:class:`NumpyEngine` is the engine the loop (:class:`convolab.train.loop.Trainer`) holds for it -- the same
data pipeline, schedules, accumulation, clipping, checkpoints, resume, early stopping, metrics, plots and run
directory -- with the arithmetic swapped out:

* the model is the glass model ``from_torch`` builds from the freshly initialised torch model (so
  both engines start from the same weights); the torch model's parameters and buffers become
  views of the glass arrays, so checkpoints, the best epoch's weights and ``model.safetensors``
  (torch's names, loadable by ``eval``/``predict``/``load_run``) always hold what glass computed;
* forward and backward are glass's: the model and the cross-entropy enter torch's loop as one
  autograd node each, whose ``backward`` calls the glass layers' ``backward``. torch's autograd
  only carries the scalar weights the loop puts on a loss (accumulation shares, mixup's lambda);
* the optimizer is glass's (SGD, Adam, AdamW or RMSprop, with the trainer's parameter groups),
  and validation and test run through glass's forward pass.

torch still loads the data and writes the files; it is needed for this command (not for
``convolab.glass`` itself).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from convolab.glass import rng
from convolab.glass.interop import check_convertible, from_torch
from convolab.glass.loss import CrossEntropyLoss
from convolab.glass.module import Module
from convolab.glass.optim import SGD, Adam, AdamW, Optimizer, RMSprop, clip_grad_norm
from convolab.glass.train import evaluate as glass_evaluate
from convolab.glass.train import skip_input_grad
from convolab.models import create_model, get_model_entry
from convolab.train.config import TrainConfig
from convolab.train.engines.base import Engine
from convolab.train.metrics import EvalResult

__all__ = ["NumpyEngine", "tie_weights"]


def tie_weights(glass_model: Module, torch_model: torch.nn.Module) -> None:
    """Make every parameter and buffer of ``torch_model`` a view of the glass array of the same name.

    Glass updates its arrays in place (optimizer steps, running statistics), so from then on the
    torch model always holds the glass weights, and ``torch_model.load_state_dict`` writes into them.
    """
    state = glass_model.state_dict()
    for prefix, module in torch_model.named_modules():
        for kind in ("_parameters", "_buffers"):
            for name, t in getattr(module, kind).items():
                if t is None:
                    continue
                key = f"{prefix}.{name}" if prefix else name
                array = state[key]
                if tuple(t.shape) != array.shape:
                    raise ValueError(f"tie_weights: {key}: torch has shape {tuple(t.shape)}, glass {array.shape}")
                if kind == "_parameters":
                    t.data = torch.from_numpy(array)
                else:
                    module._buffers[name] = torch.from_numpy(array)


class _ModelNode(torch.autograd.Function):
    """The glass model as one node of torch's graph: forward and backward are the glass layers'."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, x: torch.Tensor, model: Module) -> torch.Tensor:
        ctx.model = model
        return torch.from_numpy(model.forward(x.detach().numpy()))       # (N, num_classes)

    @staticmethod
    def backward(ctx, dlogits: torch.Tensor):
        ctx.model.backward(dlogits.contiguous().numpy())                # adds into the glass gradients
        return None, None, None


class _LossNode(torch.autograd.Function):
    """glass's cross-entropy as a node of torch's graph (a fresh criterion per call: mixup calls it twice)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        ctx.criterion = CrossEntropyLoss(label_smoothing=label_smoothing)
        return torch.tensor(ctx.criterion.forward(logits.detach().numpy(), y.numpy()), dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return torch.from_numpy(ctx.criterion.backward(float(grad))), None, None


def _convert(obj, leaf: type, fn):
    """Apply ``fn`` to every ``leaf`` inside nested dicts, lists and tuples."""
    if isinstance(obj, leaf):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _convert(v, leaf, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_convert(v, leaf, fn) for v in obj)
    return obj


def _tensors(obj):
    """NumPy arrays -> tensors (checkpoints are read with ``torch.load(weights_only=True)``)."""
    return _convert(obj, np.ndarray, lambda a: torch.from_numpy(a.copy()))


def _arrays(obj):
    """Tensors -> NumPy arrays (the glass optimizer's state)."""
    return _convert(obj, torch.Tensor, lambda t: t.numpy().copy())


def _torch_only_options(config: TrainConfig) -> list[str]:
    """The options of ``config`` that only the torch engine has."""
    flags = [f"--precision {config.precision}"] if config.precision not in ("32", "auto") else []
    flags += [flag for flag, on in (("--ema", config.ema), ("--tta", config.tta), ("--compile", config.compile),
                                    ("--grad-checkpointing", config.grad_checkpointing)) if on]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        flags.append("torchrun (several processes)")
    return flags


class NumpyEngine(Engine):
    """convolab.glass computes every step (see the module docstring); image classification on the CPU."""

    name = "numpy"
    device = torch.device("cpu")
    precision = "32"  # what --precision auto means here: glass computes in float32

    def __init__(self) -> None:
        self.glass: Module | None = None

    def check(self, config: TrainConfig) -> None:
        """Refuse options only the torch engine has, and a model with a layer glass cannot convert (named)."""
        torch_only = _torch_only_options(config)
        if torch_only:
            raise ValueError(f"--engine numpy does not do {', '.join(torch_only)}; drop "
                             f"{'it' if len(torch_only) == 1 else 'them'} or use --engine torch")
        entry = get_model_entry(config.model)
        if entry.input_kind != "image":
            raise ValueError(f"--engine numpy trains image classifiers; {config.model} is a {entry.input_kind} "
                             "model: use --engine torch")
        with torch.device("meta"):  # the structure only: nothing is allocated
            probe = create_model(config.model, **{**entry.default_cfg, **config.model_args()})  # with --act
        try:
            check_convertible(probe)
        except ValueError as e:
            raise ValueError(f"--engine numpy cannot train {config.model}: {e}") from None

    def attach(self, trainer) -> None:
        """The glass model (weights tied to the torch model's) and the glass optimizer, in place of torch's."""
        cfg = trainer.config
        self.label_smoothing = cfg.label_smoothing
        self.glass = from_torch(trainer.model)
        skip_input_grad(self.glass)  # no one needs dL/d(images)
        tie_weights(self.glass, trainer.model)
        trainer.optimizers[0] = self._glass_optimizer(cfg, trainer.model, trainer.optimizers[0])
        rng.manual_seed(cfg.seed)  # dropout masks
        self._anchor = torch.zeros((), requires_grad=True)  # makes the model node part of the graph

    def _glass_optimizer(self, cfg: TrainConfig, model: torch.nn.Module,
                         torch_optimizer: torch.optim.Optimizer) -> Optimizer:
        """The optimizer ``--optimizer`` names, over the same parameter groups as torch's (weight decay per group)."""
        names = {id(p): n for n, p in model.named_parameters()}
        pairs = {n: (p, g) for n, p, g in self.glass.named_parameters()}
        groups = [{"params": [pairs[names[id(p)]] for p in group["params"]], "weight_decay": group["weight_decay"]}
                  for group in torch_optimizer.param_groups]
        if cfg.optimizer == "sgd":
            return SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        if cfg.optimizer == "adam":
            return Adam(groups, lr=cfg.lr)
        if cfg.optimizer == "adamw":
            return AdamW(groups, lr=cfg.lr)
        if cfg.optimizer == "rmsprop":
            return RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)
        raise ValueError(f"--engine numpy has no optimizer {cfg.optimizer!r}")

    def forward(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.glass.training:
            self.glass.train()
        return _ModelNode.apply(self._anchor, x, self.glass)

    def loss(self, task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _LossNode.apply(outputs, targets, self.label_smoothing)

    def clip_grad_norm(self, params: list, max_norm: float) -> torch.Tensor:
        return torch.tensor(clip_grad_norm(params, max_norm))

    def evaluate(self, task, model: torch.nn.Module, loader, keep: bool = False) -> EvalResult:
        r = glass_evaluate(self.glass, ((x.numpy(), y.numpy()) for x, y in loader), keep_predictions=keep)
        result = EvalResult(r.loss, r.accuracy, r.n)
        if keep and r.n:
            result.predictions, result.probabilities, result.labels = (
                torch.from_numpy(r.predictions), torch.from_numpy(r.probabilities), torch.from_numpy(r.labels))
        return result

    def optimizer_state(self, state: dict) -> dict:
        return _tensors(state)

    def load_optimizer_state(self, state: dict) -> dict:
        return _arrays(state)

    def state_dict(self) -> dict:
        return rng.get_generator().bit_generator.state

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            rng.get_generator().bit_generator.state = state
