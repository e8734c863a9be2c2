"""Search strategies over a space with ``sample(rng)`` and ``mutate(genotype, rng)``: random search (the
baseline Li & Talwalkar 2019 found hard to beat) and regularized, or aging, evolution (Real et al. 2019).

Both take the same arguments and return a :class:`SearchResult`: every evaluation in order (the history), the
best, and the Pareto front. ``evaluate(genotype)`` is the caller's (it trains, or computes a synthetic figure)
and returns a number (higher is better) or a dict of figures, e.g. ``{"accuracy": 0.91, "macs": 2.1e6}``;
``budget`` is the exact number of calls to it. A seed fixes everything.

Aging evolution (Real et al. 2019, algorithm 1): ``population_size`` random genotypes are evaluated first; then
each cycle draws ``sample_size`` members of the population at random, mutates the best of them (one gene),
evaluates the child, adds it to the population and removes the *oldest* member -- not the worst: every
architecture lives a fixed number of cycles, so one lucky evaluation cannot stay forever.

Multi-objective: ``objectives={"accuracy": "max", "macs": "min"}`` reads those keys of ``evaluate``'s dict.
The front is the evaluations no other evaluation dominates (at least as good in every objective, better in
one); the tournament of evolution then picks the child's parent among the sample's non-dominated members
(at random among them). :func:`pareto_front` is written here by hand (a pairwise check; an O(n log n) sweep
for two objectives) and tested against a brute-force front.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Evaluation", "SearchResult", "random_search", "aging_evolution", "search", "pareto_front",
           "dominates"]

SCORE = "score"  # the objective's name when ``evaluate`` returns a plain number


@dataclass
class Evaluation:
    """One call of ``evaluate``: the ``index``-th (0-based), its genotype, figures, and its place in the search."""

    index: int
    genotype: object
    figures: dict  # what evaluate returned ({"score": x} for a plain number)
    parent: int | None = None  # the index of the evaluation it was mutated from (None: sampled at random)
    removed: int | None = None  # aging evolution: the index of the member that died when this one joined

    def to_dict(self) -> dict:
        g = self.genotype.to_dict() if hasattr(self.genotype, "to_dict") else self.genotype
        return {"index": self.index, "genotype": g, "figures": self.figures, "parent": self.parent,
                "removed": self.removed}


@dataclass
class SearchResult:
    """What a search returns: ``history`` (every evaluation, in order), ``best`` (by the first objective) and
    ``front`` (the Pareto front over all objectives, in history order; the best alone for one objective)."""

    strategy: str
    objectives: dict[str, str]
    history: list[Evaluation] = field(default_factory=list)

    @property
    def best(self) -> Evaluation:
        name, sense = next(iter(self.objectives.items()))
        pick = max if sense == "max" else min
        return pick(self.history, key=lambda e: e.figures[name])  # (the first of equals)

    @property
    def front(self) -> list[Evaluation]:
        points = [[e.figures[k] for k in self.objectives] for e in self.history]
        return [self.history[i] for i in pareto_front(points, list(self.objectives.values()))]

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "objectives": self.objectives, "best": self.best.index,
                "front": [e.index for e in self.front], "history": [e.to_dict() for e in self.history]}


# -- Pareto ----------------------------------------------------------------------------------------------------------
def _signed(point, senses) -> list[float]:
    """The point with every objective turned into one to maximise."""
    return [float(v) if s == "max" else -float(v) for v, s in zip(point, senses)]


def dominates(a, b, senses) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and better in one (``senses``: "max"/"min")."""
    a, b = _signed(a, senses), _signed(b, senses)
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(points, senses) -> list[int]:
    """The indices (ascending) of the points no other point dominates. Two objectives: sort by the first (best
    first, ties by the second) and sweep, keeping a point when its second objective beats every one before it
    (equal points are all kept); more: the pairwise check."""
    signed = [_signed(p, senses) for p in points]
    if len(senses) != 2:
        return [i for i, p in enumerate(signed) if not any(dominates(q, p, ["max"] * len(p)) for q in signed)]
    order = sorted(range(len(signed)), key=lambda i: (-signed[i][0], -signed[i][1]))
    keep, best2, last = [], float("-inf"), None
    for i in order:
        a, b = signed[i]
        if b > best2 or (last is not None and (a, b) == last):  # a copy of a kept point is not dominated either
            keep.append(i)
            if b > best2:
                best2, last = b, (a, b)
    return sorted(keep)


# -- the strategies --------------------------------------------------------------------------------------------------
def _objectives(objectives: Mapping[str, str] | None) -> dict[str, str]:
    if objectives is None:
        return {SCORE: "max"}
    objectives = dict(objectives)
    if not objectives or any(s not in ("max", "min") for s in objectives.values()):
        raise ValueError(f"objectives must map figure names to 'max' or 'min', e.g. {{'accuracy': 'max', "
                         f"'macs': 'min'}}; got {objectives!r}")
    return objectives


def _check_budget(budget) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget (the number of evaluations) must be a positive integer; got {budget!r}")


class _Evaluator:
    """Calls ``evaluate``, checks what it returns, records the history."""

    def __init__(self, evaluate: Callable, objectives: dict[str, str], result: SearchResult):
        self.evaluate, self.objectives, self.result = evaluate, objectives, result

    def __call__(self, genotype, parent: int | None = None) -> Evaluation:
        value = self.evaluate(genotype)
        if isinstance(value, Mapping):
            figures = dict(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            figures = {SCORE: float(value)}
        else:
            raise ValueError(f"evaluate must return a number or a dict of figures; got {type(value).__name__}")
        missing = [k for k in self.objectives if k not in figures]
        if missing:
            raise ValueError(f"evaluate returned {sorted(figures)}, without the objective(s) {', '.join(missing)}")
        e = Evaluation(len(self.result.history), genotype, figures, parent)
        self.result.history.append(e)
        return e


def random_search(space, evaluate: Callable, budget: int, seed: int = 0, *,
                  objectives: Mapping[str, str] | None = None) -> SearchResult:
    """``budget`` genotypes sampled independently from ``space`` and evaluated (see the module docstring)."""
    _check_budget(budget)
    objectives = _objectives(objectives)
    rng = random.Random(seed)
    result = SearchResult("random", objectives)
    run = _Evaluator(evaluate, objectives, result)
    for _ in range(budget):
        run(space.sample(rng))
    return result


def _tournament_winner(sample: list[Evaluation], objectives: dict[str, str], rng: random.Random) -> Evaluation:
    if len(objectives) == 1:
        (name, sense), = objectives.items()
        pick = max if sense == "max" else min
        return pick(sample, key=lambda e: e.figures[name])
    points = [[e.figures[k] for k in objectives] for e in sample]
    return sample[rng.choice(pareto_front(points, list(objectives.values())))]


def aging_evolution(space, evaluate: Callable, budget: int, seed: int = 0, *, population_size: int = 20,
                    sample_size: int = 5, objectives: Mapping[str, str] | None = None) -> SearchResult:
    """Regularized evolution (Real et al. 2019; see the module docstring). The first ``population_size``
    evaluations are random samples (fewer when the budget is smaller); ``sample_size`` <= ``population_size``."""
    _check_budget(budget)
    objectives = _objectives(objectives)
    if not isinstance(population_size, int) or population_size < 1:
        raise ValueError(f"population_size must be a positive integer; got {population_size!r}")
    if not isinstance(sample_size, int) or not 1 <= sample_size <= population_size:
        raise ValueError(f"sample_size must be 1 to population_size ({population_size}); got {sample_size!r}")
    rng = random.Random(seed)
    result = SearchResult("evolution", objectives)
    run = _Evaluator(evaluate, objectives, result)
    population: deque[Evaluation] = deque()
    while len(result.history) < min(budget, population_size):
        population.append(run(space.sample(rng)))
    while len(result.history) < budget:
        parent = _tournament_winner(rng.sample(list(population), sample_size), objectives, rng)
        child = run(space.mutate(parent.genotype, rng), parent=parent.index)
        population.append(child)
        child.removed = population.popleft().index  # the oldest dies, whatever its fitness
    return result


STRATEGIES = {"random": random_search, "evolution": aging_evolution}


def search(space, evaluate: Callable, budget: int, seed: int = 0, *, strategy: str = "evolution",
           objectives: Mapping[str, str] | None = None, **options) -> SearchResult:
    """Run ``strategy`` ("random" or "evolution"; ``options``: its own, e.g. ``population_size``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](space, evaluate, budget, seed, objectives=objectives, **options)
