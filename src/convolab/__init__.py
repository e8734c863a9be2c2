"""convolab: learn, build, train and inspect convolutional neural networks, on real data.

The public API::

    import convolab
    convolab.list_models()                       # registered architectures
    model = convolab.create_model("lenet5", num_classes=10, in_chans=1, input_size=28)
    data = convolab.load_dataset("fashion-mnist")  # uint8 splits in memory
    result = convolab.train(model="tutorial_cnn", data="fashion-mnist", epochs=5, out="runs/demo")
    convolab.resume("runs/demo")                 # continue an interrupted run from its newest checkpoint
    run = convolab.load_run("runs/demo")         # model + preprocessing + class names
    run.predict("shoe.png", top_k=3)
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "load_dataset", "train", "resume", "TrainConfig", "load_run", "Run",
           "__version__"]

# Each name of the API -> the module that defines it. They are imported on first use, so that `import
# convolab.glass` (the NumPy engine) loads no PyTorch and works where it is not installed.
_API = {"create_model": "convolab.models", "list_models": "convolab.models", "load_dataset": "convolab.data",
        "train": "convolab.runs.session", "resume": "convolab.runs.session", "TrainConfig": "convolab.train.config",
        "load_run": "convolab.runs.reader", "Run": "convolab.runs.reader"}


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'convolab' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(_API[name]), name)
    except ModuleNotFoundError as e:
        if e.name not in ("torch", "torchvision"):
            raise
        raise ModuleNotFoundError(f"convolab.{name} needs PyTorch ({e}); without it only convolab.glass, the "
                                  "NumPy engine, works") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """The package module, which keeps ``convolab.train`` the function: importing the subpackage
    ``convolab.train.loop`` makes Python bind the subpackage ``convolab.train`` as an attribute here, which would
    hide the function (``import convolab.train`` and ``from convolab.train import X`` still find the subpackage in
    ``sys.modules``)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
