"""The tutorials' Fashion-MNIST recipe, as they write it, against `convolab train`, in one run.

Both train the same network (tutorial_cnn: conv16-pool-conv32-pool-FC128-FC10) with Adam at lr 1e-3,
batch 64, for 5 epochs, and report test accuracy. Each side runs as its own process and is timed
from start to exit: Python and torch imports, data loading, training, evaluation, and (for convolab)
writing the run directory with its plots all count. Two comparisons, both printed (``--variant``):

* ``every-epoch``: the tutorial with a test pass (loss and accuracy, batch 64) after every epoch, as the
  PyTorch quickstart has it; convolab with its default 10 % validation split held out of training and
  evaluated every epoch (``--recipe tutorial --val-fraction 0.1``: tutorial_cnn, Adam 1e-3 constant, batch
  64, no label smoothing).
* ``printed``: the loop exactly as the tutorials print it -- no test pass between epochs, one test pass
  at batch 1000 at the end -- against ``convolab train --recipe tutorial`` (the same hyper-parameters,
  all 60,000 training images, no validation split), so both do the same work.

Both tutorials use torchvision's FashionMNIST dataset with per-sample ``ToTensor`` + ``Normalize`` and
``DataLoader``s of batch 64 (shuffled for training).

Both sides' CPU time (user + system, all threads) is printed too, as it drifts less than wall time on
a shared machine: the tutorial's is read inside its process after its last test pass (its interpreter's
exit is left out), convolab's is the whole process's.

Untimed preparation: the IDX files are unpacked into torchvision's folder layout for the tutorial,
and convolab's decoded-dataset cache is filled once, since both are one-time costs for a user.

Usage: python benchmarks/tutorial_speed.py [--epochs 5] [--device cpu|cuda] [--repeats N]
       [--variant both|every-epoch|printed] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tutorial import prepare_torchvision_root, run_printed_tutorial, run_tutorial  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; return its wall time, its CPU time (all threads) and stdout (its stderr streams through)."""
    cpu0 = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return seconds, _children_cpu() - cpu0, proc.stdout


def _table(title: str, rows: list[dict]) -> dict:
    print(f"\n{title}")
    print(f"{'seed':<5} {'tutorial':>10} {'convolab':>10} {'speed-up':>9} {'tutorial acc':>13} {'convolab acc':>13} "
          f"{'CPU: tutorial':>14} {'convolab':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['seed']:<5} {r['tutorial_seconds']:>9.1f}s {r['convolab_seconds']:>9.1f}s {r['speedup']:>8.2f}x "
              f"{r['tutorial_accuracy']:>13.4f} {r['convolab_accuracy']:>13.4f} {r['tutorial_cpu_seconds']:>13.1f}s "
              f"{r['convolab_cpu_seconds']:>8.1f}s {r['tutorial_cpu_seconds'] / r['convolab_cpu_seconds']:>5.2f}x")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    ratio = mean["tutorial_seconds"] / mean["convolab_seconds"]
    cpu_ratio = mean["tutorial_cpu_seconds"] / mean["convolab_cpu_seconds"]
    print(f"{'mean':<5} {mean['tutorial_seconds']:>9.1f}s {mean['convolab_seconds']:>9.1f}s {ratio:>8.2f}x "
          f"{mean['tutorial_accuracy']:>13.4f} {mean['convolab_accuracy']:>13.4f} "
          f"{mean['tutorial_cpu_seconds']:>13.1f}s {mean['convolab_cpu_seconds']:>8.1f}s {cpu_ratio:>5.2f}x")
    print(f"speed-up (ratio of mean wall times): {ratio:.2f}x; accuracy difference (convolab - tutorial): "
          f"{100 * (mean['convolab_accuracy'] - mean['tutorial_accuracy']):+.2f} points; ratio of mean CPU times "
          f"(all threads; steadier than wall time on a shared machine): {cpu_ratio:.2f}x")
    return {"runs": rows, "speedup": ratio, "cpu_speedup": cpu_ratio,
            "accuracy_difference": mean["convolab_accuracy"] - mean["tutorial_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides use it)")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs, with seeds 0, 1, ...")
    ap.add_argument("--variant", choices=("both", "every-epoch", "printed"), default="both",
                    help="which comparison (see above; default both)")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="every-epoch: convolab's validation hold-out (0 trains on all 60,000 images)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = ap.parse_args()

    from convolab.data import load_dataset

    load_dataset("fashion-mnist")  # fill convolab's decoded cache (untimed, a one-time cost)
    every, printed = [], []
    common = ["--data", "fashion-mnist", "--epochs", str(args.epochs), "--device", args.device, "--json"]
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare_torchvision_root(Path(tmp) / "tv")
        for seed in range(args.repeats):
            if args.variant in ("both", "every-epoch"):
                print(f"[seed {seed}] tutorial with a test pass after every epoch: {args.epochs} epochs on "
                      f"{args.device}", flush=True)
                tutorial = run_tutorial(root, args.epochs, args.device, seed)
                print(f"[seed {seed}] convolab train: same model and recipe, validating every epoch", flush=True)
                # the tutorial recipe, with its validation split held out (the flag beside --recipe wins)
                t_cl, cpu_cl, out = timed([sys.executable, "-m", "convolab", "train", "--recipe", "tutorial",
                                           *common, "--seed", str(seed), "--val-fraction", str(args.val_fraction),
                                           "--out", str(Path(tmp) / f"every{seed}")])
                every.append(dict(seed=seed, tutorial_seconds=tutorial.wall, convolab_seconds=t_cl,
                                  tutorial_accuracy=tutorial.epochs[-1].accuracy,
                                  convolab_accuracy=json.loads(out)["test_accuracy"],
                                  speedup=tutorial.wall / t_cl, tutorial_cpu_seconds=tutorial.epochs[-1].cpu_seconds,
                                  convolab_cpu_seconds=cpu_cl))
            if args.variant in ("both", "printed"):
                print(f"[seed {seed}] the tutorial loop as printed: {args.epochs} epochs, one test pass at the end",
                      flush=True)
                t_tut, acc_tut, cpu_tut = run_printed_tutorial(root, args.epochs, args.device, seed)
                print(f"[seed {seed}] convolab train --recipe tutorial", flush=True)
                t_cl, cpu_cl, out = timed([sys.executable, "-m", "convolab", "train", "--recipe", "tutorial", *common,
                                           "--seed", str(seed), "--out", str(Path(tmp) / f"printed{seed}")])
                printed.append(dict(seed=seed, tutorial_seconds=t_tut, convolab_seconds=t_cl,
                                    tutorial_accuracy=acc_tut, convolab_accuracy=json.loads(out)["test_accuracy"],
                                    speedup=t_tut / t_cl, tutorial_cpu_seconds=cpu_tut, convolab_cpu_seconds=cpu_cl))
    figures = {"device": args.device, "epochs": args.epochs}
    if every:
        figures["every_epoch"] = _table("with a test pass after every epoch (convolab validates every epoch):",
                                        every)
    if printed:
        figures["printed"] = _table("the loop as the tutorials print it (one test pass at the end) against "
                                    "convolab train --recipe tutorial:", printed)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
