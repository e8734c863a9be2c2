"""Tasks: what differs between problems, behind one interface (see ``convolab.train.tasks.base``).

Adding a task is one module with a :class:`Task` subclass and one ``register_task`` line here.
"""

from __future__ import annotations

from convolab.train.tasks.base import EvalResult, Task
from convolab.train.tasks.classification import Classification
from convolab.train.tasks.clips import ClipClassification
from convolab.train.tasks.segmentation import Segmentation

__all__ = ["Task", "EvalResult", "TASKS", "register_task", "task_for_model", "Classification", "Segmentation",
           "ClipClassification"]

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Make ``cls`` the task of the models whose registry ``input_kind`` is ``cls.input_kind``."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    TASKS[cls.name] = cls
    return cls


for _cls in (Classification, Segmentation, ClipClassification):
    register_task(_cls)


def task_for_model(input_kind: str) -> type[Task]:
    """The task that trains models of registry ``input_kind`` ("image", "segmentation", "clip")."""
    for cls in TASKS.values():
        if cls.input_kind == input_kind:
            return cls
    raise ValueError(f"no task trains models of input kind {input_kind!r}; the tasks are {', '.join(TASKS)}")
