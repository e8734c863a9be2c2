"""Hyper-parameter sweeps on Optuna: every trial a run directory, any number of workers on one stored study.

Two levels:

- :func:`sweep` reads a search space written in a small grammar (``lr=loguniform(1e-4,1e-1)``,
  ``batch_size=choice(64,128,256)``, ``epochs=int(2,6)``, ``dropout=uniform(0,0.5)``; keys are ``TrainConfig``
  fields, dashes or underscores), checks every key and both ends of every range (every value of a choice) by
  building the ``TrainConfig`` before anything trains, and runs the study.
- :func:`run_study` is what it stands on, reusable by any search (the architecture search calls it with a
  ``suggest`` that builds a ``spec:`` model): ``suggest(trial)`` returns the trial's training options, as a dict of
  ``TrainConfig`` fields (``{"lr": 0.01, "model": "spec:..."}``) or as a list of ``convolab train`` flags (read by
  ``parse_flags``, default :func:`convolab.train.flags.config_from_flags`). The options go over ``common``.

The study. An Optuna study named NAME in ``storage`` (default ``sqlite:///OUT/study.db``); every worker that runs
the same study with the same storage joins it (``load_if_exists``), on one machine or many (PostgreSQL). The
study's ``user_attrs["convolab"]`` holds what defines it (the space or the search's own signature, the common
options that change the numbers, the metric); a worker that gives another definition is refused in one line.

Counting. ``trials`` is the study's total, not each worker's: the trials that count are those COMPLETE, PRUNED,
RUNNING or WAITING; a FAIL trial (killed worker, diverged run) does not. A worker stops when the study holds
``trials`` that count. Two workers can ask for a trial at the same moment; after asking, a trial runs only if fewer
than ``trials`` counting trials have a smaller number (Optuna numbers trials in the order the storage made them),
so the total is never exceeded; a trial turned away is told FAIL at once, with ``user_attrs["over_budget"]``, and
is not shown as a failure. Each trial runs in exactly one process: the one that asked for it. Once the study is
full, a worker waits for the other workers' running trials to end (``wait``), so that its result and sweep.json are
final, and takes the place of any that fails meanwhile.

A trial. ``OUT/trial-<number>`` is a normal run directory, trained in this process through
``convolab.runs.session.make_trainer`` with a callback that reports the validation ``metric`` after every epoch
(``trial.report``) and, when the pruner says so (``trial.should_prune()``, never after the last epoch), stops the
run cleanly: the run finishes with its test evaluation and summary.json, whose ``stop_reason`` says it was pruned,
and the trial is told PRUNED. The trial's value is the last epoch's validation ``metric`` (the validation split,
never the test split, chooses); its ``user_attrs`` hold ``run_dir``, the test figure (``test_accuracy`` ...),
``pruned_at_epoch`` and ``seconds``.

Killed workers. The storage runs Optuna's heartbeat (:mod:`convolab.experiments.storage`): while a trial trains,
its process records a heartbeat every ``heartbeat`` seconds; a worker about to ask for a trial first marks FAIL
every running trial whose heartbeat is older than ``grace`` seconds. A SIGKILLed worker's trial therefore ends
FAIL, never COMPLETE, stops counting, and the next worker (a new one if none is left) trains a new trial in its
place (the sampler proposes it afresh: the killed trial's parameters are not retried).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convolab.atomic import write_json
from convolab.runs.session import make_trainer
from convolab.train.callbacks import Callback
from convolab.train.config import MONITORS, RESUME_FREE, TrainConfig

__all__ = ["Dimension", "parse_space", "check_space", "run_study", "sweep", "SweepResult", "COUNTED", "METRICS",
           "SAMPLERS", "PRUNERS", "default_direction", "plot_history", "best_table"]

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
METRICS = MONITORS  # the validation figures of metrics.jsonl (val_accuracy, val_loss, val_mean_iou ...)
COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # the trial states that count towards the study's total
OWNED = ("out", "overwrite")  # options the sweep sets itself
MAX_FAILURES = 3  # diverged trials in a row after which a worker gives up

_GRAMMAR = ("KEY=uniform(LOW,HIGH), KEY=loguniform(LOW,HIGH), KEY=int(LOW,HIGH) or KEY=choice(V1,V2,...), "
            "e.g. lr=loguniform(1e-4,1e-1)")
_SPACE_RE = re.compile(r"^\s*(?:--)?([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*([A-Za-z_]+)\s*\((.*)\)\s*$", re.S)


# -- the space -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """One axis of a search space: ``key`` (a ``TrainConfig`` field), ``kind`` (uniform, loguniform, int,
    choice) and its arguments (low and high, or the choices)."""

    key: str
    kind: str
    args: tuple

    def suggest(self, trial) -> Any:
        """This dimension's value for an Optuna ``trial`` (the parameter is named after the key)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.args))
        if self.kind == "int":
            return trial.suggest_int(self.key, *self.args)
        return trial.suggest_float(self.key, *self.args, log=self.kind == "loguniform")

    def samples(self) -> list:
        """The values checked before anything runs: both ends of a range, every choice."""
        return list(self.args)

    def __str__(self) -> str:
        return f"{self.key}={self.kind}({','.join(_text(v) for v in self.args)})"


def _text(value: Any) -> str:
    """A value as the grammar writes it (and as a flag's parser reads it): 0.0001, 64, true, none, relu."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--space {spec!r}: {text.strip()!r} is not a number; write {_GRAMMAR}") from None
    if not math.isfinite(value):
        raise ValueError(f"--space {spec!r}: the bounds must be finite numbers, got {text.strip()}")
    return value


def _choice_value(text: str) -> Any:
    """A choice as written: an integer, a number, true/false, none, or text (quotes optional)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            break
        return value
    return text


def _parse_one(spec: str) -> Dimension:
    m = _SPACE_RE.match(spec)
    if not m:
        raise ValueError(f"--space {spec!r}: expected {_GRAMMAR}")
    key, kind, body = m.group(1).replace("-", "_"), m.group(2).lower(), m.group(3)
    parts = [p for p in body.split(",")]
    if kind == "choice":
        values = tuple(_choice_value(p) for p in parts if p.strip())
        if not values or len(values) != len(parts):
            raise ValueError(f"--space {spec!r}: choice needs one or more values separated by commas, e.g. "
                             "batch_size=choice(64,128,256)")
        if len(set(map(_text, values))) != len(values):
            raise ValueError(f"--space {spec!r}: a value appears twice in the choice")
        return Dimension(key, kind, values)
    if kind not in ("uniform", "loguniform", "int"):
        raise ValueError(f"--space {spec!r}: unknown distribution {m.group(2)!r}; write {_GRAMMAR}")
    if len(parts) != 2:
        raise ValueError(f"--space {spec!r}: {kind} takes two bounds, LOW and HIGH: {key}={kind}(LOW,HIGH)")
    if kind == "int":
        try:
            low, high = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"--space {spec!r}: int takes two integers, e.g. epochs=int(2,6)") from None
    else:
        low, high = (_number(p, spec) for p in parts)
    if not low < high:
        raise ValueError(f"--space {spec!r}: LOW must be smaller than HIGH; got {_text(low)} and {_text(high)}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"--space {spec!r}: loguniform needs 0 < LOW < HIGH; got LOW {_text(low)}")
    return Dimension(key, kind, (low, high))


def _sweepable() -> dict[str, dataclasses.Field]:
    """The ``TrainConfig`` fields a space may name: its command-line options, less the sweep's own and those that
    take a list."""
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", True)
            and f.name not in OWNED and "nargs" not in f.metadata}


def parse_space(specs: Sequence[str]) -> list[Dimension]:
    """``["lr=loguniform(1e-4,1e-1)", ...]`` -> dimensions; grammar errors and unknown keys are one line each.

    Raises:
        ValueError: a spec that does not follow the grammar (the message gives the right form), a key that is not
            a training option (naming the closest one), a key given twice, or an empty space.
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise ValueError(f"the search space is empty; give one or more --space {_GRAMMAR}")
    dims = [_parse_one(s) for s in specs]
    allowed = _sweepable()
    every = {f.name for f in dataclasses.fields(TrainConfig)}
    for d, spec in zip(dims, specs):
        if d.key in allowed:
            continue
        if d.key in OWNED:
            raise ValueError(f"--space {spec!r}: the sweep sets {d.key} itself (OUT/trial-N); drop it from the space")
        if d.key in every:
            raise ValueError(f"--space {spec!r}: {d.key} takes a list of values and cannot be swept; give it with the "
                             "common training flags instead")
        # a field named inside the key (lr_rate -> lr) first; else the closest spelling (weight_decy -> weight_decay)
        close = [p for p in d.key.split("_") if p in allowed] or difflib.get_close_matches(d.key, allowed, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f"--space {spec!r}: {d.key} is not a training option; {hint}keys are the options of "
                         "`convolab train`, e.g. lr, batch_size, weight_decay")
    seen: set[str] = set()
    for d in dims:
        if d.key in seen:
            raise ValueError(f"--space: {d.key} is given twice; give each key once")
        seen.add(d.key)
    return dims


def option_value(key: str, value: Any) -> Any:
    """``value`` as the ``TrainConfig`` field ``key`` takes it, read by the field's own command-line type (so
    ``epochs`` refuses 2.5 and ``lr`` refuses 0 as ``convolab train`` would).

    Raises:
        ValueError: a value the field does not take (one line).
    """
    f = _sweepable().get(key)
    if f is None:
        raise ValueError(f"{key} is not a training option that a sweep can set")
    meta = f.metadata
    if f.type in ("bool", "bool | None"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} is a switch: sweep it with {key}=choice(true,false); got {_text(value)}")
        return value
    if value is None:
        if f.default is None:
            return None
        raise ValueError(f"{key} cannot be none")
    if isinstance(value, bool):
        raise ValueError(f"{key} takes a value, not {_text(value)}")
    if "type" in meta:
        try:
            return meta["type"](_text(value))
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    if "choices" in meta and _text(value) not in meta["choices"]:
        raise ValueError(f"{key}: {_text(value)!r} is not one of {', '.join(map(str, meta['choices']))}")
    return _text(value)


def _config(base: TrainConfig, options: Mapping[str, Any], **fixed: Any) -> TrainConfig:
    values = {key: option_value(key.replace("-", "_"), v) for key, v in options.items()}
    return TrainConfig(**{**base.to_dict(), **values, **fixed})


def check_space(dims: Sequence[Dimension], base: TrainConfig) -> None:
    """Build and validate the ``TrainConfig`` of every dimension's samples over ``base`` (and of all dimensions at
    their first sample together) before anything runs.

    Raises:
        ValueError: naming the dimension and what training refuses.
    """
    for d in dims:
        for value in d.samples():
            try:
                _config(base, {d.key: value}).validate()
            except ValueError as e:
                raise ValueError(f"--space {d}: {d.key}={_text(value)} is refused: {e}") from None
    try:
        _config(base, {d.key: d.samples()[0] for d in dims}).validate()
    except ValueError as e:
        raise ValueError(f"--space: the first value of every dimension together is refused: {e}") from None


def default_direction(metric: str) -> str:
    """``minimize`` for a loss, ``maximize`` for the others."""
    return "minimize" if metric.endswith("loss") else "maximize"


# -- the trial's callback and heartbeat ---------------------------------------------------------------
class _ReportToTrial(Callback):
    """Reports the validation ``metric`` of every epoch to the Optuna trial and stops the run when it is pruned."""

    def __init__(self, trial, metric: str, pruner_name: str):
        self.trial, self.metric, self.pruner_name = trial, metric, pruner_name
        self.pruned_at: int | None = None
        self.last: float | None = None
        self.lost = False  # the trial was finished by someone else (failed as stale)

    def on_epoch_end(self, trainer, row: dict, val) -> None:
        value = row.get(self.metric)
        if value is None:
            raise ValueError(f"the sweep's metric {self.metric} is not in the run's metrics ({', '.join(row)}); "
                             "choose another --metric or keep a validation split (--val-fraction > 0)")
        if not math.isfinite(value):
            return  # a NaN says nothing to the pruner; the run's own --on-nan decides
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.trial.report(value, step=row["epoch"])
        except UpdateFinishedTrialError:  # failed meanwhile by another worker (heartbeats lost): stop, it won't count
            self.lost = True
            trainer.stop_reason = (f"trial {self.trial.number} was failed by another worker (no heartbeat for the "
                                   "grace period); it does not count")
            return
        self.last = value
        # Pruning after the last epoch would save nothing: a run that trained to the end is complete
        if trainer.stop_reason is None and row["epoch"] < trainer.config.epochs and self.trial.should_prune():
            self.pruned_at = row["epoch"]
            trainer.stop_reason = (f"pruned by the sweep's {self.pruner_name} after epoch {row['epoch']} "
                                   f"({self.metric} {value:.4g}; trial {self.trial.number})")


class _Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds in a thread, while the trial trains."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while not self.stop.wait(interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # a locked or briefly unreachable database: try again at the next beat
                log.debug("heartbeat of trial id %d not recorded: %s", self.trial_id, e)

    def __enter__(self) -> _Heartbeat:
        self.storage.record_heartbeat(self.trial_id)  # before training starts: the trial is watched from now
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


# -- the result ------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """A study's state when a worker finished: every trial (number, state, value, params, run dir, test figure),
    the best complete one, and the counts by state."""

    name: str
    storage: str  # the URL, password hidden
    out: str | None
    metric: str
    direction: str
    trials: int  # the study's total asked for
    rows: list[dict] = field(default_factory=list)  # one per trial, in number order
    ran_here: list[int] = field(default_factory=list)  # trials this worker trained

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            if not r.get("over_budget"):
                out[r["state"]] = out.get(r["state"], 0) + 1
        return out

    @property
    def complete(self) -> list[dict]:
        return [r for r in self.rows if r["state"] == "COMPLETE" and r["value"] is not None]

    def ranked(self) -> list[dict]:
        """The complete trials, best first (ties: the earlier trial)."""
        sign = -1 if self.direction == "maximize" else 1
        return sorted(self.complete, key=lambda r: (sign * r["value"], r["number"]))

    @property
    def best(self) -> dict | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def to_dict(self) -> dict:
        return {"name": self.name, "storage": self.storage, "out": self.out, "metric": self.metric,
                "value_is": f"the last epoch's {self.metric} (validation split; the test figure is kept apart)",
                "direction": self.direction, "trials_asked": self.trials, "counts": self.counts,
                "best": self.best, "trials": self.rows, "ran_here": self.ran_here}


def _row(t, metric: str) -> dict:
    a = t.user_attrs
    test_key = metric.replace("val_", "test_", 1)
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
            "run_dir": a.get("run_dir"), test_key: a.get(test_key), "pruned_at_epoch": a.get("pruned_at_epoch"),
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "seconds": a.get("seconds"), "error": a.get("error"), "over_budget": bool(a.get("over_budget"))}


def best_table(result: SweepResult, top: int = 5) -> str:
    """The ``top`` best complete trials as a text table (trial, value, test figure, parameters, run dir)."""
    test_key = result.metric.replace("val_", "test_", 1)
    rows = result.ranked()[:top]
    head = ["trial", result.metric, test_key, "params", "run dir"]
    body = [[str(r["number"]), f"{r['value']:.4f}", "-" if r.get(test_key) is None else f"{r[test_key]:.4f}",
             " ".join(f"{k}={_short(v)}" for k, v in r["params"].items()), str(r["run_dir"])] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else _text(v)


def plot_history(result: SweepResult, path: str | Path) -> Path:
    """``metric`` per trial (complete: dots; pruned: crosses at their last reported value) and the best so far."""
    from convolab.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    done = [r for r in result.rows if r["state"] == "COMPLETE" and r["value"] is not None]
    pruned = [r for r in result.rows if r["state"] == "PRUNED" and r["intermediate"]]
    if done:
        ax.plot([r["number"] for r in done], [r["value"] for r in done], "o", color="#1f77b4", label="complete")
        best, xs, ys = None, [], []
        pick = max if result.direction == "maximize" else min
        for r in done:
            best = r["value"] if best is None else pick(best, r["value"])
            xs.append(r["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="#2ca02c", label="best so far")
    if pruned:
        ax.plot([r["number"] for r in pruned], [list(r["intermediate"].values())[-1] for r in pruned], "x",
                color="#d62728", markersize=8, label="pruned (last reported)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{result.metric} (validation, last epoch)")
    ax.set_title(f"sweep {result.name}: {result.counts.get('COMPLETE', 0)} complete, "
                 f"{result.counts.get('PRUNED', 0)} pruned, {result.counts.get('FAIL', 0)} failed")
    if done or pruned:
        ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


# -- the study ----------------------------------------------------------------------------------------
def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _check_out(out: Path, name: str) -> None:
    """OUT may be new, empty, or this study's folder; never a file or another sweep's or a user's folder."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: is a file; give a folder for the sweep")
    record = out / "sweep.json"
    if record.is_file():
        try:
            other = json.loads(record.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            other = None
        if other != name:
            raise FileExistsError(f"--out {out}: holds the trials of sweep {other!r}, not {name!r}; give another "
                                  "folder (the trials are named trial-N after the study's numbers)")
    elif out.is_dir() and any(p.name != "study.db" for p in out.iterdir()):
        raise FileExistsError(f"--out {out}: exists and is not a sweep folder (no sweep.json); give a new or empty "
                              "folder")


def _study_result(study, name: str, shown: str, out: Path | None, metric: str, direction: str, trials: int,
                  ran_here: list[int]) -> SweepResult:
    rows = [_row(t, metric) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]
    return SweepResult(name=name, storage=shown, out=str(out) if out is not None else None, metric=metric,
                       direction=direction, trials=trials, rows=rows, ran_here=list(ran_here))


def _write_outputs(result: SweepResult, out: Path) -> None:
    write_json(out / "sweep.json", result.to_dict())
    plot_history(result, out / "plots" / "history.png")


def _make_pruner(pruner: Any):
    import optuna

    if pruner is None or pruner == "none":
        return optuna.pruners.NopPruner(), "no pruner"
    if pruner == "median":
        # the median of the earlier trials at the same epoch, once 5 trials have reported (Optuna's defaults)
        return optuna.pruners.MedianPruner(), "median pruner"
    if isinstance(pruner, str):
        raise ValueError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")
    return pruner, type(pruner).__name__


def _make_sampler(sampler: Any, seed: int | None):
    import optuna

    if sampler is None or sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if isinstance(sampler, str):
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return sampler


def _base_config(common: TrainConfig | Mapping[str, Any] | Sequence[str],
                 parse_flags: Callable[[Sequence[str]], TrainConfig] | None) -> tuple[TrainConfig, list[str]]:
    """The common options as a ``TrainConfig``, and the common flags (for a ``suggest`` that returns flags)."""
    if isinstance(common, TrainConfig):
        return common, []
    if isinstance(common, Mapping):
        return TrainConfig(**common), []
    flags = list(common)
    if not flags:
        return TrainConfig(), []
    if parse_flags is None:
        from convolab.train.flags import config_from_flags as parse_flags
    return parse_flags(flags), flags


def run_study(name: str, suggest: Callable[[Any], Mapping[str, Any] | Sequence[str]], trials: int, *,
              storage: str | None = None, out: str | Path | None = None,
              common: TrainConfig | Mapping[str, Any] | Sequence[str] = (), metric: str = "val_accuracy",
              direction: str | None = None, pruner: Any = "median", sampler: Any = "tpe",
              sampler_seed: int | None = None, signature: Mapping[str, Any] | None = None,
              parse_flags: Callable[[Sequence[str]], TrainConfig] | None = None, heartbeat: int = 30,
              grace: int | None = None, wait: bool = True) -> SweepResult:
    """Join (or create) the Optuna study ``name`` and train trials until it holds ``trials`` that count.

    Args:
        name: the study's name in the storage.
        suggest: ``suggest(trial) -> options`` of the trial: a dict of ``TrainConfig`` fields, or a list of
            ``convolab train`` flags when ``parse_flags`` is given; they go over ``common``. It must draw its
            values from ``trial.suggest_*`` so that the sampler learns.
        trials: the study's total of trials that count (COMPLETE, PRUNED, RUNNING, WAITING), over all workers.
        storage: a database URL (default ``sqlite:///OUT/study.db``).
        out: the sweep's folder: ``trial-N`` run directories, ``sweep.json``, ``plots/history.png`` (default
            ``runs/sweep-NAME``).
        common: the options every trial shares: a ``TrainConfig``, a dict of its fields, or flags (``parse_flags``).
        metric: the validation figure reported each epoch and whose last value is the trial's value.
        direction: ``maximize`` or ``minimize`` (default: minimize a loss, maximize the others).
        pruner: ``"median"`` (Optuna's ``MedianPruner``), ``"none"``, or an Optuna pruner.
        sampler: ``"tpe"``, ``"random"``, or an Optuna sampler; ``sampler_seed`` seeds a named one.
        signature: what defines the study besides the common options and the metric (a sweep's space, a search's
            space): stored in the study; a worker that brings another one is refused.
        parse_flags: reads ``convolab train`` flags into a ``TrainConfig`` (default
            :func:`convolab.train.flags.config_from_flags`).
        heartbeat, grace: seconds between heartbeats of a running trial, and after which a silent one is failed.
        wait: once the study is full, wait for the other workers' running trials to end before returning (so the
            result is final), and replace any that fails meanwhile (a killed worker's); False: return at once.

    Returns:
        The study as this worker left it (:class:`SweepResult`); ``OUT/sweep.json`` holds the same.

    Raises:
        ValueError: bad arguments, an unreachable storage, or a study stored with another definition (one line).
    """
    import optuna
    from optuna.trial import TrialState

    from convolab.experiments.storage import default_url, open_storage, shown_url

    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"--trials must be a positive integer; got {trials!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ValueError(f"study name {name!r}: use letters, digits, '_', '.' and '-' (it names the folder too)")
    if metric not in METRICS:
        close = difflib.get_close_matches(metric, METRICS, n=1)
        raise ValueError(f"--metric {metric!r} is not a validation figure; choose one of {', '.join(METRICS)}"
                         + (f" (did you mean {close[0]}?)" if close else ""))
    direction = direction or default_direction(metric)
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"--direction must be maximize or minimize; got {direction!r}")
    base, common_flags = _base_config(common, parse_flags)
    if base.val_fraction <= 0:
        raise ValueError(f"the sweep chooses on the validation split; --val-fraction {base.val_fraction:g} leaves "
                         "none (use e.g. 0.1)")
    base.validate()
    out_dir = Path(out) if out is not None else Path("runs") / f"sweep-{name}"
    _check_out(out_dir, name)
    pruner_obj, pruner_name = _make_pruner(pruner)
    sampler_obj = _make_sampler(sampler, sampler_seed)
    url = storage or default_url(out_dir)
    shown = shown_url(url)
    store = open_storage(url, heartbeat=heartbeat, grace=grace)
    try:
        study = optuna.create_study(study_name=name, storage=store, load_if_exists=True, direction=direction,
                                    sampler=sampler_obj, pruner=pruner_obj)
    except Exception as e:  # a server that went away between the two calls, a locked SQLite file ...
        raise ValueError(f"cannot open study {name!r} in {shown} ({str(e).splitlines()[0] if str(e) else e})") \
            from None
    if len(study.directions) != 1 or study.direction.name.lower() != direction:
        raise ValueError(f"study {name!r} in {shown} was created to {study.directions[0].name.lower()} its value; "
                         f"this worker asks to {direction}: give the same --direction or another study name")
    definition = _normalised({"signature": dict(signature or {}), "metric": metric,
                              "common": {k: v for k, v in base.to_dict().items()
                                         if k not in RESUME_FREE and k not in OWNED}})
    stored = study.user_attrs.get("convolab")
    if stored is None:
        study.set_user_attr("convolab", definition)
        stored = study.user_attrs.get("convolab")  # (two workers starting together: the one stored wins)
    if stored != definition:
        raise ValueError(f"study {name!r} in {shown} was started with another definition "
                         f"({_difference(stored, definition)}); run every worker with the same space, metric and "
                         "common flags, or give another study name")
    out_dir.mkdir(parents=True, exist_ok=True)
    ran_here: list[int] = []
    if not (out_dir / "sweep.json").exists():  # claims the folder for this study at once (the plot comes at the end)
        write_json(out_dir / "sweep.json",
                   _study_result(study, name, shown, out_dir, metric, direction, trials, ran_here).to_dict())
    failures, waited_for = 0, None
    while True:
        with warnings.catch_warnings():  # "experimental" (since 2.9), "meant for Study.optimize": we do its part
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            optuna.storages.fail_stale_trials(study)  # killed workers' trials -> FAIL (their grace has passed)
            existing = study.get_trials(deepcopy=False)
            if sum(t.state.name in COUNTED for t in existing) >= trials:
                running = sorted(t.number for t in existing if t.state.name == "RUNNING")
                if not running or not wait:
                    break
                if running != waited_for:  # other workers' trials: wait for them to end (or to fail, then replace)
                    log.info("the study is full; waiting for running trial%s %s", "s" * (len(running) > 1),
                             ", ".join(map(str, running)))
                    waited_for = running
                time.sleep(min(float(heartbeat), 2.0))
                continue
            trial = study.ask()
        ahead = sum(t.state.name in COUNTED for t in study.get_trials(deepcopy=False) if t.number < trial.number)
        if ahead >= trials:  # another worker asked at the same moment and the study is full
            trial.set_user_attr("over_budget", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        state, error = _train_trial(study, store, trial, suggest, base, common_flags, parse_flags, out_dir,
                                    metric, pruner_name)
        ran_here.append(trial.number)
        failures = failures + 1 if state == TrialState.FAIL else 0
        if failures >= MAX_FAILURES:
            raise ValueError(f"{failures} trials in a row failed in this worker (the last, trial {trial.number}: "
                             f"{error}); narrow the space (a lower --lr range?)")
    result = _study_result(study, name, shown, out_dir, metric, direction, trials, ran_here)
    _write_outputs(result, out_dir)
    return result


def _difference(stored: Any, given: dict) -> str:
    if not isinstance(stored, dict):
        return "not a convolab sweep"
    for part in ("signature", "metric", "common"):
        a, b = stored.get(part), given.get(part)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            shown = "; ".join(f"{k}: stored {a.get(k)!r}, given {b.get(k)!r}" for k in keys[:3])
            return f"{part} differs: {shown}"
        return f"{part}: stored {a!r}, given {b!r}"
    return "unknown difference"


def _train_trial(study, store, trial, suggest, base: TrainConfig, common_flags: list[str], parse_flags,
                 out_dir: Path, metric: str, pruner_name: str):
    """Train one trial in this process; tell Optuna how it ended; returns its state and error (or None)."""
    from optuna.trial import TrialState

    run_dir = out_dir / f"trial-{trial.number}"
    start = time.perf_counter()
    with _Heartbeat(store, trial._trial_id):  # (Optuna's Trial has no public id; the storage wants it)
        try:
            options = suggest(trial)
            if isinstance(options, Mapping):
                config = _config(base, options, out=str(run_dir), overwrite=False)
            else:
                if parse_flags is None:
                    from convolab.train.flags import config_from_flags as parse_flags
                if not common_flags and base != TrainConfig():
                    raise ValueError("suggest returned flags: give the common options as flags too (they are read "
                                     "together), or return a dict of TrainConfig fields")
                config = parse_flags([*common_flags, *options, "--out", str(run_dir)])
            trial.set_user_attr("run_dir", str(run_dir))
            reporter = _ReportToTrial(trial, metric, pruner_name)
            result = make_trainer(config, callbacks=[reporter]).fit()
        except FloatingPointError as e:  # diverged: a result of these parameters, not a fault of the worker
            trial.set_user_attr("error", str(e).splitlines()[0])
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, str(e).splitlines()[0])
            return TrialState.FAIL, str(e).splitlines()[0]
        except BaseException as e:  # a user error, a bug, Ctrl-C: the trial fails and the worker stops
            try:
                trial.set_user_attr("error", (str(e).splitlines() or [type(e).__name__])[0])
                study.tell(trial, state=TrialState.FAIL)
            except Exception:  # the storage itself went away: the heartbeat's grace will fail the trial
                pass
            raise
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        return _tell_result(study, trial, result, reporter, metric, round(time.perf_counter() - start, 2), run_dir)
    except UpdateFinishedTrialError:
        reporter.lost = True
    log.warning("trial %d was failed by another worker while it trained here (its heartbeat lapsed for the grace "
                "period: a locked or slow database?); %s is kept but does not count", trial.number, run_dir)
    return TrialState.FAIL, "failed by another worker (heartbeat lapsed)"


def _tell_result(study, trial, result, reporter: _ReportToTrial, metric: str, seconds: float, run_dir: Path):
    """Record a trained trial's figures and tell Optuna its state (COMPLETE, PRUNED, FAIL)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    if reporter.lost:
        raise UpdateFinishedTrialError("finished by another worker")
    test_key = metric.replace("val_", "test_", 1)
    trial.set_user_attr("seconds", seconds)
    trial.set_user_attr(test_key, result.summary.get(test_key))
    value = reporter.last
    if reporter.pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", reporter.pruned_at)
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d pruned after epoch %d: %s %.4f (%.1fs, %s)", trial.number, reporter.pruned_at, metric,
                 value, seconds, run_dir)
        return TrialState.PRUNED, None
    if value is None:  # every epoch's figure was NaN
        trial.set_user_attr("error", f"no finite {metric} in any epoch")
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL, f"no finite {metric} in any epoch"
    study.tell(trial, value)
    params = "".join(f"{k}={_short(v)} " for k, v in trial.params.items())
    log.info("trial %d: %s %.4f, %s %s (%s%.1fs, %s)", trial.number, metric, value, test_key,
             _short(result.summary.get(test_key)), params, seconds, run_dir)
    return TrialState.COMPLETE, None


def sweep(name: str, space: Sequence[str] | Sequence[Dimension], trials: int, *, storage: str | None = None,
          out: str | Path | None = None, common: TrainConfig | Mapping[str, Any] | Sequence[str] = (),
          metric: str = "val_accuracy", direction: str | None = None, pruner: Any = "median",
          sampler: Any = "tpe", sampler_seed: int | None = None,
          parse_flags: Callable[[Sequence[str]], TrainConfig] | None = None, heartbeat: int = 30,
          grace: int | None = None, wait: bool = True) -> SweepResult:
    """Sweep the hyper-parameters of ``space`` (``["lr=loguniform(1e-4,1e-1)", "batch_size=choice(64,128)"]``)
    over ``trials`` trials of study ``name``; every key and sample value is checked before anything runs.

    Example:
        >>> result = sweep("lr", ["lr=loguniform(1e-4,1e-1)"], 20, common={"data": "digits", "epochs": 2})
        >>> result.best["params"], result.best["run_dir"]

    See :func:`run_study` for the other arguments, how trials are counted and what a worker does.
    """
    dims = [d if isinstance(d, Dimension) else None for d in space]
    dims = parse_space([str(d) for d in space]) if None in dims or not dims else list(dims)  # type: ignore[arg-type]
    base, _ = _base_config(common, parse_flags)
    check_space(dims, base)

    def suggest(trial) -> dict:
        return {d.key: d.suggest(trial) for d in dims}

    return run_study(name, suggest, trials, storage=storage, out=out, common=base, metric=metric,
                     direction=direction, pruner=pruner, sampler=sampler, sampler_seed=sampler_seed,
                     signature={"space": sorted(str(d) for d in dims)}, heartbeat=heartbeat, grace=grace,
                     wait=wait)
