"""Images per second of the exported C (float32 and int8, -O2 and -O3 -march=native) against torch eager and
torch.compile, all at batch 1 on one CPU thread, on a trained run's test images (default: runs/demo, the
tutorial_cnn trained on Fashion-MNIST).

The C figure is one process classifying N raw files (start-up and file reading included); torch classifies the
same N images one at a time from memory (normalisation included). Also printed: each path's accuracy on the N
images and its agreement with torch eager's predictions.

    .venv/bin/python benchmarks/c_export_speed.py [--run runs/demo] [-n 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import convolab
from convolab.compress.c_export import compile_c, export_c, normalise, run_c
from convolab.data import load_dataset
from convolab.data.loader import Normalizer


def time_c(exe: Path, files: list[str], cwd: str, repeats: int) -> tuple[float, np.ndarray]:
    best, preds = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([str(exe), *files], cwd=cwd, capture_output=True, text=True, check=True)
        best = min(best, time.perf_counter() - t0)
        preds = np.array([int(line.split("\t")[1]) for line in done.stdout.splitlines()])
    return len(files) / best, preds


def time_torch(model, images: torch.Tensor, norm: Normalizer, repeats: int) -> tuple[float, np.ndarray]:
    best, preds = float("inf"), []
    with torch.inference_mode():
        for i in range(min(20, len(images))):  # warm-up (and torch.compile's compilation)
            model(norm(images[i:i + 1]))
        for _ in range(repeats):
            preds = []
            t0 = time.perf_counter()
            for i in range(len(images)):
                preds.append(int(model(norm(images[i:i + 1])).argmax()))
            best = min(best, time.perf_counter() - t0)
    return len(images) / best, np.array(preds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("-n", type=int, default=2000, help="test images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the C is single-threaded)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run = convolab.load_run(args.run)
    data = load_dataset(run.config["dataset"]["name"], download=False)
    images = data.test.images[:args.n].contiguous()
    labels = data.test.labels[:args.n].numpy()
    kw = dict(mean=run.mean, std=run.std, classes=run.classes, input_size=run.input_size)
    rows, checks = [], []
    with tempfile.TemporaryDirectory(prefix="c-export-speed-") as tmp:
        tmp = Path(tmp)
        files = []
        for i, im in enumerate(images.numpy()):
            files.append(f"{i:06d}.raw")
            (tmp / files[-1]).write_bytes(im.tobytes())
        norm = Normalizer(run.mean, run.std)
        eager_ips, eager_pred = time_torch(run.model, images, norm, args.repeats)
        rows.append(("torch eager", eager_ips, eager_pred))
        compiled = torch.compile(run.model)
        rows.append(("torch.compile", *time_torch(compiled, images, norm, args.repeats)))
        for dtype in ("float32", "int8"):
            cal = data.train.images[:500].numpy() if dtype == "int8" else None
            for opt in ("-O2", "-O3 -march=native"):
                out = tmp / f"{dtype}{opt.replace(' ', '').replace('=', '')}"
                ex = export_c(run.model, out, name="net", dtype=dtype, calibration=cal, **kw)
                exe = compile_c(out, opt=opt)
                rows.append((f"C {dtype} {opt}", *time_c(exe, files, str(tmp), args.repeats)))
                logits = run_c(exe, images.numpy())
                if dtype == "float32":
                    with torch.inference_mode():
                        ref = run.model(norm(images)).double().numpy()
                    checks.append(f"C float32 {opt}: max |C - torch| = {np.abs(logits - ref).max():.2e}")
                else:
                    same = np.array_equal(logits, ex.network.forward(normalise(images.numpy(), run.mean, run.std)))
                    checks.append(f"C int8 {opt}: logits equal to the glass int8 network's: {same}")
    print(f"{args.run}: {run.config.get('model')} on {args.n} {data.name} test images, batch 1, "
          f"torch threads {args.threads}, best of {args.repeats}")
    print(f"{'path':28s} {'images/s':>10s} {'vs eager':>9s} {'accuracy':>9s} {'agrees':>7s}")
    for name, ips, pred in rows:
        print(f"{name:28s} {ips:10.0f} {ips / eager_ips:8.2f}x {(pred == labels).mean():9.4f} "
              f"{(pred == eager_pred).mean():7.4f}")
    print("\n".join(checks))


if __name__ == "__main__":
    main()
