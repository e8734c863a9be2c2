"""The finiteness check without a host sync per step (what GPUs get): the same run as the per-step check.

The deferred check is switched on here, on the CPU, so that both paths can be compared step by step.
"""

from __future__ import annotations

import types

import pytest
import torch
from safetensors.torch import load_file
from tests.train.test_checkpoint import _nan_at

import convolab
from convolab.atomic import read_jsonl
from convolab.train.loop import Trainer
from convolab.train.step import StandardStep


def _deferred(monkeypatch, on: bool = True):
    monkeypatch.setattr(Trainer, "_use_deferred_nan_check", lambda self: on)


def _same_run(a, b):
    assert read_jsonl(a.run_dir / "steps.jsonl") == read_jsonl(b.run_dir / "steps.jsonl")
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(run.run_dir / "metrics.jsonl")]
               for run in (a, b)]
    assert untimed[0] == untimed[1]
    wa, wb = load_file(str(a.run_dir / "model.safetensors")), load_file(str(b.run_dir / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.summary["skipped_steps"] == b.summary["skipped_steps"]
    assert a.summary["test_accuracy"] == b.summary["test_accuracy"]


@pytest.mark.parametrize("recipe", [dict(optimizer="adam"), dict(optimizer="adamw", clip_grad_norm=1.0),
                                    dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True)])
def test_deferred_skips_are_the_per_step_skips(digits_config, tmp_path, monkeypatch, recipe):
    # Step 1 is skipped too: fused SGD's momentum buffer must start from zeros, not uninitialised memory.
    _nan_at(monkeypatch, {1, 3, 4, 30})
    sync = convolab.train(digits_config(tmp_path / "sync", epochs=2, plots=False, on_nan="skip", **recipe))
    _nan_at(monkeypatch, {1, 3, 4, 30})
    _deferred(monkeypatch)
    deferred = convolab.train(digits_config(tmp_path / "deferred", epochs=2, plots=False, on_nan="skip", **recipe))
    assert [s["step"] for s in read_jsonl(deferred.run_dir / "steps.jsonl") if s.get("skipped")] == [1, 3, 4, 30]
    _same_run(deferred, sync)
    assert all(torch.isfinite(v).all() for v in load_file(str(deferred.run_dir / "model.safetensors")).values())


def test_deferred_stop_reports_the_step_where_the_streak_reached_its_limit(digits_config, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {2, 3, 5, 6, 7})
    _deferred(monkeypatch)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 7, 3 non-finite step\(s\) in a row"):
        convolab.train(digits_config(tmp_path / "run", epochs=1, plots=False))
    steps = read_jsonl(tmp_path / "run" / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(1, 8)), "rows after the stopping step are not recorded"
    assert [s["step"] for s in steps if s.get("skipped")] == [2, 3, 5, 6, 7]
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_deferred_check_reads_the_device_once_per_window(digits_config, tmp_path, monkeypatch):
    """Count the host reads of tensors (bool, float, int, item, tolist) inside the training epochs."""
    _deferred(monkeypatch)
    reads = {"n": 0, "inside": False}
    original_epoch = Trainer._train_epoch

    def counting_epoch(self, epoch):
        reads["inside"] = True
        try:
            return original_epoch(self, epoch)
        finally:
            reads["inside"] = False

    monkeypatch.setattr(Trainer, "_train_epoch", counting_epoch)
    for name in ("__bool__", "__float__", "__int__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if reads["inside"]:
                reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    result = convolab.train(digits_config(tmp_path / "run", epochs=2, plots=False, checkpoints=False))
    steps = result.summary["steps"]
    windows = 2 * -(-steps // 2 // Trainer.NAN_CHECK_EVERY)  # ceil per epoch
    # One read per window, plus the epoch's figures and the steps.jsonl rows (read in one transfer).
    assert reads["n"] <= windows + 2 * 4, (reads["n"], steps)
    assert steps >= 40, "enough steps that one read per step would fail the bound above"


def test_the_deferred_check_is_for_gpus_with_a_fused_optimizer():
    def decide(device="cuda", optimizer="adam", scaler=None, ema=None):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = {"adam": lambda: torch.optim.Adam([p], fused=True), "sgd": lambda: torch.optim.SGD([p], fused=True),
               "plain": lambda: torch.optim.Adam([p]), "rmsprop": lambda: torch.optim.RMSprop([p])}[optimizer]()
        loop = types.SimpleNamespace(device=torch.device(device), config=types.SimpleNamespace(ema=ema))
        me = types.SimpleNamespace(optimizer=opt, optimizers=[opt], scaler=scaler, t=loop)
        return StandardStep.use_deferred_nan_check(me)

    assert decide() and decide(optimizer="sgd")
    assert not decide(device="cpu"), "on a CPU reading the loss costs nothing: checked per step"
    assert not decide(optimizer="plain") and not decide(optimizer="rmsprop")
    assert not decide(scaler=object()) and not decide(ema=object())
