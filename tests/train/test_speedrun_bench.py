"""benchmarks/speedrun.py: a warm process, an untimed warm-up, then timed seeds whose window sits inside the run."""

import json

import pytest
from tests.benchmark_scripts import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def speedrun():
    return load_benchmark("speedrun")


def test_two_seeds_after_a_warm_up_on_digits(speedrun, capsys):
    assert speedrun.main(["--recipe", "tutorial", "--data", "digits", "--seeds", "2", "--device", "cpu", "--json",
                          "--", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    runs = figures["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and figures["warmup"] is not None
    for r in runs:
        assert r["epochs"] == 2 and 0.1 < r["accuracy"] <= 1  # the flag after -- won over the recipe's 5 epochs
        # the timed window (first step to the test's accuracy) is inside the run, setup and writing outside it
        assert 0 < r["timed"] == pytest.approx(r["train_and_test"])
        assert r["setup"] > 0 and r["write"] >= 0
        assert r["setup"] + r["train_and_test"] + r["write"] == pytest.approx(r["whole"], abs=1e-6)
    phases = figures["phases"]
    assert sum(phases.values()) <= figures["whole_seconds"]
    assert "timed seconds (perf_counter, first step to final test accuracy)" in out
    mean = sum(r["accuracy"] for r in runs) / 2
    assert f"test accuracy: mean {mean:.4f}" in out


@pytest.mark.parametrize("argv, needle", [
    (["--recipe", "speedrun-gpu", "--device", "cpu"], "--recipe speedrun-gpu needs a CUDA GPU"),
    (["--recipe", "fastest", "--device", "cpu"], "invalid choice: 'fastest'"),
    (["--recipe", "tutorial", "--device", "cpu", "--", "--lr", "0"], "--lr: must be > 0"),
])
def test_a_refused_recipe_or_flag_is_one_line_before_any_run(speedrun, capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        speedrun.main([*argv, "--data", "digits", "--seeds", "1"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert "speed run:" not in out  # nothing ran


def test_the_device_script_refuses_a_machine_without_a_gpu(tmp_path):
    """benchmarks/gpu_device.sh (the GPU record on a lent machine) stops at once, exit 2, where CUDA is absent."""
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():  # (CI has no GPU; on a GPU machine the script would run for minutes)
        pytest.skip("this machine has a CUDA GPU: the script would run the whole record")
    script = BENCHMARKS / "gpu_device.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PY": sys.executable, "OUT": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA GPU here" in proc.stderr
    assert not (tmp_path / "gpu-speedrun.log").exists()  # nothing started
