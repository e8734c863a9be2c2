"""Quantization-aware training (QAT) through torchao's PT2E flow, as a training mode of the ordinary loop.

The trained float32 model is exported with a dynamic batch (``torch.export``) and prepared with
``prepare_qat_pt2e`` and the x86 inductor quantizer in its QAT configuration: every quantized layer's weights and
input activations pass through fake quantizers (quantize then dequantize in float, with a straight-through
gradient; Jacob et al. 2018), so fine-tuning learns weights that survive rounding to int8. The prepared graph trains
in the loop like any model (float32 steps: no autocast, no channels-last, no ``torch.compile``), then is converted
(``convert_pt2e``) to the int8 graph that PTQ also produces (:mod:`convolab.compress.ptq`).

The run folder is an ``int8-pt2e`` run (:mod:`convolab.runs.quantized`, ``"qat": true``): ``load_run`` rebuilds the
int8 graph, and ``summary.json``'s ``test_accuracy`` is that int8 graph's; the fake-quantized model's own figure is
kept as ``fake_quant_test_accuracy``.

Observers record ranges only while training: evaluation (validation each epoch, the test at the end) runs with them
frozen, so the held-out images never move the int8 ranges.

Its honest control is :func:`qat_control`: the float32 model fine-tuned with the same recipe, rate, seed and steps.
"""

from __future__ import annotations

import copy
import os
import types

import torch
from torch import nn

from convolab.compress.finetune import finetune
from convolab.runs.reader import Run, load_run
from convolab.train.callbacks import Callback
from convolab.train.loop import TrainResult

__all__ = ["prepare_for_qat", "qat", "qat_control", "QAT_SETTINGS"]

# What QAT training pins (fake quantization is float32 arithmetic on an exported graph).
# (finetune already resets --engine, --cuda-graphs and --pipeline-stages)
QAT_SETTINGS = dict(precision="32", channels_last=False, compile=False, ema=None, tta=False, grad_checkpointing=False)


def _trains_and_evaluates(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give the exported graph ``train()``/``eval()`` (which torch.export's modules refuse): the graph's dropout and
    batch-norm ops switch mode (torchao's ``move_exported_model_to_train``/``_eval``), and the observers record
    ranges in training only."""
    from torchao.quantization.pt2e import (
        disable_observer,
        enable_observer,
        move_exported_model_to_eval,
        move_exported_model_to_train,
    )

    def train(self, mode: bool = True):
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self)
        self.apply(enable_observer if mode else disable_observer)
        self.training = mode
        return self

    prepared.train = types.MethodType(train, prepared)
    prepared.eval = types.MethodType(lambda self: self.train(False), prepared)
    return prepared


def prepare_for_qat(run: Run, keep_float: list[str] | None = None) -> tuple[torch.fx.GraphModule, list[str]]:
    """``run``'s model exported and prepared for QAT, in train mode, carrying ``convolab_cfg`` and the ``int8-pt2e``
    ``convolab_build`` (``"qat": true``) that its run folder records.

    Args:
        run: a trained run of a registry image classifier.
        keep_float: modules left float32 (default: PTQ's choice, :func:`convolab.compress.ptq.float_first_layers`).

    Returns:
        (the prepared graph, the modules kept float32).

    Raises:
        ValueError: a model the flow cannot export (one line naming the op or layer), or a run that is not of a
            registry model.
    """
    from convolab.compress.ptq import build_record, float_first_layers
    from convolab.models.rewrite import inference_rewrites
    from convolab.runs.quantized import prepare

    model = copy.deepcopy(run.model).float().cpu().eval()
    build = build_record(run, [], qat=True)  # (refuses a model that is not a registry model's)
    example = torch.zeros(2, *run.input_size)  # two: a batch of one would make batch norm refuse to train
    # The exact rewrites that keep one weight per weight (the space-to-depth stem copies its kernel 4 times, which
    # training would untie).
    build["rewrites"] = inference_rewrites(model, example, exclude=("space-to-depth-stem",))
    keep = float_first_layers(model) if keep_float is None else list(keep_float)
    try:
        prepared = prepare(model, example, keep, qat=True)
    except Exception as e:
        if isinstance(e, ValueError) and str(e).startswith(f"{type(model).__name__} cannot be exported"):
            raise  # (torch.export's refusal, already one line naming the op)
        raise ValueError(f"{type(model).__name__} cannot be prepared for quantization-aware training: "
                         f"{_failure(e)}") from None
    prepared.convolab_cfg = dict(run.model.convolab_cfg)
    prepared.convolab_build = {**build, "keep_float": keep}
    return _trains_and_evaluates(prepared).train(), keep


def _failure(e: BaseException) -> str:
    """One line on a failure inside torchao's QAT preparation: the step it failed in (its innermost ``_annotate_*``
    or ``_fuse_*`` frame: e.g. ``_annotate_qat_conv2d_bn_binary_unary``, annotating conv2d -> batch norm -> add ->
    ReLU, or ``_fuse_conv_bn_qat``, folding batch norm into the convolution) and its error."""
    import traceback

    frames = [f.name.removesuffix("_helper") for f in traceback.extract_tb(e.__traceback__)]
    step = next((n for n in reversed(frames) if n.startswith(("_annotate_", "_fuse_"))), None)
    first = next((line for line in str(e).splitlines() if line.strip()), "")
    where = f"torchao's QAT preparation failed in {step}" if step else "torchao's QAT preparation failed"
    return f"{where} ({type(e).__name__}: {first[:200]})"


class _Int8Stored(nn.Module):
    """The prepared graph as the loop evaluates and saves it: the same forward pass, and as its state dict what an
    ``int8-pt2e`` run stores (:func:`convolab.runs.quantized.stored_tensors`: int8 weights, each observer's scale
    and zero point) rather than the fake quantizers' float state (whose observers share tensors)."""

    def __init__(self, prepared: torch.fx.GraphModule):
        super().__init__()
        self.graph = prepared
        self.convolab_cfg = prepared.convolab_cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        from convolab.runs.quantized import stored_tensors

        return stored_tensors(self.graph)


class _StoreInt8(Callback):
    """Saves a QAT run as int8 (through :class:`_Int8Stored`) and makes the summary's test figures those of the
    int8 graph ``load_run`` rebuilds from the saved files (the fake-quantized model's stay, prefixed
    ``fake_quant_``)."""

    def eval_model(self, model: nn.Module) -> nn.Module:
        return _Int8Stored(model)

    def on_fit_end(self, trainer, summary: dict, test) -> None:
        from convolab.atomic import write_json
        from convolab.runs.layout import SUMMARY

        if not trainer.dist.is_main:
            return
        int8 = load_run(trainer.run.path).model  # the graph as every reader of the run gets it
        result = trainer.task.evaluate(int8, trainer.test_loader)
        summary.update(fake_quant_test_accuracy=summary["test_accuracy"], fake_quant_test_loss=summary["test_loss"],
                       test_accuracy=result.accuracy, test_loss=result.loss, quantized="int8 (QAT)")
        write_json(trainer.run.path / SUMMARY, summary)


def qat(run: Run | str | os.PathLike, out: str | os.PathLike, *, epochs: int, lr: float | None = None,
        seed: int | None = None, keep_float: list[str] | None = None, overwrite: bool = False,
        progress: bool = True, **overrides) -> TrainResult:
    """Quantization-aware fine-tuning of a trained run into the new int8 run ``out``.

    The run's recipe (data and split, optimizer, schedule, batch size, augmentation, loss:
    :func:`convolab.compress.finetune.finetune`) for ``epochs`` epochs at peak rate ``lr`` (default: a tenth of
    the run's), in float32 on the CPU graph (:data:`QAT_SETTINGS`); ``overrides`` change any other field.

    Returns:
        the new run; its ``summary["test_accuracy"]`` is the converted int8 graph's, its ``model`` the trained
        fake-quantized graph.

    Raises:
        ValueError: a model the flow cannot trace (the op or layer named), or a bad setting.
    """
    run = run if isinstance(run, Run) else load_run(run)
    prepared, _ = prepare_for_qat(run, keep_float)
    settings = {**QAT_SETTINGS, "checkpoints": False, **({"seed": seed} if seed is not None else {}), **overrides}
    # (no checkpoints by default: resuming rebuilds the model from the config, which a prepared graph is not)
    return finetune(run, prepared, out, epochs=epochs, lr=lr, overwrite=overwrite, progress=progress,
                    callbacks=[_StoreInt8()], **settings)


def qat_control(run: Run | str | os.PathLike, out: str | os.PathLike, *, epochs: int, lr: float | None = None,
                seed: int | None = None, overwrite: bool = False, progress: bool = True,
                **overrides) -> TrainResult:
    """The honest control of :func:`qat`: the float32 model fine-tuned with the same recipe, rate, seed, steps and
    settings (:data:`QAT_SETTINGS`), unquantized."""
    run = run if isinstance(run, Run) else load_run(run)
    model: nn.Module = copy.deepcopy(run.model).float().cpu().train()
    settings = {**QAT_SETTINGS, "checkpoints": False, **({"seed": seed} if seed is not None else {}), **overrides}
    return finetune(run, model, out, epochs=epochs, lr=lr, overwrite=overwrite, progress=progress, **settings)
