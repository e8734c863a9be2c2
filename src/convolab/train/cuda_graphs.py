"""``--cuda-graphs``: training steps replayed as CUDA graphs.

A small CNN's training step on a GPU is bound by the CPU, not the GPU: fastcnn's step launches about
190 kernels, each costing the host ~8 us of launch and dispatch (20-50 us per operator with Python on
the H100 machine measured), while the GPU finishes them in a fraction of that time. A CUDA graph
records the kernels once and replays them with one launch. Two levels, chosen by the trainer:

* :class:`StepGraph`, the whole step — augmentation, forward pass, loss, backward pass, fused SGD step
  with the device-side finiteness check, the epoch's sums — where every part can be recorded (the
  trainer's ``_records_whole_steps``). Measured on an H100 (fastcnn, Fashion-MNIST, bf16, batch 512):
  0.213-0.218 s per epoch against 0.86-1.11 s eager in the same process (4.0-5.1x), the same losses; the GPU is then
  the bottleneck (its kernels take about 0.19 s per epoch).
* :class:`GraphedForward`, the model's forward and backward pass only
  (``torch.cuda.make_graphed_callables``), for the rest (Adam, gradient clipping, mixup ...): 0.37 s
  against 0.75 s per epoch (2.0x).

Batches of another shape (an epoch's short last batch) and evaluation run as usual.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["GraphedForward", "StepGraph", "EagerStep", "cuda_graph_conflicts"]


def cuda_graph_conflicts(device: torch.device, world_size: int) -> str | None:
    """Why ``--cuda-graphs`` cannot run on this device and process group (one line), or None. The flags it
    cannot be combined with are refused earlier, by ``TrainConfig.validate``."""
    if device.type != "cuda":
        return f"--cuda-graphs needs a CUDA GPU (--device cuda); on {device.type} drop it"
    if world_size > 1:
        return "--cuda-graphs is not supported with torchrun (DDP) yet; drop it"
    return None


class GraphedForward:
    """Call ``module`` through CUDA graphs of its forward and backward pass where that is exact
    (training batches of the captured shape; the module itself otherwise: eval mode, no autograd).

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


class StepGraph:
    """A whole training step recorded once as a CUDA graph and replayed: one launch per step.

    Args:
        step: the step, a function of no arguments reading static input tensors and returning static
            output tensors (the same tensors are refilled by every replay).
        state: every tensor a step changes that must stay as it was (weights, buffers, optimizer state):
            the warm-up steps change them, and they are put back before the capture.
        generators: device generators the step draws from (besides the default one), registered with the
            graph so that every replay draws new numbers; they too are put back after the warm-up.
        warmup: real steps taken before the capture (on a side stream, as torch requires), which let
            cuDNN choose its algorithms and the allocator settle.

    ``replay()`` runs the step and returns its outputs. :class:`EagerStep` is the same protocol without
    a graph (each replay calls the step), which tests use on machines without a GPU.
    """

    def __init__(self, step, state: list[torch.Tensor], generators: tuple = (), warmup: int = 3):
        saved = [t.detach().clone() for t in state]
        generator_states = [g.get_state() for g in generators]
        default_state = self._default_rng_state()
        self._warm_up(step, warmup)
        with torch.no_grad():
            for t, s in zip(state, saved):
                t.copy_(s)
        for g, s in zip(generators, generator_states):
            g.set_state(s)
        self._set_default_rng_state(default_state)  # dropout draws as if there had been no warm-up
        self._capture(step, generators)

    def _default_rng_state(self) -> torch.Tensor:
        return torch.cuda.get_rng_state()

    def _set_default_rng_state(self, state: torch.Tensor) -> None:
        torch.cuda.set_rng_state(state)

    def _warm_up(self, step, warmup: int) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()

    def _capture(self, step, generators: tuple) -> None:
        self.graph = torch.cuda.CUDAGraph()
        for g in generators:
            self.graph.register_generator_state(g)
        with torch.cuda.graph(self.graph):
            self.outputs = step()

    def replay(self):
        self.graph.replay()
        return self.outputs


class EagerStep(StepGraph):
    """:class:`StepGraph`'s protocol without a graph: the same warm-up and restore, then each replay calls
    the step (for tests on machines without a GPU, and as the reference the graphs must match)."""

    def _default_rng_state(self) -> torch.Tensor:
        return torch.get_rng_state()

    def _set_default_rng_state(self, state: torch.Tensor) -> None:
        torch.set_rng_state(state)

    def _warm_up(self, step, warmup: int) -> None:
        for _ in range(warmup):
            step()

    def _capture(self, step, generators: tuple) -> None:
        self.step = step

    def replay(self):
        return self.step()
