"""``convolab explain``: files written, JSON, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tests.cli.test_cli import assert_one_line_error, cli


@pytest.fixture(scope="module")
def digit_files(digits_run, tmp_path_factory):
    from convolab.data import load_dataset

    folder = tmp_path_factory.mktemp("digit-files")
    data = load_dataset("digits")
    paths = []
    for i in range(2):
        p = folder / f"d{i}.png"
        Image.fromarray(data.test.images[i, 0].numpy()).resize((32, 32)).save(p)  # another size: preprocessed
        paths.append(p)
    bad = folder / "broken.png"
    bad.write_bytes(b"no image here")
    return paths, bad


def test_explain_writes_overlays_and_raw_maps(digits_run, digit_files, tmp_path, capsys):
    (a, b), _ = digit_files
    code, out, err = cli(["explain", digits_run.run_dir, a, b, "--method", "gradcam", "integrated-gradients",
                          "--out", tmp_path / "e", "--json"], capsys)
    assert code == 0, err
    records = json.loads(out)
    assert [r["image"] for r in records] == [str(a), str(b)]
    for r in records:
        assert r["target"] == r["predicted"]
        for method in ("gradcam", "integrated-gradients"):
            m = r["methods"][method]
            assert Image.open(m["png"]).format == "PNG"
            raw = np.load(m["raw"])
            assert list(raw.shape) == m["shape"] and np.isclose(raw.max(), m["max"])
        assert r["methods"]["gradcam"]["shape"] == [8, 8]  # at the model's input size
        assert r["methods"]["integrated-gradients"]["completeness_gap"] < 0.05


def test_a_bad_file_is_named_and_the_others_are_explained(digits_run, digit_files, tmp_path, capsys):
    (a, _), bad = digit_files
    code, out, err = cli(["explain", digits_run.run_dir, bad, a, "--out", tmp_path / "e"], capsys)
    assert code == 2
    assert_one_line_error(code, err, str(bad))
    assert (tmp_path / "e" / "d0_gradcam.png").exists()
    assert "predicted" in out


def test_target_by_name_and_existing_files(digits_run, digit_files, tmp_path, capsys):
    (a, _), _ = digit_files
    code, out, err = cli(["explain", digits_run.run_dir, a, "--target", "7", "--out", tmp_path / "e", "--json"],
                         capsys)
    assert code == 0, err
    assert json.loads(out)[0]["target"] == "7"
    code, _, err = cli(["explain", digits_run.run_dir, a, "--target", "7", "--out", tmp_path / "e"], capsys)
    assert_one_line_error(code, err, "exists", "--overwrite")
    code, _, err = cli(["explain", digits_run.run_dir, a, "--out", tmp_path / "e", "--overwrite"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("args,needles", [
    (["--method", "gradcm"], ["--method", "invalid choice", "gradcam", "integrated-gradients"]),
    (["--method", "cam"], ["global-average-pool", "gradcam"]),
    (["--layer", "features.conv9"], ["unknown layer", "features.conv1"]),
    (["--target", "cat"], ["unknown class 'cat'", "index 0..9"]),
    (["--target", "12"], ["out of range"]),
])
def test_user_errors(digits_run, digit_files, tmp_path, capsys, args, needles):
    (a, _), _ = digit_files
    code, _, err = cli(["explain", digits_run.run_dir, a, "--out", tmp_path / "e", *args], capsys)
    assert_one_line_error(code, err, *needles)
