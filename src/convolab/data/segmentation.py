"""Segmentation datasets: images with class-index masks, decoded once into memory.

Sources:

* a **folder**: ``ROOT/train/images/<name>.png|jpg|...`` with ``ROOT/train/masks/<name>.png`` (the same stem),
  likewise ``ROOT/test/`` and optionally ``ROOT/val/``; or ``ROOT/images/`` + ``ROOT/masks/`` alone, split
  by seed. A mask is a class-index image (mode ``L``, ``P`` or ``1``; a palette PNG's indices are the
  classes), 255 marks pixels of no class (ignored by the loss and the metrics). ``ROOT/classes.txt`` (one
  name per line, class 0 first) names the classes; without it they are ``class 0`` .. ``class K-1`` from the
  largest index found. Without ``test/``, ``test_fraction`` of the pairs is held out by seed; without
  ``val/``, ``val_fraction`` of train. Images are resized to ``image_size`` (bilinear) and masks with it
  (nearest: class indices are never blended). Bad pairs (an image without a mask or the reverse, an unreadable
  file, a mask whose size differs from its image, a class index outside ``classes.txt``) are listed in one
  warning and skipped; only a folder with nothing usable left is refused.
* ``fashion-scenes`` and ``fashion-scenes-coarse`` (offline, :mod:`convolab.data.scenes`);
* ``oxford-pets``: torchvision's ``OxfordIIITPet`` with its trimaps (1 = pet, 2 = background, 3 = border)
  as background/pet, the border ignored (255); its ``trainval`` split is train (+ val), ``test`` is test;
* ``voc-segmentation``: torchvision's ``VOCSegmentation`` (2012), 21 classes, 255 ignored; its ``train``
  split is train (+ val), its ``val`` split is test (VOC's test masks are not public).

The last two are found in the usual places (``data_dir``, ``$CONVOLAB_DATA``, the user cache) or downloaded
there by torchvision; their photos come in many sizes and are resized to ``image_size`` (default 128x128).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convolab.data import cache as decoded_cache
from convolab.data.folder import LARGE_SIDE, _check_size
from convolab.data.images import IMAGE_EXTENSIONS, channels_of_mode, image_header, image_to_array, open_image
from convolab.data.limits import format_bytes, max_data_bytes
from convolab.data.resolve import search_places, user_cache_dir
from convolab.data.scenes import CANVAS, SCENE_DATASETS, load_fashion_scenes
from convolab.errors import DataNotFoundError

__all__ = ["SEGMENTATION_DATASETS", "IGNORE_INDEX", "MASK_EXTENSIONS", "is_segmentation_source",
           "load_segmentation", "read_mask"]

log = logging.getLogger(__name__)

IGNORE_INDEX = 255  # the mask value of pixels without a class (VOC's convention)
# Masks must be stored losslessly: a JPEG's blocks would invent class indices at every edge.
MASK_EXTENSIONS = {".png", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".webp"}
_MASK_MODES = {"L", "P", "1"}
_PHOTO_SIZE = (128, 128)  # default size for the photo datasets (oxford-pets, voc-segmentation)

_VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
                "tvmonitor")

SEGMENTATION_DATASETS: dict[str, str] = {
    **SCENE_DATASETS,
    "oxford-pets": "Oxford-IIIT Pet photos with pet/background masks (border ignored), 3.7k trainval / 3.7k test; "
                   "torchvision download",
    "voc-segmentation": "PASCAL VOC 2012 segmentation, 21 classes, 1.5k train / 1.4k val (as test); "
                        "torchvision download",
}


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace("_", "-")
    key = {"pets": "oxford-pets", "oxford-iiit-pet": "oxford-pets", "voc": "voc-segmentation",
           "voc2012": "voc-segmentation"}.get(key, key)
    return key if key in SEGMENTATION_DATASETS else None


def _split_dirs(root: Path) -> dict[str, Path]:
    """Split name -> folder holding ``images/`` and ``masks/`` ("all" for a folder without train/)."""
    splits = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    return splits or {"all": root}


def is_segmentation_source(name: str | os.PathLike) -> bool:
    """Whether ``name`` is a segmentation dataset's name or a folder in the segmentation layout (a ``masks/``)."""
    name = os.fspath(name)
    if _canonical(name) is not None:
        return True
    root = Path(name).expanduser()
    try:
        return root.is_dir() and any((d / "masks").is_dir() for d in _split_dirs(root).values())
    except OSError:
        return False


# -- pairs of files ---------------------------------------------------------------------------------------

Pair = tuple[Path, Path]  # (image file, mask file)


@dataclass
class _Listing:
    """The pairs of a dataset per split, and the files left out with why."""

    files: dict[str, list[Pair]]
    bad: list[tuple[Path, str]] = field(default_factory=list)


def _by_stem(folder: Path, extensions: set[str]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in extensions:
            continue
        out[p.stem].append(p)
    return out


def _list_pairs(split_dir: Path, listing: _Listing) -> list[Pair]:
    images_dir, masks_dir = split_dir / "images", split_dir / "masks"
    for d, other in ((images_dir, masks_dir), (masks_dir, images_dir)):
        if not d.is_dir():
            raise ValueError(f"{split_dir}: has {other.name}/ but no {d.name}/ folder; expected "
                             f"{split_dir}/images/<name>.png|jpg and {split_dir}/masks/<name>.png")
    images = _by_stem(images_dir, IMAGE_EXTENSIONS)
    masks = _by_stem(masks_dir, IMAGE_EXTENSIONS)
    pairs = []
    for stem in sorted(set(images) | set(masks)):
        imgs, msks = images.get(stem, []), masks.get(stem, [])
        if not msks:
            listing.bad.append((imgs[0], f"no mask {masks_dir}/{stem}.png for this image"))
        elif not imgs:
            listing.bad.append((msks[0], f"no image {images_dir}/{stem}.png|jpg for this mask"))
        elif len(imgs) > 1 or len(msks) > 1:
            dup = imgs if len(imgs) > 1 else msks
            listing.bad.append((dup[0], f"{len(dup)} files with the stem {stem!r} ({', '.join(p.name for p in dup)}); "
                                        f"cannot tell which is meant"))
        elif msks[0].suffix.lower() not in MASK_EXTENSIONS:
            listing.bad.append((msks[0], f"a {msks[0].suffix} mask is stored lossily; expected a class-index PNG"))
        else:
            pairs.append((imgs[0], msks[0]))
    return pairs


def _reason(path: Path, e: Exception) -> str:
    return str(e).removeprefix(f"{path}: ") or type(e).__name__


def _pair_header(pair: Pair) -> tuple[tuple[int, int], str] | tuple[Path, str]:
    """((H, W), image mode) of a good pair, or (the bad file, why)."""
    img, msk = pair
    heads = []
    for p in pair:
        try:
            heads.append(image_header(p))
        except (ValueError, OSError) as e:
            return p, _reason(p, e)
    (size, mode), (msize, mmode) = heads
    if mmode not in _MASK_MODES:
        return msk, f"mask of mode {mmode}; expected a class-index image (mode L or P, one index per pixel)"
    if msize != size:
        return msk, (f"mask is {msize[0]}x{msize[1]} pixels but its image {img} is {size[0]}x{size[1]} (HxW); "
                     f"a mask must match its image")
    return size, mode


def read_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A class-index mask file -> uint8 (H, W), resized to ``size`` (H, W) with nearest neighbours.

    Raises:
        ValueError: not a readable image, or not of mode L, P or 1 (a colour-coded mask).
    """
    with open_image(path) as img:
        if img.mode not in _MASK_MODES:
            raise ValueError(f"{path}: mask of mode {img.mode}; expected a class-index image (mode L or P)")
        arr = np.asarray(img).astype(np.uint8)  # P: the palette indices; 1: booleans -> 0/1
    if size is not None and arr.shape != tuple(size):
        arr = np.asarray(Image.fromarray(arr, "L").resize((size[1], size[0]), Image.Resampling.NEAREST))
    return arr


@dataclass
class _Decoded:
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> images (N, C, H, W), masks (N, H, W)
    bad: list[str]  # "path (why)"


def _check_memory(where: str, n: int, channels: int, size: tuple[int, int], max_bytes: int | None) -> None:
    limit = max_data_bytes() if max_bytes is None else max_bytes
    h, w = size
    need = n * (channels + 1) * h * w  # images and their masks, uint8
    if need > limit:
        scale = (limit / need) ** 0.5
        fit = max(1, int(h * scale)), max(1, int(w * scale))
        raise ValueError(f"{where}: {n:,} images of {channels}x{h}x{w} with their masks would take "
                         f"{format_bytes(need)} in memory, more than the limit of {format_bytes(limit)} "
                         f"($CONVOLAB_MAX_DATA_BYTES); downscale them with image_size (convolab train --image-size "
                         f"{fit[0]}x{fit[1]} fits), or raise $CONVOLAB_MAX_DATA_BYTES")


def _decode_pairs(where: str, listing: _Listing, *, image_size, max_bytes, num_classes: int | None,
                  lut: np.ndarray | None = None, default_size: tuple[int, int] | None = None) -> _Decoded:
    """Read headers, check the pairs, decode the good ones into uint8 arrays (one warning for the bad).

    ``lut`` maps raw mask values to class indices (256 entries) before the class check; ``num_classes``
    None accepts any index (the classes are counted afterwards).
    """
    pairs = [p for items in listing.files.values() for p in items]
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        headers = dict(zip(pairs, pool.map(_pair_header, pairs)))
    good = {}
    for pair, head in headers.items():
        if isinstance(head[0], Path):
            listing.bad.append(head)  # type: ignore[arg-type]
        else:
            good[pair] = head
    if not good:
        shown = "; ".join(f"{p} ({why})" for p, why in listing.bad[:3])
        raise ValueError(f"{where}: no usable image/mask pairs" + (f" ({shown})" if shown else ""))
    native = Counter(h[0] for h in good.values()).most_common(1)[0][0]
    size = _check_size(image_size) or default_size or native
    if image_size is None and default_size is None and max(native) > LARGE_SIDE:  # as for class folders
        raise ValueError(f"{where}: its images are mostly {native[0]}x{native[1]} pixels (large photos); training at "
                         f"that size needs gigabytes per batch: downscale them with image_size (convolab train "
                         f"--image-size 256x256, say), or give --image-size {native[0]}x{native[1]} to keep it")
    channels = Counter(channels_of_mode(h[1]) for h in good.values()).most_common(1)[0][0]
    _check_memory(where, len(good), channels, size, max_bytes)
    n_resized = sum(h[0] != size for h in good.values())
    if n_resized:
        log.info("%s: %d of %d image/mask pairs resized to %dx%d", where, n_resized, len(good), *size)

    def decode(pair: Pair) -> tuple[np.ndarray, np.ndarray] | tuple[Path, str]:
        img_path, mask_path = pair
        try:
            with open_image(img_path) as img:
                x = image_to_array(img, size, channels)  # (C, H, W)
        except (ValueError, OSError) as e:
            return img_path, _reason(img_path, e)
        try:
            y = read_mask(mask_path, size)  # (H, W)
        except (ValueError, OSError) as e:
            return mask_path, _reason(mask_path, e)
        if lut is not None:
            y = lut[y]
        if num_classes is not None:
            outside = np.unique(y[(y >= num_classes) & (y != IGNORE_INDEX)])
            if len(outside):
                return mask_path, (f"holds class index {int(outside[-1])}, outside the {num_classes} classes "
                                   f"(expected 0..{num_classes - 1}, or {IGNORE_INDEX} for ignored pixels)")
        return x, y

    arrays = {}
    h, w = size
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split, items in listing.files.items():
            items = [p for p in items if p in good]
            x = np.empty((len(items), channels, h, w), np.uint8)  # (N, C, H, W)
            y = np.empty((len(items), h, w), np.uint8)  # (N, H, W)
            ok = np.zeros(len(items), bool)
            for i, out in enumerate(pool.map(decode, items)):
                if isinstance(out[0], Path):
                    listing.bad.append(out)  # type: ignore[arg-type]
                else:
                    x[i], y[i], ok[i] = out[0], out[1], True
            arrays[split] = (x, y) if ok.all() else (x[ok], y[ok])
    return _Decoded(arrays, [f"{p} ({why})" for p, why in listing.bad])


def _warn_bad(where: str, bad: list[str]) -> None:
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        log.warning("%s: skipped %d bad file%s: %s", where, len(bad), "" if len(bad) == 1 else "s", shown)


def _hold_out(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) sorted indices with ``round(fraction * n)`` held out (at least one when n >= 2)."""
    k = int(round(fraction * n))
    if fraction > 0 and k == 0 and n >= 2:
        k = 1
    perm = rng.permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _take(arrays: tuple[np.ndarray, np.ndarray], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return arrays[0][idx], arrays[1][idx]


def _read_classes(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the class names ({e})") from None
    while names and not names[-1]:
        names.pop()
    if len(names) < 2:
        raise ValueError(f"{path}: names {len(names)} class{'' if len(names) == 1 else 'es'}; expected one name per "
                         f"line, at least two (class 0, usually background, first)")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"{path}: names {len(names)} classes; masks of uint8 indices hold at most {IGNORE_INDEX} "
                         f"(0..{IGNORE_INDEX - 1}, {IGNORE_INDEX} = ignored)")
    if any(not n for n in names):
        raise ValueError(f"{path}: line {names.index('') + 1} is empty; expected one class name per line")
    return names


# -- the sources ------------------------------------------------------------------------------------------

def _assemble(where: str, source: str, classes: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]], *,
              val_fraction: float, test_fraction: float, seed: int):
    """Split (test held out by seed when missing, val carved from train), check and wrap the arrays."""
    from convolab.data.base import ImageDataset, Split, normalization_stats

    rng = np.random.default_rng((seed, 7))
    train = splits["train"] if "train" in splits else splits["all"]
    test = splits.get("test")
    if test is None:
        keep, held = _hold_out(len(train[1]), test_fraction, rng)
        train, test = _take(train, keep), _take(train, held)
        log.info("%s: no test split: holding out %.0f%% of the pairs as the test split", where, 100 * test_fraction)
    val = splits.get("val")
    if val is None:
        keep, held = _hold_out(len(train[1]), val_fraction, rng)
        train, val = _take(train, keep), _take(train, held)
    if len(train[1]) == 0:
        raise ValueError(f"{where}: the training split is empty (no usable image/mask pairs in train/)")
    if len(test[1]) == 0:
        raise ValueError(f"{where}: the test split is empty, so nothing could be measured; put pairs in test/images "
                         f"and test/masks, or remove test/ to hold out a share of train/")
    ignored = any(bool((y == IGNORE_INDEX).any()) for _, y in (train, val, test))
    tr, va, te = (Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)))
                  for x, y in (train, val, test))
    mean, std = normalization_stats(tr.images)
    ds = ImageDataset(where, classes, tr, va, te, mean, std, source, task="segmentation",
                      ignore_index=IGNORE_INDEX if ignored else None)
    log.info("%s", ds.describe())
    return ds


def _cached_decode(tag: str, where: str, listing: _Listing, extra_files: list[Path], use_cache: bool,
                   **decode_kw) -> _Decoded:
    """:func:`_decode_pairs`, through the decoded-data cache when ``use_cache``."""
    files = [p for items in listing.files.values() for pair in items for p in pair] + extra_files
    key = None
    if use_cache:
        extra = f"{decode_kw.get('image_size')}|{decode_kw.get('num_classes')}|{decode_kw.get('default_size')}"
        key = decoded_cache.fingerprint(tag, files, extra=extra)
        hit = decoded_cache.load_cached(tag.replace(":", "-")[-40:], key)
        if hit is not None:
            arrays, meta = hit
            splits = {s: (arrays[f"{s}_x"], arrays[f"{s}_y"]) for s in listing.files if f"{s}_x" in arrays}
            return _Decoded(splits, meta.get("bad", []))
    decoded = _decode_pairs(where, listing, **decode_kw)
    if key is not None:
        flat = {f"{s}_{k}": a for s, (x, y) in decoded.arrays.items() for k, a in (("x", x), ("y", y))}
        decoded_cache.save_cached(tag.replace(":", "-")[-40:], key, flat, {"bad": decoded.bad})
    return decoded


def _load_folder(path: str, *, val_fraction, seed, cache, test_fraction, image_size, max_bytes):
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    where = str(root)
    dirs = _split_dirs(root)
    if "train" not in dirs and "all" not in dirs:
        raise ValueError(f"{root}: has {'/'.join(dirs)}/ but no train/ folder")
    listing = _Listing({})
    for split, d in dirs.items():
        listing.files[split] = _list_pairs(d, listing)
    names_file = root / "classes.txt"
    names = _read_classes(names_file) if names_file.is_file() else None
    decoded = _cached_decode(f"segfolder:{root.resolve()}", where, listing, [names_file] if names else [], cache,
                             image_size=image_size, max_bytes=max_bytes, num_classes=len(names) if names else None)
    _warn_bad(where, decoded.bad)
    if names is None:
        top = max((int(y[y != IGNORE_INDEX].max(initial=0)) for _, y in decoded.arrays.values() if len(y)),
                  default=0)
        if top < 1:
            raise ValueError(f"{root}: every mask holds only class 0; a segmentation needs at least two classes "
                             f"(index the classes 0, 1, ... in the masks; {IGNORE_INDEX} = ignored)")
        names = [f"class {i}" for i in range(top + 1)]
    return _assemble(where, where, names, decoded.arrays, val_fraction=val_fraction, test_fraction=test_fraction,
                     seed=seed)


@dataclass(frozen=True)
class _PhotoSet:
    """A torchvision segmentation dataset: where its files are and how its splits and masks map to ours."""

    name: str
    classes: tuple[str, ...]
    marker: tuple[str, ...]  # folders under a search place that say the dataset is there
    splits: tuple[tuple[str, str], ...]  # (torchvision split, our split)
    lut: tuple[tuple[int, int], ...]  # raw mask value -> class index, where they differ
    how_to_get: str


_PETS = _PhotoSet(
    "oxford-pets", ("background", "pet"),
    ("oxford-iiit-pet/images", "oxford-iiit-pet/annotations/trimaps"),
    (("trainval", "train"), ("test", "test")),
    ((1, 1), (2, 0), (3, IGNORE_INDEX)),  # trimap: 1 = pet, 2 = background, 3 = border (ignored)
    "a folder holding oxford-iiit-pet/images/ and oxford-iiit-pet/annotations/ (images.tar.gz and "
    "annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/, extracted into oxford-iiit-pet/)")
_VOC = _PhotoSet(
    "voc-segmentation", _VOC_CLASSES,
    ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/SegmentationClass", "VOCdevkit/VOC2012/ImageSets/Segmentation"),
    (("train", "train"), ("val", "test")), (),
    "a folder holding VOCdevkit/VOC2012/ (VOCtrainval_11-May-2012.tar from "
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/, extracted)")


def _tv_dataset(spec: _PhotoSet, root: Path, split: str, download: bool):
    import torchvision

    if spec is _PETS:
        return torchvision.datasets.OxfordIIITPet(str(root), split=split, target_types="segmentation",
                                                  download=download)
    return torchvision.datasets.VOCSegmentation(str(root), year="2012", image_set=split, download=download)


def _tv_pairs(spec: _PhotoSet, root: Path) -> _Listing:
    """The (image, mask) files of each split, as torchvision's parser lists them (its split files)."""
    listing = _Listing({})
    for tv_split, ours in spec.splits:
        try:
            ds = _tv_dataset(spec, root, tv_split, download=False)
        except Exception as e:  # a missing split file (OSError), torchvision's RuntimeError ...
            text = str(e).strip().splitlines()
            raise ValueError(f"{root}: cannot read {spec.name}'s {tv_split} split ({type(e).__name__}: "
                             f"{text[0] if text else ''})") from None
        # torchvision keeps the file lists it parsed: VOC as .images/.masks, the pets as ._images/._segs
        images = getattr(ds, "images", None) or ds._images
        masks = getattr(ds, "masks", None) or ds._segs
        listing.files[ours] = [(Path(i), Path(m)) for i, m in zip(images, masks)]
    return listing


def _download(spec: _PhotoSet, root: Path) -> None:
    """Fetch ``spec`` through torchvision into ``root``; a failure removes what it added and says why."""
    from convolab.data.named import _existing, _remove_new

    made = [p for p in (root, *root.parents) if not p.exists()]
    before = _existing(root)
    log.info("downloading %s through torchvision into %s", spec.name, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for tv_split, _ in spec.splits:
            _tv_dataset(spec, root, tv_split, download=True)
    except Exception as e:  # network and archive errors come in many types
        _remove_new(root, before, made)
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or "no reason given"
        raise RuntimeError(f"{type(e).__name__}: {text if len(text) <= 300 else text[:297] + '...'}") from None


def _load_photos(spec: _PhotoSet, *, data_dir, val_fraction, seed, download, cache, test_fraction, image_size,
                 max_bytes):
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataNotFoundError(f"--data-dir {data_dir}: no such folder")
    looked, root = [], None
    for place in search_places(data_dir):
        looked.append(place.describe())
        if place.path is not None and all((place.path / m).is_dir() for m in spec.marker):
            root = place.path
            break
    if root is None:
        failed = "download not attempted"
        if download:
            try:
                _download(spec, user_cache_dir())
                root = user_cache_dir()
            except RuntimeError as e:
                failed = f"download failed ({e})"
        if root is None:
            raise DataNotFoundError(
                f"dataset {spec.name!r} not found. Looked in: {'; '.join(looked)}; {failed}. To get it: with internet, "
                f"load it once with download allowed (torchvision fetches it into the user cache); or --data-dir DIR "
                f"(or $CONVOLAB_DATA) pointing to {spec.how_to_get}")
    listing = _tv_pairs(spec, root)
    lut = np.arange(256, dtype=np.uint8)
    for raw, cls in spec.lut:
        lut[raw] = cls
    if image_size is None:
        log.info("%s: photos of many sizes, resized to %dx%d (image_size changes it)", spec.name, *_PHOTO_SIZE)
    decoded = _cached_decode(f"{spec.name}:{root.resolve()}", spec.name, listing, [], cache, image_size=image_size,
                             max_bytes=max_bytes, num_classes=len(spec.classes), lut=lut, default_size=_PHOTO_SIZE)
    _warn_bad(spec.name, decoded.bad)
    return _assemble(spec.name, str(root), list(spec.classes), decoded.arrays, val_fraction=val_fraction,
                     test_fraction=test_fraction, seed=seed)


def load_segmentation(name: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, val_fraction: float = 0.1,
                      seed: int = 0, download: bool = True, cache: bool = True, test_fraction: float = 0.2,
                      image_size: int | tuple[int, int] | None = None, max_bytes: int | None = None):
    """Load a segmentation dataset (a name of :data:`SEGMENTATION_DATASETS` or a folder, see the module docstring).

    Returns:
        An :class:`~convolab.data.dataset.ImageDataset` with ``task="segmentation"``: images (N, C, H, W) uint8,
        masks (N, H, W) uint8 class indices in ``labels``, ``ignore_index`` 255 when some pixel is ignored.

    Raises:
        DataNotFoundError: a named dataset found nowhere (the message lists the places and how to get it).
        FileNotFoundError: no such folder.
        ValueError: one line: a bad fraction or size, a folder without usable pairs, an unreadable classes.txt,
            masks of one class only, an empty train or test split, or data over the memory limit.
    """
    name = os.fspath(name)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}")
    canonical = _canonical(name)
    if canonical in SCENE_DATASETS:
        if image_size is not None and _check_size(image_size) != (CANVAS, CANVAS):
            raise ValueError(f"image_size {image_size!r}: the {canonical} scenes are {CANVAS}x{CANVAS}; resizing "
                             f"applies to folders and photo datasets only")
        return load_fashion_scenes(coarse=canonical.endswith("coarse"), seed=seed, val_fraction=val_fraction,
                                   data_dir=data_dir, download=download, cache=cache)
    common = dict(val_fraction=val_fraction, seed=seed, cache=cache, test_fraction=test_fraction,
                  image_size=image_size, max_bytes=max_bytes)
    if canonical is not None:
        spec = {"oxford-pets": _PETS, "voc-segmentation": _VOC}[canonical]
        return _load_photos(spec, data_dir=data_dir, download=download, **common)
    return _load_folder(name, **common)
