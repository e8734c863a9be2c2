"""Training: the loop (:mod:`~convolab.train.loop`), its tasks, engines, step rules and callbacks.

``convolab.train(...)`` / ``convolab.resume(...)`` (in :mod:`convolab.runs.session`) run a config end to end
into a run folder.
"""

from convolab.train.config import OPTIMIZERS, TrainConfig
from convolab.train.loop import Trainer, TrainResult
from convolab.train.metrics import EvalResult, confusion_matrix, evaluate
from convolab.train.optim import create_optimizer

__all__ = ["TrainConfig", "Trainer", "TrainResult", "OPTIMIZERS", "evaluate", "EvalResult", "confusion_matrix",
           "create_optimizer"]

