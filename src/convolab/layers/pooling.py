"""Poolings beyond max and average: global, fractional max (Graham 2014) and stochastic (Zeiler & Fergus 2013).

Plain ``nn.Module``s with int/float/str/bool constructor arguments (the network-spec grammar builds them
by name). ``convolab.glass.pool`` has the same layers in NumPy with their backward passes written out;
the two draw from different generators (torch's, the glass one) but pool identically for the same
sample, which each layer takes through its ``samples`` attribute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convolab.glass.im2col import pair
from convolab.glass.pool import FractionalSettings, fractional_eval_samples

__all__ = ["GlobalAvgPool2d", "GlobalMaxPool2d", "FractionalMaxPool2d", "StochasticPool2d"]


def _check_4d(module: nn.Module, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{type(module).__name__}: expected input of shape (N, C, H, W), got {tuple(x.shape)}")


class _GlobalPool2d(nn.Module):
    """One value per channel of the whole map: output (N, C, 1, 1), or (N, C) with ``flatten=True``."""

    def __init__(self, flatten: bool = False):
        super().__init__()
        self.flatten = bool(flatten)

    def extra_repr(self) -> str:
        return "flatten=True" if self.flatten else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d(self, x)
        y = self.pool(x)  # (N, C, 1, 1)
        return y.flatten(1) if self.flatten else y


class GlobalAvgPool2d(_GlobalPool2d):
    """Mean over the whole map (Lin et al., 2014): ``y[n, c] = (1 / HW) sum_{h,w} x[n, c, h, w]``."""

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class GlobalMaxPool2d(_GlobalPool2d):
    """Max over the whole map: ``y[n, c] = max_{h,w} x[n, c, h, w]`` (the gradient goes to the maximum)."""

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(x, 1)


class FractionalMaxPool2d(FractionalSettings, nn.Module):
    """Fractional max pooling (Graham, 2014): max over regions of ``floor(alpha)`` or ``ceil(alpha)`` pixels,
    ``alpha = H_in / H_out``, which shrinks a map by a non-integer factor (sqrt(2) in the paper).

    Per axis, boundaries ``0 = a_0 < a_1 < ... < a_n = H_in``:

    * ``sequence="pseudo_random"``: ``a_i = ceil(alpha (i + u)) - ceil(alpha u)``, ``u`` uniform in [0, 1);
    * ``sequence="random"``: the increments ``a_i - a_{i-1}`` (``H_in mod H_out`` of them ``ceil(alpha)``,
      the rest ``floor(alpha)``) in a random order, the permutation sorting uniform keys;

    regions ``[a_{i-1}, a_i - 1]`` (disjoint) or ``[a_{i-1}, a_i]`` (``overlapping=True``, the last clipped
    to the map), and ``y[n, c, i, j] = max over rows of region i x columns of region j``.

    ``kernel_size=k`` pools ``k x k`` windows at torch's starts instead (``nn.FractionalMaxPool2d``:
    ``s_i = int((i + u) alpha') - int(u alpha')``, ``alpha' = (H_in - k) / (H_out - 1)``, ``s_{n-1} = H_in - k``).
    ``H_out`` is ``output_size`` or ``int(H_in * output_ratio)``.

    Randomness: in training each (n, c) plane draws its sample from torch's generator (the global one;
    ``generator`` if set): ``u`` of shape (N, C, 2) ([u_W, u_H], torch's ``_random_samples`` layout) or keys
    (N, C, 2, max(H_out, W_out)) for ``sequence="random"``. In evaluation every plane uses the fixed sample
    ``convolab.glass.pool.fractional_eval_samples(seed, ...)``, so the output is deterministic and equal to
    the glass layer's. Setting ``samples`` fixes the sample in both modes.
    """

    def __init__(self, output_size: int | tuple[int, int] | None = None,
                 output_ratio: float | tuple[float, float] | None = None,
                 kernel_size: int | tuple[int, int] | None = None, sequence: str = "pseudo_random",
                 overlapping: bool = False, seed: int = 0):
        super().__init__()
        self._configure(output_size, output_ratio, kernel_size, sequence, overlapping, seed)
        self.samples: torch.Tensor | None = None
        self.generator: torch.Generator | None = None

    def _sample(self, x: torch.Tensor, length: int) -> torch.Tensor:
        n, c = x.shape[:2]
        shape = (2,) if self.sequence == "pseudo_random" else (2, length)
        if self.samples is not None:
            samples = torch.as_tensor(self.samples, dtype=torch.float64, device=x.device)
            if tuple(samples.shape[2:]) != shape or tuple(samples.shape[:2]) not in ((n, c), (1, 1)):
                raise ValueError(f"FractionalMaxPool2d: samples must have shape {(n, c, *shape)}; "
                                 f"got {tuple(samples.shape)}")
            return samples
        if self.training:
            return torch.rand((n, c, *shape), dtype=torch.float64, device=x.device, generator=self.generator)
        fixed = fractional_eval_samples(self.seed, 2 if len(shape) == 1 else 2 * length)
        return torch.tensor(fixed, dtype=torch.float64, device=x.device).reshape(1, 1, *shape)

    def _regions(self, size: int, out: int, samples: torch.Tensor, axis: int, dtype: torch.dtype) -> torch.Tensor:
        """Indices of every region along one axis, (P1, P2, out, kmax); short regions repeat their last index."""
        device = samples.device
        if self.kernel_size is not None:
            k = self.kernel_size[axis]
            u = samples[..., 1 - axis].to(dtype)[..., None]                       # [..., 0] is W, [..., 1] is H
            starts = torch.full((*u.shape[:2], out), size - k, dtype=torch.int64, device=device)
            if out > 1:  # in the input's dtype, as torch's kernel computes it
                alpha = torch.tensor(size - k, dtype=dtype) / torch.tensor(out - 1, dtype=dtype)
                i = torch.arange(out - 1, dtype=dtype, device=device)
                starts[..., :-1] = ((i + u) * alpha.to(device)).long() - (u * alpha.to(device)).long()
            return starts[..., None] + torch.arange(k, device=device)
        u = samples[:, :, 1 - axis]                                               # (P1, P2) or (P1, P2, L)
        if self.sequence == "pseudo_random":
            alpha = size / out
            i = torch.arange(out + 1, dtype=torch.float64, device=device)
            bounds = torch.ceil(alpha * (i + u[..., None])).long() - torch.ceil(alpha * u[..., None]).long()
            bounds[..., -1] = size
        else:
            q, r = divmod(size, out)
            steps = torch.where(torch.arange(out, device=device) < out - r, q, q + 1)
            order = torch.argsort(u[..., :out], dim=-1, stable=True)
            increments = steps[order]
            bounds = F.pad(torch.cumsum(increments, dim=-1), (1, 0))
        start, end = bounds[..., :-1], bounds[..., 1:]
        if self.overlapping:
            end = torch.clamp(end + 1, max=size)
        length = end - start
        kmax = min(-(-size // out) + int(self.overlapping), size)  # longest region, known without a device sync
        return start[..., None] + torch.minimum(torch.arange(kmax, device=device), length[..., None] - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d(self, x)
        n, c, h, w = x.shape
        oh, ow = self.out_size(h, w)
        samples = self._sample(x, max(oh, ow))
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        rows = self._regions(h, oh, samples, 0, dtype)                            # (P, P, oh, kh)
        cols = self._regions(w, ow, samples, 1, dtype)                            # (P, P, ow, kw)
        kh, kw = rows.shape[-1], cols.shape[-1]
        plane = (torch.arange(n, device=x.device)[:, None] * c + torch.arange(c, device=x.device)) * h
        flat_rows = (plane[:, :, None, None] + rows) * w                          # (N, C, oh, kh)
        flat = flat_rows[:, :, :, None, :, None] + cols[:, :, None, :, None, :]   # (N, C, oh, ow, kh, kw)
        values = x.reshape(-1)[flat.reshape(n, c, oh, ow, kh * kw)]               # (N, C, oh, ow, kh*kw)
        return values.max(dim=-1).values


class StochasticPool2d(nn.Module):
    """Stochastic pooling (Zeiler & Fergus, 2013): sample one activation per window in training, the
    probability-weighted average in evaluation.

    Meant for non-negative activations (after a ReLU); the weights are ``w_i = max(a_i, 0)``. For a
    ``kernel_size`` window at ``stride`` (no padding, ``H_out = floor((H - k) / s) + 1``) with
    ``S = sum_i w_i``:

    * training: ``y = a_t`` with probability ``p_t = w_t / S`` (inverse CDF: ``t`` is the first window
      offset, row-major, with ``cumsum(w)_t > r S``, ``r`` uniform in [0, 1)); ``y = 0`` when ``S = 0``.
      The gradient goes to the sampled element.
    * evaluation: ``y = sum_i p_i a_i = sum_i w_i^2 / S`` (0 when ``S = 0``).

    ``samples``: an (N, C, H_out, W_out) tensor of the uniforms ``r`` fixes the draw (``None``: torch's
    generator, or ``generator`` if set). ``last_index`` keeps the sampled offsets of the last training pass.
    """

    def __init__(self, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(kernel_size if stride is None else stride, "stride")
        if min(self.kernel_size + self.stride) < 1:
            raise ValueError("StochasticPool2d: kernel_size and stride must be >= 1")
        self.samples: torch.Tensor | None = None
        self.generator: torch.Generator | None = None
        self.last_index: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d(self, x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        if h < kh or w < kw:
            raise ValueError(f"StochasticPool2d: input of shape {tuple(x.shape)} is smaller than the "
                             f"{self.kernel_size} window")
        windows = F.unfold(x, self.kernel_size, stride=self.stride).reshape(n, c, kh * kw, ho, wo)  # (N, C, K, Ho, Wo)
        weights = F.relu(windows)
        total = weights.sum(dim=2)                                                # (N, C, Ho, Wo): S
        if not self.training:
            return (weights * weights).sum(dim=2) / torch.where(total > 0, total, torch.ones_like(total))
        if self.samples is not None:
            r = torch.as_tensor(self.samples, device=x.device).to(x.dtype)
            if tuple(r.shape) != (n, c, ho, wo):
                raise ValueError(f"StochasticPool2d: samples must have shape {(n, c, ho, wo)}; got {tuple(r.shape)}")
        else:
            r = torch.rand((n, c, ho, wo), dtype=x.dtype, device=x.device, generator=self.generator)
        index = (torch.cumsum(weights, dim=2) <= (r * total)[:, :, None]).sum(dim=2, keepdim=True)
        index = index.clamp(max=kh * kw - 1)                                      # (N, C, 1, Ho, Wo)
        self.last_index = index[:, :, 0].detach()
        chosen = windows.gather(2, index)[:, :, 0]                                # (N, C, Ho, Wo)
        return torch.where(total > 0, chosen, torch.zeros_like(chosen))
