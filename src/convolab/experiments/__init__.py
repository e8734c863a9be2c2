"""Experiments: the tutorials' claims measured with statistics, sweeps, architecture search and loss landscapes.

- :mod:`convolab.experiments.compare`: variants x seeds, each a normal run, with a results table and Welch's test
  (:mod:`convolab.experiments.stats`: the formulas).
- :mod:`convolab.experiments.studies`: the built-in studies of the tutorials' claims and their verdicts
  (:mod:`convolab.experiments.equivariance`: translation equivariance measured layer by layer).
- :mod:`convolab.experiments.sweep`: hyper-parameter sweeps on an Optuna study (SQLite, or any database:
  :mod:`convolab.experiments.storage`).
- :mod:`convolab.experiments.search` and :mod:`convolab.experiments.nas`: architecture search spaces and
  strategies (random, aging evolution, DARTS).
- :mod:`convolab.experiments.landscape`: filter-normalised loss slices and the line between two runs.

Layering: may import train, runs, models, data and analysis, never the CLI (which passes train's flag parser in).
"""
