"""Data augmentation for whole batches on the training device: no per-sample work, no host round trips.

The tutorials augment one PIL image at a time on the CPU (``transforms.RandomCrop`` ...), which
costs more than the training step of a small CNN and keeps a GPU waiting. Here every operation
acts on the normalised float batch ``(B, C, H, W)`` where it already is, with per-sample random
parameters drawn in one call from a generator on that device (the airbench approach, Jordan 2024):

* **random crop with padding** (translation): each image shifted by up to ``crop_pad`` pixels in
  each direction, the uncovered border black — torchvision's ``RandomCrop(size, padding=crop_pad)``;
* **small rotations**: each image rotated by a uniform angle in ``[-rotate, rotate]`` degrees
  (bilinear, black corners);
* **horizontal flip** of half of the images;
* **cutout** (DeVries & Taylor 2017; random erasing, Zhong et al. 2020): with probability 1/2 a
  square of side ``cutout x image side``, centred anywhere (clipped at the border), set to 0 — the
  dataset mean after normalisation;
* **colour jitter**: each image's brightness, contrast and saturation scaled, in that order, by its own factors
  drawn uniformly from ``[1 - strength, 1 + strength]`` — torchvision's ``adjust_brightness``, ``adjust_contrast``
  and ``adjust_saturation`` (``ColorJitter`` draws them alike but applies them in a random order), on the pixel
  values in [0, 1] (the batch is un-normalised for it). Contrast blends with the mean grey level of the image,
  saturation with the image's own grey version (ITU-R 601 luma); grey images get brightness and contrast only, as
  saturation leaves them unchanged. Applied first, to the image as it was taken, so the black borders of the
  shifts and rotations stay black;
* **mixup** (Zhang et al. 2018) and **cutmix** (Yun et al. 2019): the batch is blended with (mixup)
  or pasted into (cutmix) a shuffled copy of itself with a ``Beta(alpha, alpha)`` share ``lam`` per
  batch, and the loss becomes ``lam * loss(y) + (1 - lam) * loss(y[perm])``. With both, each batch
  uses one of them, chosen with equal probability.

Presets (``none``, ``light``, ``standard``) pick these per dataset: no flips for digits and
characters (a mirrored 2, 3 or ``tsu`` is another symbol, or none), small rotations for them instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentSpec", "BatchAugment", "Mix", "PRESETS", "resolve_augment", "flips_keep_class", "jitter_pixels"]

log = logging.getLogger(__name__)

PRESETS = ("none", "light", "standard")
# Datasets whose classes change (or vanish) when mirrored: digits and characters.
_NO_FLIP = {"digits", "mnist", "kmnist", "svhn", "emnist"}
_FLIP = {"fashion-mnist", "cifar10", "cifar100"}


def flips_keep_class(dataset: str) -> bool | None:
    """Whether a mirrored image keeps its class in ``dataset``: True, False, or None (unknown: a folder)."""
    name = str(dataset).lower()
    return True if name in _FLIP else False if name in _NO_FLIP else None


@dataclass(frozen=True)
class AugmentSpec:
    """What is applied to each training batch (all off: no augmentation)."""

    crop_pad: int = 0  # shift by up to this many pixels (random crop of the padded image)
    hflip: bool = False  # mirror half of the images left-right
    rotate: float = 0.0  # rotate by a uniform angle in [-rotate, rotate] degrees
    cutout: float = 0.0  # erase a square of this fraction of the image side from half of the images
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup (0: off)
    cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix (0: off)
    # colour jitter: each image's factor is drawn from [1 - v, 1 + v] (0: off)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    @property
    def active(self) -> bool:
        return any(asdict(self).values())

    @property
    def jitters(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation)

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def describe(self) -> str:
        parts = [f"crop pad {self.crop_pad}" if self.crop_pad else "", "hflip" if self.hflip else "",
                 f"rotate ±{self.rotate:g}°" if self.rotate else "", f"cutout {self.cutout:g}" if self.cutout else "",
                 f"mixup {self.mixup:g}" if self.mixup else "", f"cutmix {self.cutmix:g}" if self.cutmix else "",
                 f"colour jitter {self.brightness:g}/{self.contrast:g}/{self.saturation:g} (brightness/contrast/"
                 f"saturation)" if self.jitters else ""]
        return ", ".join(p for p in parts if p) or "none"


def resolve_augment(preset: str, dataset: str, image_size: tuple[int, int], *, crop_pad: int | None = None,
                    hflip: bool | None = None, rotate: float | None = None, cutout: float | None = None,
                    mixup: float = 0.0, cutmix: float = 0.0, jitter: float = 0.0) -> AugmentSpec:
    """A preset's settings for ``dataset`` (a registry name or a folder), with explicit settings on top.

    ``light``: shifts of up to 1/14 of the side (2 pixels at 28x28 and 32x32, 1 at 8x8) and flips
    where they keep the class; ``standard``: shifts of up to 1/8 of the side (CIFAR's usual 4 pixels at
    32x32), flips where they keep the class, cutout of 1/2 of the side (DeVries & Taylor's CIFAR-10
    setting), and rotations of up to 10° for digits and characters. Flips are off for image folders
    unless asked for (convolab cannot know whether mirroring keeps their classes). ``jitter`` sets the colour
    jitter's brightness, contrast and saturation strengths (no preset jitters).

    Raises:
        ValueError: an unknown preset or an out-of-range setting.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    side = min(image_size)
    name = str(dataset).lower()
    flips_ok = flips_keep_class(name) is True
    characters = flips_keep_class(name) is False
    base = {"none": AugmentSpec(),
            "light": AugmentSpec(crop_pad=max(1, round(side / 14)), hflip=flips_ok),
            "standard": AugmentSpec(crop_pad=max(1, round(side / 8)), hflip=flips_ok, cutout=0.5,
                                    rotate=10.0 if characters else 0.0)}[preset]
    spec = AugmentSpec(
        crop_pad=base.crop_pad if crop_pad is None else crop_pad,
        hflip=base.hflip if hflip is None else hflip,
        rotate=base.rotate if rotate is None else rotate,
        cutout=base.cutout if cutout is None else cutout,
        mixup=mixup, cutmix=cutmix, brightness=jitter, contrast=jitter, saturation=jitter)
    checks = [(0 <= spec.crop_pad < side, f"--crop-pad must be in [0, {side}) for {side}-pixel images; "
                                          f"got {spec.crop_pad}"),
              (0 <= spec.rotate <= 180, f"--rotate must be in [0, 180] degrees; got {spec.rotate}"),
              (0 <= spec.cutout < 1, f"--cutout must be in [0, 1) (a fraction of the image side); got {spec.cutout}"),
              (spec.mixup >= 0 and math.isfinite(spec.mixup), f"--mixup must be >= 0; got {spec.mixup}"),
              (spec.cutmix >= 0 and math.isfinite(spec.cutmix), f"--cutmix must be >= 0; got {spec.cutmix}"),
              (0 <= jitter <= 1, f"--jitter must be in [0, 1]; got {jitter}")]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if spec.hflip and characters:
        log.warning("--hflip on %s: mirrored digits and characters are other symbols (or none)", name)
    return spec


def _grey(p: torch.Tensor) -> torch.Tensor:
    """The grey level (B, 1, H, W) of RGB pixels (B, 3, H, W): ITU-R 601 luma, torchvision's weights."""
    r, g, b = p.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def jitter_pixels(p: torch.Tensor, brightness: torch.Tensor | None = None, contrast: torch.Tensor | None = None,
                  saturation: torch.Tensor | None = None) -> torch.Tensor:
    """Colour jitter of pixels ``p`` (B, C, H, W) in [0, 1] with one factor per image (B,) for each of brightness,
    contrast and saturation (None: left out), applied in that order, each clamped to [0, 1] as torchvision does:

    * brightness ``f``: ``f p``;
    * contrast ``f``: ``f p + (1 - f) m``, ``m`` the image's mean grey level (RGB: of its luma; else of its values);
    * saturation ``f``: ``f p + (1 - f) grey(p)`` per pixel (RGB only: a grey image is its own grey version).
    """
    def blend(a: torch.Tensor, b: torch.Tensor | float, f: torch.Tensor) -> torch.Tensor:
        f = f.view(-1, 1, 1, 1).to(a.dtype)
        return (f * a + (1.0 - f) * b).clamp_(0.0, 1.0)

    rgb = p.shape[1] == 3
    if brightness is not None:
        p = blend(p, 0.0, brightness)
    if contrast is not None:
        p = blend(p, (_grey(p) if rgb else p).mean((1, 2, 3), keepdim=True), contrast)
    if saturation is not None and rgb:
        p = blend(p, _grey(p), saturation)
    return p


@dataclass
class Mix:
    """How a batch was mixed: the loss is ``lam * loss(logits, y) + (1 - lam) * loss(logits, y2)``."""

    y2: torch.Tensor  # (B,) labels of the images mixed in
    lam: float  # share of the original images (1: unmixed)


class BatchAugment:
    """Applies an :class:`AugmentSpec` to normalised batches on ``device``.

    Args:
        spec: what to apply.
        fill: per-channel value of a black pixel after normalisation (``-mean / std``): padding
            and rotated-in corners are black, as torchvision's transforms make them.
        device: where batches live; the per-sample random numbers are drawn there.
        seed: seeds the device generator (per-sample parameters) and a NumPy generator (the
            per-batch ``lam`` and cutmix box, so that no device value is read back).
        mean, std: the per-channel normalisation (needed by colour jitter, which acts on pixel values).
    """

    def __init__(self, spec: AugmentSpec, fill: torch.Tensor, device: torch.device | str, seed: int = 0,
                 mean: list[float] | torch.Tensor | None = None, std: list[float] | torch.Tensor | None = None):
        self.spec = spec
        self.device = torch.device(device)
        self.fill = fill.to(self.device, torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
        if spec.jitters and (mean is None or std is None):
            raise ValueError("colour jitter acts on pixel values: BatchAugment needs the normalisation's mean and std")
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) \
            if mean is not None else None  # (1, C, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) \
            if std is not None else None
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        return {"torch": self.generator.get_state(), "numpy": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["torch"])
        self.rng.bit_generator.state = state["numpy"]

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Mix | None]:
        """Augment a batch ``x`` (B, C, H, W) with labels ``y`` (B,); returns the batch and its mixing."""
        s = self.spec
        if s.jitters:
            x = self.color_jitter(x, *self.jitter_factors(x.shape[0]))
        if s.crop_pad:
            x = self.translate(x, s.crop_pad)
        if s.rotate:
            x = self.rotate(x, s.rotate)
        if s.hflip:
            flip = self._uniform(x.shape[0]) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if s.cutout:
            x = self.cut_out(x, s.cutout)
        mix = None
        if s.mixes:
            use_cutmix = s.cutmix > 0 and (s.mixup == 0 or self.rng.random() < 0.5)
            x, mix = self.cut_mix(x, y, s.cutmix) if use_cutmix else self.mix_up(x, y, s.mixup)
        return x, mix

    # -- the operations -----------------------------------------------------------------------
    def jitter_factors(self, b: int) -> tuple[torch.Tensor | None, ...]:
        """Per-image (B,) brightness, contrast and saturation factors, uniform in [1 - v, 1 + v] (None where off)."""
        s = self.spec
        return tuple((1 - v) + 2 * v * self._uniform(b) if v else None
                     for v in (s.brightness, s.contrast, s.saturation))

    def color_jitter(self, x: torch.Tensor, brightness: torch.Tensor | None, contrast: torch.Tensor | None,
                     saturation: torch.Tensor | None) -> torch.Tensor:
        """:func:`jitter_pixels` on the normalised batch: un-normalised to pixels in [0, 1] and back."""
        p = x * self.std + self.mean  # (B, C, H, W) in [0, 1]
        return (jitter_pixels(p, brightness, contrast, saturation) - self.mean) / self.std

    def translate(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        """Shift each image by (dy, dx) in [-pad, pad]^2, black where nothing moved in."""
        b, c, h, w = x.shape
        padded = F.pad(x - self.fill, (pad, pad, pad, pad)) + self.fill  # (B, C, H + 2p, W + 2p), black border
        offsets = (self._uniform(b, 2) * (2 * pad + 1)).long().clamp_(max=2 * pad)  # top-left corner of each crop
        rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
        cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indexing puts the indexed dimensions first: (B, H, W, C); as NCHW it is channels-last.
        return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def rotate(self, x: torch.Tensor, degrees: float) -> torch.Tensor:
        """Rotate each image about its centre by a uniform angle in [-degrees, degrees]."""
        b, _, h, w = x.shape
        angle = (self._uniform(b) * 2 - 1) * math.radians(degrees)
        cos, sin = angle.cos(), angle.sin()
        zero = torch.zeros_like(cos)
        # The grid is in coordinates normalised to [-1, 1] per axis; a rotation in pixels is one there
        # only after rescaling by the aspect ratio.
        theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1),
                             torch.stack([sin * w / h, cos, zero], 1)], 1)  # (B, 2, 3): output -> input position
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        rotated = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return rotated + self.fill

    def cut_out(self, x: torch.Tensor, fraction: float) -> torch.Tensor:
        """Zero a square of side ``fraction * min(H, W)`` centred anywhere, in half of the images."""
        b, _, h, w = x.shape
        size = max(1, round(fraction * min(h, w)))
        u = self._uniform(b, 3)
        cy, cx = (u[:, 0] * h).floor(), (u[:, 1] * w).floor()
        apply = u[:, 2] < 0.5
        ys = torch.arange(h, device=x.device)[None, :]
        xs = torch.arange(w, device=x.device)[None, :]
        top, left = cy[:, None] - size // 2, cx[:, None] - size // 2
        inside_y = (ys >= top) & (ys < top + size)  # (B, H)
        inside_x = (xs >= left) & (xs < left + size)  # (B, W)
        mask = inside_y[:, :, None] & inside_x[:, None, :] & apply[:, None, None]  # (B, H, W)
        return x.masked_fill(mask[:, None], 0.0)

    def _partner(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perm = torch.randperm(x.shape[0], generator=self.generator, device=self.device)
        return x[perm], y[perm]

    def mix_up(self, x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, Mix]:
        lam = float(self.rng.beta(alpha, alpha))
        x2, y2 = self._partner(x, y)
        return torch.lerp(x2, x, lam), Mix(y2, lam)  # lam * x + (1 - lam) * x2

    def cut_mix(self, x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, Mix]:
        """Paste one box of the shuffled batch; ``lam`` becomes the share of pixels left unchanged."""
        _, _, h, w = x.shape
        lam = float(self.rng.beta(alpha, alpha))
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(self.rng.integers(h)), int(self.rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x2, y2 = self._partner(x, y)
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x2[:, :, y0:y1, x0:x1]
        return out, Mix(y2, 1 - (y1 - y0) * (x1 - x0) / (h * w))
