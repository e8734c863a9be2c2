"""Training through the streaming path (issue 16, "Must reach"): an image folder over the memory budget trains, and
everything it records — steps.jsonl, metrics.jsonl, test accuracy, final weights — is identical to the same run
with the folder decoded into memory; a streamed run interrupted after epoch 1 and resumed ends as the uninterrupted
one; and ``convolab train --data FOLDER --max-memory 10KB`` streams through the CLI."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tests.cli.test_cli import cli

from convolab.atomic import read_jsonl
from convolab.data.stream import FileImages
from convolab.runs.session import resume, train
from convolab.train import loop as loop_mod
from convolab.train.config import TrainConfig
from convolab.train.loop import Trainer

CLASSES = ("disc", "hbar", "square", "vbar")
PER_CLASS = 100  # 400 images
SIZE = 16  # 16x16 RGB: 768 bytes decoded each, ~300 KB for the folder
TINY = 10 * 1024  # bytes: far below the folder's decoded size -> streamed
LARGE = 1024**3  # bytes: far above it -> decoded into memory


def _pattern(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One noisy 16x16 RGB image of a class (a shape at a random offset), uint8 (H, W, 3)."""
    img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)  # dark noise
    dy, dx = rng.integers(-2, 3, 2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = SIZE // 2 + dy, SIZE // 2 + dx
    if kind == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
    elif kind == "hbar":
        mask = (abs(yy - cy) <= 1) & (abs(xx - cx) <= 6)
    elif kind == "vbar":
        mask = (abs(xx - cx) <= 1) & (abs(yy - cy) <= 6)
    else:
        mask = (abs(yy - cy) <= 4) & (abs(xx - cx) <= 4) & ~((abs(yy - cy) <= 2) & (abs(xx - cx) <= 2))
    img[mask] = rng.integers(160, 256, 3, dtype=np.uint8)  # one bright colour per image
    return img


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """400 PNGs in 4 class folders (written with PIL)."""
    root = tmp_path_factory.mktemp("shapes") / "shapes"
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(_pattern(kind, rng)).save(root / kind / f"{i:03d}.png")
    return root


def _config(folder, out, max_memory: int, **overrides) -> TrainConfig:
    cfg = dict(model="tutorial_cnn", data=str(folder), out=str(out), epochs=2, batch_size=32, lr=1e-3,
               optimizer="adam", schedule="constant", seed=0, device="cpu", progress=False, augment="light",
               plots=True, checkpoints=True, max_memory=max_memory)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def _record_split_kinds(mp: pytest.MonkeyPatch) -> list[tuple[type, type, type]]:
    """The type of every split's ``images`` each training session loads (``Trainer._setup`` wrapped through ``mp``)."""
    seen: list[tuple[type, type, type]] = []
    real = Trainer._setup

    def setup(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(tuple(type(s.images) for s in (self.data.train, self.data.val, self.data.test)))

    mp.setattr(Trainer, "_setup", setup)
    return seen


@pytest.fixture
def split_kinds(monkeypatch):
    """The type of every split's ``images`` each training session of the test loaded."""
    return _record_split_kinds(monkeypatch)


def _without_seconds(rows: list[dict]) -> list[dict]:
    """metrics.jsonl rows less what a clock measures (times and throughput)."""
    timed = ("seconds", "per_second", "time", "eta")
    return [{k: v for k, v in r.items() if not any(t in k for t in timed)} for r in rows]


def _assert_same_run(a, b) -> None:
    """Two run folders that recorded the same numbers: steps, metrics less times, test figures, final weights."""
    assert read_jsonl(a / "steps.jsonl") == read_jsonl(b / "steps.jsonl")
    ma, mb = _without_seconds(read_jsonl(a / "metrics.jsonl")), _without_seconds(read_jsonl(b / "metrics.jsonl"))
    assert ma == mb
    assert [r["epoch"] for r in ma] == [1, 2]
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def streamed_run(folder, tmp_path_factory):
    """The uninterrupted streamed run (2 epochs), shared by the tests that compare with it."""
    out = tmp_path_factory.mktemp("streamed") / "run"
    mp = pytest.MonkeyPatch()
    seen = _record_split_kinds(mp)
    try:
        result = train(_config(folder, out, TINY))
    finally:
        mp.undo()
    return out, result, seen


@pytest.mark.slow
def test_streamed_training_equals_in_memory_training(folder, streamed_run, tmp_path, split_kinds):
    streamed, s_result, s_kinds = streamed_run
    assert s_kinds == [(FileImages, FileImages, FileImages)], "the tiny budget must stream every split"
    memory = tmp_path / "memory"
    m_result = train(_config(folder, memory, LARGE))
    assert split_kinds == [(torch.Tensor, torch.Tensor, torch.Tensor)], "the large budget decodes into memory"

    _assert_same_run(streamed, memory)
    assert s_result.summary["test_accuracy"] == m_result.summary["test_accuracy"]
    assert s_result.summary["test_loss"] == m_result.summary["test_loss"]
    assert s_result.summary["test_accuracy"] > 0.5, "4 classes: it learned (chance 0.25)"
    for run in (streamed, memory):  # plots on: the predictions grid of the test split too (FileImages indexed)
        assert {p.name for p in (run / "plots").glob("*.png")} >= {"loss.png", "predictions.png"}
        assert list((run / "checkpoints").glob("step-*.pt"))


@pytest.mark.slow
def test_streamed_run_interrupted_after_epoch_1_resumes_to_the_uninterrupted_run(folder, streamed_run, tmp_path,
                                                                                  monkeypatch, split_kinds):
    streamed, s_result, _ = streamed_run
    out = tmp_path / "run"
    real = Trainer._train_epoch

    def train_epoch(self, epoch):  # Ctrl-C at the start of epoch 2 (test_trainer_logs's way)
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_config(folder, out, TINY))
    monkeypatch.setattr(Trainer, "_train_epoch", real)
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1]

    result = resume(out)
    assert split_kinds == [(FileImages,) * 3] * 2, "both sessions streamed"
    assert result.summary.get("resumes", 1) >= 1
    _assert_same_run(streamed, out)
    assert result.summary["test_accuracy"] == s_result.summary["test_accuracy"]


@pytest.mark.slow
def test_cli_trains_a_folder_over_max_memory_by_streaming(folder, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="convolab"):
        code, stdout, stderr = cli(["train", "--model", "tutorial_cnn", "--data", folder, "--epochs", "1",
                                    "--batch-size", "64", "--device", "cpu", "--max-memory", "10KB", "--no-plots",
                                    "--out", out], capsys)
    assert code == 0, stderr
    said = stderr + "\n".join(r.getMessage() for r in caplog.records)
    assert "streaming them from disk" in said and "more than the in-memory limit of 10.0 KiB" in said, said
    assert (out / "model.safetensors").is_file()
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1]


def test_loop_uses_the_streaming_loader_for_file_images(folder):
    """The loop's make_loader is the data layer's chooser: a FileImages split gets a StreamLoader."""
    from convolab.data import load_dataset
    from convolab.data.stream import StreamLoader

    data = load_dataset(str(folder), max_bytes=TINY)
    assert isinstance(data.train.images, FileImages)
    loader = loop_mod.make_loader(data.train, 32, mean=data.mean, std=data.std, num_workers=0)
    assert isinstance(loader, StreamLoader)
    x, y = next(iter(loader))
    assert x.shape == (32, 3, SIZE, SIZE) and y.shape == (32,)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_streaming_leaves_torch_global_generator_alone(folder, num_workers):
    """Loading a streamed folder (the measuring pass) and serving its epochs draw nothing from torch's global
    generator: a DataLoader without its own generator draws its workers' base seed from there, which moved the
    streamed run's weight initialisation and dropout away from the in-memory run's (found by the test above)."""
    from convolab.data import load_dataset
    from convolab.data.stream import StreamLoader

    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    data = load_dataset(str(folder), max_bytes=TINY)
    loader = StreamLoader(data.train, 64, mean=data.mean, std=data.std, shuffle=True, num_workers=num_workers)
    for _ in range(2):  # two epochs: persistent workers, then a reset iterator
        for _batch in loader:
            pass
    loader.close()
    assert torch.equal(torch.rand(4), expected)


def _worker_processes() -> list:
    """This process's live children (a DataLoader's workers are multiprocessing children)."""
    import multiprocessing

    return multiprocessing.active_children()


@pytest.mark.slow
def test_training_and_lr_find_leave_no_decoding_processes_behind(folder, tmp_path):
    """When ``train`` or ``lr_find`` returns, the streamed splits' persistent workers have been stopped (left to
    the cycle collector they outlived the call and then cost 5 s each to end: 20 s after one small run)."""
    from convolab.runs.session import lr_find

    assert not _worker_processes()
    train(_config(folder, tmp_path / "run", TINY, epochs=1, plots=False, augment="none"))
    assert not _worker_processes()
    result, path = lr_find(_config(folder, tmp_path / "lr", TINY, plots=False), end_lr=1e-3, num_steps=12,
                          keep=False)
    assert path is None and len(result.lrs) == 12  # 12 steps > the 9 batches of an epoch: the loader went round
    assert not _worker_processes()
