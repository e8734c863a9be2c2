"""Speed runs timed the way speed-run records (airbench, hlb-CIFAR10) time them: N seeds in one warm process.

The process imports convolab and trains one untimed warm-up run (it absorbs torch.compile, cuDNN's algorithm
search and the first use of torch's optimizers), then one run per seed. A run is timed from the start of its
first training step to its final test accuracy (test-time augmentation included): with CUDA events on a GPU,
``time.perf_counter`` on a CPU. Loading the data (from convolab's decoded cache) onto the device, building the
model and the loaders before the first step are counted apart ("setup"), as is writing the run folder after the
test. (Each run builds its own model, so a whole-step CUDA graph is captured inside the timed window.)

Printed: every seed's test accuracy and timed seconds; their mean, min and max; and this process's phases
(imports, warm-up, each run's setup / training + test / writing) beside its whole wall time, so the
record and the whole-process cost are both on the page. ``benchmarks/time_to_accuracy.py`` times whole
``convolab train`` processes instead (what a user waits for).

Usage:
  python benchmarks/speedrun.py --recipe speedrun-gpu --seeds 5            # on a CUDA machine
  python benchmarks/speedrun.py --recipe speedrun-cpu --seeds 5 --device cpu
  python benchmarks/speedrun.py --recipe speedrun-gpu --seeds 5 -- --epochs 12 --batch-size 1024   # a variant
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NoReturn  # noqa: E402

import torch  # noqa: E402

import convolab  # noqa: E402,F401
from convolab.runs.session import make_trainer  # noqa: E402
from convolab.train.callbacks import Callback  # noqa: E402
from convolab.train.flags import read_flags  # noqa: E402

T_IMPORTED = time.perf_counter()


class RunClock(Callback):
    """Marks the start of the first training step (the end of setup) and the end of the final test (TTA included),
    with CUDA events on a GPU; the wall clock marks setup and writing too."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.wall: dict[str, float] = {"created": time.perf_counter()}
        self.events: dict[str, torch.cuda.Event] = {}

    def _mark(self, name: str) -> None:
        if self.cuda:
            self.events[name] = torch.cuda.Event(enable_timing=True)
            self.events[name].record()
        self.wall[name] = time.perf_counter()

    def setup(self, trainer) -> None:  # the trainer is built; the next thing it does is the first training step
        self._mark("start")

    def on_fit_end(self, trainer, summary: dict, test) -> None:  # the test (and its TTA) is done
        self._mark("tested")

    def timed_seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return self.events["start"].elapsed_time(self.events["tested"]) / 1000.0
        return self.wall["tested"] - self.wall["start"]


def one_run(flags: list[str], seed: int, device: str, out: Path) -> dict:
    config, _ = read_flags([*flags, "--seed", str(seed), "--device", device, "--out", str(out), "--quiet"])
    clock = RunClock(torch.device("cuda" if device.startswith("cuda") else "cpu"))
    t0 = time.perf_counter()
    result = make_trainer(config, callbacks=[clock]).fit()  # (its data loaded as `convolab train` loads it)
    t1 = time.perf_counter()
    # (the test loss and accuracy were computed before on_fit_end, so the last mark waited for them)
    s = result.summary
    return {"seed": seed, "accuracy": s["test_accuracy"], "timed": clock.timed_seconds(),
            "setup": clock.wall["start"] - t0, "train_and_test": clock.wall["tested"] - clock.wall["start"],
            "write": t1 - clock.wall["tested"], "whole": t1 - t0, "epochs": s["epochs"],
            "accuracy_without_tta": s.get("test_accuracy_without_tta")}


def _refuse(message: str) -> NoReturn:
    """One line on stderr and exit code 2 (argparse's own error would print the usage line too)."""
    print(f"speedrun.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Flags after -- are passed to convolab train (they win over the recipe's).")
    p.add_argument("--recipe", default="speedrun-gpu", help="a convolab train --recipe (default: speedrun-gpu)")
    p.add_argument("--seeds", type=int, default=5, help="timed runs, seeds 0..N-1 (default: 5)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    p.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        _refuse("--device cuda: this machine has no CUDA GPU")
    flags = ["--recipe", args.recipe, "--data", args.data, *extra]
    try:  # a refused flag or recipe stops here, before any data is loaded
        read_flags([*flags, "--device", device])[0].validate()
    except ValueError as e:
        _refuse(str(e))

    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"speed run: --recipe {args.recipe} {' '.join(extra)} on {args.data}, {name}; {args.seeds} timed seeds "
          f"after {'no' if args.no_warmup else 'one'} warm-up run", flush=True)

    rows, warm = [], None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_warmup:
            warm = one_run(flags, 1000, device, Path(tmp) / "warmup")
            print(f"  warm-up (seed 1000, untimed): {warm['accuracy']:.4f} in {warm['whole']:.2f} s", flush=True)
        for seed in range(args.seeds):
            row = one_run(flags, seed, device, Path(tmp) / f"seed{seed}")
            rows.append(row)
            print(f"  seed {seed}: test accuracy {row['accuracy']:.4f}  timed {row['timed']:.3f} s  (setup "
                  f"{row['setup']:.2f} s, writing {row['write']:.2f} s, {row['epochs']} epochs)", flush=True)
    whole = time.perf_counter() - T_START

    acc = [r["accuracy"] for r in rows]
    timed = [r["timed"] for r in rows]
    clock = "CUDA events" if device.startswith("cuda") else "perf_counter"
    print(f"\ntest accuracy: mean {statistics.fmean(acc):.4f}  min {min(acc):.4f}  max {max(acc):.4f}"
          + (f"  sample std {statistics.stdev(acc):.4f}" if len(acc) > 1 else ""))
    print(f"timed seconds ({clock}, first step to final test accuracy): mean {statistics.fmean(timed):.3f}  "
          f"min {min(timed):.3f}  max {max(timed):.3f}")
    print("this process's phases:")
    phases = [("imports (python, torch, convolab)", T_IMPORTED - T_START)]
    if warm is not None:
        phases.append(("warm-up run (untimed)", warm["whole"]))
    phases += [("setup of the timed runs (data, model, loaders)", sum(r["setup"] for r in rows)),
               ("training + test of the timed runs", sum(r["train_and_test"] for r in rows)),
               ("writing the timed runs' folders", sum(r["write"] for r in rows))]
    for label, seconds in phases:
        print(f"  {label:<42} {seconds:8.2f} s")
    print(f"  {'whole process (wall)':<42} {whole:8.2f} s")
    if args.json:
        print(json.dumps({"recipe": args.recipe, "extra": extra, "device": name, "runs": rows, "warmup": warm,
                          "phases": dict(phases), "whole_seconds": whole}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
