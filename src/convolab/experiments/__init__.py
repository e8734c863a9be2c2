"""Experiments: the tutorials' claims measured with statistics, sweeps, architecture search and loss landscapes.

- :mod:`convolab.experiments.compare`: variants x seeds, each a normal run, with a results table and a test.
- :mod:`convolab.experiments.landscape`: filter-normalised loss slices and the line between two runs.
- :mod:`convolab.experiments.sweep`: hyper-parameter sweeps on an Optuna study (SQLite, or any database).
- :mod:`convolab.experiments.nas`: architecture search spaces and strategies (random, evolution, DARTS).

Layering: may import train, runs, models, data and analysis; the CLI imports it.
"""
