"""``convolab predict`` with a named pipe and a decompression bomb among good images: the good ones are
predicted, each bad one is one error line naming it, exit 2 — and nothing blocks on the pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import convolab
from convolab.data import load_dataset


@pytest.mark.slow
def test_predict_goes_on_past_a_named_pipe_and_a_bomb(digits_run, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(load_dataset("digits").test.images[0, 0].numpy(), "L").save(good)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.png"
    Image.new("L", (10_000, 9_000)).save(bomb)  # 90 M pixels: past Pillow's 89.5 M limit (its warning variant)
    assert bomb.stat().st_size < 200_000

    # A real process: a blocked open() ends in the timeout instead of hanging the suite.
    argv = ["predict", str(digits_run.run_dir), "--top-k", "5", str(good), str(fifo), str(bomb)]
    proc = subprocess.run([sys.executable, "-m", "convolab", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    (top,) = convolab.load_run(digits_run.run_dir).predict(good, top_k=5)
    expected = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in top)
    assert proc.stdout.strip().splitlines() == [f"{good}: {expected}"]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0] == f"convolab predict: error: {fifo}: is not a regular file (a named pipe, socket or device), " \
                       "not an image"
    assert lines[1].startswith(f"convolab predict: error: {bomb}: refused as a possible decompression bomb")
    assert np.isfinite(top[0]["probability"])
