"""``--loss``: each classification loss against torch's functional form and a hand computation, the seam a
distillation teacher's soft targets go through (KL to one-hot is cross-entropy), the tasks that refuse it, and runs
with each loss from the CLI."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tests.cli.test_cli import cli

from convolab.train.config import TrainConfig
from convolab.train.losses import LOSSES, classification_loss, target_distribution
from convolab.train.tasks import Classification, ClipClassification, Segmentation

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # float(loss) in asserts


def _batch(seed: int = 0, n: int = 7, k: int = 5):
    g = torch.Generator().manual_seed(seed)
    z = (3 * torch.randn(n, k, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(k, (n,), generator=g)
    return z, y


def _grad(loss: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, z)[0]


# -- against torch's functional forms (values and gradients) ---------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_each_loss_equals_torchs_form(seed, eps):
    z, y = _batch(seed)
    q = F.one_hot(y, 5).double() * (1 - eps) + eps / 5
    references = {
        "cross_entropy": lambda: F.cross_entropy(z, y, label_smoothing=eps),
        "kl": lambda: F.kl_div(z.log_softmax(1), q, reduction="batchmean"),
        "mse": lambda: F.mse_loss(z.softmax(1), q),
        "mae": lambda: F.l1_loss(z.softmax(1), q),
        "hinge": lambda: F.multi_margin_loss(z, y),  # Weston-Watkins: nn.MultiMarginLoss(p=1, margin=1)
    }
    assert set(references) == set(LOSSES)
    for name, reference in references.items():
        ours, ref = classification_loss(name, z, y, label_smoothing=eps), reference()
        # (the losses written out compute in float32, as under autocast)
        tol = 1e-12 if name == "cross_entropy" else 1e-6
        assert float(ours) == pytest.approx(float(ref), rel=tol, abs=tol), name
        torch.testing.assert_close(_grad(ours, z).double(), _grad(ref, z), rtol=tol * 10, atol=tol * 10)


def test_hand_computed_values():
    """One sample, logits (2, 0, -1), class 0, no smoothing, worked out with math."""
    z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    e = [math.exp(2), 1.0, math.exp(-1)]
    p = [v / sum(e) for v in e]
    ce = -math.log(p[0])
    assert float(classification_loss("cross_entropy", z, y)) == pytest.approx(ce, rel=1e-6)
    assert float(classification_loss("kl", z, y)) == pytest.approx(ce, rel=1e-6)  # KL to one-hot = CE
    mse = ((p[0] - 1) ** 2 + p[1] ** 2 + p[2] ** 2) / 3
    assert float(classification_loss("mse", z, y)) == pytest.approx(mse, rel=1e-6)
    mae = ((1 - p[0]) + p[1] + p[2]) / 3
    assert float(classification_loss("mae", z, y)) == pytest.approx(mae, rel=1e-6)
    # Weston-Watkins: max(0, 1 - 2 + 0) + max(0, 1 - 2 - 1) = 0, over K = 3; with logits (0.5, 1, -1) it is
    # (1 - 0.5 + 1) + max(0, 1 - 0.5 - 1) = 1.5, / 3 = 0.5
    assert float(classification_loss("hinge", z, y)) == 0.0
    assert float(classification_loss("hinge", torch.tensor([[0.5, 1.0, -1.0]]), y)) == pytest.approx(0.5)


def test_kl_to_one_hot_is_cross_entropy_and_differs_by_the_entropy_when_smoothed():
    z, y = _batch(3)
    ce = F.cross_entropy(z, y)
    kl = classification_loss("kl", z, y)
    assert float(kl) == pytest.approx(float(ce), rel=1e-6)
    torch.testing.assert_close(_grad(kl, z).double(), _grad(ce, z), rtol=1e-5, atol=1e-6)
    # smoothed: KL(q || p) = H(q, p) - H(q), a constant apart, the same gradient
    q = target_distribution(y, 5, 0.2).double()
    entropy = float(-(q * q.log()).sum(1).mean())
    ce_smoothed = F.cross_entropy(z, y, label_smoothing=0.2)
    kl_smoothed = classification_loss("kl", z, y, label_smoothing=0.2)
    assert float(kl_smoothed) == pytest.approx(float(ce_smoothed) - entropy, rel=1e-5)
    torch.testing.assert_close(_grad(kl_smoothed, z).double(), _grad(ce_smoothed, z), rtol=1e-5, atol=1e-6)


def test_soft_targets_from_a_teacher():
    """The distillation seam: targets (N, K) probabilities are used as given (not smoothed again)."""
    z, y = _batch(4)
    teacher = (torch.randn(7, 5, dtype=torch.float64) * 2).softmax(1)
    ref_kl = F.kl_div(z.log_softmax(1), teacher, reduction="batchmean")
    for eps in (0.0, 0.3):
        assert float(classification_loss("kl", z, teacher, eps)) == pytest.approx(float(ref_kl), rel=1e-6)
        assert float(classification_loss("cross_entropy", z, teacher, eps)) == pytest.approx(
            float(F.cross_entropy(z, teacher)), rel=1e-12)
        assert float(classification_loss("mse", z, teacher, eps)) == pytest.approx(
            float(F.mse_loss(z.softmax(1), teacher)), rel=1e-6)
    # zeros among the targets: 0 log 0 = 0, no NaN
    hard = F.one_hot(y, 5).double()
    assert float(classification_loss("kl", z, hard)) == pytest.approx(float(F.cross_entropy(z, y)), rel=1e-6)
    with pytest.raises(ValueError, match="hinge loss scores class indices"):
        classification_loss("hinge", z, teacher)
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        classification_loss("l2", z, y)


def test_the_task_computes_the_configured_loss():
    z, y = _batch(5)
    data = SimpleNamespace(task="classification", name="digits")
    for name in LOSSES:
        task = Classification(TrainConfig(loss=name, label_smoothing=0.0), data)
        task.check()
        assert float(task.loss(z, y)) == float(classification_loss(name, z, y))


def test_tasks_that_refuse_the_loss_or_jitter(caplog):
    seg = SimpleNamespace(task="segmentation", name="scenes")
    with pytest.raises(ValueError, match="--loss mse is not available for segmentation, which trains with "
                                         "cross_entropy only; drop --loss"):
        Segmentation(TrainConfig(loss="mse"), seg).check()
    with pytest.raises(ValueError, match="--jitter is not available for segmentation"):
        Segmentation(TrainConfig(jitter=0.4), seg).check()
    with pytest.raises(ValueError, match="--jitter is not available for clips"):
        ClipClassification(TrainConfig(jitter=0.4), SimpleNamespace(task="clips", name="m")).check()
    ClipClassification(TrainConfig(loss="hinge", label_smoothing=0.0), SimpleNamespace(task="clips", name="m")).check()
    with caplog.at_level("WARNING"):
        Classification(TrainConfig(loss="hinge"), SimpleNamespace(task="classification", name="digits")).check()
    assert "--loss hinge scores class indices: --label-smoothing 0.1 does not change it" in caplog.text


def test_numpy_engine_refuses_other_losses_and_l1():
    for bad in (dict(loss="mse"), dict(l1=1e-4)):
        with pytest.raises(ValueError, match="--engine numpy trains with cross-entropy and no --l1"):
            TrainConfig(engine="numpy", **bad).validate()


def test_cli_bad_loss_is_one_line(capsys):
    code, _, err = cli(["train", "--loss", "l2", "--data", "digits"], capsys)
    assert code == 2 and "invalid choice: 'l2'" in err and "cross_entropy" in err


@pytest.mark.parametrize("loss", ["mse", "mae", "hinge", "kl"])
def test_cli_trains_with_each_loss(loss, tmp_path, capsys):
    """Each loss trains tutorial_cnn on digits: the recorded loss, a training loss of that loss's scale, accuracy far
    above chance, and the validation loss still cross-entropy."""
    out = tmp_path / "run"
    code, stdout, err = cli(["train", "--data", "digits", "--loss", loss, "--label-smoothing", "0", "--epochs", "3",
                             "--lr", "3e-3", "--device", "cpu", "--quiet", "--no-plots", "--out", out, "--json"],
                            capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert json.loads((out / "config.json").read_text())["config"]["loss"] == loss
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["test_accuracy"] > 0.3, "10 classes: chance is 0.1 (MAE learns slowest: 0.47 after 3 epochs)"
    if loss in ("mse", "mae"):  # a mean over the classes of probabilities' errors: at most 2 / 10 (mse), 0.2 (mae)
        assert all(0 <= r["train_loss"] <= 0.2 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
