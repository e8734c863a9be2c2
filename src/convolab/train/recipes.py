"""Recipes: named presets of ``convolab train`` flags (``--recipe NAME``).

A recipe fills in the settings the user left out; every flag given beside it wins. Each recipe is written as the
flags a user would type (``RECIPES[name].flags``, listed in the README), and the run's ``config.json`` records
both the recipe's name and every value it set. In Python: ``recipe_config("speedrun-cpu", seed=1)``
(``convolab.train.flags``).

The speed-run recipes were found by measurement (``benchmarks/speedrun.py``, ``benchmarks/time_to_accuracy.py``);
the README's Speed section gives what each of their parts was worth.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Recipe", "RECIPES", "check_recipe_device"]


@dataclass(frozen=True)
class Recipe:
    name: str
    flags: tuple[str, ...]
    about: str
    needs_cuda: bool = False


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("tutorial", ("--model", "tutorial_cnn", "--epochs", "5", "--batch-size", "64", "--lr", "1e-3",
                        "--optimizer", "adam", "--schedule", "constant", "--label-smoothing", "0",
                        "--val-fraction", "0"),
           "the PyTorch tutorials' recipe: tutorial_cnn, Adam 1e-3 constant, batch 64, 5 epochs, all training "
           "images, no validation split"),
    # tutorial_cnn's layout with its second convolution strided instead of pooled and wider (48 channels: 0.54 M
    # MACs an image against 1.22 M), 3 epochs of the one-cycle Adam recipe at batch 256 and a peak of 1e-2. A CPU
    # pays per step and per activation more than per multiply: fewer, larger steps and smaller maps win (README:
    # Speed, "A CPU speed run", has what each change was worth)
    Recipe("speedrun-cpu", ("--model", "spec:conv(16,3,p=same),relu,maxpool(2),conv(48,3,s=2,p=1),relu,flatten,"
                                       "fc(128),relu,fc",
                            "--epochs", "3", "--batch-size", "256", "--lr", "1e-2", "--val-fraction", "0",
                            "--no-checkpoints", "--no-plots"),
           "Fashion-MNIST to 0.91 test accuracy fastest on a small CPU: a strided tutorial_cnn, 3 epochs at batch "
           "256, all training images, no checkpoints or plots"),
    Recipe("speedrun-gpu", ("--model", "fastcnn", "--epochs", "15", "--batch-size", "512", "--optimizer", "sgd",
                            "--lr", "0.2", "--momentum", "0.9", "--nesterov", "--weight-decay", "5e-4",
                            "--schedule", "onecycle", "--pct-start", "0.25", "--label-smoothing", "0.1",
                            "--augment", "light", "--tta", "--val-fraction", "0", "--precision", "bf16",
                            "--cuda-graphs", "--no-checkpoints", "--no-plots"),
           "Fashion-MNIST to 0.94 fastest on one CUDA GPU: fastcnn, bf16, whole-step CUDA graphs", needs_cuda=True),
)}


def describe() -> str:
    """One line per recipe: its name and what it is for (``--recipe``'s help and its refusal)."""
    return "; ".join(f"{r.name} ({r.about})" for r in RECIPES.values())


def check_recipe_device(name: str | None, device: str) -> None:
    """A one-line ``ValueError`` for a recipe that needs a CUDA GPU on a run that would not have one."""
    recipe = RECIPES.get(name) if name else None
    if recipe is None or not recipe.needs_cuda:
        return
    if device == "cpu" or device == "mps" or (device == "auto" and not _cuda_available()):
        where = "--device cpu" if device == "cpu" else ("--device mps" if device == "mps" else "this machine has none")
        raise ValueError(f"--recipe {name} needs a CUDA GPU (bf16 and whole-step CUDA graphs); {where}: use --recipe "
                         f"speedrun-cpu on a CPU")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
