"""``convolab compress`` and ``convolab export``: bad input is one line and exit code 2; the commands run end to
end on the shared digits run (slow: they compile models), and what they write reloads."""

from __future__ import annotations

import json

import pytest
from tests.cli.test_cli import assert_one_line_error, cli

import convolab


@pytest.mark.parametrize("args,needle", [
    (["--method", "ptq", "--out", "{tmp}/o", "--macs-fraction", "0.3"], "--macs-fraction applies to --method prune"),
    (["--method", "prune", "--out", "{tmp}/o", "--calibration", "100"], "--calibration applies to --method ptq"),
    (["--method", "distill", "--out", "{tmp}/o"], "needs --student"),
    (["--method", "ptq", "--out", "{tmp}/o", "--calibration", "5"], "minimum is 32"),
    (["--method", "ptq", "--out", "{tmp}/o", "--temperature", "2"], "--temperature applies to --method distill"),
])
def test_compress_bad_input_is_one_line(args, needle, digits_run, tmp_path, capsys):
    argv = ["compress", digits_run.run_dir, *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    code, out, err = cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_compress_refuses_a_missing_run_and_a_taken_out(digits_run, tmp_path, capsys):
    code, _, err = cli(["compress", tmp_path / "nope", "--method", "ptq", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "no such run directory")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("user data")
    code, _, err = cli(["compress", digits_run.run_dir, "--method", "ptq", "--out", tmp_path / "taken"], capsys)
    assert_one_line_error(code, err, "taken")
    assert (tmp_path / "taken" / "mine.txt").read_text() == "user data"


def test_export_bad_input_is_one_line(digits_run, tmp_path, capsys):
    code, _, err = cli(["export", digits_run.run_dir, "--format", "c", "--cc", "no-such-cc", "--out", tmp_path / "c"],
                       capsys)
    assert_one_line_error(code, err, "no such C compiler")
    code, _, err = cli(["export", tmp_path / "nope", "--format", "onnx"], capsys)
    assert_one_line_error(code, err, "nope")
    weights = digits_run.run_dir / "model.safetensors"
    before = weights.read_bytes()
    code, _, err = cli(["export", digits_run.run_dir, "--format", "onnx", "--out", weights, "--overwrite"], capsys)
    assert_one_line_error(code, err, "ends in .onnx")
    assert weights.read_bytes() == before


@pytest.mark.slow
def test_compress_ptq_end_to_end(digits_run, tmp_path, capsys):
    out = tmp_path / "int8"
    code, stdout, err = cli(["compress", digits_run.run_dir, "--method", "ptq", "--out", out, "--repeats", "1",
                             "--calibration", "256"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["compress"]["rows"]}
    from convolab.train.step import cpu_has_native_bf16

    bf16 = {"bf16 compiled", "int8 torchao + bf16"} if cpu_has_native_bf16() else set()
    assert set(rows) == {"fp32 eager", "fp32 compiled", "fp32 onnxruntime", "int8 torchao", "int8 onnxruntime", *bf16}
    base = convolab.load_run(digits_run.run_dir).summary["test_accuracy"]
    assert rows["fp32 eager"]["accuracy"] == pytest.approx(base, abs=1e-9)  # the same test split
    assert rows["fp32 compiled"]["accuracy"] == pytest.approx(base, abs=0.003)
    assert rows["fp32 onnxruntime"]["accuracy"] == pytest.approx(base, abs=0.003)
    assert abs(rows["int8 torchao"]["accuracy"] - base) < 0.03
    assert summary["test_accuracy"] == rows["int8 torchao"]["accuracy"]
    assert rows["int8 torchao"]["size_bytes"] == (out / "model.safetensors").stat().st_size
    assert (out / "model.int8.onnx").is_file() and (out / "plots" / "pareto.png").is_file()
    assert "int8 torchao" in (out / "compress.txt").read_text() and "int8 torchao" in stdout
    # eval, predict's Run and load_run use the int8 model
    run = convolab.load_run(out)
    assert run.build["kind"] == "int8-pt2e"
    code, stdout, err = cli(["eval", out], capsys)
    assert code == 0, err
    assert "test accuracy" in stdout
    # tools that hook the layers refuse the graph in one line, naming the float run
    code, _, err = cli(["summary", out], capsys)
    assert_one_line_error(code, err, "int8 graph", str(digits_run.run_dir))


@pytest.mark.slow
def test_export_onnx_and_c_end_to_end(digits_run, tmp_path, capsys):
    code, stdout, err = cli(["export", digits_run.run_dir, "--format", "onnx", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert (tmp_path / "m.onnx").is_file() and "max_abs_diff" in stdout
    code, _, err = cli(["export", digits_run.run_dir, "--format", "onnx", "--out", tmp_path / "m.onnx"], capsys)
    assert_one_line_error(code, err, "exists")
    for dtype in ("float32", "int8"):
        code, stdout, err = cli(["export", digits_run.run_dir, "--format", "c", "--dtype", dtype,
                                 "--out", tmp_path / dtype, "--calibration", "256"], capsys)
        assert code == 0, err
        assert "checked" in stdout and (tmp_path / dtype / "model.c").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("method,args,main,control", [
    ("qat", ["--epochs", "1"], "int8 qat", "fp32 fine-tuned (control)"),
    ("prune", ["--epochs", "1", "--macs-fraction", "0.5"], "pruned fp32 compiled", "fp32 fine-tuned (control)"),
    ("distill", ["--epochs", "2", "--student", "perceptron"], "perceptron distilled", "perceptron alone (control)"),
])
def test_compress_trains_with_its_control(method, args, main, control, digits_run, tmp_path, capsys):
    out = tmp_path / method
    code, stdout, err = cli(["compress", digits_run.run_dir, "--method", method, *args, "--control", "--out", out,
                             "--repeats", "1", "--no-progress"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["compress"]["rows"]}
    assert {"fp32 eager", "fp32 compiled", "fp32 onnxruntime", main, control} <= set(rows)
    assert summary["test_accuracy"] == rows[main]["accuracy"]
    # the control is a run of its own, and its row is that run's model on the same test images
    ctrl = convolab.load_run(f"{out}-control")
    assert rows[control]["accuracy"] == pytest.approx(ctrl.summary["test_accuracy"], abs=0.01)
    again = convolab.load_run(out)  # the compressed run reloads
    assert again.summary["compress"]["method"] == method
    if method == "prune":
        m = summary["compress"]
        assert m["macs_after"] <= 0.52 * m["macs_before"]
        assert rows[main]["size_bytes"] < 0.6 * rows["fp32 eager"]["size_bytes"]
    if method == "qat":
        assert again.build["kind"] == "int8-pt2e" and again.build["qat"] is True


def test_compress_never_replaces_the_run_it_starts_from(digits_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run.run_dir, run)
    weights = (run / "model.safetensors").read_bytes()
    for method in ("ptq", "prune"):
        code, _, err = cli(["compress", run, "--method", method, "--out", run, "--overwrite"], capsys)
        assert_one_line_error(code, err, "is the run being compressed")
    assert (run / "model.safetensors").read_bytes() == weights


def test_a_taken_control_folder_is_refused_before_training(digits_run, tmp_path, capsys):
    (tmp_path / "o-control").mkdir()
    (tmp_path / "o-control" / "mine.txt").write_text("user data")
    code, _, err = cli(["compress", digits_run.run_dir, "--method", "qat", "--control", "--out", tmp_path / "o"],
                       capsys)
    assert_one_line_error(code, err, "o-control")
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "o-control" / "mine.txt").read_text() == "user data"
