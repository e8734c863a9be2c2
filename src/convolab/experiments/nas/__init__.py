"""Architecture search: a macro space (:mod:`.space`), random search and aging evolution (:mod:`.evolution`), and
DARTS on a cell space (:mod:`.darts`)."""

from convolab.experiments.nas.darts import DartsResult, SuperNet, darts_search, train_network
from convolab.experiments.nas.evaluate import training_evaluator
from convolab.experiments.nas.evolution import (
    Evaluation,
    SearchResult,
    aging_evolution,
    pareto_front,
    random_search,
    search,
)
from convolab.experiments.nas.space import Genotype, MacroSpace, Stage, macs
from convolab.models.darts import CellGenotype, DartsNetwork

__all__ = ["Genotype", "MacroSpace", "Stage", "macs", "Evaluation", "SearchResult", "aging_evolution",
           "random_search", "search", "pareto_front", "CellGenotype", "DartsNetwork", "SuperNet", "DartsResult",
           "darts_search", "train_network", "training_evaluator"]
