"""Pictures of what a CNN computes: first-layer kernels, feature maps, activation maximization.

Each picture has a data function (arrays and tensors a test or the HTML report can use) and a
``*_figure`` function that draws it with matplotlib and returns the ``Figure`` unsaved (save it with
:func:`convolab.plotting.save_figure`, which writes atomically and closes it):

- :func:`kernel_grid` / :func:`kernel_figure`: the first convolution's filters, each normalised on its
  own (Zeiler & Fergus 2014, Fig. 2; Krizhevsky et al. 2012, Fig. 3).
- :func:`feature_maps` / :func:`feature_map_figure`: every channel of chosen layers for one image,
  recorded by forward hooks during one ordinary forward pass.
- :func:`activation_maximization` / :func:`activation_maximization_figure`: inputs that excite a unit
  most, found by gradient ascent from noise with L2 and total-variation penalties and random jitter
  (Erhan et al. 2009; Simonyan et al. 2014; Mahendran & Vedaldi 2015; Olah et al., "Feature
  Visualization", Distill 2017).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from convolab.explain.inputs import unique_stem  # noqa: E402
from convolab.explain.layers import (  # noqa: E402
    conv_layers,
    feature_layers,
    first_conv,
    layer_choices,
    resolve_layer,
)

__all__ = ["KernelGrid", "kernel_grid", "kernel_figure", "feature_maps", "feature_map_figure",
           "ActivationMaximization", "activation_maximization", "activation_maximization_figure", "mosaic",
           "viz_run"]


# -- shared ---------------------------------------------------------------------------------------
def mosaic(tiles: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """Tiles (T, h, w, ch) -> one (rows*(h+pad)-pad, cols*(w+pad)-pad, ch) float image; gutters are NaN."""
    t, h, w, ch = tiles.shape
    cols = max(1, min(cols, t))
    rows = math.ceil(t / cols)
    canvas = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, ch), np.nan, np.float32)
    for k in range(t):
        r, c = divmod(k, cols)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = tiles[k]
    return canvas


def _show(ax, image: np.ndarray, cmap: str = "gray", vmin: float = 0.0, vmax: float = 1.0) -> None:
    """Draw a mosaic from :func:`mosaic` (ch 1: colormapped; ch 3: RGB) with its NaN gutters blank."""
    ax.set_axis_off()
    if image.shape[-1] == 1:
        cm = plt.get_cmap(cmap).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
        ax.imshow(np.ma.masked_invalid(image[..., 0]), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    else:
        rgba = np.concatenate([np.nan_to_num(image, nan=0.0), (~np.isnan(image[..., :1])).astype(np.float32)], -1)
        ax.imshow(np.clip(rgba, 0, 1), interpolation="nearest")


def _fig_size(image: np.ndarray, max_inches: float = 10.0, min_inches: float = 2.5) -> tuple[float, float]:
    h, w = image.shape[:2]
    scale = min(max_inches / w, max_inches / h, 0.25)  # at most 0.25 inch per pixel: 3x3 kernels stay readable
    return max(min_inches, w * scale), max(min_inches, h * scale)


# Elementwise, monotone (or nearly) activations: activation maximization ascends their input.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
                nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


def _output_tensor(name: str, output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    raise ValueError(f"layer {name!r} outputs {type(output).__name__}, not a tensor; pick another layer")


# -- kernels --------------------------------------------------------------------------------------
@dataclass
class KernelGrid:
    """A convolution's filters as image tiles, each filter normalised to 0..1 on its own."""

    layer: str  # the convolution's name in model.named_modules()
    weight_shape: tuple[int, ...]  # (out_channels, in_channels / groups, kh, kw)
    tiles: np.ndarray  # (T, kh, kw, 1 or 3) in 0..1; one tile per filter, or per (filter, input channel)
    cols: int  # tiles per row of the mosaic
    per_channel: bool  # True when each input channel of a filter has its own tile (in_channels not 1 or 3)
    diverging: bool  # True: 0.5 is a zero weight; False: 0 and 1 are the filter's min and max

    def mosaic(self, pad: int = 1) -> np.ndarray:
        """The tiles laid out in a grid (NaN gutters)."""
        return mosaic(self.tiles, self.cols, pad)

    @property
    def title(self) -> str:
        o, c, kh, kw = self.weight_shape[:4]
        what = "per filter and input channel" if self.per_channel else "per filter"
        return f"{self.layer}: {o} filters of {c}x{kh}x{kw} (normalised {what})"


def kernel_grid(model: nn.Module, layer: str | None = None, *, diverging: bool = False,
                max_channels: int = 8) -> KernelGrid:
    """The filters of ``layer`` (default: the first convolution) as normalised tiles.

    A 1-channel filter is one grey tile and a 3-channel filter one RGB tile (its channels in the
    image's channel order). Otherwise each of the first ``max_channels`` input channels gets a grey
    tile and a filter fills a row. Each filter is normalised on its own, over all its channels, so
    an RGB filter keeps its colours: ``(w - min) / (max - min)``, or with ``diverging``
    ``0.5 + 0.5 * w / max|w|`` (a zero weight is mid-grey, or white in the diverging colormap).

    Raises:
        ValueError: the layer is not a 2-D convolution.
    """
    name, conv = first_conv(model) if layer is None else resolve_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{name!r} is a {type(conv).__name__}, not a Conv2d; convolutions: "
                         + ", ".join(c for c in conv_layers(model)[:12]))
    w = conv.weight.detach().float().cpu()  # (O, C, kh, kw)
    o, c, kh, kw = w.shape
    flat = w.reshape(o, -1)
    if diverging:
        scale = flat.abs().amax(1).clamp_min(1e-12)
        norm = 0.5 + 0.5 * w / scale[:, None, None, None]
    else:
        lo, hi = flat.amin(1), flat.amax(1)
        span = hi - lo
        norm = torch.where(span[:, None, None, None] > 0, (w - lo[:, None, None, None])
                           / span.clamp_min(1e-12)[:, None, None, None], torch.full_like(w, 0.5))
    norm = norm.numpy()
    if c in (1, 3):
        tiles = norm.transpose(0, 2, 3, 1)  # (O, kh, kw, C)
        return KernelGrid(name, tuple(w.shape), tiles, math.ceil(math.sqrt(o)), False, diverging)
    shown = min(c, max_channels)
    tiles = norm[:, :shown].reshape(o * shown, kh, kw, 1)  # filter-major: one row per filter
    return KernelGrid(name, tuple(w.shape), tiles, shown, True, diverging)


def kernel_figure(grid: KernelGrid, cmap: str | None = None):
    """The kernel mosaic, titled with the layer and the weight shape (grey, or ``RdBu_r`` when diverging)."""
    image = grid.mosaic()
    fig, ax = plt.subplots(figsize=_fig_size(image))
    _show(ax, image, cmap or ("RdBu_r" if grid.diverging else "gray"))
    ax.set_title(grid.title, fontsize=9)
    return fig


# -- feature maps ---------------------------------------------------------------------------------
def feature_maps(model: nn.Module, x: torch.Tensor,
                 layers: str | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` (default: the ``feature_info`` stages) for the normalised batch ``x``.

    One forward pass with a forward hook on each layer; each output is cloned as it is produced, so
    an in-place operation later in the network (``ReLU(inplace=True)`` after a BatchNorm) cannot
    change it. ``x`` is (N, C, H, W) or one image (C, H, W). Returns detached tensors in the order
    the layers were asked for.
    """
    if x.dim() == 3:
        x = x[None]
    if layers is None:
        layers = feature_layers(model) or conv_layers(model)
    elif isinstance(layers, str):
        layers = [layers]
    names = [resolve_layer(model, name)[0] for name in layers]
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in dict.fromkeys(names):
        def hook(_module, _inputs, output, name=name):
            captured[name] = _output_tensor(name, output).detach().clone()
        handles.append(resolve_layer(model, name)[1].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in captured]
    if missing:
        raise ValueError(f"layer{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                         f"{'do' if len(missing) > 1 else 'does'} not run in {type(model).__name__}'s forward pass, "
                         f"so {'they have' if len(missing) > 1 else 'it has'} no maps; name layers the prediction "
                         f"goes through ({layer_choices(model)})")
    return {n: captured[n] for n in names}


def _channel_tiles(act: torch.Tensor, max_channels: int) -> np.ndarray:
    """One image's activation (C, H, W) -> (min(C, max_channels), H, W, 1), each channel min-max scaled."""
    a = act[:max_channels].float().cpu()
    lo = a.amin((1, 2), keepdim=True)
    hi = a.amax((1, 2), keepdim=True)
    scaled = torch.where(hi > lo, (a - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(a))  # flat: 0
    return scaled.numpy()[..., None]


def _image_tile(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image (C, H, W), uint8 or float, -> (H, W, 1 or 3) in 0..1 for display."""
    # a copy: the caller's array may be read-only
    img = image.detach().cpu().float() if isinstance(image, torch.Tensor) else torch.tensor(np.array(image)).float()
    if img.dim() == 2:
        img = img[None]
    if img.dtype == torch.uint8 or img.max() > 1.5:
        img = img / 255
    if img.shape[0] not in (1, 3):
        img = img.mean(0, keepdim=True)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    return img.permute(1, 2, 0).numpy()


def feature_map_figure(maps: dict[str, torch.Tensor], image: np.ndarray | torch.Tensor | None = None, *,
                       index: int = 0, max_channels: int = 32, cols: int = 16, cmap: str = "viridis"):
    """A row per layer: the first ``max_channels`` channels of image ``index``, each scaled to its own range.

    ``image`` (C, H, W) is drawn first when given (uint8 pixels, or anything scaled to its range).
    A channel that is constant (a dead ReLU) is drawn at the bottom of the colormap.
    """
    panels: list[tuple[str, np.ndarray, str]] = []
    if image is not None:
        tile = _image_tile(image)
        panels.append((f"input {tile.shape[0]}x{tile.shape[1]}", tile, "gray"))
    for name, act in maps.items():
        a = act[index]
        if a.dim() != 3:
            raise ValueError(f"layer {name!r} gives {tuple(act.shape)}, not (N, C, H, W) maps; "
                             "pick a convolutional layer")
        c, h, w = a.shape
        tiles = _channel_tiles(a, max_channels)
        shown = f"first {len(tiles)} of {c} channels" if len(tiles) < c else f"{c} channels"
        panels.append((f"{name}: {c}x{h}x{w} ({shown})", mosaic(tiles, cols), cmap))
    width = 9.0
    # Row heights in inches: a mosaic fills the width; the input image is kept small.
    heights = [min(width * p[1].shape[0] / max(p[1].shape[1], 1), 1.6 if k == 0 and image is not None else 8.0)
               for k, p in enumerate(panels)]
    heights = [max(0.5, h) for h in heights]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights) + 0.35 * len(panels)),
                             gridspec_kw=dict(height_ratios=heights), squeeze=False)
    for ax, (title, img, cm) in zip(axes[:, 0], panels):
        _show(ax, img, cm)
        ax.set_anchor("W")
        ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


# -- activation maximization ----------------------------------------------------------------------
@dataclass
class ActivationMaximization:
    """Inputs optimised to excite units of a layer, one image per unit."""

    layer: str
    units: list[int]
    images: torch.Tensor  # (U, C, H, W) in the model's normalised space
    pixels: torch.Tensor  # (U, C, H, W) the same images on the 0..1 pixel scale
    activations: list[float]  # each unit's activation for its image (no jitter)
    initial_activations: list[float]  # the same for the starting noise
    steps: int


def _unit_activations(out: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Layer output (U, C, ...) -> (U,): image i's activation of channel ``units[i]``, averaged over positions."""
    picked = out[torch.arange(len(units)), units]  # (U, ...)
    return picked.reshape(len(units), -1).mean(1)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels, per image (U,)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).flatten(1).mean(1) if x.shape[2] > 1 else x.new_zeros(len(x))
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).flatten(1).mean(1) if x.shape[3] > 1 else x.new_zeros(len(x))
    return dh + dw


def activation_maximization(model: nn.Module, layer: str | None = None, units: int | Sequence[int] = 8, *,
                            steps: int = 200, lr: float = 0.05, l2: float = 1e-3, tv: float = 0.05,
                            jitter: int | None = None, input_size: Sequence[int] | None = None,
                            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                            seed: int = 0) -> ActivationMaximization:
    """Gradient ascent on the input to excite each unit (channel) of ``layer``, from noise.

    Each image ``x`` (normalised space) maximises ``a_u(x) - l2 * mean(x^2) - tv * TV(x)`` with Adam,
    where ``a_u`` is channel ``u`` of the layer's output averaged over its positions (Lucid's
    "channel" objective; a linear layer's unit is its value). Every step shifts the image by a random
    offset of up to ``jitter`` pixels (default: 1/16 of its side; none below 16 pixels), which stops the
    optimiser from hiding the answer in high-frequency patterns (Mordvintsev et al. 2015), then clips
    it to the valid pixel range ``[(0 - mean) / std, (1 - mean) / std]`` per channel. The model's
    weights are not touched (the gradient is taken with respect to the input only). For an activation
    layer (ReLU, GELU, ...) the ascent follows its input, which orders images the same way but still
    has a gradient where the unit is off; the reported activations are the layer's own outputs.

    Args:
        units: how many units (the first ``units`` channels) or which ones.
        input_size: (C, H, W); default ``(model.in_chans, *model.input_size)``.
        mean, std: the model's normalisation; default 0 and 1 (inputs are pixels in 0..1).

    Raises:
        ValueError: a unit outside the layer's channels, a bad size, a non-positive step count.
    """
    name, module = resolve_layer(model, layer)
    if input_size is None:
        if not hasattr(model, "in_chans") or not hasattr(model, "input_size"):
            raise ValueError("pass input_size=(C, H, W): the model does not say which inputs it takes")
        input_size = (model.in_chans, *model.input_size)
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {tuple(input_size)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    c, h, w = (int(v) for v in input_size)
    device = next(model.parameters()).device
    mean_t = torch.tensor(list(mean) if mean is not None else [0.0] * c, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std) if std is not None else [1.0] * c, device=device).view(1, -1, 1, 1)
    lo, hi = (0 - mean_t) / std_t, (1 - mean_t) / std_t  # the valid range in normalised space
    jitter = min(h, w) // 16 if jitter is None else int(jitter)  # 0 below 16 pixels: a roll of 1 is 1/8 of 8x8

    # An activation layer's output has no gradient where the unit is off (a ReLU at noise often is):
    # ascend its input instead, which ranks images the same way since the activation is monotone.
    objective_on_input = isinstance(module, _ACTIVATIONS)
    captured: list[torch.Tensor] = []

    def pre_hook(_module, inputs):
        captured.append(inputs[0].clone())  # clone: an in-place activation would overwrite its input
        raise _Stop

    def hook(_module, _inputs, output):
        captured.append(_output_tensor(name, output).clone())  # clone: later in-place ops cannot alter it
        raise _Stop

    def run(x: torch.Tensor, objective: bool = False) -> torch.Tensor:
        captured.clear()
        if objective and objective_on_input:
            handle = module.register_forward_pre_hook(pre_hook)
        else:
            handle = module.register_forward_hook(hook)
        try:
            model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"layer {name!r} does not run in {type(model).__name__}'s forward pass, so no input "
                             f"can excite it; name a layer the prediction goes through ({layer_choices(model)})")
        return captured[0]

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            channels = run(torch.zeros(1, c, h, w, device=device)).shape[1]
        unit_list = list(range(min(units, channels))) if isinstance(units, int) else [int(u) for u in units]
        if not unit_list or any(not 0 <= u < channels for u in unit_list):
            raise ValueError(f"layer {name!r} has {channels} channels; units must be in 0..{channels - 1}, got "
                             f"{units if isinstance(units, int) else unit_list}")
        unit_t = torch.tensor(unit_list, device=device)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        noise = (0.5 + 0.05 * torch.randn(len(unit_list), c, h, w, generator=gen)).clamp(0, 1).to(device)
        x = ((noise - mean_t) / std_t).requires_grad_(True)  # (U, C, H, W), normalised
        with torch.no_grad():
            initial = _unit_activations(run(x), unit_t)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            act = _unit_activations(run(shifted, objective=True), unit_t)
            penalty = l2 * x.pow(2).flatten(1).mean(1) + tv * _total_variation(x)
            loss = (penalty - act).sum()  # images are independent: the sum optimises each on its own
            (grad,) = torch.autograd.grad(loss, x)
            x.grad = grad
            opt.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            final = _unit_activations(run(x), unit_t)
    finally:
        model.train(was_training)
    images = x.detach()
    return ActivationMaximization(name, unit_list, images, (images * std_t + mean_t).clamp(0, 1),
                                  final.tolist(), initial.tolist(), steps)


def activation_maximization_figure(result: ActivationMaximization, cols: int = 8):
    """The optimised images in a grid, each titled with its unit and the activation it reaches."""
    n = len(result.units)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        img = result.pixels[k].float().cpu()
        if img.shape[0] not in (1, 3):
            img = img.mean(0, keepdim=True)
        ax.imshow(img.permute(1, 2, 0).numpy().squeeze(-1) if img.shape[0] == 1 else img.permute(1, 2, 0).numpy(),
                  cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"unit {result.units[k]}\n{result.activations[k]:.3g}", fontsize=8)
    fig.suptitle(f"{result.layer}: inputs that maximise each unit ({result.steps} steps)", fontsize=10)
    fig.tight_layout()
    return fig


# -- a run's pictures as files (what `convolab viz` does) ------------------------------------------
def viz_run(run, out_dir: str | Path, *, kernels: bool = False, diverging: bool = False,
            feature_map_images: Sequence[str | Path] = (), layers: Sequence[str] | None = None,
            max_channels: int = 32, filters: bool = False, layer: str | None = None, units: int | Sequence[int] = 8,
            steps: int = 200, lr: float = 0.05, seed: int = 0, overwrite: bool = False,
            progress: bool = True) -> list[dict]:
    """Write a run's pictures as PNGs into ``out_dir`` and describe each file.

    ``kernels.png`` (the first convolution's filters), ``feature_maps_<image>.png`` per image and
    ``filters_<layer>.png`` (activation maximization). Every name is checked before anything is
    computed: an existing file is a ``FileExistsError`` unless ``overwrite``. Each PNG is written
    atomically; a write that fails (read-only folder, full disk) is one ``PermissionError`` naming
    the file, and a folder this call created is removed again with what it wrote. ``progress``: a
    bar on a terminal. Returns one record per file (``kind``, ``path`` and what it shows).
    """
    from convolab.explain.output import output_folder, writing
    from convolab.explain.progress import progress_bar
    from convolab.plotting import save_figure

    if not (kernels or feature_map_images or filters):
        raise ValueError("nothing to draw: choose --kernels, --feature-maps IMAGE or --filters")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: is a file, not a folder")
    model = run.model
    # resolve names first, so a typo fails before any work
    kernel_layer = first_conv(model)[0] if kernels else None
    map_layers = None if layers is None else [resolve_layer(model, n)[0] for n in layers]
    filter_layer = resolve_layer(model, layer)[0] if filters else None
    used: set[str] = set()
    planned: list[tuple[str, Path, object]] = []
    if kernels:
        planned.append(("kernels", out_dir / "kernels.png", None))
    for image in feature_map_images:
        planned.append(("feature_maps", out_dir / f"feature_maps_{unique_stem(image, used)}.png", image))
    if filters:
        planned.append(("filters", out_dir / f"filters_{filter_layer}.png", None))
    existing = [str(p) for _, p, _ in planned if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                              "pass --overwrite to replace, or choose another --out")

    # read the images before writing anything: an unreadable file fails the call, not half of it
    inputs = {str(image): (run.preprocess(image), run.to_array(image)) for image in feature_map_images}

    records = []
    with output_folder(out_dir) as folder, progress_bar(planned, desc="viz", unit="file", enabled=progress) as bar:
        for kind, path, image in bar:
            bar.set_postfix_str(path.name)
            if kind == "kernels":
                grid = kernel_grid(model, kernel_layer, diverging=diverging)
                fig = kernel_figure(grid)
                record = {"kind": kind, "path": str(path), "layer": grid.layer, "weight_shape": list(grid.weight_shape)}
            elif kind == "feature_maps":
                x, pixels = inputs[str(image)]
                maps = feature_maps(model, x, map_layers)
                fig = feature_map_figure(maps, pixels, max_channels=max_channels)
                record = {"kind": kind, "path": str(path), "image": str(image),
                          "layers": {n: list(a.shape[1:]) for n, a in maps.items()}}
            else:
                res = activation_maximization(model, filter_layer, units, steps=steps, lr=lr,
                                              input_size=run.input_size, mean=run.mean, std=run.std, seed=seed)
                fig = activation_maximization_figure(res)
                record = {"kind": kind, "path": str(path), "layer": res.layer, "units": res.units,
                          "steps": res.steps, "activations": res.activations,
                          "initial_activations": res.initial_activations}
            with writing(path):
                save_figure(fig, path)
            folder.wrote(path)
            records.append(record)
    return records
