"""Post-training int8 of a trained run against its honest baselines, in one process run.

Issue 18's "must reach" for PTQ: test accuracy within 0.5 points of float32, at least 3.5x smaller on disk, and at
least 2x faster at batch 256 than float32 *compiled* (inductor, freezing on; the int8 model is compiled the same
way) on this CPU. This runs ``convolab compress RUN --method ptq`` (:func:`convolab.compress.ptq.ptq_run`) into a
temporary folder -- float32 eager, compiled and in ONNX Runtime, int8 through torchao's PT2E flow and through ONNX
Runtime's static quantization, all on the run's whole test split -- prints the table and checks the three lines.

Usage: python benchmarks/compress_speed.py [RUN ...] [--repeats 7] [--threads N]
  (default RUN: runs/demo, which `make demo` trains: tutorial_cnn on Fashion-MNIST)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", default=["runs/demo"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
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
            rows = {r.name: r for r in ptq_run(run, Path(tmp) / "int8", repeats=args.repeats)}
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
