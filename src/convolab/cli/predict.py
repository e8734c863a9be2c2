"""``convolab predict``: what a run's model says about input files — the top-k classes of images (classification) or
videos (clip runs), or one class-index mask per image (segmentation, written as palette PNGs). With
``--mc-samples N`` a classifier's top classes come from N MC-dropout passes, with their spread
(:mod:`convolab.explain.uncertainty`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from convolab.cli._common import EXIT_USAGE, USER_ERRORS, HelpFormatter, error_line, one_line, positive_int, print_json

HELP = "top-k classes of image or video files, or segmentation masks"

__all__ = ["register", "run", "mask_palette", "write_mask"]


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.device import DEVICE_CHOICES

    p = sub.add_parser("predict", help=HELP, formatter_class=HelpFormatter,
                       description="Classify image files of any size or mode; each is converted exactly as the "
                                   "training images were (channels, size, normalisation). A clip run takes video "
                                   "files (their first T frames); a segmentation run writes one palette PNG mask "
                                   "per image into --out and prints each class's share of the pixels.",
                       epilog="example: convolab predict runs/demo shoe.png shirt.jpg --top-k 3\n"
                              "         convolab predict runs/mlp shoe.png --mc-samples 30\n"
                              "         convolab predict runs/unet street.jpg --out masks/")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (video files for a clip run)")
    p.add_argument("--top-k", type=positive_int, default=3, help="classes to show per input")
    p.add_argument("--mc-samples", type=positive_int, metavar="N",
                   help="MC dropout: N passes (N >= 2) with the dropout layers on (everything else, BatchNorm too, "
                        "in evaluation mode); shows the mean probabilities, each one's standard deviation over the "
                        "passes, the predictive entropy and the mutual information (nats)")
    p.add_argument("--seed", type=int, default=0, help="with --mc-samples: seed of the dropout masks")
    p.add_argument("--out", metavar="DIR", help="segmentation: folder for the masks (<image stem>.png)")
    p.add_argument("--overwrite", action="store_true", help="segmentation: replace masks already in --out")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="cpu", help="compute device")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def mask_palette() -> list[int]:
    """The fixed 256-colour palette of the masks: PASCAL VOC's (class 0 black; the bits of the class index spread
    over the high bits of R, G and B), so that masks look like the field's and neighbouring classes differ."""
    palette = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_mask(path: str | Path, mask) -> None:
    """Write a class-index mask (H, W) (uint8 tensor or array) atomically as a palette PNG (PIL mode "P")."""
    from PIL import Image

    from convolab.atomic import atomic_path

    image = Image.fromarray(np.ascontiguousarray(np.asarray(mask, dtype=np.uint8)))  # (H, W) uint8: mode "L"
    image.putpalette(mask_palette())  # "L" -> "P", the pixel values kept as palette indices
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _mask_paths(args: argparse.Namespace) -> list[Path]:
    """``--out/<stem>.png`` per image, refused before anything is predicted when two images share a stem or a mask
    exists (without --overwrite)."""
    if not args.out:
        raise ValueError("a segmentation run writes masks: pass --out DIR (a folder for one <image stem>.png each)")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: not a folder; expected a folder for the masks")
    paths = [out / f"{Path(image).stem}.png" for image in args.images]
    seen: dict[Path, str] = {}
    for image, path in zip(args.images, paths):
        if path in seen:
            raise ValueError(f"{image} and {seen[path]} would both write {path}; give the images different names")
        seen[path] = image
        if path.exists() and not args.overwrite:
            raise ValueError(f"{path} already exists; pass --overwrite to replace it, or another --out")
    return paths


def run(args: argparse.Namespace) -> int:
    """Print each input's top classes (or write its mask); an input that cannot be read is one error line, the
    others go on (exit 2 if any failed)."""
    from convolab.device import resolve_device
    from convolab.runs import load_run
    from convolab.train.tasks import TASKS

    run = load_run(args.run, device=resolve_device(args.device))
    writes_masks = run.task in TASKS and TASKS[run.task].predicts_masks
    if writes_masks:
        masks = _mask_paths(args)
    elif args.out or args.overwrite:
        raise ValueError(f"--out and --overwrite are for runs that write masks (segmentation); {args.run} is a "
                         f"{run.task} run (its predictions are printed)")
    if args.mc_samples is not None:
        if writes_masks:
            raise ValueError(f"--mc-samples is for classifiers; {args.run} is a {run.task} run (it writes masks)")
        from convolab.explain.uncertainty import check_dropout

        check_dropout(run.model, args.mc_samples)  # before any input: one line, not one per image
    results, failed = [], 0
    for i, image in enumerate(args.images):
        try:
            if writes_masks:
                mask = run.predict([image])[0]  # (H, W) uint8
                write_mask(masks[i], mask.numpy())
                counts = np.bincount(mask.numpy().ravel(), minlength=len(run.classes))
                shares = {c: float(n) / mask.numel() for c, n in zip(run.classes, counts.tolist())}
                results.append({"image": image, "mask": str(masks[i]), "shares": shares})
                if not args.json:
                    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
                    text = ", ".join(f"{c} {100 * s:.1f}%" for c, s in ranked if s > 0)
                    print(f"{image}: {text} -> {masks[i]}")
                continue
            if args.mc_samples is not None:
                mc = run.predict([image], top_k=args.top_k, mc_samples=args.mc_samples, seed=args.seed)[0]
                results.append({"image": image, **mc})
                if not args.json:
                    ranked = ", ".join(f"{t['class']} {100 * t['probability']:.1f}% ± {100 * t['std']:.1f}%"
                                       for t in mc["top_k"])
                    print(f"{image}: {ranked} (MC dropout, {mc['mc_samples']} passes: entropy {mc['entropy']:.3f}, "
                          f"mutual information {mc['mutual_information']:.3f} nats)")
                continue
            top = run.predict([image], top_k=args.top_k)[0]
        except USER_ERRORS as e:
            failed += 1
            print(f"convolab predict: error: {one_line(error_line(e))}", file=sys.stderr)
            results.append({"image": image, "error": error_line(e)})
            continue
        results.append({"image": image, "top_k": top})
        if not args.json:
            ranked = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in top)
            print(f"{image}: {ranked}")
    if args.json:
        print_json(results)
    return EXIT_USAGE if failed else 0
