"""compress.finetune: a given model trains on its run's data with the run's recipe, into a run that reloads."""

import copy

import pytest
import torch

import convolab
from convolab.compress.finetune import FINETUNE_LR_FACTOR, finetune, finetune_config


def test_finetune_config_keeps_the_recipe_and_lowers_the_rate(digits_run, tmp_path):
    run = convolab.load_run(digits_run.run_dir)
    cfg = finetune_config(run, tmp_path / "ft", epochs=2)
    assert (cfg.batch_size, cfg.optimizer, cfg.data, cfg.seed) == (64, "adam", "digits", 0)
    assert cfg.lr == pytest.approx(1e-3 * FINETUNE_LR_FACTOR)
    assert cfg.epochs == 2 and cfg.init_from is None
    assert finetune_config(run, tmp_path / "ft", epochs=1, lr=0.05, schedule="cosine").schedule == "cosine"


def test_finetuned_run_reloads_with_the_trained_weights(digits_run, tmp_path):
    run = convolab.load_run(digits_run.run_dir)
    model = copy.deepcopy(run.model)
    finetune(run, model, tmp_path / "ft", epochs=1, progress=False, plots=False, checkpoints=False)
    again = convolab.load_run(tmp_path / "ft")
    assert again.build["kind"] == "registry" and again.build["name"] == "tutorial_cnn"
    x = torch.randn(5, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(again.model(x), model.float()(x), atol=1e-6)
        assert not torch.allclose(again.model(x), run.model(x), atol=1e-4)  # it did train
    with pytest.raises(FileExistsError):
        finetune(run, copy.deepcopy(run.model), tmp_path / "ft", epochs=1, progress=False)


def test_compressed_runs_are_not_resumed(digits_run, tmp_path):
    import json
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(digits_run.run_dir, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "distill": {"teacher": "runs/t"}}))
    with pytest.raises(ValueError, match="a distillation .*cannot be resumed"):
        convolab.resume(run_dir)
    build = {"kind": "pruned", "base": {"name": "tutorial_cnn", "kwargs": {}}}
    (run_dir / "config.json").write_text(json.dumps({**config, "build": build}))
    with pytest.raises(ValueError, match="a pruned model's fine-tuning .*cannot be resumed"):
        convolab.resume(run_dir)


def test_finetune_config_overrides_a_reset_setting(digits_run, tmp_path):
    run = convolab.load_run(digits_run.run_dir)
    assert finetune_config(run, tmp_path / "ft", epochs=1, tensorboard=False, warmup_steps=3).warmup_steps == 3
