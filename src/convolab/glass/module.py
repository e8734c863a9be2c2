"""The layer contract of the NumPy engine: ``Module`` and ``Sequential``.

Every glass layer follows torch's ``nn.Module`` surface where it makes sense, and adds what
autograd would otherwise hide:

* ``forward(x)`` computes the output and remembers what its backward needs;
* ``backward(dout) -> dx`` takes dL/d(output), *adds* dL/d(parameter) into ``grads`` and returns
  dL/d(input);
* ``params`` and ``grads`` are dicts with the same keys (torch's parameter names: ``weight``,
  ``bias``); ``buffers`` holds state that is not trained (BatchNorm's running statistics);
* gradients accumulate until ``zero_grad()``; ``train()``/``eval()`` switch the mode (training by
  default, as in torch); ``input_grad = False`` lets the first layer skip dL/d(input);
* the dtype follows the input: parameters are kept in their own dtype (float32 by default, the
  "master" copy of mixed precision) and cast to the input's dtype for the computation.

Parameters and gradients are updated *in place* (``p -= lr * g``), so an optimizer can hold the
arrays themselves. ``load_state_dict`` copies into the existing arrays for the same reason.

Images are ``(N, C, H, W)`` like torch. Internally the convolution and pooling layers work on the
``(N, H, W, C)`` memory order and return arrays whose *shape* is ``(N, C, H, W)`` but whose memory is
channels-last (a transposed view, like torch's ``channels_last``): element-wise NumPy functions keep
that memory order, so the next layer finds its input already laid out the way it needs it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

import numpy as np

__all__ = ["Module", "Sequential", "Identity", "FLOAT_DTYPES", "check_float_input"]

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def check_float_input(module: Module, x: np.ndarray) -> np.ndarray:
    """``x`` as an ndarray of a floating dtype; a ``ValueError`` naming ``module`` otherwise."""
    x = np.asarray(x)
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{module.label}: expected a float16, float32 or float64 input, got {x.dtype} "
                         "(convert integer images to float first)")
    return x


class Module:
    """Base class of every glass layer, container and block.

    Sub-modules assigned as attributes (``self.conv1 = Conv2d(...)``) are registered in order, as in
    torch, and give the qualified names of ``state_dict()`` (``features.conv1.weight``).
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_parent", None)
        object.__setattr__(self, "_key", None)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training = True
        # False on the layer that receives the data (see convolab.glass.train.skip_input_grad): nothing needs
        # dL/d(input) there, so Conv2d and Linear skip computing it and return None (as torch does for an input
        # that does not require grad).
        self.input_grad = True
        self._out_shape: tuple[int, ...] | None = None  # shape of the last forward's output (checked in backward)

    # -- registration and names ----------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        modules = self.__dict__.get("_modules")
        if isinstance(value, Module):
            if modules is None:
                raise AttributeError("call Module.__init__() before assigning sub-modules")
            modules[name] = value
            object.__setattr__(value, "_parent", self)
            object.__setattr__(value, "_key", name)
        elif modules is not None and name in modules:
            del modules[name]  # e.g. ``self.downsample = None``
        object.__setattr__(self, name, value)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` under ``name`` (``None`` unregisters)."""
        if "." in name or not name:
            raise ValueError(f"module name must be non-empty and contain no '.'; got {name!r}")
        setattr(self, name, module)

    @property
    def path(self) -> str:
        """Dotted name inside the outermost container (``features.conv1``); ``""`` for the outermost."""
        parts = []
        m = self
        while m._parent is not None:
            parts.append(m._key)
            m = m._parent
        return ".".join(reversed(parts))

    @property
    def label(self) -> str:
        """How error messages name this layer: ``Conv2d 'features.conv1'``."""
        path = self.path
        return f"{type(self).__name__} {path!r}" if path else type(self).__name__

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, with dotted names (``""`` for this one)."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    # -- the computation ------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def _remember_output(self, out: np.ndarray) -> np.ndarray:
        """Record the output's shape, so that ``backward`` can check ``dout`` against it."""
        self._out_shape = out.shape
        return out

    def _check_dout(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` must have the shape of the last forward's output (and a forward must have run)."""
        if self._out_shape is None:
            raise RuntimeError(f"{self.label}: backward() called before forward()")
        dout = np.asarray(dout)
        if dout.shape != self._out_shape:
            raise ValueError(f"{self.label}: backward expected a gradient of shape {self._out_shape} "
                             f"(the forward output), got {dout.shape}")
        return dout

    def _param(self, key: str, dtype: np.dtype) -> np.ndarray:
        """Parameter ``key`` in the computation's dtype (no copy when it already is)."""
        p = self.params[key]
        return p if p.dtype == dtype else p.astype(dtype)

    def _accumulate(self, key: str, grad: np.ndarray) -> None:
        """``grads[key] += grad``, in the gradient's own (master) dtype."""
        np.add(self.grads[key], grad, out=self.grads[key], casting="unsafe")

    def _new_param(self, key: str, value: np.ndarray) -> None:
        """Register a parameter and its zeroed gradient."""
        self.params[key] = value
        self.grads[key] = np.zeros_like(value)

    # -- training state -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (batch statistics, dropout on) for this module and all below it; returns self."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (running statistics, dropout off); returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place."""
        for m in self.modules():
            for g in m.grads.values():
                g.fill(0)

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(param, grad)`` array pairs of this module and all below it, for the optimizers."""
        return [(m.params[k], m.grads[k]) for m in self.modules() for k in m.params]

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(qualified name, param, grad)`` for every parameter (torch's names)."""
        for prefix, m in self.named_modules():
            for k in m.params:
                yield (f"{prefix}.{k}" if prefix else k), m.params[k], m.grads[k]

    def num_parameters(self) -> int:
        return sum(p.size for p, _ in self.parameters())

    def to(self, dtype) -> Module:
        """Cast parameters, gradients and floating buffers to ``dtype`` (new arrays: rebuild optimizers)."""
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be float16, float32 or float64; got {dtype}")
        for m in self.modules():
            for k in m.params:
                m.params[k] = m.params[k].astype(dtype)
                m.grads[k] = m.grads[k].astype(dtype)
            for k, b in m.buffers.items():
                if b.dtype.kind == "f":
                    m.buffers[k] = b.astype(dtype)
        return self

    # -- weights --------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameters and buffers under torch's qualified names (the arrays themselves, not copies)."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for prefix, m in self.named_modules():
            for k, v in (*m.params.items(), *m.buffers.items()):
                state[f"{prefix}.{k}" if prefix else k] = v
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy ``state`` (name -> array) into the parameters and buffers, in place.

        Raises:
            ValueError: a shape differs (the message names the entry, the expected and the received
                shape), or with ``strict`` a name is missing or unexpected.
        """
        own = self.state_dict()
        if strict:
            missing = [k for k in own if k not in state]
            unexpected = [k for k in state if k not in own]
            if missing or unexpected:
                raise ValueError(f"state dict does not fit {type(self).__name__}: missing {missing[:5]}"
                                 f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                                 f"{' ...' if len(unexpected) > 5 else ''}")
        for k, value in state.items():
            if k not in own:
                continue
            value = np.asarray(value)
            if value.shape != own[k].shape:
                raise ValueError(f"{k}: expected shape {own[k].shape}, got {value.shape}")
            own[k][...] = value  # in place: optimizers keep their references

    def __repr__(self) -> str:
        extra = self.extra_repr()
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}({extra}"]
        for name, child in self._modules.items():
            lines.append("  (" + name + "): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"

    def extra_repr(self) -> str:
        return ""


class Sequential(Module):
    """Modules applied one after the other; ``backward`` runs them in reverse.

    ``Sequential(a, b, c)`` names them ``"0"``, ``"1"``, ``"2"``; ``Sequential(OrderedDict(...))``
    keeps the given names (torch's two forms).

    Forward: ``y = f_n(... f_2(f_1(x)))``. Backward (chain rule): ``dx = J_1^T (J_2^T (... J_n^T dy))``,
    each ``J_i^T`` being ``f_i.backward``.
    """

    def __init__(self, *modules: Module | Mapping[str, Module]):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise ValueError(f"Sequential: {name} is a {type(m).__name__}, not a glass Module")
            self.add_module(name, m)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for m in self._modules.values():
            x = m.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for m in reversed(self._modules.values()):
            dout = m.backward(dout)
        return dout

    def __getitem__(self, index: int | str) -> Module:
        if isinstance(index, str):
            return self._modules[index]
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Identity(Module):
    """``y = x``; ``dx = dy``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._remember_output(np.asarray(x))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self._check_dout(dout)
