"""``convolab export RUN --format onnx|c``: ship a trained run's model.

onnx: one ``.onnx`` file (weights inside, dynamic batch), checked against onnxruntime on the run's own test images
every time; a file whose outputs differ by more than ``--atol`` is not written. c: one ``.c``/``.h`` pair (C99, libc
only, weights as arrays, plain loops; float32 or int8) with a small ``main`` that classifies raw image files; when a C
compiler is present it is compiled and checked on test images (float32: logits within ``--atol`` of torch's; int8:
equal to the NumPy engine's int8 forward), and its speed printed beside torch's."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from convolab.cli._common import HelpFormatter, float_arg, positive_int, print_json

HELP = "export a trained run's model to ONNX or to dependency-free C"

_EPILOG = """examples:
  convolab export runs/demo --format onnx                      # runs/demo/model.onnx
  convolab export runs/demo --format c --out export/demo       # export/demo/model.c, model.h, model (compiled)
  convolab export runs/demo --format c --dtype int8 --out export/demo-int8
  ./export/demo/model image1.raw image2.raw                    # raw files: uint8 C*H*W bytes"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help=HELP, formatter_class=HelpFormatter, description=HELP[0].upper() + HELP[1:] + ".",
                       epilog=_EPILOG)
    p.add_argument("run", help="the trained run directory")
    p.add_argument("--format", choices=("onnx", "c"), required=True, help="what to write")
    p.add_argument("--out", help="onnx: the file (default RUN/model.onnx); c: the folder (default RUN/c)")
    p.add_argument("--dtype", choices=("float32", "int8"), default="float32",
                   help="c: weights and arithmetic (int8: calibrated on --calibration training images)")
    p.add_argument("--calibration", type=positive_int, default=512, metavar="N",
                   help="c --dtype int8: training images that calibrate the int8 ranges")
    p.add_argument("--check", type=positive_int, default=1000, metavar="N",
                   help="test images the export is checked on")
    p.add_argument("--atol", type=float_arg(lambda v: v >= 0, ">= 0"), default=1e-4,
                   help="largest absolute difference from torch's logits accepted")
    p.add_argument("--cc", default="cc", help="c: the C compiler")
    p.add_argument("--no-compile", action="store_true", help="c: write the source only (nothing is checked)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from convolab.compress.measure import normalise
    from convolab.runs.reader import load_run
    from convolab.runs.recipe import load_data, run_config

    run_ = load_run(args.run)
    if run_.task != "classification":
        raise ValueError(f"{args.run}: a {run_.task} run; export writes classifiers")
    if run_.build.get("kind") not in ("registry", "pruned"):
        raise ValueError(f"{args.run}: its model is built as {run_.build.get('kind')!r}; export the float32 run it "
                         "came from (an int8 run's ONNX model is its model.int8.onnx)")
    dest = Path(args.out) if args.out else run_.path / ("model.onnx" if args.format == "onnx" else "c")
    args.out = str(dest)
    if args.format == "onnx" and dest.suffix != ".onnx":  # (and never a run's model.safetensors or config.json)
        raise ValueError(f"--out {dest}: an ONNX file's name ends in .onnx; for example {dest.with_suffix('.onnx')}")
    if args.format == "c" and not args.no_compile and shutil.which(args.cc) is None:
        raise ValueError(f"--cc {args.cc}: no such C compiler on the PATH; install gcc or clang, or pass --no-compile")
    if dest.exists() and not args.overwrite and (dest.is_file() or any(dest.iterdir())):
        raise FileExistsError(f"--out {dest} exists; pass --overwrite to replace it, or choose another path")
    data = load_data(run_, run_config(run_))
    images, labels = data.test.images[:args.check], data.test.labels[:args.check]
    say = (lambda s: None) if args.json else print
    if args.format == "onnx":
        out = _onnx(run_, args, images, normalise)
    else:
        out = _c(run_, args, data, images, labels, say)
    if args.json:
        print_json(out)
    else:
        for k, v in out.items():
            print(f"{k + ':':<16}{v}")
    return 0


def _onnx(run_, args, images, normalise) -> dict:
    from convolab.compress.onnx import export_onnx

    dest = Path(args.out) if args.out else run_.path / "model.onnx"
    x = normalise(images, run_.mean, run_.std).contiguous()
    model = run_.model.float().cpu().eval()
    done = export_onnx(model, x[:2], dest, check=x, atol=args.atol, overwrite=args.overwrite)
    return {"file": str(done.path), "size": f"{done.size_bytes:,} bytes", "opset": done.opset,
            "exporter": done.exporter, "checked": f"{done.checked_images} test images against onnxruntime",
            "max_abs_diff": f"{done.max_abs_diff:.3g} (tolerance {args.atol:g})"}


def _c(run_, args, data, images, labels, say) -> dict:
    import numpy as np
    import torch

    from convolab.compress.c_export import compile_c, export_c, run_c
    from convolab.compress.measure import normalise
    from convolab.compress.ptq import calibration_images

    dest = Path(args.out) if args.out else run_.path / "c"
    cal = None
    if args.dtype == "int8":
        cal = calibration_images(data.train, args.calibration, run_.mean, run_.std).numpy()
    done = export_c(run_.model.float().cpu().eval(), dest, input_size=run_.input_size, mean=run_.mean, std=run_.std,
                    classes=run_.classes, dtype=args.dtype, calibration=cal, overwrite=args.overwrite)
    out = {"source": f"{done.c_file}, {done.h_file}", "dtype": args.dtype}
    if args.no_compile:
        return out
    exe = compile_c(dest, cc=args.cc)
    out["program"] = f"{exe} (usage: {exe} [--logits] FILE.raw ...; a raw file is uint8 C*H*W bytes)"
    x = normalise(images, run_.mean, run_.std)
    start = time.perf_counter()
    got = run_c(exe, images.numpy())
    c_seconds = time.perf_counter() - start
    if args.dtype == "float32":
        with torch.no_grad():
            want = run_.model.float().cpu().eval()(x).double().numpy()
        diff = float(np.abs(got - want).max())
        if diff > args.atol:
            _discard(done)
            raise ValueError(f"the C export's logits differ from torch's by up to {diff:.3g} on {len(images)} test "
                             f"images, over the tolerance {args.atol:g}; the export was removed")
        out["checked"] = f"{len(images)} test images: max |C - torch| = {diff:.3g} (tolerance {args.atol:g})"
    else:
        from convolab.compress.c_export import normalise as normalise64  # (float64: as the C quantizes its input)

        want = done.network.forward(normalise64(images.numpy(), run_.mean, run_.std))
        if not np.array_equal(got, np.asarray(want, dtype=got.dtype)):
            _discard(done)
            raise ValueError(f"the int8 C export differs from the NumPy engine's int8 forward on {len(images)} test "
                             "images (expected equality); the export was removed")
        out["checked"] = f"{len(images)} test images: equal to the NumPy engine's int8 forward"
    acc = float((torch.from_numpy(got).argmax(1) == labels).float().mean())
    out["accuracy"] = f"{acc:.4f} on {len(images)} test images"
    out["speed"] = (f"{len(images) / c_seconds:,.0f} images/s (one process, one file per image, "
                    "file writing included; see benchmarks/c_export_speed.py for a like-for-like timing)")
    return out


def _discard(done) -> None:
    for f in (done.c_file, done.h_file, done.out_dir / done.name):
        Path(f).unlink(missing_ok=True)
