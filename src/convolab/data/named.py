"""The named datasets: what they are, how to recognise their files, how to decode them.

MNIST-like sets (IDX files) are read by :mod:`convolab.data.idx`; CIFAR and SVHN by torchvision's
own dataset classes (its pickle and .mat parsers); digits comes from scikit-learn. A download goes
through torchvision's dataset classes, into the user cache.
"""

from __future__ import annotations

import logging
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


def _decode_idx(spec: DatasetSpec, folder: Path) -> Arrays:
    tr_x, tr_y, te_x, te_y = (read_idx(_present(folder, f)) for f in spec.files)
    if tr_x.ndim != 3 or te_x.ndim != 3 or len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise ValueError(f"{folder}: the IDX files do not hold matching images and labels")
    return tr_x[:, None], tr_y, te_x[:, None], te_y  # (N, 1, 28, 28)


def _decode_torchvision(spec: DatasetSpec, folder: Path) -> Arrays:
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_name)
    if spec.kind == "svhn":
        tr, te = cls(str(folder), split="train"), cls(str(folder), split="test")
        return tr.data, np.asarray(tr.labels), te.data, np.asarray(te.labels)  # (N, 3, 32, 32)
    tr, te = cls(str(folder), train=True), cls(str(folder), train=False)
    return (tr.data.transpose(0, 3, 1, 2), np.asarray(tr.targets),  # (N, 32, 32, 3) -> (N, 3, 32, 32)
            te.data.transpose(0, 3, 1, 2), np.asarray(te.targets))


def _decode_digits(spec: DatasetSpec, folder: Path | None) -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixel values are 0..16; scale to 0..255 so every dataset is uint8 on the same range.
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = d.target.astype(np.int64)
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
    return (np.ascontiguousarray(tr_x, np.uint8), np.asarray(tr_y, np.int64),
            np.ascontiguousarray(te_x, np.uint8), np.asarray(te_y, np.int64))


def download(spec: DatasetSpec, root: Path) -> Path:
    """Download ``spec`` through torchvision into ``root``; returns the folder holding its files.

    Raises:
        RuntimeError/OSError: from torchvision when the download fails (no network ...).
    """
    import torchvision

    cls = getattr(torchvision.datasets, spec.torchvision_name)
    root.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s through torchvision into %s", spec.name, root)
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
