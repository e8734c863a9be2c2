"""Architecture search on the study store: random search and regularized (aging) evolution over the macro space,
every candidate a trial of an Optuna study (:func:`convolab.experiments.sweep.run_study`), so any number of workers
on any number of machines share one search.

The strategies are :mod:`convolab.experiments.nas.evolution`'s, written against the study instead of a loop, so
that workers need no coordinator:

- **random**: each trial samples a genotype of the space (seeded by the search seed and the trial number).
- **evolution** (Real et al. 2019): the population is the ``population`` most recent finished trials of the study
  (the oldest has died: aging, whatever its fitness); a trial draws ``sample`` of them, mutates the best one's
  genotype by one gene and trains the child. Until the study holds ``population`` finished trials, trials sample
  at random, as the paper's initial population.

A trial's value is its last epoch's validation metric (``val_accuracy``); its genotype, MACs (from
:mod:`convolab.analysis`) and parent are trial attributes, and its run directory trains the ``spec:`` network, so
``convolab train --model 'spec:...'`` retrains the found architecture from scratch. The Pareto front of accuracy
against MACs is computed from the finished trials (:func:`pareto`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convolab.experiments.nas.evolution import pareto_front
from convolab.experiments.nas.space import Genotype, MacroSpace, macs

__all__ = ["STRATEGIES", "SearchOutcome", "search_architectures", "pareto"]

STRATEGIES = ("random", "evolution")


def _finished(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "genotype" in t.user_attrs and t.value is not None]


def _propose(strategy: str, space: MacroSpace, study, number: int, seed: int, population: int, sample: int,
             maximize: bool) -> tuple[Genotype, int | None]:
    """The genotype trial ``number`` trains, and its parent's trial number (None: sampled)."""
    rng = random.Random(f"{seed}:{number}")
    done = sorted(_finished(study), key=lambda t: t.number)
    if strategy == "random" or len(done) < population:
        return space.sample(rng), None
    alive = done[-population:]  # aging: the most recent population; the older ones have died
    drawn = rng.sample(alive, min(sample, len(alive)))
    parent = (max if maximize else min)(drawn, key=lambda t: t.value)
    return space.mutate(Genotype.from_dict(parent.user_attrs["genotype"]), rng), parent.number


@dataclass
class SearchOutcome:
    """The study as this worker left it (``sweep``: trials, counts, best) and every finished candidate with its
    genotype, MACs and parent, best first (``candidates``)."""

    sweep: Any
    candidates: list[dict] = field(default_factory=list)

    @property
    def best(self) -> dict | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict:
        return {**self.sweep.to_dict(), "candidates": self.candidates, "pareto": pareto(self.candidates)}


def search_architectures(name: str, *, strategy: str = "evolution", trials: int = 20,
                         space: MacroSpace | None = None, population: int = 10, sample: int = 3, seed: int = 0,
                         storage: str | None = None, out: str | Path | None = None,
                         common: Any = (), metric: str = "val_accuracy", pruner: Any = "median",
                         parse_flags: Callable[[Sequence[str]], Any] | None = None, heartbeat: int = 30,
                         wait: bool = True):
    """Search ``space`` with ``strategy`` as the Optuna study ``name`` (see the module docstring).

    Args:
        strategy: ``random`` or ``evolution``.
        trials: the study's total of candidates (over every worker).
        space: the macro space (default ``MacroSpace()``: 3 stages for 1x28x28 images; give one for other data).
        population, sample: aging evolution's population and tournament sizes.
        seed: the search's seed (each trial's draws are seeded by it and the trial number).
        storage, out, common, metric, pruner, parse_flags, heartbeat, wait: as
            :func:`convolab.experiments.sweep.run_study`.

    Returns:
        :class:`SearchOutcome`: the study and its candidates.

    Raises:
        ValueError: an unknown strategy, bad sizes, a space with no valid architecture (one line naming the stage),
            or what ``run_study`` refuses.
    """
    from convolab.experiments.sweep import run_study

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; choose from {', '.join(STRATEGIES)} (darts runs "
                         "its own supernet: convolab search NAME --strategy darts)")
    if not isinstance(population, int) or population < 1:
        raise ValueError(f"--population must be a positive integer; got {population!r}")
    if not isinstance(sample, int) or not 1 <= sample <= population:
        raise ValueError(f"--sample must be 1 to --population ({population}); got {sample!r}")
    space = space or MacroSpace()
    maximize = not metric.endswith("loss")

    def suggest(trial) -> dict:
        genotype, parent = _propose(strategy, space, trial.study, trial.number, seed, population, sample, maximize)
        trial.set_user_attr("genotype", genotype.to_dict())
        trial.set_user_attr("macs", macs(genotype, space.input_shape))
        trial.set_user_attr("parent", parent)
        return {"model": genotype.to_spec()}

    signature = {"search": strategy, "space": asdict(space), "population": population, "sample": sample,
                 "seed": seed}
    out = Path(out or f"runs/search-{name}")
    result = run_study(name, suggest, trials, storage=storage, out=out, common=common, metric=metric,
                       pruner=pruner, sampler="random", sampler_seed=seed, signature=signature,
                       parse_flags=parse_flags, heartbeat=heartbeat, wait=wait)
    return SearchOutcome(result, _candidates(name, storage or _default_url(out), result, maximize))


def _default_url(out: Path) -> str:
    from convolab.experiments.storage import default_url

    return default_url(out)


def _candidates(name: str, url: str, result, maximize: bool) -> list[dict]:
    """Every finished trial of the search with its genotype, MACs, parent, spec and run dir, best first."""
    import optuna

    from convolab.experiments.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(url))
    test_key = result.metric.replace("val_", "test_", 1)
    rows = [{"number": t.number, "value": t.value, "test": t.user_attrs.get(test_key),
             "macs": t.user_attrs.get("macs"), "parent": t.user_attrs.get("parent"),
             "spec": Genotype.from_dict(t.user_attrs["genotype"]).to_spec(), "genotype": t.user_attrs["genotype"],
             "run_dir": t.user_attrs.get("run_dir")} for t in _finished(study)]
    return sorted(rows, key=lambda r: ((-r["value"]) if maximize else r["value"], r["number"]))


def pareto(rows: list[dict]) -> list[dict]:
    """The rows on the front of higher value against fewer MACs."""
    points = [[r["value"], r["macs"]] for r in rows]
    return [rows[i] for i in pareto_front(points, ["max", "min"])]
