"""Optimizers (``SGD``, ``Adam``, ``AdamW``, ``RMSprop``), a step learning-rate schedule and gradient clipping.

Each follows torch's update rule exactly (the tests step both side by side). An optimizer takes
``model.parameters()`` -- ``(param, grad)`` array pairs -- or a list of groups
``[{"params": pairs, "lr": ...}, ...]`` like torch, and updates the parameters *in place*.
``param_groups[i]["lr"]`` is what schedules change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "StepLR", "clip_grad_norm"]

Pair = tuple[np.ndarray, np.ndarray]


class Optimizer:
    """Holds parameter groups (dicts of hyper-parameters plus ``params``) and per-parameter state."""

    def __init__(self, params: Iterable[Pair] | Iterable[dict], defaults: dict):
        if defaults.get("lr", 0) < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0; got {defaults['lr']}")
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict] = []
        for g in groups:
            pairs = [tuple(pair) for pair in g["params"]]
            for p, grad in pairs:
                if p.shape != grad.shape:
                    raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} has a gradient of "
                                     f"shape {grad.shape}")
            self.param_groups.append({**defaults, **g, "params": pairs})
        self.state: dict[int, dict] = {}  # id(param) -> that parameter's buffers

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every gradient in place (``set_to_none`` is accepted for torch's signature: glass gradients
        are always arrays, which the layers add into)."""
        for group in self.param_groups:
            for _, g in group["params"]:
                g.fill(0)

    def state_dict(self) -> dict:
        """torch's layout: ``{"state": {index: {name: array or number}}, "param_groups": [{..., "params": [index]}]}``,
        parameters numbered in group order; arrays are copies."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p, _ in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[pid]: {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in s.items()}
                 for pid, s in self.state.items() if pid in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and buffers saved by :meth:`state_dict` (arrays or anything ``np.array``
        converts, such as CPU tensors), for the same parameters in the same order.

        Raises:
            ValueError: the groups or their sizes differ.
        """
        saved = state_dict["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"{type(self).__name__}: the saved state has groups of "
                             f"{[len(g['params']) for g in saved]} parameters, this optimizer "
                             f"{[len(g['params']) for g in self.param_groups]}")
        params = [p for group in self.param_groups for p, _ in group["params"]]
        for group, s in zip(self.param_groups, saved):
            group.update({k: v for k, v in s.items() if k != "params"})
        self.state = {}
        for i, buffers in state_dict["state"].items():
            p = params[int(i)]
            self.state[id(p)] = {k: v if isinstance(v, (int, float)) else np.array(v, dtype=p.dtype).reshape(p.shape)
                                 for k, v in buffers.items()}

    def step(self) -> None:
        """One update of every parameter from its current gradient."""
        for group in self.param_groups:
            for p, g in group["params"]:
                self._update(p, g, group, self.state.setdefault(id(p), {}))

    def _update(self, p: np.ndarray, g: np.ndarray, group: dict, state: dict) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (torch's form), Nesterov's variant and L2 weight decay::

        g <- g + weight_decay * p
        b <- g (first step),  b <- momentum * b + (1 - dampening) * g (later)
        g <- g + momentum * b  (nesterov)  or  g <- b  (momentum > 0)
        p <- p - lr * g
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def _update(self, p, g, group, state):
        d = g + group["weight_decay"] * p if group["weight_decay"] else g
        mu = group["momentum"]
        if mu:
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = d.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= mu
                buf += (1 - group["dampening"]) * d
            d = d + mu * buf if group["nesterov"] else buf
        p -= group["lr"] * d


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with torch's bias correction and L2 weight decay::

        g <- g + weight_decay * p;   t <- t + 1
        m <- b1 m + (1 - b1) g;      v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1); got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        b1, b2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
        state["step"] += 1
        t = state["step"]
        if wd and self.decoupled:
            p *= 1 - lr * wd                                  # AdamW: decay the weights, not the gradient
        elif wd:
            g = g + wd * p
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t)
        denom += group["eps"]
        p -= (lr / (1 - b1 ** t)) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``p <- p * (1 - lr * weight_decay)``
    before the Adam step, instead of adding ``weight_decay * p`` to the gradient. torch's default decay 0.01."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e) as torch writes it::

        g <- g + weight_decay * p
        s <- alpha s + (1 - alpha) g^2;    a <- sqrt(s) + eps
        b <- momentum b + g / a;  p <- p - lr * b      (momentum > 0)
        p <- p - lr * g / a                             (otherwise)
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum))

    def _update(self, p, g, group, state):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        if not state:
            state.update(square_avg=np.zeros_like(p), momentum_buffer=np.zeros_like(p))
        s = state["square_avg"]
        s *= group["alpha"]
        s += (1 - group["alpha"]) * (g * g)
        avg = np.sqrt(s)
        avg += group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += g / avg
            p -= group["lr"] * buf
        else:
            p -= group["lr"] * (g / avg)


class StepLR:
    """Multiply every group's learning rate by ``gamma`` every ``step_size`` calls of ``step()`` (torch's StepLR).

    ``lr_e = base_lr * gamma ** (e // step_size)`` after ``e`` calls (one per epoch, usually).
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1; got {step_size}")
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = 0

    def step(self) -> None:
        self.last_epoch += 1
        factor = self.gamma ** (self.last_epoch // self.step_size)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


def clip_grad_norm(params: Iterable[Pair], max_norm: float) -> float:
    """Scale all gradients in place so that their joint L2 norm is at most ``max_norm`` (torch's
    ``clip_grad_norm_``: factor ``min(1, max_norm / (norm + 1e-6))``); returns the norm before clipping."""
    pairs = list(params)
    total = math.sqrt(sum(float(np.vdot(g, g)) for _, g in pairs))
    factor = max_norm / (total + 1e-6)
    if factor < 1:
        for _, g in pairs:
            g *= factor
    return total
