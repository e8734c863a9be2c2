"""The loop's callbacks (issue 16): the order of the hooks in one run, teardown after a failure, a callback's state
through the checkpoint and back on resume, the best epoch's weights kept by early stopping, and the EMA's weights
as the saved model."""

from __future__ import annotations

import contextlib

import pytest
import torch
from safetensors.torch import load_file

import convolab
from convolab.atomic import read_jsonl
from convolab.runs.session import make_trainer, resume
from convolab.train.callbacks import Callback
from convolab.train.loop import Trainer

RECIPE = dict(epochs=2, batch_size=128, plots=False, precision="32")  # 1295 training digits: 11 steps per epoch
STEPS_PER_EPOCH = 11


class Recorder(Callback):
    """Records every hook it receives, in order."""

    def __init__(self):
        self.calls: list[str] = []

    def setup(self, trainer):
        self.calls.append("setup")

    def on_optimizer_step(self, trainer):
        self.calls.append("on_optimizer_step")

    def on_steps_logged(self, trainer, rows):
        self.calls.append(f"on_steps_logged:{len(rows)}")

    def on_epoch_end(self, trainer, row, val):
        self.calls.append(f"on_epoch_end:{row['epoch']}")

    def on_train_end(self, trainer):
        self.calls.append("on_train_end")

    def on_fit_end(self, trainer, summary, test):
        self.calls.append("on_fit_end")

    def teardown(self, trainer):
        self.calls.append("teardown")


def _expected_order(epochs: int, steps: int) -> list[str]:
    """The documented order (convolab.train.callbacks.base) for a run that logs its steps once per epoch."""
    calls = ["setup"]
    for epoch in range(1, epochs + 1):
        calls += ["on_optimizer_step"] * steps + [f"on_steps_logged:{steps}", f"on_epoch_end:{epoch}"]
    return calls + ["on_train_end", "on_fit_end", "teardown"]


@pytest.fixture
def recorded_run(digits_config, tmp_path):
    recorder = Recorder()
    result = make_trainer(digits_config(tmp_path / "run", **RECIPE), callbacks=[recorder]).fit()
    return recorder.calls, result


@pytest.mark.slow
def test_hook_order_through_the_epochs(recorded_run):
    """Up to the end of training, the hooks come as documented: each step's hook, the epoch's rows, the epoch."""
    calls, result = recorded_run
    assert result.summary["steps"] == 2 * STEPS_PER_EPOCH
    expected = _expected_order(2, STEPS_PER_EPOCH)
    end = expected.index("on_train_end") + 1
    assert calls[:end] == expected[:end]
    assert calls.count("on_fit_end") == 1 and "teardown" in calls[end:]


@pytest.mark.slow
def test_hook_order_is_the_documented_one(recorded_run):
    calls, _ = recorded_run
    assert calls == _expected_order(2, STEPS_PER_EPOCH)


def test_hooks_with_checkpoint_every_log_steps_at_each_checkpoint(digits_config, tmp_path):
    """With --checkpoint-every 4 the steps' rows are written (and announced) at steps 4 and 8 and at the epoch's
    end: 4 + 4 + 3 rows per epoch."""
    recorder = Recorder()
    make_trainer(digits_config(tmp_path / "run", **{**RECIPE, "epochs": 1}, checkpoint_every=4),
                 callbacks=[recorder]).fit()
    logged = [c for c in recorder.calls if c.startswith("on_steps_logged")]
    assert logged == ["on_steps_logged:4", "on_steps_logged:4", "on_steps_logged:3"]
    first = recorder.calls.index("on_steps_logged:4")
    assert recorder.calls[1:first] == ["on_optimizer_step"] * 4


class FailAt(Callback):
    def __init__(self, hook: str):
        self.hook = hook

    def on_optimizer_step(self, trainer):
        if self.hook == "on_optimizer_step" and trainer.global_step == 3:
            raise RuntimeError("a failing callback")

    def on_epoch_end(self, trainer, row, val):
        if self.hook == "on_epoch_end":
            raise RuntimeError("a failing callback")


@pytest.mark.parametrize("hook", ["on_optimizer_step", "on_epoch_end"])
def test_teardown_runs_once_after_a_failure(digits_config, tmp_path, hook):
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="a failing callback"):
        make_trainer(digits_config(tmp_path / "run", **RECIPE), callbacks=[recorder, FailAt(hook)]).fit()
    assert recorder.calls.count("teardown") == 1 and recorder.calls[-1] == "teardown"
    assert "on_train_end" not in recorder.calls and "on_fit_end" not in recorder.calls


def test_teardown_runs_after_ctrl_c(digits_config, tmp_path):
    recorder = Recorder()
    with _interrupted_at_epoch(2):
        make_trainer(digits_config(tmp_path / "run", **RECIPE), callbacks=[recorder]).fit()
    assert recorder.calls[-2:] == ["on_epoch_end:1", "teardown"]


class StepCounter(Callback):
    """Counts the optimizer steps; the count is its checkpoint field ``step_counter``."""

    def __init__(self):
        self.count = 0
        self.loaded: int | None = None

    def on_optimizer_step(self, trainer):
        self.count += 1

    def state_dict(self) -> dict:
        return {"step_counter": self.count}

    def load_state_dict(self, state: dict, trainer) -> None:
        self.count = self.loaded = state["step_counter"]


@contextlib.contextmanager
def _interrupted_at_epoch(stop_epoch: int):
    """Ctrl-C at the start of epoch ``stop_epoch`` (as tests/train/test_trainer_logs.py raises it)."""
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
    """Ctrl-C while optimizer step ``step`` (1-based) is taken."""

    def __init__(self, step: int):
        self.step = step

    def on_optimizer_step(self, trainer):
        if trainer.global_step + 1 == self.step:
            raise KeyboardInterrupt


@pytest.fixture
def counted_interrupted_run(digits_config, tmp_path):
    """A run with a StepCounter and --checkpoint-every 4, interrupted at step 6 (its newest checkpoint is step 4's,
    though the counter has counted 6 by then): (config, run folder, the counter)."""
    out = tmp_path / "run"
    config = digits_config(out, **RECIPE, checkpoint_every=4)
    counter = StepCounter()
    with pytest.raises(KeyboardInterrupt):
        make_trainer(config, callbacks=[counter, StopAtStep(6)]).fit()
    return config, out, counter


def test_callback_state_lands_in_the_checkpoint(counted_interrupted_run):
    config, out, counter = counted_interrupted_run
    assert counter.count == 6  # (it sees step 6 before StopAtStep raises)
    newest = sorted((out / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(newest, weights_only=True)
    assert state["global_step"] == state["callbacks"]["step_counter"] == 4  # (a user callback's fields: there)


def _resume_counted(config, out) -> tuple[StepCounter, dict]:
    counter = StepCounter()
    result = make_trainer(config, resume_from=out, callbacks=[counter]).fit()
    return counter, result.summary


def _assert_count_resumed(config, out) -> None:
    counter, summary = _resume_counted(config, out)
    assert counter.loaded == 4, "load_state_dict got the checkpoint's count"
    assert counter.count == summary["steps"] == 2 * STEPS_PER_EPOCH, "the count continued exactly"
    final = torch.load(sorted((out / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert final["callbacks"]["step_counter"] == 2 * STEPS_PER_EPOCH


def test_callback_state_comes_back_on_resume(counted_interrupted_run):
    _assert_count_resumed(*counted_interrupted_run[:2])


# -- best epoch and early stopping ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory, digits_config):
    """A run that stops early after epoch 3 with epoch 1 as its best: min_delta 0.5 lets only the first epoch's
    val accuracy count as an improvement, and --early-stopping 2 stops two epochs later."""
    out = tmp_path_factory.mktemp("early") / "run"
    config = digits_config(out, **{**RECIPE, "epochs": 6}, monitor="val_accuracy", min_delta=0.5, early_stopping=2)
    return config, out, convolab.train(config)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epochs_weights(early_stopped):
    _, out, result = early_stopped
    s = result.summary
    assert (s["best_epoch"], s["stopped_early"], s["epochs"]) == (1, True, 3)
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert best["global_step"] == STEPS_PER_EPOCH and best["best"] == {"value": best["history"][0]["val_accuracy"],
                                                                         "epoch": 1}
    last = torch.load(sorted((out / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert last["global_step"] == 3 * STEPS_PER_EPOCH
    saved = load_file(str(out / "model.safetensors"))
    assert saved.keys() == best["model"].keys()
    for k, v in saved.items():
        assert torch.equal(v, best["model"][k]), f"{k}: model.safetensors is not the best epoch's"
    assert any(not torch.equal(v, last["model"][k]) for k, v in saved.items()), "the last epoch's weights were saved"
    # the test figures are the best weights': evaluate them independently
    model = convolab.load_run(out).model
    data = convolab.load_dataset("digits")
    x = (data.test.images.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(
        data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        accuracy = (model.eval()(x).argmax(1) == data.test.labels).double().mean().item()
    assert accuracy == pytest.approx(s["test_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_early_stopping_resumed_keeps_the_best_epochs_weights(early_stopped, tmp_path):
    """Interrupted before epoch 3, resumed: the best epoch's weights come back from best.pt, and the run ends as the
    uninterrupted one did."""
    config, reference, _ = early_stopped
    out = tmp_path / "run"
    config = type(config)(**{**config.to_dict(), "out": str(out)})
    with _interrupted_at_epoch(3):
        convolab.train(config)
    result = resume(out)
    assert (result.summary["best_epoch"], result.summary["stopped_early"], result.summary["epochs"]) == (1, True, 3)
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- EMA -------------------------------------------------------------------------------------------------------
class WeightsRecorder(Callback):
    """The model's full state (parameters and buffers, on the CPU, float64) at setup and after every step."""

    def __init__(self):
        self.states: list[dict[str, torch.Tensor]] = []

    def _record(self, trainer):
        self.states.append({k: v.detach().double().cpu().clone() for k, v in trainer.model.state_dict().items()})

    def setup(self, trainer):
        self._record(trainer)

    def on_optimizer_step(self, trainer):
        self._record(trainer)


@pytest.mark.slow
def test_ema_weights_are_what_model_safetensors_holds(digits_config, tmp_path):
    """The saved model is the average of the weights after every step, by the warm-up rule of
    convolab.train.ema (decay_t = min(decay, (1 + t) / (10 + t))), computed here in float64 from the recorded
    weights — not the last weights."""
    decay = 0.9
    recorder = WeightsRecorder()
    out = tmp_path / "run"
    result = make_trainer(digits_config(out, **RECIPE, ema=decay), callbacks=[recorder]).fit()
    start, *after_steps = recorder.states
    assert len(after_steps) == 2 * STEPS_PER_EPOCH
    ema = dict(start)
    for t, weights in enumerate(after_steps):
        d = min(decay, (1 + t) / (10 + t))
        ema = {k: (d * ema[k] + (1 - d) * w) if w.is_floating_point() else w for k, w in weights.items()}
    saved = load_file(str(out / "model.safetensors"))
    assert saved.keys() == ema.keys()
    for k, v in saved.items():
        if v.is_floating_point():
            torch.testing.assert_close(v.double(), ema[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
        else:
            assert torch.equal(v, ema[k].to(v.dtype)), k
    last = result.model.state_dict()
    assert any(v.is_floating_point() and not torch.allclose(v, last[k].cpu(), atol=1e-4) for k, v in saved.items()), \
        "model.safetensors holds the last weights, not their average"
    ckpt = torch.load(sorted((out / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert ckpt["ema"]["updates"] == 2 * STEPS_PER_EPOCH
    for k, v in saved.items():
        assert torch.equal(v, ckpt["ema"]["module"][k]), f"{k}: the checkpoint's EMA is not the saved one"
