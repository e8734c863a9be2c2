"""Distillation and quantization-aware training, each against its honest control, over several seeds (issue 18).

(a) Distillation: a student distilled from a trained teacher run against the same student trained alone with the
    same recipe (the teacher run's), seed and number of steps (:func:`convolab.compress.distill.distill_control`).
(b) QAT: from a trained run, the int8 graph after quantization-aware fine-tuning against post-training int8
    (PTQ, calibrated on training images) and against the float32 model fine-tuned for the same steps with the same
    recipe (:func:`convolab.compress.qat.qat_control`); the float32 starting point is measured too.

Each arm prints its test accuracy per seed and mean +- sample std, and the paired difference (same seed) of the
method and its control. All runs go into a temporary folder (``--out`` keeps them).

Measured 2026-12-06 on the project's 2-core CPU, busy (load average 4-12 from other work; times are not
comparable between rows), seeds 0 1 2, test accuracy mean +- sample std over the seeds:

(b) QAT from runs/demo (tutorial_cnn, float32 91.36 %), 1 epoch = 422 steps at 3e-4 (a tenth of the run's rate),
    float32 steps, the first (1-channel) convolution kept float32 as PTQ keeps it:
      int8 after QAT 91.50 +- 0.08, int8 PTQ (512 images) 91.35 +- 0.03, float32 fine-tuned 91.51 +- 0.08;
      paired: QAT - PTQ +0.15 +- 0.06 points, QAT - fp32 fine-tuned -0.01 +- 0.04 points.
    (seed 0 ran with 2 threads, seeds 1 and 2 with --threads 1 in a second process.)
(a) Distillation into mlp widths=[64] (51 k parameters), 2 epochs = 844 steps, the teacher run's recipe; the
    student alone is the control; distillation did *not* help this student at this budget:
      teacher runs/demo (label smoothing 0.1, 91.36 %), T=4, alpha=0.9: 85.45 +- 0.11 vs 85.80 +- 0.10 alone,
        paired -0.35 +- 0.18 points;
      teacher trained without label smoothing (tutorial_cnn, 5 epochs, 91.12 %; Mueller et al. 2019 find
        label-smoothed teachers distil worse): T=4, alpha=0.9: 84.95 +- 0.17 vs 85.97 +- 0.09, paired -1.01 +- 0.09;
        T=4, alpha=0.5: 85.26 +- 0.07, paired -0.71 +- 0.02; T=2, alpha=0.5: 85.90 +- 0.10, paired -0.07 +- 0.12.
    Same-architecture student (tutorial_cnn from scratch, 1 epoch = 422 steps, teacher without smoothing, T=4,
    alpha=0.9): 88.03 +- 0.22 distilled vs 87.90 +- 0.07 alone, paired +0.13 +- 0.18 points (within the noise).
    The teacher's forward pass on every batch made a distilled run 5-10x slower than the MLP alone here.

Usage: python benchmarks/distill_qat.py [--run runs/demo] [--teacher RUN] [--student mlp] [--student-kwargs JSON]
           [--distill-epochs 2] [--qat-epochs 1] [--seeds 0 1 2] [--temperature 4] [--alpha 0.9]
           [--only distill|qat] [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch


def _stats(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:6.2f} +- {100 * std:4.2f} %"


def _row(name: str, values: list[float], seconds: float) -> None:
    per_seed = "  ".join(f"{100 * v:6.2f}" for v in values)
    print(f"  {name:<34} {per_seed}   mean {_stats(values)}   ({seconds:.0f} s)", flush=True)


def _diff(name: str, a: list[float], b: list[float]) -> None:
    d = [x - y for x, y in zip(a, b)]
    print(f"  {name:<34} paired difference {_stats(d)} (points)", flush=True)


def bench_distill(args, out: Path) -> None:
    from convolab.compress.distill import distill, distill_control

    kwargs = json.loads(args.student_kwargs) if args.student_kwargs else None
    common = dict(epochs=args.distill_epochs, student_kwargs=kwargs, progress=False, plots=False, checkpoints=False)
    arms = {"distilled": [], "alone": []}
    seconds = {"distilled": 0.0, "alone": 0.0}
    steps = set()
    for seed in args.seeds:
        for arm in arms:
            t0 = time.perf_counter()
            if arm == "distilled":
                r = distill(args.teacher, args.student, out / f"distill-{seed}", temperature=args.temperature,
                            alpha=args.alpha, seed=seed, **common)
            else:
                r = distill_control(args.teacher, args.student, out / f"alone-{seed}", seed=seed, **common)
            seconds[arm] += time.perf_counter() - t0
            arms[arm].append(r.summary["test_accuracy"])
            steps.add(r.summary["steps"])
    teacher = json.loads((Path(args.teacher) / "summary.json").read_text())["test_accuracy"]
    print(f"(a) distillation: teacher {args.teacher} ({100 * teacher:.2f} %), student {args.student} "
          f"{kwargs or ''}, {args.distill_epochs} epoch(s) = {sorted(steps)} steps each, T={args.temperature}, "
          f"alpha={args.alpha}; test accuracy per seed {args.seeds}:")
    _row("student distilled", arms["distilled"], seconds["distilled"])
    _row("student alone (same recipe/steps)", arms["alone"], seconds["alone"])
    _diff("distilled - alone", arms["distilled"], arms["alone"])


def bench_qat(args, out: Path) -> None:
    import convolab
    from convolab.compress.ptq import DEFAULT_CALIBRATION_IMAGES, calibration_images, quantize_ptq
    from convolab.compress.qat import qat, qat_control
    from convolab.runs.recipe import load_data, run_config
    from convolab.train.loop import make_loader
    from convolab.train.metrics import evaluate

    run = convolab.load_run(args.run)
    data = load_data(run, run_config(run))
    test = make_loader(data.test, 1000, mean=run.mean, std=run.std, device=torch.device("cpu"))
    t0 = time.perf_counter()
    fp32 = evaluate(run.model, test).accuracy
    base_seconds = time.perf_counter() - t0
    arms = {"qat": [], "ptq": [], "fp32": []}
    seconds = dict.fromkeys(arms, 0.0)
    steps = set()
    common = dict(epochs=args.qat_epochs, progress=False, plots=False)
    for seed in args.seeds:
        t0 = time.perf_counter()
        r = qat(run, out / f"qat-{seed}", seed=seed, **common)
        seconds["qat"] += time.perf_counter() - t0
        arms["qat"].append(r.summary["test_accuracy"])
        steps.add(r.summary["steps"])
        t0 = time.perf_counter()
        c = qat_control(run, out / f"fp32-{seed}", seed=seed, **common)
        seconds["fp32"] += time.perf_counter() - t0
        arms["fp32"].append(c.summary["test_accuracy"])
        steps.add(c.summary["steps"])
        t0 = time.perf_counter()
        images = calibration_images(data.train, DEFAULT_CALIBRATION_IMAGES, run.mean, run.std, seed=seed)
        _, int8, _, _ = quantize_ptq(run.model, images)
        arms["ptq"].append(evaluate(int8, test).accuracy)
        seconds["ptq"] += time.perf_counter() - t0
    print(f"(b) QAT from {args.run} (float32 {100 * fp32:.2f} %, recorded {100 * run.summary['test_accuracy']:.2f} "
          f"%; {base_seconds:.0f} s), {args.qat_epochs} epoch(s) = {sorted(steps)} steps, the run's recipe at a "
          f"tenth of its rate; test accuracy per seed {args.seeds}:")
    _row("int8 after QAT", arms["qat"], seconds["qat"])
    _row(f"int8 PTQ ({DEFAULT_CALIBRATION_IMAGES} calibration images)", arms["ptq"], seconds["ptq"])
    _row("float32 fine-tuned (same steps)", arms["fp32"], seconds["fp32"])
    _diff("QAT int8 - PTQ int8", arms["qat"], arms["ptq"])
    _diff("QAT int8 - fp32 fine-tuned", arms["qat"], arms["fp32"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo", help="trained run QAT starts from (default runs/demo)")
    p.add_argument("--teacher", default=None, help="teacher run for distillation (default: --run)")
    p.add_argument("--student", default="mlp")
    p.add_argument("--student-kwargs", default='{"widths": [64]}', help="JSON of the student's model arguments")
    p.add_argument("--distill-epochs", type=int, default=2)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=("distill", "qat"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    args.teacher = args.teacher or args.run
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("convolab").setLevel(logging.WARNING)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convolab-distill-qat-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        if args.only in (None, "distill"):
            bench_distill(args, out)
        if args.only in (None, "qat"):
            bench_qat(args, out)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
