"""Does a 3-D CNN use time? The same network trained on moving-fashion's clips and on clips of one frame.

Issue 16 asks for >= 90 % clip accuracy with ``r3d_18`` or ``c3d`` (narrowed is fine) on the offline
moving-item set, and for the same network fed one repeated frame per clip to stay near chance, printed side by
side. moving-fashion's label is the motion (left, right, up, down, clockwise, anticlockwise, zoom in, zoom
out) of a Fashion-MNIST item, and every clip's first frame is drawn from the same distribution whatever its
class, so a model that sees only frame 0 can do no better than chance (1/8).

Both runs go through ``convolab.runs.session.make_trainer(...).fit()`` with the same config and seed (the
same initial weights and data order):

* **clips**: moving-fashion as loaded (default 8 frames of 32x32).
* **frame 0 only**: the same dataset with every clip replaced by its frame 0 repeated T times, in all splits
  (same labels, same normalisation statistics), handed in with ``data=``: the network's shape and work are
  unchanged; only the motion is gone.

Printed: test clip accuracy and video accuracy of both, chance, and each run's time (``fit()`` end to end:
setup, training, evaluation, the run folder). The default recipe is a narrowed C3D (stage widths 8, 16, 32,
64, 64 instead of 64 ... 512; fc6/fc7 of 128 units instead of 4096, dropout 0.2 after each; 581,304
parameters) trained 6 epochs at batch 64 with convolab's defaults otherwise (Adam, one-cycle schedule at a
peak of 3e-3, label smoothing 0.1, no augmentation). A narrowed R3D-18 (``--model r3d_18``, widths 8 ... 64) costs about
5x as much per clip on a CPU (measured here at batch 32, channels-last as convolab lays clips out: 71 against
14 ms of CPU time per training clip).

Usage: python benchmarks/clips_use_time.py [--model c3d|r3d_18] [--widths 8 16 32 64 64] [--fc-width 128]
           [--drop-rate 0.2] [--epochs 6] [--batch-size 64] [--lr 3e-3] [--out DIR] [--check] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

CHANCE_MARGIN = 0.10  # "near chance": within this of 1/K (printed, not enforced unless --check)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="c3d", choices=("c3d", "r3d_18"))
    ap.add_argument("--widths", type=int, nargs="+", default=None,
                    help="stage widths (c3d: 5, default 8 16 32 64 64; r3d_18: 4, default 8 16 32 64)")
    ap.add_argument("--fc-width", type=int, default=128, help="c3d: fc6/fc7 units (the paper's: 4096)")
    ap.add_argument("--drop-rate", type=float, default=None, help="dropout before the classifier (default: c3d "
                    "0.2 after fc6 and fc7, narrowed with them (the model's own default is 0.5); r3d_18: 0, before fc)")
    ap.add_argument("--data", default="moving-fashion")
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default: the dataset's, 8)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--precision", default="32", choices=("auto", "32", "bf16"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--out", default=None, help="keep the two run folders here (DIR/clips, DIR/frame0)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless clip accuracy >= 0.90 and frame-0 accuracy within 0.10 of chance")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch, the first 128 clips of each split")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = ap.parse_args(argv)
    if args.drop_rate is None and args.model == "c3d":
        args.drop_rate = 0.2
    if args.widths is None:
        args.widths = [8, 16, 32, 64, 64] if args.model == "c3d" else [8, 16, 32, 64]
    if args.quick:
        args.epochs = 1
    return args


def frame0_dataset(data):
    """``data`` with every clip (N, C, T, H, W) replaced by its frame 0 repeated T times, in every split."""

    def still(split):
        images = split.images  # (N, C, T, H, W) uint8
        # (N, C, 1, H, W) -> (N, C, T, H, W): contiguous, so the loader gathers it as it does real clips
        return dataclasses.replace(split, images=images[:, :, :1].expand_as(images).contiguous())

    return dataclasses.replace(data, train=still(data.train), val=still(data.val), test=still(data.test))


def shrink(data, n: int):
    """The first ``n`` clips of every split (a --quick run)."""

    def first(split):
        return dataclasses.replace(split, images=split.images[:n], labels=split.labels[:n],
                                   groups=None if split.groups is None else split.groups[:n])

    return dataclasses.replace(data, train=first(data.train), val=first(data.val), test=first(data.test))


def train_once(config, data) -> tuple[dict, float]:
    """Train through convolab's session (a run folder at ``config.out``); (summary, wall seconds)."""
    from convolab.runs.session import make_trainer

    t0 = time.perf_counter()
    result = make_trainer(config, data=data).fit()
    return result.summary, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import convolab
    from convolab.train.config import TrainConfig

    data = convolab.load_dataset(args.data, frames=args.frames, seed=args.seed)
    if data.task != "clips":
        sys.exit(f"--data {args.data} is a {data.task} dataset; this benchmark needs clips")
    if args.quick:
        data = shrink(data, 128)
    kwargs = {"widths": list(args.widths)}
    if args.model == "c3d":
        kwargs["fc_width"] = args.fc_width
    if args.drop_rate is not None:
        kwargs["drop_rate"] = args.drop_rate
    chance = 1 / data.num_classes
    print(f"{args.model} {kwargs} on {data.describe()}; {args.epochs} epochs, batch {args.batch_size}, Adam "
          f"one-cycle peak lr {args.lr}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        results = {}
        for name, d in (("clips", data), ("frame0", frame0_dataset(data))):
            config = TrainConfig(model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                                 lr=args.lr, precision=args.precision, device=args.device, seed=args.seed,
                                 model_kwargs=kwargs, checkpoints=False, plots=False, progress=False,
                                 out=str(root / name), overwrite=bool(args.out))
            print(f"training on {'the clips' if name == 'clips' else 'frame 0 repeated'} ...", flush=True)
            summary, seconds = train_once(config, d)
            results[name] = dict(clip_accuracy=summary["test_clip_accuracy"],
                                 video_accuracy=summary["test_video_accuracy"], seconds=seconds,
                                 params=summary["params"], best_val_accuracy=summary["best_val_accuracy"])
    clips, still = results["clips"], results["frame0"]
    print()
    print(f"{'':<22}{'clips':>10}{'frame 0 only':>14}{'chance':>9}")
    print(f"{'test clip accuracy':<22}{clips['clip_accuracy']:>10.4f}{still['clip_accuracy']:>14.4f}{chance:>9.4f}")
    print(f"{'test video accuracy':<22}{clips['video_accuracy']:>10.4f}{still['video_accuracy']:>14.4f}"
          f"{chance:>9.4f}")
    print(f"{'training time (s)':<22}{clips['seconds']:>10.1f}{still['seconds']:>14.1f}")
    print(f"{clips['params']:,} parameters; the difference is what the motion is worth: "
          f"{100 * (clips['clip_accuracy'] - still['clip_accuracy']):+.1f} points of clip accuracy")
    if args.json:
        print(json.dumps({"args": vars(args), "chance": chance, **results}))
    if args.check:
        bad = []
        if clips["clip_accuracy"] < 0.90:
            bad.append(f"clip accuracy {clips['clip_accuracy']:.4f} < 0.90")
        if abs(still["clip_accuracy"] - chance) > CHANCE_MARGIN:
            bad.append(f"frame-0 accuracy {still['clip_accuracy']:.4f} is not within {CHANCE_MARGIN} of chance")
        if bad:
            print(f"--check: {'; '.join(bad)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
