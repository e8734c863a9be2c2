"""The named datasets: what they are, how to recognise their files, how to decode them.

MNIST-like sets (IDX files) are read by :mod:`convolab.data.idx`; CIFAR and SVHN by torchvision's
own dataset classes (its pickle and .mat parsers); digits comes from scikit-learn. A download goes
through torchvision's dataset classes, into the user cache.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convolab.data.idx import read_idx

__all__ = ["DatasetSpec", "DATASETS", "find_files", "decode", "download"]

log = logging.getLogger(__name__)

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset."""

    name: str  # convolab's name ("fashion-mnist")
    description: str
    classes: tuple[str, ...]
    in_chans: int
    image_size: tuple[int, int]
    kind: str  # "idx", "cifar10", "cifar100", "svhn", "digits"
    torchvision_name: str | None = None  # class in torchvision.datasets, for parsing and download
    files: tuple[str, ...] = ()  # what must be present (IDX names without .gz; folder names for CIFAR)
    subdirs: tuple[str, ...] = ()  # layouts searched under each place, "" = the place itself
    system_dirs: tuple[str, ...] = ()
    how_to_get: tuple[str, ...] = field(default_factory=tuple)  # lines for the "not found" error


def _idx_spec(name: str, tv: str, description: str, classes: tuple[str, ...], system_dirs=(), how=()) -> DatasetSpec:
    return DatasetSpec(
        name=name, description=description, classes=classes, in_chans=1, image_size=(28, 28), kind="idx",
        torchvision_name=tv, files=_MNIST_FILES,
        subdirs=(name, f"{tv}/raw", "", name.replace("-", "_")), system_dirs=system_dirs, how_to_get=how,
    )


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail "
    "snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout "
    "tulip turtle wardrobe whale willow_tree wolf woman worm".split()
)

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    _idx_spec("fashion-mnist", "FashionMNIST", "Zalando's 28x28 grayscale clothing images, 60k train / 10k test",
              ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"),
              system_dirs=("/usr/share/datasets/fashion-mnist",),
              how=("apt-get install dataset-fashion-mnist (Debian/Ubuntu)",)),
    _idx_spec("mnist", "MNIST", "LeCun's 28x28 handwritten digits, 60k train / 10k test",
              tuple(str(i) for i in range(10)), system_dirs=("/usr/share/datasets/mnist",)),
    _idx_spec("kmnist", "KMNIST", "Kuzushiji-MNIST: 28x28 cursive Japanese characters, 60k train / 10k test",
              ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    DatasetSpec("cifar10", "32x32 colour images in 10 classes, 50k train / 10k test", _CIFAR10_CLASSES, 3, (32, 32),
                "cifar10", "CIFAR10", ("cifar-10-batches-py",), ("", "cifar10", "cifar-10")),
    DatasetSpec("cifar100", "32x32 colour images in 100 classes, 50k train / 10k test", _CIFAR100_CLASSES, 3,
                (32, 32), "cifar100", "CIFAR100", ("cifar-100-python",), ("", "cifar100", "cifar-100")),
    DatasetSpec("svhn", "Street View House Numbers, 32x32 colour digits, 73k train / 26k test",
                tuple(str(i) for i in range(10)), 3, (32, 32), "svhn", "SVHN",
                ("train_32x32.mat", "test_32x32.mat"), ("svhn", "", "SVHN")),
    DatasetSpec("digits", "scikit-learn's 8x8 handwritten digits (1,797 images), always available offline",
                tuple(str(i) for i in range(10)), 1, (8, 8), "digits"),
]}


def _present(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def find_files(spec: DatasetSpec, place: Path) -> Path | None:
    """The folder under ``place`` that holds all of ``spec``'s files, or None."""
    for sub in spec.subdirs:
        folder = place / sub if sub else place
        if folder.is_dir() and all(_present(folder, f) for f in spec.files):
            return folder
    return None


def source_files(spec: DatasetSpec, folder: Path) -> list[Path]:
    """The files a found dataset is decoded from (for the decode cache's fingerprint)."""
    paths = [_present(folder, f) for f in spec.files]
    out: list[Path] = []
    for p in paths:
        assert p is not None
        out.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    return out


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train images, labels, test images, labels


def _shape(a: np.ndarray) -> str:
    return "x".join(str(v) for v in a.shape)


def _decode_idx(spec: DatasetSpec, folder: Path) -> Arrays:
    paths = [_present(folder, f) for f in spec.files]
    tr_x, tr_y, te_x, te_y = (read_idx(p) for p in paths)
    for path, x in ((paths[0], tr_x), (paths[2], te_x)):
        if x.dtype != np.uint8:  # a cast would wrap or clip the values silently
            raise ValueError(f"{path}: images stored as {x.dtype} values; expected unsigned bytes (IDX type 0x08), "
                             f"which is what convolab trains on — convert them to 0..255 uint8 first")
        if x.ndim != 3:
            raise ValueError(f"{path}: holds an array of shape {_shape(x)}; expected images (N, H, W)")
    for path, y, x, xpath in ((paths[1], tr_y, tr_x, paths[0]), (paths[3], te_y, te_x, paths[2])):
        if y.ndim != 1:
            raise ValueError(f"{path}: labels of shape {_shape(y)}; expected one label per image ({len(x)},)")
        if y.dtype.kind not in "iu":
            raise ValueError(f"{path}: labels stored as {y.dtype} values; expected integers (IDX type 0x08)")
        if len(y) != len(x):
            raise ValueError(f"{path}: {len(y):,} labels for the {len(x):,} images of {xpath.name}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(spec.classes)):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ValueError(f"{path}: holds label {bad}, outside {spec.name}'s {len(spec.classes)} classes "
                             f"(expected 0..{len(spec.classes) - 1})")
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise ValueError(f"{folder}: the train images ({paths[0].name}) are {_shape(tr_x[0])} but the test images "
                         f"({paths[2].name}) are {_shape(te_x[0])}; both splits need the same size")
    return tr_x[:, None], tr_y, te_x[:, None], te_y  # (N, 1, 28, 28)


def _torchvision_files(spec: DatasetSpec, folder: Path) -> list[tuple[Path, str]]:
    """The files torchvision's parser reads for ``spec``, with their published MD5 checksums."""
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_name)
    if spec.kind == "svhn":
        return [(folder / cls.split_list[s][1], cls.split_list[s][2]) for s in ("train", "test")]
    base = folder / cls.base_folder
    return [(base / name, md5) for name, md5 in (*cls.train_list, *cls.test_list)] + \
        [(base / cls.meta["filename"], cls.meta["md5"])]


def _diagnose_torchvision(spec: DatasetSpec, folder: Path, error: Exception) -> ValueError:
    """One line naming the missing or damaged file of a CIFAR/SVHN folder torchvision refused."""
    from torchvision.datasets.utils import check_integrity

    missing = [p for p, _ in _torchvision_files(spec, folder) if not p.is_file()]
    if missing:
        names = ", ".join(p.name for p in missing)
        return ValueError(f"{folder}: incomplete {spec.name} folder, {names} missing from {missing[0].parent}; "
                          f"copy the complete dataset there or download it again")
    damaged = [p for p, md5 in _torchvision_files(spec, folder) if not check_integrity(str(p), md5)]
    if damaged:
        return ValueError(f"{damaged[0]}: damaged {spec.name} file (its MD5 checksum is not the published one"
                          f"{f'; {len(damaged) - 1} more damaged' if len(damaged) > 1 else ''}); "
                          f"copy it again or download the dataset again")
    text = str(error).strip().splitlines()
    return ValueError(f"{folder}: cannot read {spec.name} ({type(error).__name__}: {text[0] if text else ''})")


def _decode_torchvision(spec: DatasetSpec, folder: Path) -> Arrays:
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_name)
    try:  # torchvision checks every file's MD5 before it parses one (its CIFAR files are pickles)
        if spec.kind == "svhn":
            tr, te = cls(str(folder), split="train"), cls(str(folder), split="test")
        else:
            tr, te = cls(str(folder), train=True), cls(str(folder), train=False)
    except Exception as e:  # RuntimeError "not found or corrupted", scipy's and pickle's many types
        raise _diagnose_torchvision(spec, folder, e) from None
    if spec.kind == "svhn":
        return tr.data, np.asarray(tr.labels), te.data, np.asarray(te.labels)  # (N, 3, 32, 32)
    return (tr.data.transpose(0, 3, 1, 2), np.asarray(tr.targets),  # (N, 32, 32, 3) -> (N, 3, 32, 32)
            te.data.transpose(0, 3, 1, 2), np.asarray(te.targets))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as ``sklearn.datasets.load_digits`` gives them: images (1797, 8, 8) of 0..16 as
    float64, and labels.

    Read from the CSV file scikit-learn ships, as its loader does, without importing scikit-learn, which pulls in
    SciPy and pandas: ``convolab train --data digits --epochs 1`` took 4.8 s with that import and 3.3 s without it
    on the 2-core development CPU (reading the file: 0.02 s). ``load_digits`` itself where the file is not at its
    place.
    """
    import importlib.util

    found = importlib.util.find_spec("sklearn")  # finds the package without importing it
    for base in (found.submodule_search_locations or []) if found else []:
        path = Path(base) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")  # (1797, 65): 64 pixels, then the label
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def _decode_digits(spec: DatasetSpec, folder: Path | None) -> Arrays:
    pixels, labels = digits_arrays()
    # Pixel values are 0..16; scale to 0..255 so every dataset is uint8 on the same range.
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    # scikit-learn ships no test split: hold out a fixed, stratified 20 %.
    from convolab.data.split import stratified_split

    train_idx, test_idx = stratified_split(torch.from_numpy(labels), 0.2, seed=0)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


_DECODERS: dict[str, Callable[[DatasetSpec, Path], Arrays]] = {
    "idx": _decode_idx, "cifar10": _decode_torchvision, "cifar100": _decode_torchvision,
    "svhn": _decode_torchvision, "digits": _decode_digits,
}


def decode(spec: DatasetSpec, folder: Path | None) -> Arrays:
    """Decode a found dataset into uint8 images (N, C, H, W) and int64 labels, train and test."""
    tr_x, tr_y, te_x, te_y = _DECODERS[spec.kind](spec, folder)
    for x in (tr_x, te_x):
        if np.asarray(x).dtype != np.uint8:  # never cast silently (floats would wrap)
            raise ValueError(f"{folder}: {spec.name} images decoded as {np.asarray(x).dtype}; expected uint8")
    return (np.ascontiguousarray(tr_x, np.uint8), np.asarray(tr_y, np.int64),
            np.ascontiguousarray(te_x, np.uint8), np.asarray(te_y, np.int64))


def _existing(root: Path) -> set[Path]:
    """Every path under ``root`` now (the decode cache aside), and ``root``'s missing ancestors' absence."""
    if not root.is_dir():
        return set()
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == root:
            dirnames[:] = [n for n in dirnames if n != "decoded"]
        out.update(d / n for n in dirnames + filenames)
    return out


def _remove_new(root: Path, before: set[Path], made: list[Path]) -> None:
    """Remove what a failed download added under ``root`` (and the folders it made for ``root``), nothing else."""
    for p in sorted(_existing(root) - before, key=lambda q: len(q.parts), reverse=True):  # deepest first
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()  # emptied by the deeper removals; a folder still holding older files stays
            else:
                p.unlink()
        except OSError as e:
            log.debug("could not remove %s after the failed download: %s", p, e)
    for d in made:  # innermost first
        try:
            d.rmdir()
        except OSError:
            break


def download(spec: DatasetSpec, root: Path) -> Path:
    """Download ``spec`` through torchvision into ``root``; returns the folder holding its files.

    On failure, everything this call created (files, folders, ``root`` itself) is removed again and
    nothing else is touched. torchvision's console messages are logged at debug level.

    Raises:
        DataNotFoundError: one line: the download failed (no network ...) and why.
    """
    import torchvision

    from convolab.errors import DataNotFoundError

    cls = getattr(torchvision.datasets, spec.torchvision_name)
    made = [p for p in (root, *root.parents) if not p.exists()]  # folders mkdir will create, innermost first
    before = _existing(root)
    log.info("downloading %s through torchvision into %s", spec.name, root)
    chatter = io.StringIO()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(chatter):  # "Downloading URL", "Failed to download (trying next): ..."
            if spec.kind == "svhn":
                for split in ("train", "test"):
                    cls(str(root), split=split, download=True)
            else:
                for train in (True, False):
                    cls(str(root), train=train, download=True)
        found = find_files(spec, root)
        if found is None:
            raise RuntimeError(f"torchvision reported success but the files are not in {root}")
        return found
    except Exception as e:  # network and archive errors come in many types
        _remove_new(root, before, made)
        # torchvision's text runs over several lines ("Error downloading X:", "Tried URL, got:", the cause)
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or "no reason given"
        reason = f"{type(e).__name__}: {text if len(text) <= 300 else text[:297] + '...'}"
        err = DataNotFoundError(
            f"downloading {spec.name} into {root} failed ({reason}); nothing was kept. Without internet, put its "
            f"files ({', '.join(spec.files)}) in a folder and pass --data-dir")
        err.reason = reason  # type: ignore[attr-defined]  # for messages that say the rest themselves
        raise err from None
    finally:
        for line in chatter.getvalue().splitlines():
            log.debug("torchvision: %s", line)
