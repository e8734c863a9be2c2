"""A corpus of bad inputs across every verb and loader (issue 15): each one must end in exit code 2, exactly one
line on stderr that names the culprit (the option or the file), no traceback, and nothing the user had deleted or
replaced.

Each case runs ``convolab.cli.main(argv)`` in-process in a fresh folder (the working directory and $HOME) that holds
a private copy of one trained run (``{run}``) and whatever the case's builder made (tests/cli/bad_inputs.py); every
file there is hashed before and after. "One line" means one besides the INFO progress lines a verb logs before
it finds out what is wrong (what data loaded, "downloading ..."); warnings count. A few cases run as real processes
for real exit codes, and a full disk is simulated by an fsync that fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from tests.cli import bad_inputs as b

from convolab.cli import main


class Case(NamedTuple):
    id: str
    argv: str  # shell words; {tmp} is the test's folder, {run} its copy of the trained run
    needles: tuple[str, ...]  # each must be on the error line ({tmp}/{run} filled in)
    build: object = None  # builder(tmp, run) from bad_inputs, or None
    absent: tuple[str, ...] = ()  # paths (relative to tmp) that must not exist afterwards: refused before made
    slow: bool = False  # takes more than a few seconds (it does the work before it can refuse)
    stdout: tuple[str, ...] = ()  # must be printed on stdout (the inputs that were fine go on)


def C(id, argv, *needles, build=None, absent=(), slow=False, stdout=()):
    return Case(id, argv, tuple(needles), build, tuple([absent] if isinstance(absent, str) else absent), slow,
                tuple([stdout] if isinstance(stdout, str) else stdout))


TRAIN = "train --model tutorial_cnn --data digits --epochs 1 --quiet --no-plots --device cpu --out {tmp}/out"
LRF = "lr-find --model tutorial_cnn --data digits --quiet --device cpu --num-steps 5 --out {tmp}/out"

# -- options refused by argparse (nothing loads) ----------------------------------------------------------
_BAD_OPTIONS = {
    # option: values that must be refused
    "--epochs": ["0", "-1", "x", "1.5"],
    "--batch-size": ["0", "-4", "abc"],
    "--eval-batch-size": ["0"],
    "--lr": ["0", "-1", "inf", "nan", "-inf", "abc", "1e999", "Infinity"],
    "--momentum": ["1", "-0.1", "nan"],
    "--weight-decay": ["-1", "inf", "nan"],
    "--clip-grad-norm": ["0", "inf"],
    "--accum-steps": ["0"],
    "--label-smoothing": ["1", "nan"],
    "--schedule": ["foo"],
    "--warmup-epochs": ["-1", "inf", "nan"],
    "--warmup-steps": ["-1"],
    "--min-lr": ["-1", "inf"],
    "--gamma": ["0", "2", "nan"],
    "--decay-epochs": ["0", "inf"],
    "--milestones": ["0", "nan", "inf"],
    "--pct-start": ["0", "1", "nan"],
    "--cycle-epochs": ["0", "inf"],
    "--restart-epochs": ["inf"],
    "--restart-mult": ["0"],
    "--val-fraction": ["1", "-0.1", "nan"],
    "--device": ["tpu"],
    "--engine": ["jax"],
    "--optimizer": ["foo"],
    "--precision": ["fp8"],
    "--augment": ["foo"],
    "--crop-pad": ["-1"],
    "--rotate": ["181", "nan", "inf"],
    "--cutout": ["1", "nan"],
    "--mixup": ["-1", "inf", "nan"],
    "--cutmix": ["inf", "nan"],
    "--ema": ["1", "0", "nan"],
    "--checkpoint-every": ["-1"],
    "--nan-patience": ["0"],
    "--early-stopping": ["0"],
    "--monitor": ["foo"],
    "--min-delta": ["-1", "nan", "inf"],
    "--on-nan": ["foo"],
    "--seed": ["abc"],
}
ARGPARSE = [C(f"train{opt}={v}", f"{TRAIN} {opt} {v}", opt, absent="out")
            for opt, values in _BAD_OPTIONS.items() for v in values]
ARGPARSE += [
    C("train-unknown-option", f"{TRAIN} --bogus", "--bogus", absent="out"),
    C("lr-find--start-lr=inf", f"{LRF} --start-lr inf", "--start-lr", absent="out"),
    C("lr-find--end-lr=nan", f"{LRF} --end-lr nan", "--end-lr", absent="out"),
    C("lr-find--end-lr=inf", f"{LRF} --end-lr inf", "--end-lr", absent="out"),
    C("lr-find--num-steps=0", f"{LRF} --num-steps 0", "--num-steps", absent="out"),
    C("lr-find--smoothing=1", f"{LRF} --smoothing 1", "--smoothing", absent="out"),
    C("lr-find--diverge=1", f"{LRF} --diverge 1", "--diverge", absent="out"),
    C("lr-find--diverge=inf", f"{LRF} --diverge inf", "--diverge", absent="out"),
    C("lr-find--batch-size=0", f"{LRF} --batch-size 0", "--batch-size", absent="out"),
    C("lr-find--momentum=nan", f"{LRF} --momentum nan", "--momentum", absent="out"),
    C("lr-find--schedule", f"{LRF} --schedule cosine", "--schedule", absent="out"),
    C("eval--split=foo", "eval {run} --split foo", "--split"),
    C("eval--batch-size=0", "eval {run} --batch-size 0", "--batch-size"),
    C("eval--device=tpu", "eval {run} --device tpu", "--device"),
    C("predict--top-k=0", "predict {run} {tmp}/digit.png --top-k 0", "--top-k", build=b.good_png),
    C("predict--top-k=abc", "predict {run} {tmp}/digit.png --top-k abc", "--top-k", build=b.good_png),
    C("predict-no-images", "predict {run}", "IMAGE"),
    C("models-unknown-option", "models --bogus", "--bogus"),
    C("datasets-unknown-option", "datasets --bogus", "--bogus"),
    C("summary--num-classes=0", "summary lenet5 --num-classes 0", "--num-classes"),
    C("summary--depth=0", "summary lenet5 --depth 0", "--depth"),
    C("explain-no-out", "explain {run} {tmp}/digit.png", "--out", build=b.good_png),
    C("viz--max-channels=0", "viz {run} --kernels --max-channels 0 --out {tmp}/viz", "--max-channels", absent="viz"),
    C("viz--units=0", "viz {run} --filters --units 0 --out {tmp}/viz", "--units", absent="viz"),
    C("viz--steps=0", "viz {run} --filters --steps 0 --out {tmp}/viz", "--steps", absent="viz"),
    C("viz--lr=inf", "viz {run} --filters --lr inf --out {tmp}/viz", "--lr", absent="viz"),
    C("viz--lr=nan", "viz {run} --filters --lr nan --out {tmp}/viz", "--lr", absent="viz"),
    C("tcav--alpha=1", "tcav {run} --concept c --random r --random s --target 0 --alpha 1", "--alpha"),
    C("tcav--alpha=nan", "tcav {run} --concept c --random r --random s --target 0 --alpha nan", "--alpha"),
    C("tcav--max-inputs=0", "tcav {run} --concept c --random r --random s --target 0 --max-inputs 0",
      "--max-inputs"),
    C("tcav-no-target", "tcav {run} --concept c --random r --random s", "--target"),
    C("report--samples=0", "report {run} --samples 0", "--samples"),
    C("no-verb", "", "VERB"),
    C("unknown-verb", "trian", "trian"),
]

# -- options the library refuses before any data loads ------------------------------------------------------
UP_FRONT = [
    C("train-unknown-model", f"{TRAIN} --model resnet", "resnet", absent="out"),
    C("train-unknown-dataset", f"{TRAIN} --data fashon-mnist", "fashon-mnist", absent="out"),
    C("train-milestones-with-cosine", f"{TRAIN} --schedule cosine --milestones 1", "--milestones", absent="out"),
    C("train-milestone-past-the-end", f"{TRAIN} --schedule multistep --milestones 5", "--milestones", absent="out"),
    C("train-decay-epochs-past-the-end", f"{TRAIN} --schedule step --decay-epochs 3", "--decay-epochs",
      absent="out"),
    C("train-momentum-with-adam", f"{TRAIN} --optimizer adam --momentum 0.5", "--momentum", absent="out"),
    C("train-cuda-graphs-on-cpu", f"{TRAIN} --cuda-graphs", "--cuda-graphs", absent="out"),
    C("train-numpy-engine-model", f"{TRAIN} --engine numpy --model vgg11", "vgg11", absent="out"),
    C("train-data-dir-missing", f"{TRAIN} --data mnist --no-download --data-dir {{tmp}}/nowhere", "{tmp}/nowhere",
      absent="out"),
    C("train-data-dir-is-file", f"{TRAIN} --data mnist --no-download --data-dir {{tmp}}/digit.png",
      "{tmp}/digit.png", build=b.good_png, absent="out"),
    C("train-digits-data-dir-missing", f"{TRAIN} --data-dir {{tmp}}/nowhere", "--data-dir", absent="out"),
    C("train-out-below-file", TRAIN.replace("{tmp}/out", "{tmp}/digit.png/run"), "{tmp}/digit.png",
      build=b.good_png),
    C("train-out-in-proc", TRAIN.replace("{tmp}/out", "/proc/convolab-run"), "/proc/convolab-run"),
    C("train-resume-with-out", "train --resume {run} --out {tmp}/out", "--out", absent="out"),
    C("train-resume-with-overwrite", "train --resume {run} --overwrite", "--overwrite"),
    C("lr-find-start-above-end", f"{LRF} --start-lr 1 --end-lr 0.1", "--start-lr", absent="out"),
    C("lr-find-unknown-model", f"{LRF} --model nope", "nope", absent="out"),
    C("lr-find-out-in-proc", LRF.replace("{tmp}/out", "/proc/convolab-lr"), "/proc/convolab-lr"),
    C("models-no-match", "models zzz*", "zzz*"),
    C("datasets-download-unknown", "datasets --download nope", "nope"),
    C("datasets-data-dir-file", "datasets --data-dir {tmp}/digit.png", "{tmp}/digit.png", build=b.good_png),
    C("summary-unknown-model", "summary nope", "nope"),
    C("summary-bad-input", "summary lenet5 --input 1,x,8", "--input"),
    C("summary-input-zero", "summary lenet5 --input 0,28,28", "--input"),
    C("summary-input-short", "summary lenet5 --input 1,28", "--input"),
    C("summary-input-negative", "summary lenet5 --input 1,-28,28", "--input"),
    C("summary-bad-stack", "summary conv3,zz --input 3,32,32", "zz"),
    C("summary-stack-without-input", "summary conv3,conv3", "--input"),
    C("summary-stack-kernel-0", "summary conv0 --input 3,32,32", "conv0"),
    C("summary-stack-stride-0", "summary conv3s0 --input 3,32,32", "conv3s0"),
    C("summary-stack-pool-padding", "summary avgpool2p5 --input 3,32,32", "avgpool2p5"),
    C("summary-missing-run", "summary {tmp}/nowhere/run", "nowhere"),
    C("viz-nothing-to-draw", "viz {run} --out {tmp}/viz", "--kernels", absent="viz"),
    C("viz-diverging-without-kernels", "viz {run} --filters --diverging --out {tmp}/viz", "--diverging",
      absent="viz"),
    C("viz-layers-without-feature-maps", "viz {run} --kernels --layers features.relu1 --out {tmp}/viz", "--layers",
      absent="viz"),
    C("viz-max-channels-without-feature-maps", "viz {run} --kernels --max-channels 4 --out {tmp}/viz",
      "--max-channels", absent="viz"),
    C("viz-steps-without-filters", "viz {run} --kernels --steps 3 --out {tmp}/viz", "--steps", absent="viz"),
    C("viz-seed-without-filters", "viz {run} --kernels --seed 1 --out {tmp}/viz", "--seed", absent="viz"),
    C("viz-layer-without-filters", "viz {run} --kernels --layer features.relu1 --out {tmp}/viz", "--layer",
      absent="viz"),
    C("summary-verify-all-without-verify", "summary lenet5 --verify-all", "--verify-all"),
    C("summary-clip-input-for-an-image-model", "summary {run} --input 1,8,8,8", "--input"),
    C("summary-clip-input-for-lenet5", "summary lenet5 --input 1,8,28,28", "--input"),
    C("explain-layer-without-cam-method", "explain {run} {tmp}/digit.png --method saliency --layer features.relu2 "
      "--out {tmp}/ex", "--layer", build=b.good_png, absent="ex"),
]

# -- run directories: every verb that reads one, on each kind of damage --------------------------------------
_RUN_DAMAGE = [
    # id, builder, culprit
    ("missing", lambda tmp, run: shutil.rmtree(run), "{run}"),
    ("not-a-folder", lambda tmp, run: (shutil.rmtree(run), run.write_text("x")), "{run}"),
    ("empty-folder", lambda tmp, run: (shutil.rmtree(run), run.mkdir()), "{run}"),
    ("weights-missing", b.write_file("model.safetensors", None), "model.safetensors"),
    ("weights-empty", b.write_file("model.safetensors", b""), "model.safetensors"),
    ("weights-garbage", b.write_file("model.safetensors", b"garbage" * 100), "model.safetensors"),
    ("weights-folder", b.write_file("model.safetensors", ...), "model.safetensors"),
    ("weights-truncated", b.truncate("model.safetensors"), "model.safetensors"),
    ("weights-huge-header", b.huge_safetensors_header, "model.safetensors"),
    ("weights-bad-offsets", b.bad_safetensors_header, "model.safetensors"),
    ("weights-pickle", b.pickle_as_safetensors, "model.safetensors"),
    ("weights-missing-key", b.edit_weights(b._drop_key), "model.safetensors"),
    ("weights-extra-key", b.edit_weights(b._extra_key), "model.safetensors"),
    ("weights-wrong-shape", b.edit_weights(b._wrong_shape), "model.safetensors"),
    ("meta-not-json", b.edit_meta(lambda m: "{not json"), "model.safetensors"),
    ("meta-list", b.edit_meta(lambda m: "[]"), "model.safetensors"),
    ("meta-null", b.edit_meta(lambda m: "null"), "model.safetensors"),
    ("meta-deep", b.edit_meta(lambda m: b.DEEP_JSON), "model.safetensors"),
    ("meta-no-model", b.set_meta("model", value=...), "model.safetensors"),
    ("meta-unknown-model", b.set_meta("model", value="nope"), "model.safetensors"),
    ("meta-model-int", b.set_meta("model", value=5), "model.safetensors"),
    ("meta-kwargs-list", b.set_meta("model_kwargs", value=[]), "model.safetensors"),
    ("meta-classes-str", b.set_meta("model_kwargs", "num_classes", value="ten"), "model.safetensors"),
    ("meta-classes-negative", b.set_meta("model_kwargs", "num_classes", value=-3), "model.safetensors"),
    ("meta-in-chans-zero", b.set_meta("model_kwargs", "in_chans", value=0), "model.safetensors"),
    ("meta-bad-kwarg", b.set_meta("model_kwargs", "bogus", value=1), "model.safetensors"),
    ("meta-few-class-names", b.set_meta("classes", value=["a", "b"]), "model.safetensors"),
    ("meta-classes-null", b.set_meta("classes", value=None), "model.safetensors"),
    ("meta-mean-channels", b.set_meta("mean", value=[0.1, 0.2, 0.3]), "model.safetensors"),
    ("meta-std-zero", b.set_meta("std", value=[0.0]), "model.safetensors"),
    ("meta-std-string", b.set_meta("std", value="x"), "model.safetensors"),
    ("meta-input-size-short", b.set_meta("input_size", value=[8, 8]), "model.safetensors"),
    ("meta-input-size-negative", b.set_meta("input_size", value=[1, -8, 8]), "model.safetensors"),
    ("meta-input-size-null", b.set_meta("input_size", value=None), "model.safetensors"),
    ("config-empty", b.write_file("config.json", ""), "config.json"),
    ("config-not-json", b.write_file("config.json", "{not json"), "config.json"),
    ("config-list", b.write_file("config.json", "[]"), "config.json"),
    ("config-null", b.write_file("config.json", "null"), "config.json"),
    ("config-deep", b.write_file("config.json", b.DEEP_JSON), "config.json"),
    ("config-binary", b.write_file("config.json", b"\xff\xfe\x00garbage"), "config.json"),
    ("config-folder", b.write_file("config.json", ...), "config.json"),
    ("config-dataset-list", b.set_config("dataset", value=[]), "config.json"),
    ("summary-not-json", b.write_file("summary.json", "{"), "summary.json"),
    ("summary-list", b.write_file("summary.json", "[1, 2]"), "summary.json"),
    ("summary-folder", b.write_file("summary.json", ...), "summary.json"),
]
_RUN_VERBS = {
    "eval": "eval {run}",
    "predict": "predict {run} {tmp}/digit.png",
    "explain": "explain {run} {tmp}/digit.png --out {tmp}/ex",
    "viz": "viz {run} --kernels --out {tmp}/viz",
    "report": "report {run} --out {tmp}/r.html",
    "summary": "summary {run}",
}
# which damage each verb meets (all of it for eval and predict; the kinds that differ for the others)
_SOME = {"missing", "empty-folder", "weights-garbage", "weights-wrong-shape", "meta-deep", "meta-few-class-names",
         "meta-mean-channels", "config-not-json", "config-deep", "config-binary", "summary-not-json"}
RUN_DIRS = []
for verb, argv in _RUN_VERBS.items():
    for damage, build, culprit in _RUN_DAMAGE:
        if verb in ("eval", "predict") or damage in _SOME:
            absent = {"explain": "ex", "viz": "viz", "report": "r.html"}.get(verb, ())
            RUN_DIRS.append(C(f"{verb}-{damage}", argv, culprit, build=build, absent=absent))

# -- train --resume ----------------------------------------------------------------------------------------
RESUME = "train --resume {run} --quiet"
_step = b._step_checkpoint
RESUMES = [
    C("resume-missing", "train --resume {tmp}/nowhere", "{tmp}/nowhere"),
    C("resume-file-missing", "train --resume {run}/checkpoints/step-99.pt", "step-99.pt"),
    C("resume-not-a-run", "train --resume {tmp}/empty", "{tmp}/empty", "not a convolab run",
      build=lambda t, r: (t / "empty").mkdir()),
    C("resume-project-folder", "train --resume {tmp}/project", "{tmp}/project", "not a convolab run",
      build=b.project_folder),
    C("resume-no-checkpoints", RESUME, "checkpoints", build=b.no_checkpoints),
    C("resume-empty-checkpoints", RESUME, "checkpoints", build=b.empty_checkpoints),
    C("resume-all-steps-damaged", RESUME, "step-", build=b.garbage_checkpoints),
    C("resume-truncated", RESUME, "step-", build=lambda t, r: b.truncate(str(_step(r).relative_to(r)))(t, r)),
    C("resume-pickle-payload", RESUME, "step-",
      build=b.pickle_payload(lambda t, r: r / "checkpoints" / "step-99999999.pt")),
    C("resume-text-file", "train --resume {tmp}/notes.txt", "notes.txt", build=b.text_file("notes.txt")),
    C("resume-unknown-keys", RESUME, "step-", build=b.edit_checkpoint(lambda c: {**c, "from_the_future": 1})),
    C("resume-missing-keys", RESUME, "step-", build=b.edit_checkpoint(lambda c: {"model": c["model"]})),
    C("resume-epoch-string", RESUME, "step-", build=b.edit_checkpoint(lambda c: {**c, "epoch": "two"})),
    C("resume-epoch-absurd", RESUME, "step-", build=b.edit_checkpoint(lambda c: {**c, "epoch": 10**12})),
    C("resume-bad-rng", RESUME, "step-", build=b.edit_checkpoint(lambda c: {**c, "rng": {"torch": "x"}})),
    C("resume-model-not-dict", RESUME, "step-", build=b.edit_checkpoint(lambda c: {**c, "model": [1, 2]})),
    C("resume-list-checkpoint", RESUME, "step-", build=b.edit_checkpoint(lambda c: [c])),
    C("resume-other-model", f"{RESUME} --model lenet5", "--model"),
    C("resume-other-runs-checkpoint", RESUME, "step-",
      build=b.edit_checkpoint(lambda c: {**c, "run_id": "0123456789abcdef0123456789abcdef"})),
    C("resume-damaged-best", "train --resume {run}/checkpoints/best.pt --quiet", "best.pt",
      build=b.write_file("checkpoints/best.pt", b"garbage")),
    C("resume-more-epochs-bad", f"{RESUME} --epochs 0", "--epochs"),
]

# -- --init-from -------------------------------------------------------------------------------------------
INIT = f"{TRAIN} --no-checkpoints --init-from {{tmp}}/"
INITS = [
    C("init-missing", INIT + "nowhere.pth", "nowhere.pth", absent="out"),
    C("init-folder", INIT + "w.pth", "w.pth", build=lambda t, r: (t / "w.pth").mkdir(), absent="out"),
    C("init-empty-pth", INIT + "w.pth", "w.pth", build=b.text_file("w.pth", ""), absent="out"),
    C("init-garbage-pth", INIT + "w.pth", "w.pth", build=b.text_file("w.pth", "garbage"), absent="out"),
    C("init-garbage-safetensors", INIT + "w.safetensors", "w.safetensors", build=b.text_file("w.safetensors", "x"),
      absent="out"),
    C("init-text-extension", INIT + "w.txt", "w.txt", build=b.text_file("w.txt"), absent="out"),
    C("init-pickle-payload", INIT + "w.pth", "w.pth", build=b.pickle_payload(lambda t, r: t / "w.pth"),
      absent="out"),
    C("init-int-keys", INIT + "w.pth", "w.pth",
      build=b.init_file("w.pth", b.save_torch(lambda s: {i: v for i, v in enumerate(s.values())})), absent="out"),
    C("init-list", INIT + "w.pth", "w.pth", build=b.init_file("w.pth", b.save_torch(lambda s: list(s.values()))),
      absent="out"),
    C("init-tensor", INIT + "w.pth", "w.pth", build=b.init_file("w.pth", b.save_torch(lambda s: torch.zeros(3))),
      absent="out"),
    C("init-other-model", INIT + "w.pth", "w.pth", build=b.init_file("w.pth", b.save_torch(b._other_model_state)),
      absent="out"),
    C("init-nan", INIT + "w.safetensors", "w.safetensors",
      build=b.init_file("w.safetensors", b.save_st(b._nan_state)), absent="out"),
    C("init-nan-pth", INIT + "w.pth", "w.pth", build=b.init_file("w.pth", b.save_torch(b._nan_state)),
      absent="out"),
    C("init-meta", INIT + "w.pth", "w.pth", build=b.init_file("w.pth", b.save_torch(b._meta_state)), absent="out"),
    C("init-sparse", INIT + "w.pth", "w.pth", build=b.init_file("w.pth", b.save_torch(b._sparse_state)),
      absent="out"),
    C("init-empty-dict", INIT + "w.pth", "w.pth", build=b.init_file("w.pth", b.save_torch(lambda s: {})),
      absent="out"),
    C("lr-find-init-missing", f"{LRF} --init-from {{tmp}}/nowhere.pth", "nowhere.pth", absent="out"),
]

# -- datasets: IDX files and image folders -------------------------------------------------------------------
IDX = f"{TRAIN} --data mnist --data-dir {{tmp}}/idx --no-download"
_I = b.IDX_NAMES
DATASETS = [
    C("idx-bad-magic", IDX, _I[0], build=b.idx_set(b._raw(_I[0], b"\x01\x02\x03\x04" + bytes(100))), absent="out"),
    C("idx-empty-file", IDX, _I[1], build=b.idx_set(b._raw(_I[1], b"")), absent="out"),
    C("idx-truncated", IDX, _I[0], build=b.idx_set(b.idx_truncated), absent="out"),
    C("idx-header-only", IDX, _I[0], build=b.idx_set(b._raw(_I[0], b._header(0x08, (60, 28, 28)))), absent="out"),
    C("idx-bad-dtype", IDX, _I[0], build=b.idx_set(b._raw(_I[0], bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))),
      absent="out"),
    C("idx-gzip-bomb", IDX, _I[0], build=b.idx_set(b.idx_gzip_bomb), absent="out"),
    C("idx-bad-gzip", IDX, _I[0], build=b.idx_set(b.idx_bad_gzip), absent="out"),
    C("idx-file-is-folder", IDX, _I[0], build=b.idx_set(b.idx_dir), absent="out"),
    C("idx-label-too-big", IDX, _I[1], build=b.idx_set(b.idx_set_label(10)), absent="out"),
    C("idx-label-255", IDX, _I[1], build=b.idx_set(b.idx_set_label(255)), absent="out"),
    C("idx-label-negative", IDX, _I[1], build=b.idx_set(b.idx_set_label(-1, np.int8)), absent="out"),
    C("idx-labels-2d", IDX, _I[1], build=b.idx_set(b.idx_labels_2d), absent="out"),
    C("idx-float-images", IDX, _I[0], build=b.idx_set(b.idx_float_images), absent="out"),
    C("idx-count-mismatch", IDX, "idx", build=b.idx_set(b.idx_count_mismatch), absent="out"),
    C("idx-test-size-differs", IDX, "idx", build=b.idx_set(b.idx_test_size), absent="out"),
    C("idx-one-class", IDX, "class", build=b.idx_set(b.idx_one_class), absent="out"),
    C("idx-empty-test", IDX, "test", build=b.idx_set(b.idx_empty_test), absent="out"),
    C("idx-images-1d", IDX, _I[0], build=b.idx_set(b.idx_images_1d), absent="out"),
    C("idx-zero-images", IDX, "mnist", build=b.idx_set(b.idx_zero_images), absent="out"),
    C("cifar10-empty-folder", f"{TRAIN} --data cifar10 --data-dir {{tmp}}/cif --no-download", "cifar",
      build=lambda t, r: (t / "cif" / "cifar-10-batches-py").mkdir(parents=True), absent="out"),
    C("cifar10-garbage-batches", f"{TRAIN} --data cifar10 --data-dir {{tmp}}/cif --no-download", "cifar",
      build=b.cifar_garbage, absent="out"),
    C("svhn-garbage", f"{TRAIN} --data svhn --data-dir {{tmp}}/svhn --no-download", "svhn",
      build=b.svhn_garbage, absent="out"),
    C("folder-missing", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", absent="out"),
    C("folder-empty", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_empty, absent="out"),
    C("folder-no-classes", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_no_classes, absent="out"),
    C("folder-one-class", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_one_class, absent="out"),
    C("folder-empty-classes", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_empty_classes,
      absent="out"),
    C("folder-all-garbage", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_garbage, absent="out"),
    C("folder-test-only", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_test_only, absent="out"),
    C("folder-test-extra-class", f"{TRAIN} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_test_extra_class,
      absent="out"),
    C("folder-empty-test", f"{TRAIN} --data {{tmp}}/imgs", "test", build=b.folder_empty_test, absent="out"),
    C("folder-is-a-file", f"{TRAIN} --data {{tmp}}/digit.png", "{tmp}/digit.png", build=b.file_as_data,
      absent="out"),
    C("lr-find-folder-empty", f"{LRF} --data {{tmp}}/imgs", "{tmp}/imgs", build=b.folder_empty, absent="out"),
    C("lr-find-idx-label-too-big", f"{LRF} --data mnist --data-dir {{tmp}}/idx --no-download", _I[1],
      build=b.idx_set(b.idx_set_label(10)), absent="out"),
    C("eval-data-unknown", "eval {run} --data nope", "nope"),
    C("eval-data-dir-missing", "eval {run} --data mnist --data-dir {tmp}/nowhere --no-download", "{tmp}/nowhere"),
    C("eval-data-wrong-channels", "eval {run} --data {tmp}/imgs", "{tmp}/imgs",
      build=lambda t, r: b.image_folder(t / "imgs", classes=("a", "b", "c"), per_class=4, size=(16, 16))),
]

# -- image files given to predict, explain, viz and tcav ------------------------------------------------------
_IMAGES = [
    ("missing", "nowhere.png", None),
    ("folder", "d.png", b.bad_image("d.png", None)),
    ("empty", "e.png", b.bad_image("e.png", b"")),
    ("text", "t.png", b.bad_image("t.png", b"hello, not a picture")),
    ("truncated", "tr.png", b.bad_image("tr.png", b.PNG[:30])),
    ("bomb", "bomb.png", b.bomb_png),
]
IMAGES = []
for name, file, build in _IMAGES:
    build = build or b.good_png
    IMAGES += [
        C(f"predict-image-{name}", f"predict {{run}} {{tmp}}/{file}", file, build=build),
        C(f"predict-image-{name}-and-a-good-one", f"predict {{run}} {{tmp}}/{file} {{tmp}}/digit.png", file,
          build=build, stdout="digit.png:"),
        C(f"explain-image-{name}", f"explain {{run}} {{tmp}}/{file} --out {{tmp}}/ex", file, build=build,
          absent="ex"),
        C(f"viz-image-{name}", f"viz {{run}} --feature-maps {{tmp}}/{file} --out {{tmp}}/viz", file, build=build,
          absent="viz"),
    ]
TCAV = "tcav {run} --concept {tmp}/concept --random {tmp}/random0 --random {tmp}/random1 --target 3"
IMAGES += [
    C("tcav-concept-missing", TCAV.replace("{tmp}/concept", "{tmp}/nowhere"), "{tmp}/nowhere",
      build=b.tcav_folders()),
    C("tcav-concept-empty", TCAV, "{tmp}/concept", build=b.tcav_folders(concept_images=0)),
    C("tcav-concept-too-few", TCAV, "{tmp}/concept", build=b.tcav_folders(concept_images=3)),
    C("tcav-concept-garbage", TCAV, "concept", build=b.tcav_folders(garbage=True)),
    C("tcav-one-random", TCAV.replace(" --random {tmp}/random1", ""), "--random", build=b.tcav_folders()),
    C("tcav-random-is-concept", TCAV.replace("{tmp}/random1", "{tmp}/concept"), "{tmp}/concept",
      build=b.tcav_folders()),
    C("tcav-concept-is-file", TCAV.replace("{tmp}/concept", "{tmp}/digit.png"), "{tmp}/digit.png",
      build=b.both(b.tcav_folders(), b.good_png)),
    C("tcav-unknown-target", TCAV.replace("--target 3", "--target cat"), "cat", build=b.tcav_folders()),
    C("tcav-target-out-of-range", TCAV.replace("--target 3", "--target 10"), "10", build=b.tcav_folders()),
    C("tcav-unknown-layer", f"{TCAV} --layer nope", "nope", build=b.tcav_folders()),
    C("tcav-inputs-missing", f"{TCAV} --inputs {{tmp}}/nowhere", "{tmp}/nowhere", build=b.tcav_folders()),
    C("explain-unknown-method", "explain {run} {tmp}/digit.png --method foo --out {tmp}/ex", "foo", "gradcam",
      build=b.good_png, absent="ex"),
    C("explain-unknown-target", "explain {run} {tmp}/digit.png --target cat --out {tmp}/ex", "cat",
      build=b.good_png, absent="ex"),
    C("explain-target-out-of-range", "explain {run} {tmp}/digit.png --target 10 --out {tmp}/ex", "10",
      build=b.good_png, absent="ex"),
    C("explain-unknown-layer", "explain {run} {tmp}/digit.png --layer nope --out {tmp}/ex", "nope",
      build=b.good_png, absent="ex"),
    C("viz-unknown-layers", "viz {run} --feature-maps {tmp}/digit.png --layers nope --out {tmp}/viz", "nope",
      build=b.good_png, absent="viz"),
    C("viz-unknown-filter-layer", "viz {run} --filters --layer nope --steps 2 --out {tmp}/viz", "nope",
      absent="viz"),
]

# -- names that would break the line or drive the terminal: shown escaped ------------------------------------
NL, ESC = "bad\nname", "\x1b[31mred"
NAMES = [
    C("predict-newline-in-name", f"predict {{run}} '{{tmp}}/{NL}.png'", "bad\\nname.png"),
    C("predict-escape-in-name", f"predict {{run}} '{{tmp}}/{ESC}.png'", "\\x1b[31mred.png"),
    C("explain-newline-in-name", f"explain {{run}} '{{tmp}}/{NL}.png' --out {{tmp}}/ex", "bad\\nname.png",
      absent="ex"),
    C("viz-newline-in-name", f"viz {{run}} --feature-maps '{{tmp}}/{NL}.png' --out {{tmp}}/viz", "bad\\nname.png",
      absent="viz"),
    C("train-newline-in-data", f"{TRAIN} --data '{{tmp}}/{NL}'", "bad\\nname", absent="out"),
    C("train-newline-in-lr", f"{TRAIN} --lr '-1\n'", "--lr", absent="out"),
    C("train-newline-in-unknown-option", f"{TRAIN} '--x\ny'", "--x\\ny", absent="out"),
    C("eval-newline-in-run", f"eval '{{tmp}}/{NL}'", "bad\\nname"),
    C("summary-escape-in-model", f"summary '{ESC}'", "\\x1b[31mred"),
]

# -- output paths: nothing the user made is deleted or replaced ------------------------------------------------
OUTPUTS = [
    C("train-overwrite-project", f"{TRAIN.replace('{tmp}/out', '{tmp}/project')} --overwrite", "{tmp}/project",
      build=b.project_folder),
    C("train-overwrite-dot", f"{TRAIN.replace('{tmp}/out', '.')} --overwrite", ".", build=b.project_folder),
    C("train-overwrite-home", f"{TRAIN.replace('{tmp}/out', '~')} --overwrite", "{tmp}",
      build=lambda t, r: (t / "config.json").write_text("{}")),
    C("train-overwrite-parent", f"{TRAIN.replace('{tmp}/out', '{tmp}')} --overwrite", "{tmp}",
      build=lambda t, r: (t / "config.json").write_text("{}")),
    C("train-overwrite-symlink", f"{TRAIN.replace('{tmp}/out', '{tmp}/link')} --overwrite", "{tmp}/link",
      build=lambda t, r: (t / "link").symlink_to(r)),
    C("train-out-exists", TRAIN.replace("{tmp}/out", "{run}"), "{run}"),
    C("train-out-is-file", TRAIN.replace("{tmp}/out", "{tmp}/digit.png"), "{tmp}/digit.png", build=b.good_png),
    C("lr-find-overwrite-project", f"{LRF.replace('{tmp}/out', '{tmp}/project')} --overwrite", "{tmp}/project",
      build=b.project_folder),
    C("lr-find-out-exists", LRF.replace("{tmp}/out", "{run}"), "{run}"),
    C("train-overwrite-unmarked-run", f"{TRAIN.replace('{tmp}/out', '{run}')} --overwrite", "{run}",
      build=lambda t, r: ((r / ".convolab-run").unlink(), (r / "notes.txt").write_text("mine"))),
    C("report-out-exists", "report {run} --out {tmp}/notes.txt", "{tmp}/notes.txt", build=b.text_file("notes.txt")),
    C("report-out-is-folder", "report {run} --out {tmp}/folder", "{tmp}/folder",
      build=lambda t, r: (t / "folder").mkdir()),
    C("report-out-below-file", "report {run} --out {tmp}/notes.txt/r.html", "{tmp}/notes.txt",
      build=b.text_file("notes.txt")),
    C("report-out-in-proc", "report {run} --out /proc/convolab-r.html", "/proc/convolab-r.html"),
    C("explain-out-is-file", "explain {run} {tmp}/digit.png --out {tmp}/notes.txt", "{tmp}/notes.txt",
      build=b.both(b.good_png, b.text_file("notes.txt"))),
    C("explain-out-in-proc", "explain {run} {tmp}/digit.png --out /proc/convolab-ex", "/proc/convolab-ex",
      build=b.good_png),
    C("explain-file-exists", "explain {run} {tmp}/digit.png --out {tmp}/ex", "digit_gradcam",
      build=b.both(b.good_png, b.text_file("ex/digit_gradcam.png", "mine"))),
    C("viz-out-is-file", "viz {run} --kernels --out {tmp}/notes.txt", "{tmp}/notes.txt",
      build=b.text_file("notes.txt")),
    C("viz-out-in-proc", "viz {run} --kernels --out /proc/convolab-viz", "/proc/convolab-viz"),
    C("viz-file-exists", "viz {run} --kernels --out {tmp}/viz", "kernels.png",
      build=b.text_file("viz/kernels.png", "mine")),
]

CASES = ARGPARSE + UP_FRONT + RUN_DIRS + RESUMES + INITS + DATASETS + IMAGES + NAMES + OUTPUTS


# -- the harness -------------------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of the content ('dir', or 'link:TARGET') of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def assert_kept(before: dict[str, str], after: dict[str, str]) -> None:
    lost = sorted(k for k in before if k not in after)
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert not lost and not changed, f"deleted: {lost[:10]}, replaced: {changed[:10]}"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """tutorial_cnn on digits, 1 epoch, trained through the CLI (copied for each case; never changed)."""
    out = tmp_path_factory.mktemp("corpus") / "run"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "1", "--quiet", "--no-plots",
                     "--device", "cpu", "--out", str(out)])
    assert code == 0, err.getvalue()
    return out


@pytest.fixture
def world(tmp_path, monkeypatch, trained_run):
    """The case's folder: the working directory and $HOME, holding a private copy of the trained run."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path, run


def fill(text: str, tmp: Path, run: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{run}", str(run))


def run_case(case: Case, world, capsys):
    tmp, run = world
    if case.build is not None:
        case.build(tmp, run)
    argv = [fill(w, tmp, run) for w in shlex.split(case.argv)]
    before = snapshot(tmp)
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err, before, snapshot(tmp)


@pytest.fixture
def progress_log(monkeypatch):
    """The records convolab logged at INFO or below (its console handler stops them from reaching caplog)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(logging.DEBUG)
    logging.getLogger("convolab").addHandler(handler)
    yield records
    logging.getLogger("convolab").removeHandler(handler)


def error_lines(err: str, records) -> list[str]:
    """The lines of stderr that are not progress: all but the INFO records of convolab's log (what data loaded,
    "downloading ..."), which a verb prints before it finds out what is wrong. Warnings count."""
    progress = {line for r in records if r.levelno <= logging.INFO for line in r.getMessage().splitlines()}
    return [line for line in err.strip().splitlines() if line not in progress]


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.slow else c for c in CASES],
                         ids=[c.id for c in CASES])
def test_bad_input(case, world, capsys, progress_log):
    tmp, run = world
    code, out, err, before, after = run_case(case, world, capsys)
    assert "Traceback" not in err, err
    lines = error_lines(err, progress_log)
    assert code == 2, f"exit {code}; stderr:\n{err[-2000:]}"
    assert len(lines) == 1, f"expected one line on stderr (besides progress), got {len(lines)}:\n{err[-2000:]}"
    assert lines[0].startswith("convolab"), lines[0]
    for needle in case.needles:
        needle = fill(needle, tmp, run)
        assert needle in lines[0], f"{needle!r} not named in {lines[0]!r}"
    assert_kept(before, after)
    for rel in case.absent:
        assert not (tmp / rel).exists(), f"{rel} was made although the input was refused"
    for needle in case.stdout:
        assert needle in out, f"{needle!r} not on stdout: {out!r}"


def test_corpus_size():
    assert len(CASES) >= 200
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"
    verbs = {shlex.split(c.argv)[0] for c in CASES if c.argv}
    assert verbs >= {"train", "lr-find", "eval", "predict", "models", "datasets", "summary", "explain", "viz",
                     "tcav", "report"}


# -- a few as real processes (real exit codes, real stderr) ---------------------------------------------------
@pytest.mark.slow
def test_refused_option_as_a_real_process(tmp_path):
    """argparse's refusal in a real process: exit code 2 from sys.exit, one line, nothing made."""
    proc = subprocess.run([sys.executable, "-m", "convolab", *shlex.split(fill(TRAIN, tmp_path, tmp_path)), "--lr",
                           "inf"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and "argument --lr: must be a finite number" in proc.stderr
    assert list(tmp_path.iterdir()) == []


_PROCESS_CASES = {c.id: c for c in CASES if c.id in {
    "predict-weights-garbage", "eval-config-deep", "resume-pickle-payload", "idx-label-too-big",
    "explain-unknown-method"}}


@pytest.mark.slow
@pytest.mark.parametrize("case_id", sorted(_PROCESS_CASES))
def test_bad_input_as_a_real_process(case_id, world):
    case = _PROCESS_CASES[case_id]
    tmp, run = world
    if case.build is not None:
        case.build(tmp, run)
    argv = [fill(w, tmp, run) for w in shlex.split(case.argv)]
    before = snapshot(tmp)
    proc = subprocess.run([sys.executable, "-m", "convolab", *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp, env={**os.environ, "HOME": str(tmp)})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in case.needles:
        assert fill(needle, tmp, run) in lines[0]
    assert_kept(before, snapshot(tmp))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["predict", "folder"])
def test_named_pipe_is_refused_not_read(where, world):
    """A FIFO called x.png would block a reader forever: a real process with a timeout."""
    tmp, run = world
    b.png(tmp / "digit.png")
    if where == "predict":
        os.mkfifo(tmp / "x.png")
        argv = ["predict", str(run), str(tmp / "x.png"), str(tmp / "digit.png")]
    else:
        b.image_folder(tmp / "imgs")
        os.mkfifo(tmp / "imgs" / "a" / "x.png")
        argv = ["train", "--model", "tutorial_cnn", "--data", str(tmp / "imgs"), "--epochs", "1", "--quiet",
                "--no-plots", "--device", "cpu", "--out", str(tmp / "out")]
    proc = subprocess.run([sys.executable, "-m", "convolab", *argv], capture_output=True, text=True, timeout=60,
                          cwd=tmp, env={**os.environ, "HOME": str(tmp)})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "x.png" in proc.stderr
    if where == "predict":
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "digit.png:" in proc.stdout, "the other images go on"


# -- main's handling of errors and interrupts ---------------------------------------------------------------------
def test_datasets_download_offline_is_one_line(world, capsys, monkeypatch, progress_log):
    tmp, _ = world

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    before = snapshot(tmp)
    try:
        code = main(["datasets", "--download", "kmnist"])
    except SystemExit as e:
        code = e.code
    _, err = capsys.readouterr()
    lines = error_lines(err, progress_log)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "kmnist" in lines[0] and "--data-dir" in lines[0]
    assert lines[0].count("--data-dir") == 1, "the way out is said once"
    assert_kept(before, snapshot(tmp))


# -- a full disk: every write fails with ENOSPC after N successful fsyncs (what write() raises has no file name) ----
_DISK_FULL = [
    # id, argv, fsyncs that succeed, culprit, slow
    ("train-run-dir", TRAIN, 0, "{tmp}/out", False),
    ("train-mid-run", TRAIN, 4, "{tmp}/out/", False),
    ("explain", "explain {run} {tmp}/digit.png --out {tmp}/ex", 0, "{tmp}/ex/", False),
    ("viz", "viz {run} --kernels --out {tmp}/viz", 0, "{tmp}/viz/", False),
    ("lr-find", LRF, 1, "{tmp}/out", False),
]


@pytest.mark.parametrize("argv,succeed,culprit", [
    pytest.param(argv, n, culprit, id=id, marks=[pytest.mark.slow] if slow else [])
    for id, argv, n, culprit, slow in _DISK_FULL])
def test_disk_full(argv, succeed, culprit, world, capsys, monkeypatch, progress_log):
    import errno

    import convolab.atomic

    tmp, run = world
    b.png(tmp / "digit.png")
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > succeed:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(convolab.atomic.os, "fsync", fsync)
    before = snapshot(tmp)
    try:
        code = main([fill(w, tmp, run) for w in shlex.split(argv)])
    except SystemExit as e:
        code = e.code
    _, err = capsys.readouterr()
    lines = error_lines(err, progress_log)
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1, err
    assert fill(culprit, tmp, run) in lines[0] and "No space left on device" in lines[0], lines[0]
    assert_kept(before, snapshot(tmp))
    assert not [p for p in tmp.rglob("*.tmp")], "no temporary file is left behind"
