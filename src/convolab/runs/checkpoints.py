"""Checkpoints as part of a run folder: finding the one ``--resume PATH`` means, and checking that it fits the run
(its weights and optimizer state against the model the run's config.json describes). What a checkpoint holds and
how it is written and read is :mod:`convolab.train.checkpoint`."""

from __future__ import annotations

from pathlib import Path

import torch

from convolab.runs.layout import CONFIG
from convolab.runs.schema import CONFIG_SCHEMA, probe_model, read_json
from convolab.train.checkpoint import CHECKPOINTS, load_checkpoint, step_checkpoints

__all__ = ["find_checkpoint", "check_fits_run"]


def find_checkpoint(path: str | Path) -> tuple[Path, Path, dict]:
    """``--resume PATH``: a run directory (its newest step checkpoint) or one checkpoint file inside it.

    Returns (run directory, checkpoint file, its state). A damaged newest checkpoint is not
    skipped silently: the error names the newest readable one (or ``best.pt`` when every step
    checkpoint is damaged) and how to resume from it.

    Raises:
        FileNotFoundError: no run directory or no checkpoint in it.
        NotADirectoryError: the folder is not a convolab run directory (no config.json).
        ValueError: the checkpoint is unreadable.
    """
    from convolab.runs.layout import CONFIG, MARKER, has_convolab_config, read_marker

    path = Path(path).expanduser()
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
        state = load_checkpoint(path)
        check_fits_run(run_dir, path, state)
        return run_dir, path, state
    if not path.is_dir():
        if path.suffix == ".pt" or path.parent.name == CHECKPOINTS:
            raise FileNotFoundError(f"--resume {path}: no such checkpoint file")
        raise FileNotFoundError(f"--resume {path}: no such run directory")
    if read_marker(path) is None and not has_convolab_config(path):  # any folder may hold a config.json
        raise NotADirectoryError(f"--resume: {path} is not a convolab run directory (no {MARKER} marker and no "
                                 f"{CONFIG} written by convolab); expected the --out folder of a convolab train run")
    candidates = step_checkpoints(path)
    best = path / CHECKPOINTS / "best.pt"
    if not candidates:
        hint = (f"; {best} is there: resume from it with --resume {best}" if best.is_file() else
                " (was it trained with --no-checkpoints, or stopped before its first epoch ended?)")
        raise FileNotFoundError(f"--resume {path}: no step checkpoints in {path / CHECKPOINTS}{hint}")
    newest = candidates[-1]
    try:
        state = load_checkpoint(newest)
    except ValueError as e:
        for older in reversed(candidates[:-1]):
            try:
                load_checkpoint(older)
            except ValueError:
                continue
            raise ValueError(f"{e}; the previous checkpoint {older} is intact: resume from it with "
                             f"--resume {older}") from None
        if best.is_file():
            try:
                epoch = load_checkpoint(best)["best"]["epoch"]
            except ValueError:
                pass
            else:
                raise ValueError(f"{e}; every step checkpoint in {path / CHECKPOINTS} is damaged, but {best} (the "
                                 f"best epoch, {epoch}) is intact: resume from it with --resume {best}") from None
        raise ValueError(f"{e}; no older readable checkpoint in {path / CHECKPOINTS}") from None
    check_fits_run(path, newest, state)
    return path, newest, state


def check_fits_run(run_dir: Path, path: Path, state: dict) -> None:
    """The checkpoint's weights (and EMA weights) have the names and shapes of the model the run's config.json
    describes, built on the meta device (nothing allocated); no config.json: nothing to compare with.

    Raises:
        ValueError: a tensor missing, unexpected or of another shape (one line naming it).
    """

    if not (run_dir / CONFIG).is_file():
        return
    config = read_json(run_dir / CONFIG, CONFIG_SCHEMA)
    augment = config.get("augment")  # the resolved AugmentSpec: active when any setting is
    if isinstance(augment, dict) and any(augment.values()) and state["augment"] is None:
        raise ValueError(f"{path}: field 'augment' is null in a run that augments ({run_dir / CONFIG}: "
                         f"{', '.join(k for k, v in augment.items() if v)}); expected the augmentation's generators")
    build, given = config.get("build"), config.get("given") or []
    if isinstance(build, dict) and build.get("kind", "registry") != "registry":
        return  # a model the caller built: nothing here rebuilds it to compare with
    name, kwargs = config.get("model"), config.get("model_kwargs")
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        return
    probe = probe_model(name, kwargs, str(run_dir / CONFIG))
    if probe is None:
        return
    own = {k: list(v.shape) for k, v in probe.state_dict().items()}
    for field_name, weights in (("model", state["model"]), ("ema.module", (state["ema"] or {}).get("module"))):
        if weights is None:
            continue
        for k, shape in own.items():
            if k not in weights:
                raise ValueError(f"{path}: field '{field_name}' has no {k}, which {name} (as {run_dir / CONFIG} "
                                 "describes it) has; expected the weights of this run's model")
            if list(weights[k].shape) != shape:
                raise ValueError(f"{path}: field '{field_name}.{k}' has shape {list(weights[k].shape)}, {name} (as "
                                 f"{run_dir / CONFIG} describes it) {shape}; expected the weights of this run's model")
        extra = [k for k in weights if k not in own]
        if extra:
            raise ValueError(f"{path}: field '{field_name}' has tensors {name} does not have ({', '.join(extra[:3])}); "
                             "expected the weights of this run's model")
    if "optimizers" not in given:  # (optimizers the caller built are not the ones the config would build)
        _check_optimizer(probe, state, path)


def _check_optimizer(probe: torch.nn.Module, state: dict, path: Path) -> None:
    """Load the checkpoint's optimizer state into the run's optimizer over ``probe`` (meta tensors: nothing is
    allocated), so that a damaged one is one line here rather than a traceback in the trainer's restore or at its
    first step. (--engine numpy keeps its own optimizer's layout: not checked here.)"""
    from convolab.train.freeze import freeze
    from convolab.train.optim import create_optimizer

    cfg = state["config"]
    if cfg.get("engine", "torch") != "torch":
        return
    if cfg.get("freeze") is not None:  # frozen parameters are in no optimizer group
        freeze(probe, cfg["freeze"])
    optimizer = create_optimizer(probe, cfg.get("optimizer", "adam"), cfg.get("lr", 1e-3), cfg.get("momentum", 0.9),
                                 cfg.get("weight_decay", 0.0), nesterov=cfg.get("nesterov", False),
                                 decay_norm_and_bias=cfg.get("decay_norm_and_bias", False),
                                 lr_decay_per_stage=cfg.get("lr_decay_per_stage", 1.0))
    name = type(optimizer).__name__
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(f"{path}: field 'optimizer' is not the state of this run's {name} ({first})") from None
    params = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    for p, per_param in optimizer.state.items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                raise ValueError(f"{path}: field 'optimizer.state.{params[id(p)]}.{key}' has shape "
                                 f"{list(value.shape)} for a parameter of shape {list(p.shape)}; expected the "
                                 f"state of this run's {name}")
