"""``--pipeline-stages N``: the training loop over a model cut into N stages, one per torchrun process.

:class:`convolab.train.pipeline.PipelineRunner` runs a batch's micro-batches through the stages; this module
plugs it into the loop (:class:`convolab.train.loop.Trainer`) so that a pipelined run trains, evaluates and saves
like an unsplit one:

- every process loads the same batches (the loaders see one process) and the model is not wrapped in DDP;
- :class:`PipelineStep`'s ``micro_batch`` calls ``runner.step(x, y)`` and broadcasts the last stage's outputs, so
  every process counts the same task figures and the epoch's sums need no all-reduce (they are identical);
- the optimizers step ``runner.stage_module``'s parameters (this process's stage only);
- evaluation runs through ``runner.eval_forward`` in every process, the last stage's outputs broadcast
  (:class:`PipelineEval`);
- before the model is saved, rank 0's model receives every stage's weights (``runner.full_state_dict``).

What it cannot do is refused up front (``TrainConfig.validate`` and :func:`check_pipeline`): accumulation, EMA,
CUDA graphs, ``torch.compile``, fp16, the NumPy engine, early stopping and checkpoints (a pipelined run keeps
none, so it cannot be resumed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import torch
import torch.distributed as dist
from torch import nn

from convolab.train.step import StandardStep

__all__ = ["PipelineStep", "PipelineEval", "check_pipeline", "build_runner", "broadcast_from"]

log = logging.getLogger(__name__)

_MAX_DIMS = 8  # outputs broadcast with their shape: (N, K) logits, (N, K, H, W) masks ...


def check_pipeline(trainer, resume_state: dict | None) -> None:
    """Refuse what a pipelined run cannot do, before any data loads; turn its checkpoints off (with a log line) and
    ``--precision auto`` into float32. Does nothing with ``--pipeline-stages 1``.

    Raises:
        ValueError: WORLD_SIZE is not the number of stages, a resume, or an explicit ``--precision bf16``.
    """
    cfg = trainer.config
    n = cfg.pipeline_stages
    if n == 1:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != n:
        raise ValueError(f"--pipeline-stages {n} needs {n} processes (one per stage); this job has {world}: "
                         f"start it with torchrun --nproc-per-node {n}")
    if resume_state is not None:
        raise ValueError(f"--pipeline-stages {n}: pipeline runs keep no checkpoints, so they cannot resume; "
                         "train a new run")
    if trainer.precision != "32":
        if cfg.precision != "auto":  # autocast through the traced stages is untested: refuse rather than guess
            raise ValueError(f"--pipeline-stages {n} trains in float32 only; drop --precision {cfg.precision}")
        trainer.precision = "32"
    if cfg.checkpoints:
        log.info("--pipeline-stages %d: pipeline runs keep no checkpoints (no RUN/checkpoints/, no --resume)", n)
        trainer.config = replace(cfg, checkpoints=False)


def build_runner(trainer) -> tuple[object | None, nn.Module]:
    """This process's stage of ``trainer.model`` (a :class:`~convolab.train.pipeline.PipelineRunner`) and the module
    whose parameters the optimizers step (its ``stage_module``); (None, the model) with ``--pipeline-stages 1``.
    Every process builds the same model (same seed), so every stage starts from the unsplit model's weights.
    Micro-batches per batch: the number of stages (a short last batch: fewer).

    Raises:
        ValueError: a step rule given to the Trainer (the pipeline has its own: :class:`PipelineStep`).
    """
    cfg = trainer.config
    if cfg.pipeline_stages == 1:
        return None, trainer.model
    if trainer._given["step_rule"] is not None:
        raise ValueError(f"--pipeline-stages {cfg.pipeline_stages} runs its own step rule (PipelineStep); "
                         "a given step_rule cannot be used with it")
    from convolab.train.pipeline import PipelineRunner  # (imports torch.distributed.pipelining)

    images = trainer.data.train.images
    # The tracer only needs a batch's shape and dtype: the first step's, (B, C, H, W) or (B, C, T, H, W)
    example = torch.zeros((min(cfg.batch_size, len(images)), *images.shape[1:]), device=trainer.device)
    runner = PipelineRunner(trainer.model, cfg.pipeline_stages, example,
                            lambda out, y: trainer.engine.loss(trainer.task, out, y),
                            n_microbatches=cfg.pipeline_stages, device=trainer.device)
    log.info("--pipeline-stages %d: stage %d of %s begins at %s (%s parameters)", cfg.pipeline_stages,
             runner.stage_index, cfg.model, runner.cuts[runner.stage_index - 1] if runner.stage_index else "the input",
             f"{sum(p.numel() for p in runner.stage_module.parameters()):,}")
    return runner, runner.stage_module


def broadcast_from(runner, out: torch.Tensor | None) -> torch.Tensor:
    """The last stage's tensor ``out`` (float32) in every process: its shape first, then its values."""
    shape = torch.full((_MAX_DIMS,), -1, dtype=torch.int64, device=runner.device)
    if runner.is_last:
        shape[: out.ndim] = torch.tensor(out.shape)
    dist.broadcast(shape, src=runner._last_rank, group=runner.group)
    dims = [int(d) for d in shape.tolist() if d >= 0]
    value = out.float().contiguous() if runner.is_last else torch.empty(dims, device=runner.device)
    dist.broadcast(value, src=runner._last_rank, group=runner.group)
    return value


class PipelineEval(nn.Module):
    """The pipelined model in eval mode as one module: every process calls it on the same batch and gets the last
    stage's outputs (the tasks' ``evaluate`` then counts the same figures everywhere)."""

    def __init__(self, runner):
        super().__init__()
        self.runner = runner  # (not a submodule: its parameters are the optimizers', not this wrapper's)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return broadcast_from(self.runner, self.runner.eval_forward(x))  # (N, ...) in every process


class PipelineStep(StandardStep):
    """The standard step with the forward and backward of a batch run through the pipeline's stages.

    One optimizer step per batch (``--accum-steps 1``, checked by the config); clipping and the non-finite check
    are the standard step's, acting on this stage's parameters (every process gets the same broadcast loss, so all
    decide alike).
    """

    def __init__(self, trainer, optimizers: list[torch.optim.Optimizer]):
        super().__init__(trainer, optimizers)
        self.runner = trainer.pipeline
        self.eval_module = PipelineEval(self.runner)

    def micro_batch(self, x: torch.Tensor, y: torch.Tensor, share: float, sync: bool):
        """Forward and backward of one batch through all stages (``share`` is 1: one batch per step). Returns (stats
        on the device, loss, samples), the same in every process."""
        t, runner = self.t, self.runner
        if t.augment is not None:  # (only the first stage reads the images)
            x, y, mix = t.task.augment(t.augment, x, y)
            if mix is not None:
                raise ValueError("--pipeline-stages: mixup and cutmix are not supported (the pipeline's loss takes "
                                 "one target per sample); choose an --augment preset without them")
        # Equal micro-batches keep the mean of their mean losses the batch's mean: a short last batch takes the
        # most micro-batches (up to the number of stages) its size divides into.
        runner.n_microbatches = max(d for d in range(1, t.config.pipeline_stages + 1) if len(y) % d == 0)
        loss = runner.step(x, y)  # the batch's mean loss, broadcast from the last stage
        outputs = broadcast_from(runner, runner.outputs)  # (N, K ...): every process counts the same figures
        with torch.no_grad():
            stats = {"loss_sum": loss * len(y), **t.task.batch_stats(outputs, y.to(outputs.device))}
        return stats, loss, len(y)

    def gather_model(self) -> None:
        """Every stage's weights into rank 0's ``trainer.model`` (what it saves); every process must call it."""
        state = self.runner.full_state_dict()
        if state is not None:
            self.t.model.load_state_dict(state)
