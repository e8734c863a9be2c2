"""Post-training int8 of a trained run against its honest baselines, in one process run.

Issue 18's "must reach" for PTQ: test accuracy within 0.5 points of float32, at least 3.5x smaller on disk, and at
least 2x faster at batch 256 than float32 *compiled* (inductor, freezing on; the int8 model is compiled the same
way) on this CPU. This runs ``convolab compress RUN --method ptq`` (:func:`convolab.compress.ptq.ptq_run`) into a
temporary folder -- float32 eager, compiled and in ONNX Runtime, int8 through torchao's PT2E flow and through ONNX
Runtime's static quantization, all on the run's whole test split -- prints the table and checks the three lines.

Usage: python benchmarks/compress_speed.py [RUN ...] [--repeats 7] [--threads N] [--no-rewrite]
  (default RUN: runs/demo, which `make demo` trains: tutorial_cnn on Fashion-MNIST)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path


def rewritten_fp32_speedup(run_path: str, repeats: int) -> float | None:
    """How much faster (>1) or slower the float32 model compiles and runs at batch 256 after the exact rewrites PTQ
    applies (convolab.models.rewrite), timed in interleaved rounds beside the original; None when none apply."""
    import copy
    import statistics

    import torch

    from convolab import load_run
    from convolab.compress.measure import compile_for_batch, time_call
    from convolab.models.rewrite import inference_rewrites

    run = load_run(run_path)
    model = run.model.float().eval()
    x = torch.randn(256, *run.input_size)
    rewritten = copy.deepcopy(model)
    if not inference_rewrites(rewritten, x[:2]):
        return None
    fns = [compile_for_batch(model, x), compile_for_batch(rewritten, x)]
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i].append(time_call(fn, x, repeats=1))
    return statistics.median(times[0]) / statistics.median(times[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", default=["runs/demo"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--no-rewrite", action="store_true",
                   help="quantize without the exact rewrites (convolab.models.rewrite), to see what they are worth")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    import torch

    from convolab.compress.ptq import ptq_run

    if args.threads:
        torch.set_num_threads(args.threads)
    ok = True
    for run in args.runs:
        if not Path(run, "model.safetensors").is_file():
            print(f"{run}: no trained run there (`make demo` trains runs/demo)", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            rows = {r.name: r for r in ptq_run(run, Path(tmp) / "int8", repeats=args.repeats,
                                               rewrite=not args.no_rewrite)}
        fp32, comp = rows["fp32 eager"], rows["fp32 compiled"]
        checks = []
        for name in ("int8 torchao", "int8 torchao + bf16"):
            if name not in rows:
                continue
            q = rows[name]
            drop = 100 * (fp32.accuracy - q.accuracy)
            smaller = fp32.size_bytes / q.size_bytes
            faster = comp.ms[256] / q.ms[256]
            checks += [(f"{name}: accuracy {q.accuracy:.4f} vs {fp32.accuracy:.4f}, {drop:.2f} points lost",
                        drop <= 0.5),
                       (f"{name}: {smaller:.2f}x smaller on disk", smaller >= 3.5),
                       (f"{name}: {faster:.2f}x faster at batch 256 than fp32 compiled ({comp.ms[256]:.2f} -> "
                        f"{q.ms[256]:.2f} ms)", faster >= 2.0)]
        q = rows["int8 torchao"]
        rewritten = None if args.no_rewrite else rewritten_fp32_speedup(run, args.repeats)
        if rewritten is not None:
            checks.append((f"the same exact rewrites on the float32 model: compiled, {rewritten:.2f}x the speed of "
                           "the original (the int8 gain is not theirs)", True))
        if "fp32 onnxruntime" in rows:
            ort = rows["fp32 onnxruntime"]
            checks.append((f"{ort.ms[256] / q.ms[256]:.2f}x faster at batch 256 than fp32 ONNX Runtime "
                           f"(not a target)", True))
        for text, good in checks:
            print(f"  {'ok  ' if good else 'MISS'}  {text}")
        ok &= all(good for _, good in checks[:3]) or all(good for _, good in checks[3:6])
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
