"""Bilevel training through the one loop (issue 16, "Must reach"): the trainer takes built objects — a model with
architecture weights, two optimizers, and an :class:`AlternatingStep` whose outer optimizer steps on validation
batches before every weight step (first-order DARTS, Liu et al. 2019) — and a run of it resumes bit-exactly, from
an epoch's end and from a --checkpoint-every checkpoint in the middle of an epoch."""

from __future__ import annotations

import contextlib
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from convolab.atomic import read_jsonl
from convolab.data import DeviceLoader
from convolab.models import _registry
from convolab.models._registry import register_model
from convolab.runs.session import make_trainer
from convolab.train.callbacks import Callback
from convolab.train.loop import Trainer
from convolab.train.step import AlternatingStep

MODEL = "tiny_darts"  # the test's model; registered only inside the tests that need it (see ``registered``)


class MixedOpNet(nn.Module):
    """One DARTS mixed op on 8x8 digits: softmax(alphas)-weighted sum of a 3x3 and a 5x5 convolution, ReLU, a linear
    classifier on the flattened map. ``alphas`` are the architecture weights; everything else is a weight."""

    input_kind = "image"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 8):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, (8, 8)
        self.ops = nn.ModuleList([nn.Conv2d(in_chans, width, 3, padding=1), nn.Conv2d(in_chans, width, 5, padding=2)])
        self.alphas = nn.Parameter(torch.zeros(len(self.ops)))
        self.head = nn.Linear(width * 8 * 8, num_classes)
        # what create_model records of a model it built (weights_metadata and config.json read it)
        self.convolab_cfg = {"name": MODEL, "num_classes": num_classes, "in_chans": in_chans, "input_size": [8, 8],
                             "width": width}

    def weights(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alphas"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.alphas.softmax(0)
        y = sum(wi * op(x) for wi, op in zip(w, self.ops))  # (N, width, 8, 8)
        return self.head(F.relu(y).flatten(1))  # (N, num_classes)


def _register(mp: pytest.MonkeyPatch) -> None:
    """``tiny_darts`` in a copy of the model registry that ``mp`` puts back when undone (no other test sees it)."""
    mp.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    register_model(input_kind="image", default_cfg=dict(num_classes=10, in_chans=1, input_size=(8, 8)))(
        _tiny_darts)


@pytest.fixture
def registered(monkeypatch):
    """``tiny_darts`` registered (the runs below also pass without it: see the tests of a model outside the
    registry and of given optimizers)."""
    _register(monkeypatch)


def _tiny_darts(*, num_classes: int = 10, in_chans: int = 1, input_size=None, width: int = 8) -> MixedOpNet:
    return MixedOpNet(num_classes, in_chans, width)


_tiny_darts.__name__ = MODEL


class CountingAdam(torch.optim.Adam):
    """Adam that records its steps in a shared log (``name`` per step), to check the order of the two levels."""

    def __init__(self, params, log: list[str], name: str, **kwargs):
        super().__init__(params, **kwargs)
        self.log, self.name = log, name

    def step(self, closure=None):
        self.log.append(self.name)
        return super().step(closure)


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, log: list[str], name: str, **kwargs):
        super().__init__(params, **kwargs)
        self.log, self.name = log, name

    def step(self, closure=None):
        self.log.append(self.name)
        return super().step(closure)


def _built(log: list[str] | None = None) -> dict:
    """The built objects of one bilevel run: the model (seeded: every run starts from the same weights), inner SGD
    over the weights, outer Adam over the alphas, and the alternating step rule over a shuffled validation loader."""
    log = [] if log is None else log
    torch.manual_seed(0)
    model = MixedOpNet()

    def optimizers(m: MixedOpNet) -> list[torch.optim.Optimizer]:
        return [CountingSGD(m.weights(), log, "inner", lr=0.05, momentum=0.9),
                CountingAdam([m.alphas], log, "outer", lr=0.05)]

    def step_rule(t, opts) -> AlternatingStep:
        outer = DeviceLoader(t.data.val, 64, mean=t.data.mean, std=t.data.std, device=t.device, shuffle=True,
                             seed=11)
        return AlternatingStep(t, opts, outer)

    return dict(model=model, optimizers=optimizers, step_rule=step_rule)


def _config(digits_config, out, **overrides):
    recipe = dict(model=MODEL, epochs=2, batch_size=128, optimizer="sgd", lr=0.05, plots=False, precision="32")
    return digits_config(out, **{**recipe, **overrides})


@contextlib.contextmanager
def _interrupted_at_epoch(stop_epoch: int):
    """Ctrl-C at the start of epoch ``stop_epoch`` (a KeyboardInterrupt raised in the loop, as
    tests/train/test_trainer_logs.py does), for the duration of the block."""
    real = Trainer._train_epoch

    def train_epoch(self, epoch):
        if epoch == stop_epoch:
            raise KeyboardInterrupt
        return real(self, epoch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_train_epoch", train_epoch)
        with pytest.raises(KeyboardInterrupt):
            yield


class StopAtStep(Callback):
    """Ctrl-C while optimizer step ``step`` (1-based) is being taken."""

    def __init__(self, step: int):
        self.step = step

    def on_optimizer_step(self, trainer) -> None:
        if trainer.global_step + 1 == self.step:  # (global_step counts the steps before this one)
            raise KeyboardInterrupt


def _assert_same_run(run, reference) -> None:
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and "alphas" in a
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the uninterrupted run"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(run / "metrics.jsonl")) == strip(read_jsonl(reference / "metrics.jsonl"))
    assert read_jsonl(run / "steps.jsonl") == read_jsonl(reference / "steps.jsonl")


def _fit(config, resume_from=None, callbacks=None, log=None):
    return make_trainer(config, resume_from=resume_from, callbacks=callbacks, **_built(log)).fit()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_config):
    """An uninterrupted bilevel run (2 epochs, a checkpoint every 4 steps) and its optimizer log, made with the
    model registered for the duration of the fixture only."""
    mp = pytest.MonkeyPatch()
    try:
        _register(mp)
        log: list[str] = []
        out = tmp_path_factory.mktemp("bilevel") / "reference"
        torch.manual_seed(0)
        start = MixedOpNet().state_dict()
        result = _fit(_config(digits_config, out, checkpoint_every=4), log=log)
    finally:
        mp.undo()
    return out, result, log, start


@pytest.mark.slow  # (the shared reference run)
def test_both_levels_learn(reference):
    out, result, _, start = reference
    final = load_file(str(out / "model.safetensors"))
    assert not torch.equal(final["alphas"], start["alphas"]), "the architecture weights never moved"
    for k in ("ops.0.weight", "ops.1.weight", "head.weight"):
        assert not torch.equal(final[k], start[k]), f"{k} never moved"
    assert result.summary["test_accuracy"] > 0.5  # (10 classes: chance is 0.1)


@pytest.mark.slow  # (the shared reference run)
def test_outer_step_before_each_inner_step(reference):
    out, result, log, _ = reference
    steps = read_jsonl(out / "steps.jsonl")
    n = result.summary["steps"]
    assert n == len(steps) == 2 * 11  # 1295 training digits in batches of 128: 11 steps per epoch
    assert log == ["outer", "inner"] * n, "one outer step before every inner step"


def test_alphas_are_stepped_only_by_the_outer_optimizer(digits_config, tmp_path, registered):
    """Without the outer optimizer (the step rule is the standard one) the alphas stay where they started: the
    inner step does not touch them, and the outer pass's gradients are not left for it."""
    built = _built()
    start = built["model"].alphas.detach().clone()
    built.pop("step_rule")
    make_trainer(_config(digits_config, tmp_path / "run", epochs=1), **built).fit()
    assert torch.equal(load_file(str(tmp_path / "run" / "model.safetensors"))["alphas"], start)


@pytest.mark.slow  # (the shared reference run)
def test_resume_after_epoch_1_is_bit_exact(reference, digits_config, tmp_path, registered):
    out = tmp_path / "run"
    config = _config(digits_config, out, checkpoint_every=4)
    with _interrupted_at_epoch(2):
        _fit(config)
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1]
    log: list[str] = []
    result = _fit(config, resume_from=out, log=log)
    assert result.summary["resumes"] == 1
    assert log == ["outer", "inner"] * 11, "the resumed session took epoch 2's steps only"
    _assert_same_run(out, reference[0])


@pytest.mark.slow  # (the shared reference run)
def test_resume_from_a_mid_epoch_checkpoint_is_bit_exact(reference, digits_config, tmp_path, registered):
    out = tmp_path / "run"
    config = _config(digits_config, out, checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):  # during step 6: the newest checkpoint is step 4's, mid-epoch 1
        _fit(config, callbacks=[StopAtStep(6)])
    newest = sorted((out / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(newest, weights_only=True)
    assert (state["epoch"], state["batch"], state["global_step"]) == (1, 4, 4)
    assert state["step_rule"]["outer_batch"] == 1  # the outer loader (3 batches a pass) is in its second pass
    log: list[str] = []
    _fit(config, resume_from=out, log=log)
    assert log == ["outer", "inner"] * (22 - 4)
    _assert_same_run(out, reference[0])


@pytest.mark.slow  # (the shared reference run)
def test_resume_from_a_chosen_mid_epoch_checkpoint_file(reference, digits_config, tmp_path, registered):
    """The reference's own step-20 checkpoint (epoch 2, batch 9), copied with its run, resumed by file name."""
    run = tmp_path / "copy"
    shutil.copytree(reference[0], run)
    steps = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert steps == ["step-00000020.pt", "step-00000022.pt"], steps  # (the newest two are kept)
    for name in ("model.safetensors", "summary.json"):
        (run / name).unlink()
    log: list[str] = []
    _fit(_config(digits_config, run, checkpoint_every=4), resume_from=run / "checkpoints" / "step-00000020.pt",
         log=log)
    assert log == ["outer", "inner"] * 2
    _assert_same_run(run, reference[0])


def _one_line_refusal(excinfo, *needles: str) -> None:
    text = str(excinfo.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"


@pytest.fixture
def standard_step_run(digits_config, tmp_path, registered):
    """A run of the bilevel model and optimizers trained with the standard step rule (its checkpoints hold no
    outer optimizer, loader or position), interrupted after epoch 1: (config, run folder)."""
    out = tmp_path / "run"
    config = _config(digits_config, out)
    built = _built()
    built.pop("step_rule")
    with _interrupted_at_epoch(2):
        make_trainer(config, **built).fit()
    assert torch.load(sorted((out / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)["step_rule"] is None
    return config, out


def test_resume_without_step_rule_state_is_refused(standard_step_run):
    """Resumed with the alternating step: refused in one line, not continued with a fresh outer optimizer."""
    config, out = standard_step_run
    with pytest.raises(ValueError) as excinfo:
        _fit(config, resume_from=out)
    _one_line_refusal(excinfo, "outer optimizer")
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1], "nothing was trained"


def test_refusal_names_the_checkpoint(standard_step_run):
    config, out = standard_step_run
    newest = sorted((out / "checkpoints").glob("step-*.pt"))[-1]
    with pytest.raises(ValueError) as excinfo:
        _fit(config, resume_from=out)
    _one_line_refusal(excinfo, newest.name)


def test_resume_of_a_built_model_outside_the_registry(digits_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = _config(digits_config, out)
    with _interrupted_at_epoch(2):
        _fit(config)
    _fit(config, resume_from=out)
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


def test_resume_with_given_optimizers(digits_config, tmp_path, monkeypatch):
    _register(monkeypatch)
    out = tmp_path / "run"
    config = _config(digits_config, out)
    with _interrupted_at_epoch(2):
        _fit(config)
    _fit(config, resume_from=out)
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
