"""``convolab.glass`` imports and runs without PyTorch; with PyTorch the package's API is unchanged."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import convolab

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_glass_runs_without_torch():
    result = _run("""
        import numpy as np
        from convolab import glass
        import convolab.glass.train, convolab.glass.naive
        glass.manual_seed(0)
        model = glass.Sequential(glass.Conv2d(1, 4, 3, padding=1), glass.BatchNorm2d(4), glass.ReLU(),
                                 glass.MaxPool2d(2), glass.Flatten(), glass.Linear(4 * 4 * 4, 3))
        crit, opt = glass.CrossEntropyLoss(), glass.Adam(model.parameters(), lr=1e-2)
        x, y = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32), np.arange(8) % 3
        losses = [convolab.glass.train.train_step(model, crit, opt, x, y).loss for _ in range(20)]
        assert losses[-1] < losses[0] / 2, losses
        assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules)
        try:
            import convolab
            convolab.create_model
        except ModuleNotFoundError as e:
            print("clear error:", e)
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "convolab.create_model needs PyTorch" in result.stdout


def test_public_api_with_torch():
    from convolab.runs.reader import Run, load_run
    from convolab.runs.session import resume, train
    from convolab.train import TrainConfig

    assert convolab.train is train and convolab.TrainConfig is TrainConfig  # the function, not the subpackage
    assert convolab.resume is resume
    assert convolab.load_run is load_run and convolab.Run is Run
    assert callable(convolab.create_model) and callable(convolab.list_models) and callable(convolab.load_dataset)
    assert set(convolab.__all__) == {"create_model", "list_models", "load_dataset", "train", "resume", "TrainConfig",
                                     "load_run", "Run", "__version__"}
