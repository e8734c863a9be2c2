"""Pipeline (model) parallelism: the network cut into consecutive stages, one stage per process.

Data parallelism (``convolab.train.distributed``) copies the whole model into every process; pipeline
parallelism splits it, for a model too big for one device: process 0 holds the first layers, process 1
the next ones, and activations travel forward from stage to stage, their gradients backward. A batch is
cut into micro-batches so that the stages work at the same time on different micro-batches (GPipe,
Huang et al., 2019: all micro-batch forwards, then all backwards; 1F1B, Narayanan et al., 2019,
interleaves them to hold fewer activations). The gradients of a step are summed over its micro-batches
and divided by their number, so with a mean loss the step equals one on the whole batch.

This is ``torch.distributed.pipelining`` (it runs on gloo and CPUs as well as NCCL): :func:`split_points`
picks where to cut; ``pipeline()`` traces the whole model with ``torch.export`` and cuts its graph before
those modules (so any forward that exports works, skip connections included: a tensor used by a later
stage is sent to it); ``ScheduleGPipe``/``Schedule1F1B`` run the micro-batches. :class:`PipelineRunner`
wraps the three behind the few calls a training loop needs.

What differs from training the unsplit model on one device:

- Batch norm normalises each micro-batch with its own statistics (as in GPipe), so a network with
  BN trains slightly differently; dropout draws its masks in each process's own random stream.
  Networks without either (``tutorial_cnn``, ``lenet5``, VGG without dropout) give the same numbers up
  to float rounding.
- ``torch.export`` fixes shapes and the train/eval behaviour of BN and dropout in the traced graph, so
  the runner traces once per (mode, micro-batch shape) it meets (a training batch, a smaller last batch,
  an evaluation batch) and keeps them; all traces share this stage's parameters and buffers.
- Every process builds the whole model once to trace it (the tracer needs the full graph), so each
  process holds the unsplit weights besides its stage's; the activations and optimizer state, which
  dominate training memory, are per stage.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe, SplitPoint, pipeline
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Block", "cuttable_blocks", "split_points", "PipelineRunner", "SCHEDULES", "BALANCES"]

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
BALANCES = ("params", "flops")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class Block:
    """One place a stage may begin: a module called once in the forward, with parameters.

    Attributes:
        name: the module's qualified name in the model (``features.conv2``).
        params: parameters it owns, with the parameter-free modules called after it.
        flops: FLOPs of its forward on the example input (matmuls and convolutions, as torch counts them).
    """

    def __init__(self, name: str, params: int, flops: int):
        self.name, self.params, self.flops = name, params, flops

    def __repr__(self) -> str:
        return f"Block({self.name!r}, params={self.params}, flops={self.flops})"


def _candidates(model: nn.Module) -> list[str]:
    """Top-level children, with containers (``features``, ``layer1``, ``classifier``) opened one level."""
    names = []
    for name, child in model.named_children():
        if isinstance(child, _CONTAINERS) and len(child) > 0:
            names += [f"{name}.{sub}" for sub, _ in child.named_children()]
        else:
            names.append(name)
    return names


def cuttable_blocks(model: nn.Module, example_input: torch.Tensor) -> list[Block]:
    """The model's blocks in the order its forward calls them (found by running it on the meta device).

    A candidate (a top-level child, or a child of a top-level container) is a block if the forward
    calls it exactly once and it has parameters; parameter-free modules (activations, pooling) join the
    block before them. The model itself is not run or changed: a copy runs on the meta device.

    Args:
        model: a convolab model (any ``nn.Module``).
        example_input: a batch the model accepts, e.g. (N, C, H, W); only its shape and dtype are used.
    """
    meta = copy.deepcopy(model).to("meta")
    names = _candidates(meta)
    calls: list[str] = []
    counts = dict.fromkeys(names, 0)
    hooks = []
    for name in names:
        def record(_mod: nn.Module, _args: object, name: str = name) -> None:
            counts[name] += 1
            calls.append(name)
        hooks.append(meta.get_submodule(name).register_forward_pre_hook(record))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty_like(example_input, device="meta"))
    for hook in hooks:
        hook.remove()
    # FlopCounterMode names modules "<RootClass>.<qualified name>"; sum each candidate's subtree.
    root = type(meta).__name__ + "."
    flops = dict.fromkeys(names, 0)
    for key, ops in counter.get_flop_counts().items():
        if key.startswith(root):
            for name in names:
                if key[len(root):] == name or key[len(root):].startswith(name + "."):
                    flops[name] += sum(ops.values())
    blocks: list[Block] = []
    seen: set[str] = set()
    for name in calls:
        if name in seen:
            continue
        seen.add(name)
        n_params = sum(p.numel() for p in meta.get_submodule(name).parameters())
        if counts[name] == 1 and n_params > 0:
            blocks.append(Block(name, n_params, flops[name]))
        elif blocks:  # parameter-free (or called twice): rides with the block before it
            blocks[-1].params += n_params
            blocks[-1].flops += flops[name]
    return blocks


def _balanced_cuts(weights: Sequence[int], n_stages: int) -> list[int]:
    """Indices where stages 1..n-1 begin, minimising the heaviest stage (exact linear partition, O(n B^2))."""
    n = len(weights)
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[k][i]: the lightest heaviest stage when blocks [0, i) form k stages; first[k][i]: where the last begins
    best = [[inf] * (n + 1) for _ in range(n_stages + 1)]
    first = [[0] * (n + 1) for _ in range(n_stages + 1)]
    best[0][0] = 0
    for k in range(1, n_stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], first[k][i] = cost, j
    cuts, i = [], n
    for k in range(n_stages, 0, -1):
        i = first[k][i]
        cuts.append(i)
    return sorted(cuts)[1:]  # drop the 0 where stage 0 begins


def split_points(model: nn.Module, n_stages: int, example_input: torch.Tensor,
                 balance: Literal["params", "flops"] = "params") -> list[str]:
    """Where to cut ``model`` into ``n_stages`` pipeline stages: the names of the modules that begin
    stages 1 .. n_stages-1, in forward order.

    The cuts fall between the model's blocks (:func:`cuttable_blocks`) so that the heaviest stage is as
    light as possible: by parameter count (``"params"``, the default: what a stage must hold, with its
    gradients and optimizer state) or by FLOPs on ``example_input`` (``"flops"``: what it must compute).

    Raises:
        ValueError: ``n_stages`` < 1, more stages than blocks, or an unknown ``balance``.
    """
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {', '.join(BALANCES)}; got {balance!r}")
    if n_stages < 1:
        raise ValueError(f"pipeline stages must be >= 1; got {n_stages}")
    blocks = cuttable_blocks(model, example_input)
    if n_stages > len(blocks):
        shown = ", ".join(b.name for b in blocks[:8]) + (", ..." if len(blocks) > 8 else "")
        raise ValueError(f"--pipeline-stages {n_stages}: {type(model).__name__} has only {len(blocks)} blocks with "
                         f"parameters to cut between ({shown}); use at most {len(blocks)} stages")
    weights = [b.params if balance == "params" else b.flops for b in blocks]
    return [blocks[i].name for i in _balanced_cuts(weights, n_stages)]


def _rebind(module: nn.Module, like: nn.Module) -> None:
    """Make ``module`` use ``like``'s parameter and buffer tensors (same names), so traces share one state."""
    params, buffers = dict(like.named_parameters()), dict(like.named_buffers())
    for name, _ in list(module.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        module.get_submodule(owner)._parameters[leaf] = params[name]
    for name, _ in list(module.named_buffers()):
        owner, _, leaf = name.rpartition(".")
        module.get_submodule(owner)._buffers[leaf] = buffers[name]


class PipelineRunner:
    """This process's stage of a pipelined model, trained one batch at a time.

    Every process of the group builds one runner with the same arguments; process ``r`` of the group
    runs stage ``r``. ``step`` runs the forward and backward of a batch through all stages; the
    gradients land in :attr:`stage_module`'s parameters (accumulating, as ``loss.backward()`` does), so
    an ordinary optimizer over ``runner.stage_module.parameters()`` steps this stage::

        runner = PipelineRunner(model, 2, x0, F.cross_entropy, n_microbatches=4)
        opt = torch.optim.SGD(runner.stage_module.parameters(), lr=0.1)
        for x, y in batches:            # the same batches in every process
            opt.zero_grad()
            loss = runner.step(x, y)    # the batch's mean loss, in every process
            opt.step()

    Args:
        model: the unsplit model (left unchanged; every process passes the same weights).
        n_stages: number of stages; must equal the size of the process group.
        example_input: a batch the model accepts (on any device); a batch size divisible by
            ``n_microbatches`` also prepares the first step's trace.
        loss_fn: ``loss_fn(output, target)`` of a micro-batch, a mean over its samples.
        n_microbatches: micro-batches per batch; a training batch must split into that many equal parts.
        group: the process group of the stages (default: the whole world, started by the caller).
        device: where this stage runs (default: the model's device).
        schedule: ``"gpipe"`` (all forwards, then all backwards) or ``"1f1b"``.
        balance: how :func:`split_points` balances the stages (``"params"`` or ``"flops"``).
        cuts: the modules that begin stages 1.. (default: :func:`split_points`).

    Raises:
        ValueError: a group of another size than ``n_stages``, bad counts, or a model that cannot be traced.
    """

    def __init__(self, model: nn.Module, n_stages: int, example_input: torch.Tensor,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n_microbatches: int, *,
                 group: dist.ProcessGroup | None = None, device: torch.device | str | None = None,
                 schedule: str = "gpipe", balance: Literal["params", "flops"] = "params",
                 cuts: Sequence[str] | None = None):
        if not dist.is_initialized():
            raise ValueError("pipeline stages need a process group: start with torchrun (one process per stage)")
        world = dist.get_world_size(group)
        if world != n_stages:
            raise ValueError(f"--pipeline-stages {n_stages} needs {n_stages} processes (one per stage); "
                             f"this job has {world}: use torchrun --nproc-per-node {n_stages}")
        if n_microbatches < 1:
            raise ValueError(f"micro-batches per batch must be >= 1; got {n_microbatches}")
        if schedule not in SCHEDULES:
            raise ValueError(f"pipeline schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
        if schedule == "1f1b" and n_microbatches < n_stages:
            raise ValueError(f"the 1f1b schedule needs at least as many micro-batches as stages ({n_stages}); "
                             f"got {n_microbatches}")
        self.n_stages, self.n_microbatches, self.loss_fn = n_stages, n_microbatches, loss_fn
        self.group, self.schedule_name = group, schedule
        self.stage_index = dist.get_rank(group)
        self.is_first, self.is_last = self.stage_index == 0, self.stage_index == n_stages - 1
        self._last_rank = dist.get_global_rank(group, n_stages - 1) if group is not None else n_stages - 1
        first_param = next(model.parameters(), None)
        self.device = torch.device(device) if device is not None else (
            first_param.device if first_param is not None else torch.device("cpu"))
        self.cuts = list(cuts) if cuts is not None else split_points(model, n_stages, example_input, balance)
        # The traced copy: every trace reads its tensors, so all traces share this stage's parameters.
        self._template = copy.deepcopy(model).to(self.device)
        self._full_keys = list(self._template.state_dict())
        self._stages: dict[tuple, tuple[object, object]] = {}
        n = example_input.shape[0]
        mb = n // n_microbatches if n % n_microbatches == 0 else 1
        stage, _ = self._stage_for(True, example_input[:mb].to(self.device), n_microbatches)
        self.stage_module: nn.Module = stage.submod  # the parameters to optimise; shared by every trace
        self._own_keys = list(self.stage_module.state_dict())
        unknown = set(self._own_keys) - set(self._full_keys)
        if unknown:  # the tracer renamed something: full_state_dict would not match the unsplit model
            raise RuntimeError(f"stage {self.stage_index} holds tensors the model does not name: {sorted(unknown)[:5]}")
        self.outputs: torch.Tensor | None = None  # last stage: the logits of the last step (detached)

    # -- tracing -------------------------------------------------------------------------------------
    def _stage_for(self, training: bool, micro: torch.Tensor, n_micro: int) -> tuple[object, object]:
        """The (stage, schedule) for this mode and micro-batch shape, traced on first use."""
        key = (training, tuple(micro.shape), micro.dtype, n_micro)
        if key in self._stages:
            return self._stages[key]
        template = self._template.train(training)
        try:
            pipe = pipeline(template, (micro,), split_spec=dict.fromkeys(self.cuts, SplitPoint.BEGINNING))
        except RuntimeError as e:
            raise ValueError(f"{type(template).__name__} cannot be split into pipeline stages: torch.export "
                             f"cannot trace its forward ({e.__cause__ or e})") from e
        finally:  # undo the split markers pipeline() wraps around the cut modules, for the next trace
            for name in self.cuts:
                sub = template.get_submodule(name)
                sub.__dict__.pop("forward", None)
                sub.__dict__.pop("_orig_forward", None)
        if pipe.num_stages != self.n_stages:
            raise ValueError(f"cutting {type(template).__name__} before {', '.join(self.cuts)} gave "
                             f"{pipe.num_stages} stages, not {self.n_stages} (a cut module runs inside a branch)")
        module = pipe.get_stage_module(self.stage_index)
        if self._stages:
            _rebind(module, self.stage_module)
        stage = pipe.build_stage(self.stage_index, self.device, self.group)
        del pipe  # the other stages' modules go with it
        if training:
            schedule = SCHEDULES[self.schedule_name](stage, n_micro, loss_fn=self.loss_fn)
        else:  # forward only: every schedule runs the forwards in the same order, and GPipe takes any count
            schedule = ScheduleGPipe(stage, n_micro)
        self._stages[key] = (stage, schedule)
        return stage, schedule

    def _micro(self, x: torch.Tensor, n_micro: int) -> torch.Tensor:
        return x[: x.shape[0] // n_micro].to(self.device)

    # -- the loop's calls ----------------------------------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward and backward of one batch through all stages; returns its mean loss in every process.

        Args:
            x: the batch (N, ...), given in every process (only the first stage reads its values).
            y: its targets (N, ...), given in every process (only the last stage reads them).

        Raises:
            ValueError: N does not split into ``n_microbatches`` equal micro-batches.
        """
        n = x.shape[0]
        if n % self.n_microbatches:
            raise ValueError(f"a batch of {n} samples does not split into {self.n_microbatches} equal "
                             f"micro-batches; use a batch size divisible by {self.n_microbatches}")
        _, schedule = self._stage_for(True, self._micro(x, self.n_microbatches), self.n_microbatches)
        losses: list[torch.Tensor] = []
        args = (x.to(self.device),) if self.is_first else ()
        target = y.to(self.device) if self.is_last else None
        out = schedule.step(*args, target=target, losses=losses)
        loss = torch.zeros((), device=self.device)
        if self.is_last:
            self.outputs = out.detach()  # (N, num_classes)
            loss = torch.stack([v.detach() for v in losses]).mean().float()  # equal micro-batches: the batch mean
        dist.broadcast(loss, src=self._last_rank, group=self.group)
        return loss

    @torch.no_grad()
    def eval_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """The model's output on ``x`` in eval mode (BN running statistics, no dropout).

        Give ``x`` in every process; the last stage returns the output (N, ...), the others None.
        A batch that does not split into ``n_microbatches`` equal parts runs as one micro-batch.
        """
        n_micro = self.n_microbatches if x.shape[0] % self.n_microbatches == 0 else 1
        _, schedule = self._stage_for(False, self._micro(x, n_micro), n_micro)
        out = schedule.step(x.to(self.device)) if self.is_first else schedule.step()
        return out.detach() if self.is_last else None

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """All stages' parameters and buffers, named as in the unsplit model, on CPU in process 0
        (None in the others); every process must call it."""
        mine = {k: v.detach().cpu() for k, v in self.stage_module.state_dict().items()}
        parts: list | None = [None] * self.n_stages if self.stage_index == 0 else None
        dist.gather_object(mine, parts, dst=dist.get_global_rank(self.group, 0) if self.group else 0,
                           group=self.group)
        if parts is None:
            return None
        full = {k: v for part in parts for k, v in part.items()}
        return {k: full[k] for k in self._full_keys if k in full}

    def load_full_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load this stage's part of an unsplit model's state dict (every process passes the whole dict).

        Raises:
            ValueError: keys missing from or foreign to the model.
        """
        missing = [k for k in self._full_keys if k not in state_dict]
        unexpected = [k for k in state_dict if k not in set(self._full_keys)]
        if missing or unexpected:
            raise ValueError(f"state dict does not match {type(self._template).__name__}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        own = self.stage_module.state_dict()
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(state_dict[k])  # in place: every trace and the optimizer keep the same tensors
