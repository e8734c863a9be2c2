"""``convolab datasets``: the named datasets (classification, segmentation, clips) and where they are found;
downloads."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, error_line, print_json

HELP = "list the datasets and where they are found"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("datasets", help=HELP, formatter_class=HelpFormatter,
                       description="List the named datasets (task, classes, input shape, where each was found), "
                                   "or download some.",
                       epilog="example: convolab datasets --download mnist")
    p.add_argument("--data-dir", help="folder searched first")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download these datasets through torchvision")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Download the named datasets, or print the table of all of them."""
    from convolab.data import DATASETS, locate_dataset
    from convolab.data.named import download
    from convolab.data.resolve import user_cache_dir
    from convolab.errors import DataNotFoundError, UnknownNameError

    if args.download:
        for name in args.download:
            spec = DATASETS.get(name.lower())
            if spec is None:
                raise UnknownNameError("dataset", name, DATASETS)
            if spec.kind == "digits":
                print("digits ships with scikit-learn; nothing to download")
                continue
            found, _ = locate_dataset(spec, args.data_dir)
            if found:
                print(f"{name}: already present in {found}")
                continue
            try:
                folder = download(spec, user_cache_dir())
            except DataNotFoundError:  # already one line with the way out (--data-dir)
                raise
            except Exception as e:  # network failures come in many types
                raise ValueError(f"downloading {name} failed ({type(e).__name__}: {error_line(e)}); "
                                 f"without internet, put the files in a folder and pass --data-dir") from None
            print(f"{name}: downloaded into {folder}")
        return 0
    rows = []
    for spec in DATASETS.values():
        if spec.kind == "digits":
            where, status = "scikit-learn", "available"
        else:
            found, _ = locate_dataset(spec, args.data_dir)
            where = str(found) if found else None
            status = "available" if found else "not found (downloadable)"
        rows.append({"name": spec.name, "task": "classification", "classes": len(spec.classes),
                     "shape": f"{spec.in_chans}x{spec.image_size[0]}x{spec.image_size[1]}",
                     "status": status, "location": where, "description": spec.description})
    fashion = next((r for r in rows if r["name"] == "fashion-mnist"), None)
    rows += _task_rows(args.data_dir, fashion)
    if args.json:
        print_json(rows)
        return 0
    print(f"{'dataset':<22} {'task':<14} {'classes':>7}  {'shape':<11} {'status':<25} location")
    for r in rows:
        classes = "-" if r["classes"] is None else r["classes"]
        print(f"{r['name']:<22} {r['task']:<14} {classes:>7}  {r['shape'] or '-':<11} {r['status']:<25} "
              f"{r['location'] or '-'}")
    print("\nany folder of images in class subfolders works too: convolab train --data PATH "
          "(PATH/<class>/... or PATH/train/<class>/... + PATH/test/<class>/...); segmentation folders: "
          "PATH/images/ + PATH/masks/; clips: PATH/<class>/*.mp4|avi|mkv|webm|mov")
    return 0


def _task_rows(data_dir: str | None, fashion: dict | None) -> list[dict]:
    """The segmentation and clip datasets (``SEGMENTATION_DATASETS``, ``CLIP_DATASETS``). What each needs is
    checked without decoding anything: the offline ones are generated from Fashion-MNIST; UCF101 and HMDB51 need the
    user's files (their split lists are looked for); oxford-pets and voc-segmentation are downloaded on first use."""
    from convolab.data.clips import CLIP_DATASETS, DEFAULT_FRAMES, find_official_split
    from convolab.data.moving import DEFAULT_FRAMES as MOVING_FRAMES
    from convolab.data.moving import DEFAULT_SIZE as MOVING_SIZE
    from convolab.data.moving import MOTIONS
    from convolab.data.scenes import CANVAS, COARSE_CLASSES, FINE_CLASSES, SCENE_DATASETS
    from convolab.data.segmentation import SEGMENTATION_DATASETS
    from convolab.errors import DataNotFoundError

    if fashion is not None and fashion["status"] == "available":
        offline = ("available (generated)", fashion["location"])
    else:
        offline = ("needs fashion-mnist", None)
    known = {  # classes, shape (C x [T x] H x W; None where the files decide)
        "fashion-scenes": (len(FINE_CLASSES), f"1x{CANVAS}x{CANVAS}"),
        "fashion-scenes-coarse": (len(COARSE_CLASSES), f"1x{CANVAS}x{CANVAS}"),
        "oxford-pets": (2, "3x128x128"),
        "voc-segmentation": (21, "3x128x128"),
        "moving-fashion": (len(MOTIONS), f"1x{MOVING_FRAMES}x{MOVING_SIZE}x{MOVING_SIZE}"),
        "ucf101": (101, f"3x{DEFAULT_FRAMES}xHxW"),
        "hmdb51": (51, f"3x{DEFAULT_FRAMES}xHxW"),
    }
    rows = []
    for task, table in (("segmentation", SEGMENTATION_DATASETS), ("clips", CLIP_DATASETS)):
        for name, description in table.items():
            classes, shape = known.get(name, (None, None))
            if name in SCENE_DATASETS or name == "moving-fashion":
                status, where = offline
            elif name in ("ucf101", "hmdb51"):
                try:
                    where, status = str(find_official_split(name, data_dir).root), "available"
                except (DataNotFoundError, ValueError, OSError):
                    where, status = None, "needs files (--data-dir)"
            else:
                where, status = None, "downloaded on first use"
            rows.append({"name": name, "task": task, "classes": classes, "shape": shape, "status": status,
                         "location": where, "description": description})
    return rows
