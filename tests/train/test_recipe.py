"""The training step's recipe options against a plain torch loop written out by hand.

The reference below re-derives what the engine must do for SGD with Nesterov momentum, weight decay on
the weight matrices only, label smoothing, global-norm gradient clipping and a schedule, with none
of convolab's training code: its own parameter groups, its own smoothed cross-entropy, its own
clipping, and torch's scheduler. The engine runs with gradient accumulation (batches of 32, two per
step); the reference takes the same 64 images per step and adds the two halves' gradients, each
weighted by its share of the step's images (the last step of an epoch has a single short half).
"""

from __future__ import annotations

import pytest
import torch

import convolab
from convolab.atomic import read_jsonl
from convolab.data import DeviceLoader, load_dataset
from convolab.models import create_model

LR, WD, EPS, CLIP, EPOCHS = 0.05, 5e-3, 0.1, 0.5, 2


def smoothed_cross_entropy(logits, y, eps):
    logp = logits.log_softmax(1)
    return (-(1 - eps) * logp.gather(1, y[:, None])[:, 0] - eps * logp.mean(1)).mean()


def reference_run():
    data = load_dataset("digits", val_fraction=0.1, seed=0)
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=data.image_size)
    matrices = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": matrices, "weight_decay": WD}, {"params": biases, "weight_decay": 0.0}],
                          lr=LR, momentum=0.9, nesterov=True)
    loader = DeviceLoader(data.train, 64, mean=data.mean, std=data.std, shuffle=True, seed=0)
    total = EPOCHS * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=total, cycle_momentum=False)
    norms, rates = [], []
    for _ in range(EPOCHS):
        for x, y in loader:
            opt.zero_grad()
            for xs, ys in zip(x.split(32), y.split(32)):
                (smoothed_cross_entropy(model(xs), ys, EPS) * len(ys) / len(y)).backward()
            norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
            for p in model.parameters():
                p.grad.mul_(min(1.0, CLIP / (float(norm) + 1e-6)))
            norms.append(float(norm))
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return model, norms, rates


def test_engine_matches_the_hand_written_loop(digits_config, tmp_path):
    result = convolab.train(digits_config(
        tmp_path / "run", epochs=EPOCHS, optimizer="sgd", lr=LR, momentum=0.9, nesterov=True, weight_decay=WD,
        label_smoothing=EPS, clip_grad_norm=CLIP, batch_size=32, accum_steps=2, schedule="onecycle",
        plots=False, channels_last=False, precision="32"))
    model, norms, rates = reference_run()
    steps = read_jsonl(result.run_dir / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(1, len(norms) + 1))
    assert [s["epoch"] for s in steps] == [1] * (len(norms) // 2) + [2] * (len(norms) // 2)
    assert [s["lr"] for s in steps] == pytest.approx(rates, rel=1e-12)
    assert [s["grad_norm"] for s in steps] == pytest.approx(norms, rel=1e-5)
    trained = result.model.state_dict()
    for name, expected in model.state_dict().items():
        torch.testing.assert_close(trained[name], expected, rtol=1e-5, atol=1e-6, msg=name)
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    assert rows[-1]["lr"] == steps[-1]["lr"], "an epoch's lr is that of its last step"


def test_steps_jsonl_losses_average_to_the_epoch_loss(digits_run):
    steps = read_jsonl(digits_run.run_dir / "steps.jsonl")
    rows = read_jsonl(digits_run.run_dir / "metrics.jsonl")
    n_train = load_dataset("digits").train.labels.numel()
    n = -(-n_train // 64)  # steps per epoch
    assert len(steps) == 5 * n
    sizes = [64] * (n - 1) + [n_train - (n - 1) * 64]
    for e, row in enumerate(rows):
        epoch_steps = steps[e * n:(e + 1) * n]
        mean = sum(s["loss"] * b for s, b in zip(epoch_steps, sizes)) / sum(sizes)
        assert mean == pytest.approx(row["train_loss"], rel=1e-5)
        assert all(s["lr"] == 1e-3 for s in epoch_steps)
