"""Training: ``train(TrainConfig(...))`` writes a complete run directory."""

from convolab.train.config import OPTIMIZERS, TrainConfig
from convolab.train.entry import resume, train
from convolab.train.metrics import EvalResult, confusion_matrix, evaluate
from convolab.train.optim import create_optimizer
from convolab.train.trainer import Trainer, TrainResult

__all__ = ["train", "resume", "TrainConfig", "Trainer", "TrainResult", "OPTIMIZERS", "evaluate", "EvalResult",
           "confusion_matrix", "create_optimizer"]
