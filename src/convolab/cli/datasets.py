"""``convolab datasets``: the named datasets and where they are found; downloads."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, error_line, print_json

HELP = "list the datasets and where they are found"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("datasets", help=HELP, formatter_class=HelpFormatter,
                       description="List the named datasets (classes, image shape, where each was found), or "
                                   "download some.",
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
        rows.append({"name": spec.name, "classes": len(spec.classes),
                     "shape": f"{spec.in_chans}x{spec.image_size[0]}x{spec.image_size[1]}",
                     "status": status, "location": where, "description": spec.description})
    if args.json:
        print_json(rows)
        return 0
    print(f"{'dataset':<14} {'classes':>7}  {'shape':<8} {'status':<25} location")
    for r in rows:
        print(f"{r['name']:<14} {r['classes']:>7}  {r['shape']:<8} {r['status']:<25} {r['location'] or '-'}")
    print("\nany folder of images in class subfolders works too: convolab train --data PATH "
          "(PATH/<class>/... or PATH/train/<class>/... + PATH/test/<class>/...)")
    return 0
