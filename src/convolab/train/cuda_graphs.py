"""``--cuda-graphs``: the model's forward and backward pass replayed as CUDA graphs.

A small CNN's training step on a GPU is bound by the CPU, not the GPU: fastcnn's step launches about
190 kernels, each costing the host ~8 us of launch and dispatch, while the GPU finishes them in
about a quarter of that time. ``torch.cuda.make_graphed_callables`` records the forward and the
backward pass once and replays each as one launch; the loss, the optimizer step, the augmentation
and the bookkeeping stay ordinary eager code. Measured on an H100 (fastcnn, Fashion-MNIST, bf16,
batch 512): 0.28-0.39 s per epoch instead of 0.62-0.76 s (README: Speed).

What a captured graph cannot do, the wrapper leaves to the module itself: batches of another shape
(an epoch's short last batch), evaluation (eval mode) and calls without autograd.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["GraphedForward", "cuda_graph_conflicts"]


def cuda_graph_conflicts(*, device: torch.device, compile: bool, grad_checkpointing: bool, accum_steps: int,
                         world_size: int) -> str | None:
    """Why ``--cuda-graphs`` cannot be used with these settings (one line), or None."""
    if device.type != "cuda":
        return f"--cuda-graphs needs a CUDA GPU (--device cuda); on {device.type} drop it"
    if compile:
        return "--cuda-graphs and --compile both take over the model's forward pass; choose one"
    if grad_checkpointing:
        return "--cuda-graphs cannot record --grad-checkpointing's recomputation; choose one"
    if accum_steps > 1:
        # The replayed backward pass hands autograd the graph's own gradient buffers, which the next
        # replay overwrites: gradients accumulated over micro-batches would be wrong.
        return "--cuda-graphs does not support --accum-steps > 1; use a larger --batch-size instead"
    if world_size > 1:
        return "--cuda-graphs is not supported with torchrun (DDP) yet; drop it"
    return None


class GraphedForward:
    """Call ``module`` through CUDA graphs of its forward and backward pass where that is exact.

    Args:
        module: the model, on a CUDA device, in the training mode the graphs will be used in.
        sample: one training batch (its shape is the one the graphs replay; its values only warm up).
        autocast: the context the training steps run the forward pass in (autocast with
            ``cache_enabled=False``, or a null context); the graphs record its casts.

    Capturing runs the forward and backward pass a few times to warm up (cuDNN picks its
    algorithms); BatchNorm's running statistics are put back as they were afterwards, so a run with
    graphs starts from exactly the state a run without them does.
    """

    def __init__(self, module: nn.Module, sample: torch.Tensor,
                 autocast: contextlib.AbstractContextManager | None = None):
        self.module = module
        self.shape = tuple(sample.shape)
        buffers = [b.detach().clone() for b in module.buffers()]
        with autocast or contextlib.nullcontext():
            torch.cuda.make_graphed_callables(module, (sample,))
        # make_graphed_callables replaced the module's forward with one that replays the graphs in the
        # training mode it saw; keep that here and give the module its own forward back, so that the
        # model a run saves, evaluates and exports is the plain module.
        self.graphed = module.__dict__.pop("forward")
        with torch.no_grad():
            for b, saved in zip(module.buffers(), buffers):
                b.copy_(saved)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.module.training and torch.is_grad_enabled() and tuple(x.shape) == self.shape:
            return self.graphed(x)
        return self.module(x)
