"""Architecture search: a macro space (:mod:`.space`), random search and aging evolution (:mod:`.evolution`), and
DARTS on a cell space (:mod:`.darts`)."""

from convolab.experiments.nas.space import Genotype, MacroSpace, Stage, macs

__all__ = ["Genotype", "MacroSpace", "Stage", "macs"]
