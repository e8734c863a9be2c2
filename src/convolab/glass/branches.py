"""The network-spec grammar's blocks with parallel paths (``convolab.layers.branches``), with their backward
passes: the residual sum, the concatenation of branches and the dense concatenation.

The rule at a fork (see ``convolab.glass.blocks``): an input used by several paths receives the *sum* of the
gradients coming back along each; a concatenation hands each part its own slice of the gradient.
Names match the torch blocks (``body``, ``shortcut``, ``branch1`` ...), so weights copy one to one.
"""

from __future__ import annotations

import numpy as np

from convolab.glass.module import Identity, Module, Sequential

__all__ = ["Residual", "Concat", "DenseConcat"]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate (N, C_i, ...) arrays along the channel axis."""
    return np.concatenate(parts, axis=1)


class Residual(Module):
    """``y = body(x) + shortcut(x)``.

    Backward: ``dx = body.backward(dy) + shortcut.backward(dy)`` (the sum passes ``dy`` to both terms, and x fed
    both paths, so their gradients add).
    """

    def __init__(self, body: Sequential, shortcut: Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else Identity()

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, skip = self.body(x), self.shortcut(x)
        if out.shape != skip.shape:
            raise ValueError(f"{self.label}: the body gives {out.shape} but the shortcut {skip.shape}")
        return out + skip

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.body.backward(dout) + self.shortcut.backward(dout)


class Concat(Module):
    """``y = [b_1(x), b_2(x), ...]`` along the channels.

    Backward: branch ``i`` gets its slice ``dy[:, c_i : c_i + C_i]`` of the gradient, and ``dx`` is the sum of
    what the branches send back.
    """

    def __init__(self, branches: list[Sequential]):
        super().__init__()
        for i, branch in enumerate(branches, 1):
            setattr(self, f"branch{i}", branch)
        self._widths: list[int] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        outs = [branch(x) for branch in self.children()]
        self._widths = [o.shape[1] for o in outs]
        return _cat(outs)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        edges = np.cumsum([0, *self._widths])
        dx = None
        for branch, a, b in zip(self.children(), edges[:-1], edges[1:]):
            d = branch.backward(np.ascontiguousarray(dout[:, a:b]))
            dx = d if dx is None else dx + d
        return dx


class DenseConcat(Module):
    """``y = [x, body(x)]`` along the channels.

    Backward: ``dx = dy[:, :C] + body.backward(dy[:, C:])`` (x is both the first part and the body's input).
    """

    def __init__(self, body: Sequential):
        super().__init__()
        self.body = body
        self._in_width = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._in_width = x.shape[1]
        return _cat([x, self.body(x)])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        c = self._in_width
        return dout[:, :c] + self.body.backward(np.ascontiguousarray(dout[:, c:]))
