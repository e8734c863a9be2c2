"""Clip datasets: uint8 clips (N, C, T, H, W) of T frames, a label per clip, and the video each clip came from.

Three sources:

* **a folder of videos in class subfolders**: ``ROOT/<class>/*.{mp4,avi,mkv,webm,mov}``, or
  ``ROOT/train/<class>/`` + ``ROOT/test/<class>/`` (``ROOT/val/<class>/`` optional);
* **UCF101 and HMDB51** (``ucf101``, ``hmdb51``) when the user has their files: the extracted videos and the
  official split lists, found through ``--data-dir``, ``$CONVOLAB_DATA`` or the user cache; split 1 is used;
* **moving-fashion** (:mod:`convolab.data.moving`): generated offline from Fashion-MNIST.

Each video is decoded once (PyAV, :mod:`convolab.data.video_io`) into non-overlapping clips of T frames: a
video of L frames holds floor(L / T) of them, of which at most ``clips_per_video`` (default
:data:`MAX_CLIPS_PER_VIDEO` = 4) are kept, spread evenly over the video when its header records its length
(MP4, AVI), else the first ones (Matroska and WebM record no frame count). Frames are resized (bilinear,
antialiased) to ``image_size`` if given, else to the most common frame size, and converted to the most common
channel count (grey or RGB). A video that cannot be decoded, or is shorter than one clip, is listed in one
warning and skipped; only a folder with nothing usable left is refused.

Splits are by video: all clips of a video are in one split, so a test score is never measured on another
clip of a training video. Without a test folder, ``test_fraction`` of each class's videos is held out; the
validation videos are carved from the training videos (``val_fraction``, stratified, seeded), unless there is
a ``val/`` folder. ``Split.groups`` holds the video index of each clip (unique across the splits) so that clip
predictions can be averaged per video.

Before anything is decoded, the decoded size (clips x C x T x H x W bytes, estimated from the headers) is
checked against the memory limit of :mod:`convolab.data.limits`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convolab.data import cache as decode_cache
from convolab.data.base import ImageDataset, Split, normalization_stats
from convolab.data.folder import _check_size, list_class_folders
from convolab.data.limits import format_bytes, max_data_bytes
from convolab.data.resolve import search_places
from convolab.data.split import stratified_split
from convolab.data.video_io import VIDEO_EXTENSIONS, VideoInfo, iter_frames, probe_video
from convolab.errors import DataNotFoundError

__all__ = ["CLIP_DATASETS", "MAX_CLIPS_PER_VIDEO", "DEFAULT_FRAMES", "VideoList", "is_clip_source", "load_clips",
           "scan_video_folder", "find_official_split", "clip_slots"]

log = logging.getLogger(__name__)

MAX_CLIPS_PER_VIDEO = 4  # clips kept per video: more clips of one video add little that its first four lack
DEFAULT_FRAMES = 16  # T for video folders (C3D's and R3D's clip length); moving-fashion's default is 8

CLIP_DATASETS: dict[str, str] = {
    "moving-fashion": "offline clips of one Fashion-MNIST item moving on a 32x32 canvas; the label is the "
                      "motion (8: left, right, up, down, rotate cw/ccw, zoom in/out), 6,000 train / 1,500 test",
    "ucf101": "UCF101 action videos, 101 classes, official split 1 (needs the videos and split lists: --data-dir)",
    "hmdb51": "HMDB51 action videos, 51 classes, official split 1 (needs the videos and split lists: --data-dir)",
}
_ALIASES = {"movingfashion": "moving-fashion", "moving-fashion-mnist": "moving-fashion", "ucf-101": "ucf101",
            "hmdb-51": "hmdb51"}

_HOW_TO_GET = {
    "ucf101": ("download UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from "
               "https://www.crcv.ucf.edu/data/UCF101.php and extract both into DIR, so that DIR/UCF-101/<class>/*.avi "
               "and DIR/ucfTrainTestlist/trainlist01.txt exist; then --data-dir DIR"),
    "hmdb51": ("download hmdb51_org.rar and test_train_splits.rar from "
               "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/ and extract them "
               "(and the per-class .rar files inside) into DIR, so that DIR/hmdb51_org/<class>/*.avi and "
               "DIR/testTrainMulti_7030_splits/<class>_test_split1.txt exist; then --data-dir DIR"),
}


@dataclass
class VideoList:
    """The videos of a clip dataset, before decoding."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]  # "train", "val", "test" or "all" -> (video, label)
    bad: list[tuple[Path, str]]  # listed but unusable files and why


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return key if key in CLIP_DATASETS else None


def _has_video(folder: Path, depth: int = 3, budget: list[int] | None = None) -> bool:
    """Whether a video file lies within ``depth`` levels under ``folder`` (looks at a bounded number of entries)."""
    budget = [5000] if budget is None else budget
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return False
    subdirs = []
    for e in entries:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if e.name.startswith("."):
            continue
        if e.is_dir():
            subdirs.append(Path(e.path))
        elif Path(e.name).suffix.lower() in VIDEO_EXTENSIONS:
            return True
    return depth > 1 and any(_has_video(d, depth - 1, budget) for d in subdirs)


def is_clip_source(name: str | os.PathLike) -> bool:
    """Whether ``name`` is a clip dataset name (see :data:`CLIP_DATASETS`) or a folder holding video files."""
    text = os.fspath(name)
    if _canonical(text) is not None:
        return True
    path = Path(text).expanduser()
    # videos sit in ROOT/<class>/ or ROOT/train/<class>/: two or three levels down
    return path.is_dir() and _has_video(path)


# -- listing videos -----------------------------------------------------------------------------------------
def scan_video_folder(root: str | os.PathLike) -> VideoList:
    """List the videos of ``ROOT/<class>/`` or ``ROOT/train|val|test/<class>/``.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: a file, no class subfolders, no video files, or a split folder with classes train/ lacks.
    """
    root = Path(root).expanduser()
    classes, files = list_class_folders(root, VIDEO_EXTENSIONS, "video")
    return VideoList(root, classes, files, [])


def _first_dir(base: Path, names: tuple[str, ...], test) -> Path | None:
    for n in names:
        d = base / n if n else base
        if d.is_dir() and test(d):
            return d
    return None


def _read_lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the split list ({e.strerror or e})") from None
    return [line.split() for line in text.splitlines() if line.strip()]


def _ucf101(base: Path) -> VideoList | None:
    lists = _first_dir(base, ("ucfTrainTestlist", "splits", ""), lambda d: (d / "trainlist01.txt").is_file()
                       and (d / "testlist01.txt").is_file())
    videos = _first_dir(base, ("UCF-101", "UCF101", "videos", ""), lambda d: any(d.glob("*/*.avi")))
    if lists is None or videos is None:
        return None
    if (lists / "classInd.txt").is_file():
        pairs = sorted((int(p[0]), p[1]) for p in _read_lines(lists / "classInd.txt") if len(p) >= 2)
        classes = [c for _, c in pairs]
    else:
        classes = sorted({p[0].split("/")[0] for p in _read_lines(lists / "trainlist01.txt")})
    index = {c: i for i, c in enumerate(classes)}
    files: dict[str, list[tuple[Path, int]]] = {}
    bad = []
    for split, fname in (("train", "trainlist01.txt"), ("test", "testlist01.txt")):
        files[split] = []
        for parts in _read_lines(lists / fname):
            rel = parts[0].replace("\\", "/")
            cls = rel.split("/")[0]
            if cls not in index:
                bad.append((videos / rel, f"class {cls!r} is not in classInd.txt"))
                continue
            files[split].append((videos / rel, index[cls]))
    return VideoList(videos, classes, files, bad)


def _hmdb51(base: Path) -> VideoList | None:
    lists = _first_dir(base, ("testTrainMulti_7030_splits", "test_train_splits", "splits", ""),
                       lambda d: any(d.glob("*_test_split1.txt")))
    videos = _first_dir(base, ("hmdb51_org", "HMDB51", "hmdb51", "videos", ""), lambda d: any(d.glob("*/*.avi")))
    if lists is None or videos is None:
        return None
    split_files = sorted(lists.glob("*_test_split1.txt"))
    classes = [p.name.removesuffix("_test_split1.txt") for p in split_files]
    files: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for label, (cls, p) in enumerate(zip(classes, split_files)):
        for parts in _read_lines(p):
            if len(parts) >= 2 and parts[1] in ("1", "2"):  # 1: train, 2: test, 0: in neither (split 1)
                files["train" if parts[1] == "1" else "test"].append((videos / cls / parts[0], label))
    return VideoList(videos, classes, files, [])


def find_official_split(name: str, data_dir: str | os.PathLike | None = None) -> VideoList:
    """UCF101's or HMDB51's videos with their official split 1, from the first place that has both.

    Searched, in order: ``data_dir``, ``$CONVOLAB_DATA``, the user cache, each as is and in a ``ucf101/``
    (``hmdb51/``) subfolder. Listed videos that are missing are reported as bad files (and skipped).

    Raises:
        DataNotFoundError: found nowhere (the message lists the places and how to get the files), or
            ``data_dir`` is no folder.
    """
    key = _canonical(name)
    if key not in ("ucf101", "hmdb51"):
        raise ValueError(f"{name!r}: official split lists exist for ucf101 and hmdb51 only")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataNotFoundError(f"--data-dir {data_dir}: no such folder")
    finder = _ucf101 if key == "ucf101" else _hmdb51
    looked = []
    for place in search_places(data_dir):
        looked.append(place.describe())
        if place.path is None:
            continue
        for sub in ("", key, key.upper(), key.replace("101", "-101")):
            base = place.path / sub if sub else place.path
            found = finder(base) if base.is_dir() else None
            if found is not None:
                missing = [(p, "listed in the split files but missing") for items in found.files.values()
                           for p, _ in items if not p.is_file()]
                gone = {p for p, _ in missing}
                found.files = {s: [(p, y) for p, y in items if p not in gone] for s, items in found.files.items()}
                found.bad.extend(missing)
                return found
    raise DataNotFoundError(f"dataset {key!r} not found (the videos and the official split lists). Looked in: "
                            f"{'; '.join(looked)}. To get it: {_HOW_TO_GET[key]}")


# -- decoding -----------------------------------------------------------------------------------------------
def clip_slots(length: int, frames: int, cap: int) -> list[int]:
    """Which of a video's floor(length / frames) non-overlapping clips to keep: all if they are at most ``cap``,
    else ``cap`` of them spread evenly from the first to the last."""
    n = length // frames
    if n <= cap:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, cap)})


def _probe(path: Path) -> VideoInfo | str:
    try:
        return probe_video(path)
    except (ValueError, OSError) as e:
        return str(e).removeprefix(f"{path}: ")


def _decode_clips(path: Path, info: VideoInfo, frames: int, size: tuple[int, int], channels: int,
                  cap: int) -> np.ndarray | str:
    """One video's clips as uint8 (K, C, T, H, W), or why it cannot give any."""
    slots = clip_slots(info.frames, frames, cap) if info.frames else list(range(cap))
    wanted = {s * frames + k for s in slots for k in range(frames)}  # frame indices kept
    last = max(wanted) if wanted else -1
    kept: dict[int, np.ndarray] = {}
    n = 0
    try:
        for i, a in enumerate(iter_frames(path, channels)):  # a: (H, W, C)
            n = i + 1
            if i in wanted:
                kept[i] = a
            if i >= last and info.frames == 0:
                break  # the first cap clips are all there
            if i >= last:
                n = info.frames  # no need to decode the rest: the header gives the length
                break
    except (ValueError, OSError) as e:
        if n < frames:  # a damaged tail after whole clips is tolerated; a video with no clip is not
            return str(e).removeprefix(f"{path}: ")
    if n < frames:
        return f"{n} frame{'s' if n != 1 else ''}, shorter than one clip of {frames}"
    complete = [s for s in slots if all(s * frames + k in kept for k in range(frames))]
    if not complete:
        return f"{n} frames decoded, but no complete clip of {frames} (a damaged file?)"
    x = np.stack([np.stack([kept[s * frames + k] for k in range(frames)]) for s in complete])  # (K, T, H, W, C)
    t = torch.from_numpy(x).permute(0, 4, 1, 2, 3)  # (K, C, T, H, W)
    if tuple(t.shape[-2:]) != size:
        k, c = t.shape[:2]
        flat = t.permute(0, 2, 1, 3, 4).reshape(k * frames, c, *t.shape[-2:]).float()  # (K*T, C, H0, W0)
        flat = F.interpolate(flat, size=size, mode="bilinear", antialias=True, align_corners=False)
        t = flat.round_().clamp_(0, 255).to(torch.uint8).reshape(k, frames, c, *size).permute(0, 2, 1, 3, 4)
    return np.ascontiguousarray(t.numpy())


@dataclass
class _Plan:
    """Videos in split order (train, val, test) with what their headers say."""

    videos: list[tuple[Path, int, VideoInfo]]
    counts: dict[str, int]  # videos per split, in order
    size: tuple[int, int]
    channels: int
    native: tuple[int, int]


def _assign_splits(vl: VideoList, infos: dict[Path, VideoInfo], val_fraction: float, test_fraction: float,
                   seed: int) -> dict[str, list[tuple[Path, int]]]:
    """Train/val/test lists of usable videos: split folders as given, the rest carved by video (stratified)."""
    ok = {s: [(p, y) for p, y in items if p in infos] for s, items in vl.files.items()}

    def carve(items, fraction):
        if not items or fraction == 0:
            return items, []
        keep, held = stratified_split(torch.tensor([y for _, y in items]), fraction, seed=seed)
        return [items[i] for i in keep], [items[i] for i in held]

    if "all" in ok:
        train, test = carve(ok["all"], test_fraction)
    else:
        train, test = ok.get("train", []), ok.get("test")
        if test is None:
            train, test = carve(train, test_fraction)
            log.info("no test/ folder: holding out a stratified %.0f%% of the train/ videos as the test split",
                     100 * test_fraction)
    if "val" in ok:
        val = ok["val"]
    else:
        train, val = carve(train, val_fraction)
    return {"train": train, "val": val, "test": test}


def _check_memory(where: Path, n_clips: int, c: int, frames: int, size: tuple[int, int], max_bytes: int | None,
                  size_given: bool) -> None:
    limit = max_data_bytes() if max_bytes is None else max_bytes
    h, w = size
    need = n_clips * c * frames * h * w
    if need > limit:
        side = max(1, int(max(h, w) * (limit / need) ** 0.5))
        fit = (max(1, h * side // max(h, w)), max(1, w * side // max(h, w)))
        raise ValueError(
            f"{where}: up to {n_clips:,} clips of {c}x{frames}x{h}x{w} would take {format_bytes(need)} in memory, "
            f"more than the limit of {format_bytes(limit)} ($CONVOLAB_MAX_DATA_BYTES); downscale the frames with "
            f"image_size (--image-size {fit[0]}x{fit[1]} fits), use fewer frames per clip, or raise "
            f"$CONVOLAB_MAX_DATA_BYTES" + ("" if size_given else f" (frames are {h}x{w} in the files)"))


def _warn_bad(bad: list[str]) -> None:
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.warning("skipped %d unusable video file%s: %s", len(bad), "" if len(bad) == 1 else "s", shown)


def _load_videos(vl: VideoList, display: str, *, frames: int, val_fraction: float, seed: int, use_cache: bool,
                 test_fraction: float, image_size, max_bytes: int | None, cap: int) -> ImageDataset:
    size_given = _check_size(image_size)
    if frames < 1:
        raise ValueError(f"frames must be >= 1 (frames per clip); got {frames}")
    if cap < 1:
        raise ValueError(f"clips_per_video must be >= 1; got {cap}")
    paths = sorted({p for items in vl.files.values() for p, _ in items})
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        probed = dict(zip(paths, pool.map(_probe, paths)))
    bad = [f"{p} ({why})" for p, why in vl.bad] + [f"{p} ({r})" for p, r in probed.items() if isinstance(r, str)]
    infos = {p: r for p, r in probed.items() if not isinstance(r, str)}
    short = {p for p, r in infos.items() if 0 < r.frames < frames}  # known from the header: no need to decode
    bad += [f"{p} ({infos[p].frames} frames, shorter than one clip of {frames})" for p in sorted(short)]
    infos = {p: r for p, r in infos.items() if p not in short}
    if not infos:
        _warn_bad(bad)
        raise ValueError(f"{display}: none of its {len(paths)} video files is usable (undecodable or shorter than "
                         f"{frames} frames); see the warning above for each")
    native = Counter(i.size for i in infos.values()).most_common(1)[0][0]
    size = size_given or native
    channels = Counter(i.channels for i in infos.values()).most_common(1)[0][0]
    splits = _assign_splits(vl, infos, val_fraction, test_fraction, seed)
    order = [(p, y) for s in ("train", "val", "test") for p, y in splits[s]]
    per_video = [min(cap, infos[p].frames // frames) if infos[p].frames else cap for p, _ in order]
    _check_memory(vl.root, sum(per_video), channels, frames, size, max_bytes, size_given is not None)

    extra = f"{frames}|{size}|{channels}|{cap}|{seed}|{val_fraction}|{test_fraction}|{[len(splits[s]) for s in splits]}"
    key = decode_cache.fingerprint(f"clips:{vl.root.resolve()}", [p for p, _ in order], extra=extra)
    tag = f"clips-{vl.root.name}"
    hit = decode_cache.load_cached(tag, key) if use_cache else None
    if hit is not None:
        arrays, meta = hit
        x, y, g, bounds = arrays["x"], arrays["y"], arrays["g"], meta["bounds"]
        bad += meta.get("bad", [])  # the files that failed while decoding (the probe's failures are in bad already)
    else:
        x = np.empty((sum(per_video), channels, frames, *size), np.uint8)  # (N, C, T, H, W), an upper bound on N
        y = np.empty(len(x), np.int64)
        g = np.empty(len(x), np.int64)
        n = 0
        decode_bad: list[str] = []
        video_end = np.zeros(len(order), np.int64)  # clips decoded up to and including each video
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = pool.map(lambda item: _decode_clips(item[0], infos[item[0]], frames, size, channels, cap), order)
            for v, ((p, label), clips) in enumerate(zip(order, jobs)):
                if isinstance(clips, str):
                    decode_bad.append(f"{p} ({clips})")
                else:
                    k = min(len(clips), len(x) - n)  # never more than the headers promised (x's size)
                    x[n:n + k], y[n:n + k], g[n:n + k] = clips[:k], label, v
                    n += k
                video_end[v] = n
        # where train, val and test end in x: after their last video (no videos: where the previous ended)
        cum = np.cumsum([len(splits[s]) for s in ("train", "val", "test")])
        bounds = [int(video_end[c - 1]) if c > 0 else 0 for c in cum]
        x, y, g = x[:n], y[:n], g[:n]
        bad += decode_bad
        if use_cache:
            decode_cache.save_cached(tag, key, {"x": x, "y": y, "g": g}, {"bounds": bounds, "bad": decode_bad})
    _warn_bad(bad)
    if len(x) == 0:
        raise ValueError(f"{display}: none of its {len(paths)} video files gave a clip of {frames} frames; see the "
                         f"warning above for each")
    log.info("video folder %s: %d classes, %d videos -> %d clips of %dx%dx%dx%d (frames %dx%d in the files)",
             vl.root, len(vl.classes), len(set(g.tolist())), len(x), channels, frames, *size, *native)
    b = _split_bounds(bounds, len(x))
    parts = {s: Split(torch.from_numpy(x[i:j]), torch.from_numpy(y[i:j]), torch.from_numpy(g[i:j]))
             for s, (i, j) in zip(("train", "val", "test"), b)}
    return _dataset(display, vl.classes, parts, str(vl.root))


def _split_bounds(bounds: list[int], n: int) -> list[tuple[int, int]]:
    """[end of train, end of val, end of test] -> (start, end) per split."""
    a, b, c = (int(v) for v in bounds)
    return [(0, a), (a, b), (b, min(c, n))]


def _dataset(display: str, classes: list[str], parts: dict[str, Split], source: str) -> ImageDataset:
    """Check the splits (one clear line per problem) and wrap them with the training split's statistics."""
    train, val, test = parts["train"], parts["val"], parts["test"]
    if len(classes) < 2:
        raise ValueError(f"{display}: has {len(classes)} class{'es' if len(classes) != 1 else ''}; a classifier "
                         f"needs at least two (one subfolder of videos per class)")
    if len(train) == 0:
        raise ValueError(f"{display}: the training split has no clips")
    if len(np.unique(train.labels.numpy())) < 2:
        raise ValueError(f"{display}: every training clip is of class {classes[int(train.labels[0])]!r}; a "
                         f"classifier needs clips of at least two classes")
    if len(test) == 0:
        raise ValueError(f"{display}: the test split has no clips, so accuracy could not be measured; add videos "
                         f"(a test/<class>/ folder, or more videos per class to hold out from)")
    mean, std = normalization_stats(train.images)
    ds = ImageDataset(display, list(classes), train, val, test, mean, std, source, task="clips")
    log.info("%s", ds.describe())
    return ds


def _load_moving(display: str, *, frames: int, val_fraction: float, seed: int, data_dir, download: bool,
                 use_cache: bool, image_size, max_bytes: int | None) -> ImageDataset:
    from convolab.data.moving import DEFAULT_SIZE, DEFAULT_TEST, DEFAULT_TRAIN, MOTIONS, load_moving_fashion

    size = _check_size(image_size) or (DEFAULT_SIZE, DEFAULT_SIZE)
    if size[0] != size[1]:
        raise ValueError(f"image_size {image_size!r}: moving-fashion's canvas is square; give one side")
    _check_memory(Path(display), DEFAULT_TRAIN + DEFAULT_TEST, 1, frames, size, max_bytes, True)
    tr_x, tr_y, te_x, te_y = load_moving_fashion(frames=frames, size=size[0], seed=seed, data_dir=data_dir,
                                                 download=download, cache=use_cache)
    keep, held = stratified_split(tr_y, val_fraction, seed=seed)
    keep, held = torch.from_numpy(keep), torch.from_numpy(held)
    groups = torch.arange(len(tr_x) + len(te_x))  # one clip per "video": the clip's own index
    parts = {"train": Split(tr_x[keep], tr_y[keep], groups[keep]),
             "val": Split(tr_x[held], tr_y[held], groups[held]),
             "test": Split(te_x, te_y, groups[len(tr_x):])}
    return _dataset(display, list(MOTIONS), parts, "generated from Fashion-MNIST (convolab.data.moving)")


def load_clips(name: str | os.PathLike, *, frames: int | None = None, data_dir: str | os.PathLike | None = None,
               val_fraction: float = 0.1, seed: int = 0, download: bool = True, cache: bool = True,
               test_fraction: float = 0.2, image_size: int | tuple[int, int] | None = None,
               max_bytes: int | None = None, clips_per_video: int = MAX_CLIPS_PER_VIDEO) -> ImageDataset:
    """Load a clip dataset (a name from :data:`CLIP_DATASETS` or a folder of videos) into memory.

    Args:
        frames: frames per clip T (default 8 for moving-fashion, :data:`DEFAULT_FRAMES` for videos).
        data_dir: where ucf101/hmdb51 (and moving-fashion's Fashion-MNIST) are searched first.
        val_fraction: share of the training videos held out for validation (stratified, seeded).
        seed: seed of the splits, and of moving-fashion's clips.
        download: moving-fashion may download Fashion-MNIST when it is nowhere on disk.
        cache: keep the decoded clips in the user cache.
        test_fraction: share of each class's videos held out as test when there is no test split.
        image_size: (H, W) or one side every frame is resized to (default: the most common frame size;
            moving-fashion: its canvas side, 32).
        max_bytes: the most the decoded clips may take (default ``$CONVOLAB_MAX_DATA_BYTES`` or 2 GiB).
        clips_per_video: at most this many non-overlapping clips per video.

    Returns:
        An :class:`ImageDataset` with ``task == "clips"``: uint8 clips (N, C, T, H, W), int64 labels and
        ``groups`` (the video of each clip) in every split.

    Raises:
        FileNotFoundError: no such folder; ucf101/hmdb51 not found (the message says where it looked and
            how to get them).
        ValueError: no usable video, too large for memory, a bad argument, or splits a classifier cannot use.
    """
    text = os.fspath(name)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}")
    key = _canonical(text)
    if key == "moving-fashion":
        return _load_moving(key, frames=8 if frames is None else frames, val_fraction=val_fraction, seed=seed,
                            data_dir=data_dir, download=download, use_cache=cache, image_size=image_size,
                            max_bytes=max_bytes)
    frames = DEFAULT_FRAMES if frames is None else frames
    if key is not None:
        vl = find_official_split(key, data_dir)
        display = key
    else:
        vl = scan_video_folder(text)
        display = str(vl.root)
    return _load_videos(vl, display, frames=frames, val_fraction=val_fraction, seed=seed, use_cache=cache,
                        test_fraction=test_fraction, image_size=image_size, max_bytes=max_bytes, cap=clips_per_video)
