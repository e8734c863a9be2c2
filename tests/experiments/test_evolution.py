"""Random search and aging evolution on cheap synthetic objectives: the budget is exact, aging removes the oldest,
a seed fixes the search, evolution beats random search on a structured objective, and the Pareto front equals a
brute-force one."""

from __future__ import annotations

import random
import statistics

import pytest

from convolab.experiments.nas.evolution import aging_evolution, pareto_front, random_search, search
from convolab.experiments.nas.space import Genotype, MacroSpace

SPACE = MacroSpace((1, 32, 32), num_stages=4)
TARGET = SPACE.sample(random.Random(1234))


def _matches(g: Genotype) -> int:
    """How many genes equal the hidden target's (0 to 22): a structured objective mutation can climb."""
    n = int(g.bn == TARGET.bn) + int(g.head == TARGET.head)
    for a, b in zip(g.stages, TARGET.stages):
        n += sum(getattr(a, k) == getattr(b, k) for k in ("depth", "width", "kernel", "down", "act"))
    return n


class Counting:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, g):
        self.calls += 1
        return self.f(g)


@pytest.mark.parametrize("strategy", ["random", "evolution"])
@pytest.mark.parametrize("budget", [1, 7, 33])
def test_budget_is_respected_exactly(strategy, budget):
    f = Counting(_matches)
    result = search(SPACE, f, budget, seed=0, strategy=strategy, population_size=10, sample_size=3) \
        if strategy == "evolution" else search(SPACE, f, budget, seed=0, strategy=strategy)
    assert f.calls == budget == len(result.history)
    assert [e.index for e in result.history] == list(range(budget))


def test_aging_removes_the_oldest_not_the_worst():
    # fitness rises with the index for the first half, so the oldest are also the worst only by accident: make the
    # first evaluations the best ones -- they must still die first
    calls = []

    def f(g):
        calls.append(g)
        return 100.0 - len(calls)

    result = aging_evolution(SPACE, f, 40, seed=3, population_size=8, sample_size=3)
    assert [e.removed for e in result.history[8:]] == list(range(32))
    assert all(e.removed is None and e.parent is None for e in result.history[:8])
    # a parent is always alive: among the 8 most recent evaluations before its child
    for e in result.history[8:]:
        assert e.index - 8 <= e.parent < e.index


def test_child_is_a_one_gene_mutation_of_its_parent():
    result = aging_evolution(SPACE, _matches, 30, seed=0, population_size=5, sample_size=2)
    for e in result.history[5:]:
        p = result.history[e.parent].genotype
        diff = int(p.bn != e.genotype.bn) + int(p.head != e.genotype.head) + sum(
            getattr(a, k) != getattr(b, k) for a, b in zip(p.stages, e.genotype.stages)
            for k in ("depth", "width", "kernel", "down", "act"))
        assert diff == 1


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_a_seed_fixes_the_search(strategy):
    a = search(SPACE, _matches, 25, seed=7, strategy=strategy).to_dict()
    b = search(SPACE, _matches, 25, seed=7, strategy=strategy).to_dict()
    c = search(SPACE, _matches, 25, seed=8, strategy=strategy).to_dict()
    assert a == b and a != c


def test_evolution_beats_random_search_over_20_seeds():
    budget = 150
    evo = [aging_evolution(SPACE, _matches, budget, seed=s, population_size=20, sample_size=5).best.figures["score"]
           for s in range(20)]
    rnd = [random_search(SPACE, _matches, budget, seed=s).best.figures["score"] for s in range(20)]
    # measured: evolution 19.0 +- 1.3 of 22 genes, random 13.0 +- 1.0, evolution ahead on 20 of 20 seeds
    assert statistics.mean(evo) > statistics.mean(rnd) + 3, (evo, rnd)
    assert sum(e > r for e, r in zip(evo, rnd)) >= 18


def _brute_front(points, senses):
    def better(x, y, s):
        return x > y if s == "max" else x < y

    def geq(x, y, s):
        return x >= y if s == "max" else x <= y

    return [i for i, p in enumerate(points)
            if not any(all(geq(q[k], p[k], s) for k, s in enumerate(senses))
                       and any(better(q[k], p[k], s) for k, s in enumerate(senses)) for q in points)]


@pytest.mark.parametrize("senses", [("max", "min"), ("min", "min"), ("max", "max", "min")])
def test_pareto_front_equals_brute_force(senses):
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 40)
        points = [[rng.randint(0, 6) for _ in senses] for _ in range(n)]  # small ints: many ties and copies
        assert pareto_front(points, senses) == _brute_front(points, senses), points


def test_multi_objective_search_returns_the_front_of_its_history():
    def f(g):
        width = sum(s.width * s.depth for s in g.stages)
        return {"accuracy": _matches(g) / 22, "macs": width}

    objectives = {"accuracy": "max", "macs": "min"}
    for strategy in ("random", "evolution"):
        result = search(SPACE, f, 60, seed=1, strategy=strategy, objectives=objectives)
        points = [[e.figures["accuracy"], e.figures["macs"]] for e in result.history]
        assert [e.index for e in result.front] == _brute_front(points, ["max", "min"])
        assert len(result.front) >= 2
        assert result.best.figures["accuracy"] == max(p[0] for p in points)


def test_bad_arguments_are_refused_in_one_line():
    with pytest.raises(ValueError, match="budget"):
        random_search(SPACE, _matches, 0)
    with pytest.raises(ValueError, match="sample_size"):
        aging_evolution(SPACE, _matches, 10, population_size=4, sample_size=5)
    with pytest.raises(ValueError, match="strategy"):
        search(SPACE, _matches, 3, strategy="annealing")
    with pytest.raises(ValueError, match="objective"):
        random_search(SPACE, lambda g: {"accuracy": 1.0}, 3, objectives={"accuracy": "max", "macs": "min"})


@pytest.mark.slow
def test_training_evaluator_trains_each_candidate_as_a_run(digits_config, tmp_path):
    import convolab
    from convolab.experiments.nas.evaluate import training_evaluator

    space = MacroSpace((1, 8, 8), num_stages=2, widths=(4, 8), depths=(1,))
    evaluate = training_evaluator(digits_config(None, epochs=1, plots=False, precision="32"), tmp_path / "cands",
                                  (1, 8, 8), num_classes=10)
    result = aging_evolution(space, evaluate, 3, seed=0, population_size=2, sample_size=2,
                             objectives={"accuracy": "max", "macs": "min"})
    assert sorted(p.name for p in (tmp_path / "cands").iterdir()) == [f"candidate-000{i}" for i in range(3)]
    for e in result.history:
        run = convolab.load_run(e.figures["run_dir"])
        assert run.config["model"] == e.genotype.to_spec()  # the run rebuilds the candidate from its spec
        assert 0 < e.figures["accuracy"] <= 1 and e.figures["macs"] > 0
    with pytest.raises(ValueError, match="already holds"):
        training_evaluator(digits_config(None), tmp_path / "cands", (1, 8, 8), num_classes=10)
