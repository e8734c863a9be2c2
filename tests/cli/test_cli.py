"""The ``convolab`` command, in-process through ``main([...])`` and once or twice as a real process.

Every user error must exit with code 2 and print one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import convolab
from convolab.cli import build_parser, main
from convolab.data import DATASETS, load_dataset

VERBS = ["train", "lr-find", "eval", "predict", "models", "datasets", "summary", "explain", "viz", "tcav", "report",
         "compress", "export", "compare", "study", "sweep", "search", "landscape", "serve"]
FASHION = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist; `make data` installs it


def cli(argv, capsys):
    """Run ``main(argv)`` in-process: (exit code, stdout, stderr). argparse errors exit via SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A run trained through the CLI (tutorial_cnn on digits, 2 epochs): (run dir, the --json summary)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "2", "--quiet",
                     "--device", "cpu", "--out", str(out), "--json"])
    assert code == 0, stderr.getvalue()
    return out, json.loads(stdout.getvalue())


@pytest.fixture(scope="module")
def digit_png(cli_run, tmp_path_factory):
    """A test-split digit written as an 8x8 grayscale PNG, with its label and pixels."""
    data = load_dataset("digits")
    pixels = data.test.images[0, 0].numpy()
    path = tmp_path_factory.mktemp("images") / "digit.png"
    Image.fromarray(pixels, "L").save(path)
    return path, int(data.test.labels[0]), pixels


# -- train ---------------------------------------------------------------------------------------
def test_train_json(cli_run):
    out, printed = cli_run
    assert printed["run_dir"] == str(out)
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in printed.items() if k != "run_dir"} == summary
    assert summary["epochs"] == 2 and summary["model"] == "tutorial_cnn" and summary["dataset"] == "digits"
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["accuracy.png", "confusion.png", "loss.png",
                                                                  "lr.png", "predictions.png"]  # lr: onecycle
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["download"] is True and config["config"]["progress"] is False


def test_train_as_a_real_process(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "convolab", "train", "--model", "lenet5", "--data", "digits", "--epochs", "1",
         "--quiet", "--no-plots", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"^test accuracy 0\.\d{4} \(loss \d+\.\d{4}\) on 359 digits test images after 1 epoch \(",
                     proc.stdout, re.M), proc.stdout
    assert f"run directory: {out}" in proc.stdout
    assert "pictures:" not in proc.stdout  # --no-plots
    assert not (out / "plots" / "loss.png").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["command"][1:3] == ["train", "--model"], "a CLI run records its command line"
    assert json.loads((out / "summary.json").read_text())["model"] == "lenet5"


def test_user_error_as_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "convolab", "train", "--model", "resnet", "--data", "digits", "--quiet",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert_one_line_error(proc.returncode, proc.stderr, "convolab train: error:", "unknown model 'resnet'",
                          "did you mean", "'resnet18'")
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()



def test_the_executable_is_command_which_freezes_the_collector_around_main(monkeypatch, capsys):
    import gc
    from importlib.metadata import entry_points

    from convolab.cli import command

    (script,) = entry_points(group="console_scripts", name="convolab")
    assert script.value == "convolab.cli:command"
    import convolab.__main__  # `python -m convolab` (its run is guarded by `if __name__ == "__main__"`)

    assert convolab.__main__.command is command
    monkeypatch.setattr(sys, "argv", ["convolab", "models", "--json"])
    gc.unfreeze()
    try:
        assert command() == 0
        assert gc.get_freeze_count() > 0  # what the run left is out of the collector's reach at exit
    finally:
        gc.unfreeze()  # this test session goes on: give the collector its objects back
    assert any(m["name"] == "lenet5" for m in json.loads(capsys.readouterr().out))
    monkeypatch.setattr(sys, "argv", ["convolab", "train", "--model", "resnet", "--data", "digits"])
    try:
        assert command() == 2  # main's exit code, a user error's included
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert "unknown model 'resnet'" in capsys.readouterr().err

# -- user errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needles", [
    (["--model", "resnet"], ["unknown model 'resnet'", "did you mean 'resnet18'"]),
    (["--data", "fashon-mnist"], ["unknown dataset 'fashon-mnist'", "'fashion-mnist'"]),
    (["--epochs", "0"], ["--epochs", "must be a positive integer, got 0"]),
    (["--batch-size", "-4"], ["--batch-size", "-4"]),
    (["--optimizer", "foo"], ["--optimizer", "invalid choice: 'foo'"]),
    (["--lr", "0"], ["--lr", "must be > 0"]),
    (["--lr", "nan"], ["--lr", "must be a finite number > 0"]),
    (["--lr", "fast"], ["--lr", "expected a number, got 'fast'"]),
    (["--momentum", "1"], ["--momentum", "must be in [0, 1)"]),
    (["--device", "tpu"], ["--device", "invalid choice"]),
    (["--epochs"], ["--epochs", "expected one argument"]),
    (["--bogus"], ["convolab train: error: unrecognized arguments: --bogus", "convolab train --help"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None)
def test_train_user_errors(args, needles, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = cli(["train", "--data", "digits", "--quiet", "--out", out, *args], capsys)
    assert_one_line_error(code, err, "convolab", *needles)
    assert not out.exists(), "a refused command must not leave a run directory behind"



@pytest.mark.parametrize("model,kind", [("unet", "segmentation"), ("fcn_resnet50", "segmentation"), ("c3d", "clip"),
                                        ("r3d_18", "clip")])
def test_train_refuses_a_model_whose_task_does_not_match_the_data(model, kind, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["train", "--model", model, "--data", "digits", "--quiet", "--out", out], capsys)
    assert_one_line_error(code, err, f"convolab train: error: {model} is a {kind} model",
                          "digits is a classification dataset", "convolab models")
    assert not out.exists()
    assert not out.exists()

def test_diverging_training_is_a_user_error(tmp_path, capsys):
    code, _, err = cli(["train", "--data", "digits", "--quiet", "--no-plots", "--epochs", "1", "--optimizer", "sgd",
                        "--lr", "1e12", "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "training diverged in epoch 1", "try a lower --lr")
    assert not (tmp_path / "run" / "model.safetensors").exists(), "diverged weights are never saved"


def test_missing_dataset_lists_the_places_looked(tmp_path, monkeypatch, capsys):
    cache = os.environ["XDG_CACHE_HOME"]
    assert not os.listdir(cache), "the test's user cache starts empty"
    system = tmp_path / "system-mnist"  # an empty stand-in for /usr/share/datasets/mnist
    system.mkdir()
    monkeypatch.setitem(DATASETS, "mnist", replace(DATASETS["mnist"], system_dirs=(str(system),)))
    code, _, err = cli(["train", "--data", "mnist", "--no-download", "--quiet"], capsys)
    assert_one_line_error(code, err, "dataset 'mnist' not found", "Looked in:", "--data-dir (not set)",
                          "$CONVOLAB_DATA (not set)", f"user cache {cache}/convolab", f"system copy {system}",
                          "download not attempted", "convolab datasets --download mnist")


def test_existing_out_without_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli(["train", "--data", "digits", "--quiet", "--out", out], capsys)
    assert_one_line_error(code, err, str(out), "already exists", "--overwrite")
    assert os.listdir(out) == ["keep.txt"]


def test_overwrite_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli(["train", "--data", "digits", "--quiet", "--overwrite", "--out", out], capsys)
    assert_one_line_error(code, err, "not a run directory made by convolab")
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("verb", ["eval", "predict"])
def test_missing_run_directory(verb, tmp_path, capsys):
    args = [verb, tmp_path / "no-such-run"] + ([tmp_path / "x.png"] if verb == "predict" else [])
    code, out, err = cli(args, capsys)
    assert_one_line_error(code, err, f"convolab {verb}: error:", "no-such-run", "no such run directory")
    assert out == ""


def test_no_verb(capsys):
    code, _, err = cli([], capsys)
    assert_one_line_error(code, err, "convolab: error:")


def test_debug_env_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVOLAB_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["eval", str(tmp_path / "nope")])


# -- eval ------------------------------------------------------------------------------------------
def test_eval_reproduces_the_recorded_test_accuracy(cli_run, capsys):
    out, summary = cli_run
    code, stdout, err = cli(["eval", out, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["accuracy"] == summary["test_accuracy"]
    assert res["recorded_accuracy"] == summary["test_accuracy"]
    assert res["samples"] == summary["test_samples"] == 359  # scikit-learn's 1,797 digits, 20 % per class
    assert res["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert (res["split"], res["dataset"]) == ("test", "digits")
    # precision, recall, F1 and top-5 (issue 17): summary.json's, and scikit-learn's on the model's own outputs
    for key in ("macro_precision", "macro_recall", "macro_f1", "top5_accuracy", "per_class_precision",
                "per_class_recall", "per_class_f1"):
        assert res[key] == pytest.approx(summary[f"test_{key}"], rel=1e-12), key
    import torch
    from sklearn.metrics import precision_recall_fscore_support, top_k_accuracy_score

    run, test = convolab.load_run(out), load_dataset("digits").test
    x = (test.images.float() / 255 - torch.tensor(run.mean).view(1, -1, 1, 1)) / torch.tensor(run.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = run.model(x)
    y, pred = test.labels.numpy(), logits.argmax(1).numpy()
    assert (pred == y).mean() == pytest.approx(res["accuracy"], abs=1e-12)  # (the same predictions as eval's)
    macro = precision_recall_fscore_support(y, pred, labels=range(10), average="macro", zero_division=np.nan)
    assert [res["macro_precision"], res["macro_recall"], res["macro_f1"]] == pytest.approx(list(macro[:3]), abs=1e-12)
    f1 = precision_recall_fscore_support(y, pred, labels=range(10), zero_division=np.nan)[2]
    assert [np.nan if v is None else v for v in res["per_class_f1"].values()] == pytest.approx(f1, abs=1e-12,
                                                                                            nan_ok=True)
    assert res["top5_accuracy"] == pytest.approx(top_k_accuracy_score(y, logits.numpy(), k=5), abs=1e-12)

    code, stdout, _ = cli(["eval", out], capsys)
    assert code == 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in stdout
    assert f"summary.json recorded {summary['test_accuracy']:.4f}" in stdout


def test_eval_val_split(cli_run, capsys):
    out, _ = cli_run
    code, stdout, err = cli(["eval", out, "--split", "val", "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["recorded_accuracy"] is None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert res["accuracy"] == rows[-1]["val_accuracy"], "the same validation split as in training"


def test_eval_on_a_dataset_of_another_shape(cli_run, capsys):
    out, _ = cli_run
    code, _, err = cli(["eval", out, "--data", "fashion-mnist"], capsys)
    assert code == 2 and "Traceback" not in err
    # eval logs its progress (decoding, dataset sizes) on stderr; the error itself is one line, the last
    errors = [line for line in err.splitlines() if "error" in line]
    assert errors == [err.strip().splitlines()[-1]]
    assert errors[0] == ("convolab eval: error: fashion-mnist has 1x28x28 images but the model was trained on "
                         "1x8x8")


def test_eval_of_a_run_that_names_no_dataset_asks_for_one(cli_run, capsys, tmp_path):
    out, _ = cli_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["dataset"]["name"]
    (copy / "config.json").write_text(json.dumps(config))
    code, _, err = cli(["eval", copy], capsys)
    assert_one_line_error(code, err, "config.json does not say which dataset the run used; pass --data")
    code, stdout, err = cli(["eval", copy, "--data", "digits", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["dataset"] == "digits"


# -- predict ---------------------------------------------------------------------------------------
def test_predict_good_and_bad_files(cli_run, digit_png, tmp_path, capsys):
    out, _ = cli_run
    good, _, _ = digit_png
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(big)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(big.read_bytes()[: len(big.read_bytes()) // 2])
    missing = tmp_path / "missing.png"
    folder = tmp_path / "a-folder.png"
    folder.mkdir()

    code, stdout, err = cli(["predict", out, good, corrupt, truncated, missing, folder], capsys)
    assert code == 2
    assert "Traceback" not in err
    # The good image is still predicted, its line as the library's prediction says.
    (top,) = convolab.load_run(out).predict(good, top_k=3)
    expected = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in top)
    assert stdout.strip().splitlines() == [f"{good}: {expected}"]
    # One error line per bad file, naming it.
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    for line, path, why in zip(lines, [corrupt, truncated, missing, folder],
                               ["not an image file", "cannot decode", "no such file", "is a folder"]):
        assert line.startswith("convolab predict: error: ") and str(path) in line and why in line, line


def test_predict_json(cli_run, digit_png, tmp_path, capsys):
    out, _ = cli_run
    good, _, _ = digit_png
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    code, stdout, err = cli(["predict", out, good, bad, "--json", "--top-k", "4"], capsys)
    assert code == 2
    res = json.loads(stdout)
    assert [r["image"] for r in res] == [str(good), str(bad)]
    assert len(res[0]["top_k"]) == 4
    probs = [t["probability"] for t in res[0]["top_k"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert "error" in res[1] and "not an image file" in res[1]["error"]
    assert len(err.strip().splitlines()) == 1 and str(bad) in err

    code, stdout, _ = cli(["predict", out, good, "--json"], capsys)
    assert code == 0
    assert len(json.loads(stdout)[0]["top_k"]) == 3


def _predict_json(run_dir, path, capsys):
    code, stdout, err = cli(["predict", run_dir, path, "--json", "--top-k", "10"], capsys)
    assert code == 0, err
    assert err == ""
    (res,) = json.loads(stdout)
    return {t["class"]: t["probability"] for t in res["top_k"]}


def test_predict_16bit_png_equals_the_8bit_image(cli_run, digit_png, tmp_path, capsys):
    out, _ = cli_run
    good, _, pixels = digit_png
    sixteen = tmp_path / "digit16.png"
    Image.fromarray(pixels.astype(np.uint16) * 257).save(sixteen)  # v -> v * 257: the top byte is v again
    with Image.open(sixteen) as img:
        assert img.mode.startswith("I")
    assert _predict_json(out, sixteen, capsys) == _predict_json(out, good, capsys)


def test_predict_rgba_png_equals_the_gray_image(cli_run, digit_png, tmp_path, capsys):
    out, _ = cli_run
    good, _, pixels = digit_png
    alpha = np.random.default_rng(2).integers(0, 256, pixels.shape, dtype=np.uint8)
    rgba = tmp_path / "digit-rgba.png"
    Image.fromarray(np.stack([pixels, pixels, pixels, alpha], -1), "RGBA").save(rgba)  # grey RGB: luma is v
    assert _predict_json(out, rgba, capsys) == _predict_json(out, good, capsys)


def test_predict_rgb_jpeg_of_another_size(cli_run, tmp_path, capsys):
    """A uniform colour 100x60 JPEG is predicted like a uniform 8x8 grey image of the colour's luma."""
    out, _ = cli_run
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (100, 60), (200, 100, 50)).save(jpeg, quality=95)
    gray = tmp_path / "gray.png"
    Image.new("L", (8, 8), round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)).save(gray)
    got, ref = _predict_json(out, jpeg, capsys), _predict_json(out, gray, capsys)
    assert got.keys() == ref.keys()
    for cls in ref:
        assert got[cls] == pytest.approx(ref[cls], abs=0.03), cls

    code, stdout, err = cli(["predict", out, jpeg], capsys)
    assert code == 0 and err == ""
    assert stdout.startswith(f"{jpeg}: ")
    assert len(re.findall(r"\d+\.\d%", stdout)) == 3


# -- models and datasets ---------------------------------------------------------------------------
def test_models_table(capsys):
    code, stdout, err = cli(["models"], capsys)
    assert code == 0, err
    lines = {line.split()[0]: line for line in stdout.splitlines() if line.strip()}
    expected = {"tutorial_cnn": "206,922", "mnist_cnn": "1,199,882", "lenet5": "61,706", "lenet5_classic": "61,706"}
    for name, params in expected.items():
        assert name in lines, stdout
        assert f" {params} " in lines[name], lines[name]


def test_models_json_and_pattern(capsys):
    code, stdout, _ = cli(["models", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(stdout)}
    assert rows["tutorial_cnn"]["params"] == 206_922
    assert rows["mnist_cnn"]["params"] == 1_199_882
    assert rows["lenet5"]["params"] == rows["lenet5_classic"]["params"] == 61_706
    assert rows["lenet5"]["family"] == "lenet" and rows["lenet5"]["year"] == 1998

    code, stdout, _ = cli(["models", "lenet", "--json"], capsys)
    assert [r["name"] for r in json.loads(stdout)] == ["lenet5", "lenet5_classic"]

    code, _, err = cli(["models", "nosuchnet*"], capsys)
    assert_one_line_error(code, err, "no model matches 'nosuchnet*'")


def test_models_shows_the_options_create_model_takes(capsys):
    """One model: its --model-arg keys, exactly the ones create_model accepts (a wrong one names them too)."""
    from convolab.models import create_model

    code, stdout, _ = cli(["models", "darts_net"], capsys)
    assert code == 0 and "options (--model-arg KEY=VALUE): genotype, init_channels, layers, stem_multiplier" in stdout
    code, stdout, _ = cli(["models", "unet", "--json"], capsys)
    options = json.loads(stdout)[0]["options"]
    assert "depth" in options and "base_channels" in options
    with pytest.raises(ValueError) as e:
        create_model("unet", num_classes=2, in_chans=1, input_size=(32, 32), no_such_option=1)
    assert all(o in str(e.value) for o in options)



def test_models_lists_segmentation_and_clip_models(capsys):
    expected = {  # name: (input kind, parameters, shown at)
        "unet": ("segmentation", 31_030_658, "1x572x572, 2 classes"),
        "fcn_resnet50": ("segmentation", 32_957_013, "3x520x520, 21 classes"),
        "c3d": ("clip", 79_991_015, "3x16x112x112, 487 classes"),
        "r3d_18": ("clip", 33_371_472, "3x16x112x112, 400 classes"),
    }
    for name, (kind, params, shown_at) in expected.items():
        code, stdout, err = cli(["models", name, "--json"], capsys)
        assert code == 0, err
        [row] = json.loads(stdout)
        assert (row["name"], row["input"], row["params"], row["shown_at"]) == (name, kind, params, shown_at)
    code, stdout, _ = cli(["models", "c3d"], capsys)
    line = next(line for line in stdout.splitlines() if line.startswith("c3d "))
    assert "79,991,015" in line and "3x16x112x112, 487 classes" in line and " clip " in line

def test_datasets_json(capsys):
    code, stdout, err = cli(["datasets", "--json"], capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(stdout)}
    assert {"fashion-mnist", "mnist", "digits"} <= set(rows)
    assert rows["fashion-mnist"]["status"] == "available"
    assert rows["fashion-mnist"]["location"] == FASHION
    assert rows["fashion-mnist"]["shape"] == "1x28x28" and rows["fashion-mnist"]["classes"] == 10
    assert rows["digits"]["status"] == "available"
    assert rows["digits"]["shape"] == "1x8x8"


def test_datasets_table_and_download_without_network(capsys):
    code, stdout, _ = cli(["datasets"], capsys)
    assert code == 0
    (line,) = [row for row in stdout.splitlines() if row.startswith("fashion-mnist ")]
    assert "available" in line and FASHION in line

    code, stdout, _ = cli(["datasets", "--download", "digits", "fashion-mnist"], capsys)
    assert code == 0
    assert "nothing to download" in stdout
    assert f"fashion-mnist: already present in {FASHION}" in stdout

    code, _, err = cli(["datasets", "--download", "fashon-mnist"], capsys)
    assert_one_line_error(code, err, "unknown dataset 'fashon-mnist'", "'fashion-mnist'")


# -- help ------------------------------------------------------------------------------------------
def test_every_verb_is_covered():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert sorted(sub.choices) == sorted(VERBS)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *[[verb, "--help"] for verb in VERBS]],
                         ids=lambda a: " ".join(a))
def test_help_exits_zero(argv, capsys):
    code, stdout, err = cli(argv, capsys)
    assert code == 0
    assert err == ""
    if argv == ["--version"]:
        assert stdout.strip() == f"convolab {convolab.__version__}"
    else:
        assert stdout.startswith("usage: convolab")


def test_train_config_is_what_convolab_train_trains_with(monkeypatch, tmp_path, capsys):
    import importlib

    from convolab.cli import train_config

    package = importlib.import_module("convolab.runs.session")
    seen = []

    def fake_train(config):
        seen.append(config)
        raise KeyboardInterrupt  # stop before any data loads

    monkeypatch.setattr(package, "train", fake_train)
    argv = ["--data", "digits", "--model", "fastcnn", "--epochs", "3", "--optimizer", "sgd", "--nesterov",
            "--no-plots", "--no-checkpoints", "--quiet", "--out", str(tmp_path / "r")]
    assert main(["train", *argv]) == 130
    expected = train_config(argv)
    assert seen[0] == expected
    assert (expected.epochs, expected.nesterov, expected.plots, expected.checkpoints, expected.progress) == \
        (3, True, False, False, False)


@pytest.mark.parametrize("text, size", [("64x48", [64, 48]), ("32", [32, 32]), ("28,28", [28, 28])])
def test_image_size_option_reaches_the_config(text, size):
    from convolab.cli import train_config

    assert train_config(["--image-size", text]).image_size == size
    assert train_config([]).image_size is None


@pytest.mark.parametrize("text", ["0x5", "64x", "axb", "1x2x3", "8193"])
def test_image_size_option_refuses_what_is_no_size(text, capsys):
    code, _, err = cli(["train", "--data", "digits", "--image-size", text], capsys)
    assert_one_line_error(code, err, "--image-size", "HxW")


@pytest.mark.parametrize("verb, target", [("report", "convolab.report.html.build_report"),
                                          ("explain", "convolab.explain.images.explain_images"),
                                          ("viz", "convolab.explain.viz.viz_run"),
                                          ("tcav", "convolab.explain.tcav.tcav_run")])
def test_quiet_turns_the_progress_bar_off(verb, target, monkeypatch, digits_run, tmp_path, capsys):
    import importlib

    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("captured")

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, capture)
    run = str(digits_run.run_dir)
    argv = {"report": ["report", run], "explain": ["explain", run, "x.png", "--out", str(tmp_path / "e")],
            "viz": ["viz", run, "--kernels", "--out", str(tmp_path / "v")],
            "tcav": ["tcav", run, "--concept", "c", "--random", "r0", "--random", "r1", "--target", "0"]}[verb]
    for quiet in (False, True):
        code, _, err = cli(argv + (["--quiet"] if quiet else []), capsys)
        assert code == 2 and "captured" in err
        assert seen["progress"] is (not quiet)
