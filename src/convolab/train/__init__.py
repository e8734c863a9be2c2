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


def __getattr__(name: str):
    # PENDING (issue 16): callers move to convolab.runs.session; until then the old names resolve here, lazily
    # (an import of the higher layer at module level would be a cycle).
    if name in ("train", "resume"):
        from convolab.runs import session

        return getattr(session, name)
    raise AttributeError(f"module 'convolab.train' has no attribute {name!r}")
