"""TrainConfig's options, defined once in its field metadata: the parser of train and lr-find is generated from it,
each flag reaches its field, the defaults (and so config.json) are what they were, bad values are one line."""

from __future__ import annotations

import importlib
from dataclasses import fields

import pytest
from tests.cli.test_cli import assert_one_line_error, cli

from convolab.cli import build_parser, main, train_config
from convolab.train.config import TrainConfig
from convolab.train.flags import flag_of, opposite_flag, option_fields, recipe_settings
from convolab.train.options import GROUPS, integer, number

TRAIN = importlib.import_module("convolab.runs.session")  # train() and resume()

# TrainConfig().to_dict() written out by hand (as it was before the options moved into the metadata, with frames=None
# since 65a2d7c, epochs=None -- the data sets it -- since the step budget): config.json must not change with the
# metadata
DEFAULTS = dict(
    model="tutorial_cnn", data="fashion-mnist", data_dir=None, out=None, overwrite=False, recipe=None, epochs=None,
    batch_size=128,
    eval_batch_size=1000, lr=3e-3, optimizer="adam", momentum=0.9, nesterov=False, weight_decay=0.0, l1=0.0,
    decay_norm_and_bias=False, clip_grad_norm=None, accum_steps=1, label_smoothing=0.1, loss="cross_entropy",
    schedule="onecycle",
    warmup_epochs=0.0, warmup_steps=0, min_lr=None, gamma=0.1, decay_epochs=None, milestones=None, pct_start=0.3,
    cycle_epochs=None, restart_epochs=None, restart_mult=1, augment="none", crop_pad=None, hflip=None, rotate=None,
    cutout=None, mixup=0.0, cutmix=0.0, jitter=0.0, precision="auto", grad_checkpointing=False, ema=None, tta=False,
    compile=False, cuda_graphs=False, tensorboard=False, checkpoints=True, checkpoint_every=0, deterministic=False,
    on_nan="stop", nan_patience=3, early_stopping=None, monitor="val_accuracy", min_delta=0.0,
    stop_at_loss=None, stop_at_accuracy=None, seed=0,
    device="auto", engine="torch", val_fraction=0.1, train_size=None, image_size=None, download=True,
    channels_last=True,
    max_memory=None, frames=None, dice_weight=0.0, ignore_index=255, pipeline_stages=1, model_kwargs={},
    act=None, init="default", init_from=None, freeze=None, lr_decay_per_stage=1.0, input_size=None, progress=True,
    plots=True)

# one non-default value per option: (argv, field, value the config must hold), values worked out by hand
FLAG_CASES = [
    (["--model", "lenet5"], "model", "lenet5"),
    (["--data", "digits"], "data", "digits"),
    (["--data-dir", "/d"], "data_dir", "/d"),
    (["--out", "runs/x"], "out", "runs/x"),
    (["--overwrite"], "overwrite", True),
    (["--recipe", "tutorial"], "recipe", "tutorial"),
    (["--epochs", "3"], "epochs", 3),
    (["--batch-size", "64"], "batch_size", 64),
    (["--eval-batch-size", "10"], "eval_batch_size", 10),
    (["--lr", "1e-2"], "lr", 0.01),
    (["--optimizer", "sgd"], "optimizer", "sgd"),
    (["--momentum", "0.5"], "momentum", 0.5),
    (["--nesterov"], "nesterov", True),
    (["--weight-decay", "5e-4"], "weight_decay", 5e-4),
    (["--l1", "1e-5"], "l1", 1e-5),
    (["--decay-norm-and-bias"], "decay_norm_and_bias", True),
    (["--clip-grad-norm", "2"], "clip_grad_norm", 2.0),
    (["--accum-steps", "4"], "accum_steps", 4),
    (["--label-smoothing", "0"], "label_smoothing", 0.0),
    (["--loss", "hinge"], "loss", "hinge"),
    (["--schedule", "cosine"], "schedule", "cosine"),
    (["--warmup-epochs", "0.5"], "warmup_epochs", 0.5),
    (["--warmup-steps", "7"], "warmup_steps", 7),
    (["--min-lr", "1e-5"], "min_lr", 1e-5),
    (["--gamma", "0.5"], "gamma", 0.5),
    (["--decay-epochs", "2"], "decay_epochs", 2.0),
    (["--milestones", "1", "2.5"], "milestones", [1.0, 2.5]),
    (["--pct-start", "0.25"], "pct_start", 0.25),
    (["--cycle-epochs", "2"], "cycle_epochs", 2.0),
    (["--restart-epochs", "1.5"], "restart_epochs", 1.5),
    (["--restart-mult", "2"], "restart_mult", 2),
    (["--augment", "light"], "augment", "light"),
    (["--crop-pad", "0"], "crop_pad", 0),
    (["--no-hflip"], "hflip", False),
    (["--hflip"], "hflip", True),
    (["--rotate", "180"], "rotate", 180.0),
    (["--cutout", "0.25"], "cutout", 0.25),
    (["--mixup", "0.2"], "mixup", 0.2),
    (["--cutmix", "1"], "cutmix", 1.0),
    (["--jitter", "0.4"], "jitter", 0.4),
    (["--precision", "bf16"], "precision", "bf16"),
    (["--grad-checkpointing"], "grad_checkpointing", True),
    (["--ema", "0.999"], "ema", 0.999),
    (["--tta"], "tta", True),
    (["--compile"], "compile", True),
    (["--cuda-graphs"], "cuda_graphs", True),
    (["--tensorboard"], "tensorboard", True),
    (["--no-checkpoints"], "checkpoints", False),
    (["--checkpoint-every", "100"], "checkpoint_every", 100),
    (["--deterministic"], "deterministic", True),
    (["--on-nan", "skip"], "on_nan", "skip"),
    (["--nan-patience", "9"], "nan_patience", 9),
    (["--early-stopping", "3"], "early_stopping", 3),
    (["--monitor", "val_loss"], "monitor", "val_loss"),
    (["--min-delta", "0.01"], "min_delta", 0.01),
    (["--stop-at-loss", "0.05"], "stop_at_loss", 0.05),
    (["--stop-at-accuracy", "0.9"], "stop_at_accuracy", 0.9),
    (["--seed", "-3"], "seed", -3),
    (["--device", "cpu"], "device", "cpu"),
    (["--engine", "numpy"], "engine", "numpy"),
    (["--val-fraction", "0"], "val_fraction", 0.0),
    (["--train-size", "500"], "train_size", 500),
    (["--image-size", "64x48"], "image_size", [64, 48]),
    (["--model-arg", "base_channels=16", "widths=[8,16]", "act=gelu"], "model_kwargs",
     {"base_channels": 16, "widths": [8, 16], "act": "gelu"}),
    (["--no-download"], "download", False),
    (["--max-memory", "2GiB"], "max_memory", 2 * 1024**3),
    (["--max-memory", "500MB"], "max_memory", 500 * 1024**2),
    (["--max-memory", "123456"], "max_memory", 123456),
    (["--frames", "8"], "frames", 8),
    (["--dice-weight", "0.5"], "dice_weight", 0.5),
    (["--ignore-index", "0"], "ignore_index", 0),
    (["--pipeline-stages", "2"], "pipeline_stages", 2),
    (["--act", "gelu"], "act", "gelu"),
    (["--init", "xavier"], "init", "xavier"),
    (["--init-from", "w.safetensors"], "init_from", "w.safetensors"),
    (["--freeze", "layer2"], "freeze", "layer2"),
    (["--lr-decay-per-stage", "0.5"], "lr_decay_per_stage", 0.5),
    (["--input-size", "224"], "input_size", [224, 224]),
    (["--quiet"], "progress", False),
    (["--no-plots"], "plots", False),
]


def test_defaults_and_config_json_are_unchanged():
    assert TrainConfig().to_dict() == DEFAULTS
    assert list(TrainConfig().to_dict()) == list(DEFAULTS)  # config.json's key order too
    assert train_config([]) == TrainConfig()  # the parser's defaults are the config's


def test_every_field_documents_its_option():
    for f in fields(TrainConfig):
        assert f.metadata.get("help") and f.metadata.get("group") in GROUPS, f.name
    flags = [flag_of(f) for f in option_fields()]
    assert len(flags) == len(set(flags))
    assert {f.name for f in fields(TrainConfig)} - {f.name for f in option_fields()} == {"channels_last"}


@pytest.mark.parametrize("argv,name,value", FLAG_CASES, ids=[" ".join(argv) for argv, _, _ in FLAG_CASES])
def test_each_flag_reaches_its_field(argv, name, value):
    config = train_config(argv)
    assert getattr(config, name) == value and type(getattr(config, name)) is type(value)
    expected = dict(DEFAULTS)
    if name == "recipe":  # a recipe also sets the fields its flags name (tests/train/test_recipes.py)
        expected.update(recipe_settings(value))
    assert {k: v for k, v in config.to_dict().items() if k != name} == {k: v for k, v in expected.items() if k != name}


def test_every_option_has_a_case():
    assert {name for _, name, _ in FLAG_CASES} == {f.name for f in option_fields()}
    train = build_parser().verbs["train"]
    flags = {s for a in train._actions for s in a.option_strings} - {"-h", "--help", "--json", "--resume"}
    switches = {opposite_flag(flag_of(f)) for f in option_fields() if f.type == "bool"}  # --plots, --no-tta ...
    assert flags == {flag_of(f) for f in option_fields()} | {"--no-hflip"} | switches


@pytest.mark.parametrize("argv,name,value", [
    (["--plots"], "plots", True), (["--no-plots", "--plots"], "plots", True),
    (["--plots", "--no-plots"], "plots", False),
    (["--no-tta"], "tta", False), (["--tta", "--no-tta"], "tta", False), (["--no-tta", "--tta"], "tta", True),
    (["--recipe", "speedrun-cpu", "--plots", "--checkpoints"], "plots", True),
    (["--recipe", "speedrun-cpu", "--checkpoints"], "checkpoints", True),
    (["--recipe", "speedrun-cpu"], "checkpoints", False),
    (["--recipe", "speedrun-gpu", "--no-tta", "--no-nesterov", "--no-cuda-graphs", "--device", "cpu",
      "--precision", "32"], "tta", False),
])
def test_a_switch_opposite_sets_the_default_back(argv, name, value):
    """Every on/off option has its opposite, so that a recipe's setting (or an earlier flag) can be undone; the last
    one typed wins."""
    config = train_config(argv)
    assert getattr(config, name) is value
    if "--no-cuda-graphs" in argv:  # a GPU recipe's switches all undone (here on a CPU, not validated)
        assert (config.nesterov, config.cuda_graphs, config.tta) == (False, False, False)


@pytest.mark.parametrize("args,needles", [
    (["--max-memory", "lots"], ["--max-memory", "expected a size such as 2GiB"]),
    (["--max-memory", "0"], ["--max-memory", "must be a size > 0"]),
    (["--frames", "0"], ["--frames", "must be from 1 to 1024, got 0"]),
    (["--frames", "1025"], ["--frames", "must be from 1 to 1024, got 1025"]),
    (["--ignore-index", "256"], ["--ignore-index", "must be from 0 to 255"]),
    (["--dice-weight", "-1"], ["--dice-weight", "must be >= 0"]),
    (["--pipeline-stages", "0"], ["--pipeline-stages", "must be a positive integer, got 0"]),
    (["--seed", "x"], ["--seed", "expected an integer, got 'x'"]),
    (["--epochs", "two"], ["--epochs", "expected a positive integer, got 'two'"]),
    (["--hflip", "yes"], ["unrecognized arguments: yes"]),
    (["--l1=-1e-4"], ["--l1", "must be >= 0, got -1e-4"]),
    (["--jitter", "1.5"], ["--jitter", "must be in [0, 1], got 1.5"]),
    (["--stop-at-loss=-0.1"], ["--stop-at-loss", "must be >= 0"]),
    (["--stop-at-accuracy", "0"], ["--stop-at-accuracy", "must be in (0, 1], got 0"]),
    (["--stop-at-accuracy", "95"], ["--stop-at-accuracy", "must be in (0, 1], got 95"]),
])
def test_bad_values_are_one_line(args, needles, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["train", "--data", "digits", "--out", out, *args], capsys)
    assert_one_line_error(code, err, "convolab train", *needles)
    assert not out.exists()


@pytest.mark.parametrize("field,value,needle", [
    ("max_memory", 0, "--max-memory must be > 0"), ("frames", 0, "--frames must be from 1 to 1024"),
    ("ignore_index", -1, "--ignore-index must be a mask value"), ("dice_weight", -0.5, "--dice-weight must be >= 0"),
    ("pipeline_stages", 0, "--pipeline-stages must be >= 1"), ("l1", -1.0, "--l1 must be >= 0"),
    ("loss", "l2", "unknown --loss 'l2'"), ("jitter", 2.0, r"--jitter must be in \[0, 1\]"),
    ("stop_at_loss", -1.0, "--stop-at-loss must be >= 0"), ("stop_at_accuracy", 1.5, "--stop-at-accuracy must be in")])
def test_validate_refuses_what_the_python_api_is_given(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**{field: value}).validate()


def test_text_types_say_what_they_expect():
    assert integer(1)("5") == 5 and integer()("-5") == -5 and integer(0, 255)("255") == 255
    for parse, text, message in [(integer(1), "0", "must be a positive integer, got 0"),
                                 (integer(0), "-1", "must be >= 0, got -1"),
                                 (integer(0), "1.5", "expected an integer >= 0, got '1.5'"),
                                 (integer(None, 9), "10", "must be <= 9, got 10"),
                                 (number(lambda v: v > 0, "> 0"), "nan", "must be a finite number > 0, got nan"),
                                 (number(lambda v: v > 0, "> 0"), "0", "must be > 0, got 0")]:
        with pytest.raises(ValueError, match=message):
            parse(text)


def test_lr_find_shares_the_data_model_optimizer_and_augmentation_options(monkeypatch):
    session = importlib.import_module("convolab.runs.session")
    seen = []

    def fake_lr_find(config, **kwargs):
        seen.append((config, kwargs))
        raise KeyboardInterrupt  # stop before any data loads

    monkeypatch.setattr(session, "lr_find", fake_lr_find)
    code = main(["lr-find", "--data", "digits", "--start-lr", "1e-6", "--optimizer", "sgd", "--momentum", "0.5",
                 "--augment", "light", "--max-memory", "1G", "--quiet", "--json"])
    assert code == 130
    config, kwargs = seen[0]
    assert config == TrainConfig(data="digits", lr=1e-6, optimizer="sgd", momentum=0.5, augment="light",
                                 max_memory=1024**3, progress=False, checkpoints=False)
    assert kwargs == dict(start_lr=1e-6, end_lr=10.0, num_steps=100, beta=0.9, diverge=4.0, keep=False,
                          ramp="exponential")
    lr_find = build_parser().verbs["lr-find"]
    flags = {s for a in lr_find._actions for s in a.option_strings}
    for absent in ("--epochs", "--lr", "--schedule", "--no-plots", "--resume", "--ema", "--engine"):
        assert absent not in flags


@pytest.mark.parametrize("argv,overrides", [
    (["--device", "cpu", "--quiet"], dict(device="cpu", progress=False)),
    (["--lr", "0.003", "--no-plots"], dict(lr=0.003, plots=False)),  # given, though equal to the default
    (["--max-memory", "1M", "--no-download"], dict(max_memory=1024**2, download=False)),
    ([], {}),
])
def test_resume_passes_on_only_the_options_given(argv, overrides, monkeypatch, tmp_path):
    seen = []

    def fake_resume(path, **kwargs):
        seen.append((path, kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(TRAIN, "resume", fake_resume)
    assert main(["train", "--resume", str(tmp_path), *argv]) == 130
    assert seen == [(str(tmp_path), overrides)]


def test_help_lists_the_verbs_and_the_groups(capsys):
    from convolab.cli import VERBS

    code, out, _ = cli(["--help"], capsys)
    assert code == 0
    for verb in VERBS:
        assert " ".join(verb.HELP.split()[:4]) in " ".join(out.split())
    code, out, _ = cli(["train", "--help"], capsys)
    assert code == 0
    for title, description in GROUPS.values():
        assert f"\n{title}:\n" in out and (description is None or description in out)
    section = out.split("\ncheckpoints, resuming")[1].split("\nsegmentation and clips:")[0]
    assert "\n  --resume RUN" in section and "\n  --checkpoint-every N" in section
    assert "(default: True)" not in out  # --no-download, --quiet ... are switches, not values


@pytest.mark.parametrize("argv,name,value", FLAG_CASES, ids=[" ".join(argv) for argv, _, _ in FLAG_CASES])
def test_the_library_reads_flags_as_the_command_line(argv, name, value):
    """convolab.train.flags.read_flags (what the experiments use, without the CLI) gives the same TrainConfig as
    `convolab train`'s own parser, and the same set of options given."""
    from convolab.cli._common import explicit_options
    from convolab.train.flags import config_from_flags, read_flags

    config, given = read_flags(argv)
    assert config == train_config(argv) == config_from_flags(argv)
    assert given == explicit_options(["train", *argv]) - {"func"} == {name}  # (func: the verb's handler)


def test_the_library_refuses_what_train_refuses_in_one_line():
    from convolab.train.flags import read_flags

    for argv, expected in ((["--lr", "0"], "argument --lr: "), (["--epochs", "x"], "argument --epochs: "),
                           (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
                           (["--resume"], "unrecognized arguments: --resume"),  # the verb's, not a setting
                           (["--help"], "--help is not a training flag")):
        with pytest.raises(ValueError) as e:
            read_flags(argv)
        text = str(e.value)
        assert expected in text and text.endswith("(flags of `convolab train`; see `convolab train --help`)"), text
        assert "\n" not in text
