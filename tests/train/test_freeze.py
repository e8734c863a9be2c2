"""``--freeze`` and ``--lr-decay-per-stage``: which parameters freeze, frozen BatchNorm layers in eval mode, the
stages' rates by formula, the schedule scaling every group alike, resume, and the one-line refusals."""

from __future__ import annotations

import math

import pytest
import torch
from tests.cli.test_cli import assert_one_line_error, cli
from torch import nn

from convolab.models import create_model
from convolab.train import TrainConfig
from convolab.train.freeze import freeze, parameter_stages
from convolab.train.loop import Trainer
from convolab.train.optim import create_optimizer


def _resnet18(**kw):
    torch.manual_seed(0)
    return create_model("resnet18", num_classes=4, in_chans=3, input_size=64, **kw)


# hand-written: the torchvision layout's top-level names in order, and which stage each is in
_STAGE_OF_TOP = {"conv1": 0, "bn1": 0, "layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4, "fc": 5}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_freeze_up_to_a_layer_freezes_it_and_everything_before():
    model = _resnet18()
    done = freeze(model, "layer2")
    want = {n for n, _ in model.named_parameters() if _top(n) in ("conv1", "bn1", "layer1", "layer2")}
    assert set(done.frozen) == want
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == want
    params = dict(model.named_parameters())
    assert done.frozen_params == sum(params[n].numel() for n in want)
    assert done.trainable_params == sum(p.numel() for n, p in params.items() if n not in want)
    # bn1 and the 2 x 2 blocks' bn1, bn2 (+ layer2's downsample BN): 1 + 4 + 4 + 1 BatchNorm layers
    assert sorted(done.batchnorms) == sorted(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
                                             and _top(n) in ("bn1", "layer1", "layer2"))
    assert len(done.batchnorms) == 10


def test_freeze_a_block_inside_a_stage():
    model = _resnet18()
    done = freeze(model, "layer3.0")
    frozen = set(done.frozen)
    assert "layer3.0.downsample.1.weight" in frozen and "layer2.1.bn2.bias" in frozen
    assert not any(n.startswith("layer3.1") for n in frozen)


def test_freeze_by_pattern_matches_parameter_names():
    model = _resnet18()
    done = freeze(model, "layer1.*")
    assert set(done.frozen) == {n for n, _ in model.named_parameters() if n.startswith("layer1.")}
    assert len(done.batchnorms) == 4  # layer1's two blocks, bn1 and bn2 each
    model = _resnet18()
    assert set(freeze(model, "*.bn1.weight").frozen) == {n for n, _ in model.named_parameters()
                                                          if n.endswith(".bn1.weight")}


def test_frozen_batchnorm_stays_in_eval_mode_and_its_statistics_do_not_move():
    model = _resnet18()
    freeze(model, "layer1")
    model.train()  # what the loop does each epoch
    frozen_bn, live_bn = model.layer1[0].bn1, model.layer2[0].bn1
    assert not frozen_bn.training and live_bn.training and model.training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.randn(4, 3, 64, 64))
    after = model.state_dict()
    for k, v in before.items():
        moved = not torch.equal(v, after[k])
        assert moved == (not k.startswith(("bn1.", "layer1."))), k
    # eval-mode BatchNorm normalises with the running statistics: the frozen layer equals its eval formula
    x = torch.randn(4, 64, 8, 8)
    ref = ((x - frozen_bn.running_mean[:, None, None]) / torch.sqrt(frozen_bn.running_var[:, None, None] + 1e-5)
           * frozen_bn.weight[:, None, None] + frozen_bn.bias[:, None, None])
    torch.testing.assert_close(frozen_bn(x), ref)


def test_frozen_parameters_are_not_in_the_optimizer():
    model = _resnet18()
    freeze(model, "layer3")
    opt = create_optimizer(model, "sgd", 0.1, weight_decay=1e-4)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}
    assert len(in_opt) == sum(1 for n, _ in model.named_parameters() if _top(n) in ("layer4", "fc"))


def test_resnet_stages_follow_feature_info():
    model = _resnet18()
    stages, k = parameter_stages(model)
    assert k == 5
    assert stages == {n: _STAGE_OF_TOP[_top(n)] for n, _ in model.named_parameters()}


@pytest.mark.parametrize("decay", [0.5, 0.1])
def test_group_rates_by_formula(decay):
    model = _resnet18()
    freeze(model, "layer1")
    lr = 0.02
    opt = create_optimizer(model, "adamw", lr, weight_decay=0.05, lr_decay_per_stage=decay)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in opt.param_groups:
        for p in g["params"]:
            n = names[id(p)]
            seen.add(n)
            assert math.isclose(g["lr"], lr * decay ** (5 - _STAGE_OF_TOP[_top(n)]), rel_tol=1e-12), n
            assert g["weight_decay"] == (0.05 if p.ndim > 1 else 0.0), n
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(_top(n) in ("conv1", "bn1", "layer1") for n in seen)


def test_models_without_feature_info_use_their_top_level_children():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    stages, k = parameter_stages(model)
    assert k == 3  # no get_classifier: the last child with parameters is a stage of its own; nothing is after it
    assert stages == {"0.weight": 0, "0.bias": 0, "2.weight": 1, "2.bias": 1, "4.weight": 2, "4.bias": 2}


def test_bad_specs_are_one_line_with_close_matches(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"has no layer of that name; close matches: layer2"):
        freeze(_resnet18(), "layr2")
    with pytest.raises(ValueError, match=r"'layr1.\*' matches no parameter of resnet18; close matches: layer1\.\*"):
        freeze(_resnet18(), "layr1.*")
    with pytest.raises(ValueError, match="freezes every parameter"):
        freeze(_resnet18(), "fc")
    code, _, err = cli(["train", "--model", "resnet18", "--data", "digits", "--freeze", "layr3", "--out",
                        tmp_path / "run", "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "--freeze 'layr3'", "close matches: layer3")
    assert not (tmp_path / "run").exists()  # refused before any data loads
    code, _, err = cli(["train", "--data", "digits", "--engine", "numpy", "--freeze", "features.*", "--out",
                        tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "--freeze", "--engine torch")
    code, _, err = cli(["train", "--data", "digits", "--lr-decay-per-stage", "1.5"], capsys)
    assert code == 2 and "in (0, 1]" in err
    with pytest.raises(ValueError, match="cannot be combined with --freeze, --input-size, --lr-decay-per-stage"):
        TrainConfig(model="resnet18", pipeline_stages=2, freeze="layer2", input_size=[64, 64],
                    lr_decay_per_stage=0.5).validate()


def _tiny_config(out, **kw) -> TrainConfig:
    """A narrow resnet18 on digits (8x8 grey), resized to 16x16 in the model: seconds on a CPU."""
    cfg = dict(model="resnet18", data="digits", out=str(out), epochs=2, batch_size=128, lr=3e-3, seed=0,
               device="cpu", precision="32", progress=False, plots=False, schedule="cosine",
               model_kwargs={"widths": [4, 8, 8, 16]}, freeze="layer2", lr_decay_per_stage=0.5, input_size=[16, 16])
    cfg.update(kw)
    return TrainConfig(**cfg)


def test_the_schedule_scales_every_group_alike(tmp_path):
    trainer = Trainer(_tiny_config(tmp_path / "run", epochs=1))
    trainer._setup()
    names = {id(p): n for n, p in trainer.model.named_parameters()}

    def rates():  # parameter -> its group's rate
        return {names[id(p)]: g["lr"] for g in trainer.optimizers[0].param_groups for p in g["params"]}

    for lr in (trainer.schedule(0), 1e-3, 0.37):
        if lr != trainer.schedule(0):
            trainer.set_lr(lr)
        got = rates()
        assert set(got) == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
        for n, rate in got.items():  # layer3, layer4, fc: 0.25, 0.5, 1 (the stem to layer2 is frozen)
            assert math.isclose(rate, lr * 0.5 ** (5 - _STAGE_OF_TOP[_top(n)]), rel_tol=1e-12), n
        assert trainer.lr_now == lr  # steps.jsonl logs the classifier's rate


@pytest.mark.slow
def test_resume_is_exact_with_freeze_and_stage_rates(tmp_path, capsys):
    import convolab
    from convolab.train.checkpoint import checkpoint_name

    result = convolab.train(_tiny_config(tmp_path / "run"))
    whole = {k: v.clone() for k, v in result.model.state_dict().items()}
    params = dict(result.model.named_parameters())
    frozen = sum(p.numel() for n, p in params.items() if _top(n) in ("conv1", "bn1", "layer1", "layer2"))
    assert (result.summary["frozen_params"], result.summary["trainable_params"]) == \
        (frozen, sum(p.numel() for p in params.values()) - frozen)
    spe = result.summary["steps"] // 2
    code, _, err = cli(["train", "--resume", result.run_dir / "checkpoints" / checkpoint_name(spe), "--quiet"],
                       capsys)
    assert code == 0, err
    again = convolab.load_run(result.run_dir).model.state_dict()
    for k, v in whole.items():
        assert torch.equal(v, again[k]), k
