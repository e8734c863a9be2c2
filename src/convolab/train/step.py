"""The training step: precision, accumulation, clipping, the non-finite check, CUDA graphs, and step rules.

A *step rule* turns training batches into optimizer steps. :class:`StandardStep` is the one every run uses by
default: one optimizer, ``accum_steps`` micro-batches per step (each micro-batch's mean loss weighted by its
share of the step's samples), gradient clipping, bf16/fp16 autocast with fp16 loss scaling, and a step skipped
when its loss is not finite — decided on the host, or on the device without a sync per step (the fused
optimizers' ``found_inf``), or recorded whole as a CUDA graph. A rule with several optimizers (the bilevel
steps of a differentiable architecture search, a teacher in distillation) subclasses it and adds its own
state to the checkpoint (:class:`AlternatingStep`).
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from convolab.train.cuda_graphs import GraphedForward, StepGraph
from convolab.train.distributed import all_min, all_min_on_device
from convolab.train.optim import add_l1_gradient, l1_parameters

__all__ = ["StandardStep", "AlternatingStep", "cpu_has_native_bf16", "resolve_precision", "check_precision",
           "cpu_bf16_training_problem", "settle_precision", "describe_precision"]

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), rather than emulating it."""
    has = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(f is not None and f() for f in has)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision ``auto`` means on ``device``: bf16 on a CPU with native bfloat16 instructions (the
    training steps run about 1.5x faster there; see the README's figures), else 32. GPUs stay at 32
    unless asked: for the small models convolab trains by default, autocast's casts cost more there
    than they save. Any other value is returned as given."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "32"


def cpu_bf16_training_problem(model: torch.nn.Module) -> str | None:
    """Why ``model`` should not train in bf16 autocast on a CPU, or None.

    torch's CPU kernels (2.14) return a wrong weight gradient for a bfloat16 ``Conv3d`` whose input is 2
    frames deep under a 3-deep kernel: off by 100 % or inf/NaN, and different on every call, while the
    forward pass and the input gradient agree with float32 to 0.4 %. C3D on 8-frame clips has exactly
    that map after its second pool, and diverged at step 2 (measured 2026-12-06 with torch 2.14.1 on an
    AVX512-BF16 CPU, against the float32 gradient; the README's precision section says so). Drop the check
    only after measuring a torch release that fixes the kernel. 2D convolutions are not affected.
    """
    if any(isinstance(m, torch.nn.Conv3d) for m in model.modules()):
        return "torch's bf16 Conv3d weight gradient on CPU is wrong for 2-frame-deep maps"
    return None


def settle_precision(precision: str, asked: str, device: torch.device,
                     model: torch.nn.Module) -> tuple[str, str]:
    """The precision ``model`` trains in, once built, and the log's words for it: ``precision`` (what ``asked``
    resolved to on ``device``) unless bf16 on a CPU would compute wrong gradients for it
    (:func:`cpu_bf16_training_problem`): then float32 under ``--precision auto``, saying why; an explicit bf16
    stays, with a warning."""
    problem = cpu_bf16_training_problem(model) if device.type == "cpu" and precision == "bf16" else None
    if problem and asked == "auto":
        return "32", describe_precision("32", asked, problem)
    if problem:
        log.warning("--precision bf16: %s; if the loss turns NaN, train with --precision 32", problem)
    return precision, describe_precision(precision, asked)


def describe_precision(precision: str, asked: str, bf16_off: str | None = None) -> str:
    """The first log line's words for the precision a run trains in (and why, where ``auto`` chose)."""
    text = {"32": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast, loss scaling"}[precision]
    if asked == "auto" and precision == "bf16":
        text += " (--precision auto: this CPU has bfloat16 instructions; --precision 32 for float32)"
    elif asked == "auto" and bf16_off:
        text += f" (--precision auto: not bf16, {bf16_off})"
    return text


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run (one line saying what works instead)."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA GPU (float16 training needs loss scaling, which convolab does "
                         f"there); on {device.type} use --precision bf16 or 32")
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("--precision bf16: this GPU has no bfloat16 support; use --precision fp16 or 32")
        # (native bf16 implies oneDNN's support; asking both keeps this check and `auto` agreeing on one CPU)
        if device.type == "cpu" and not (cpu_has_native_bf16() or torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            raise ValueError("--precision bf16: this CPU has no bfloat16 instructions (AVX512-BF16, AMX or AVX-NE), "
                             "so it would be emulated and slower; use --precision 32")
        if device.type == "mps":
            raise ValueError("--precision bf16 is not supported on MPS here; use --precision 32")


class StandardStep:
    """One optimizer stepped every ``accum_steps`` training batches (see the module docstring).

    Args:
        trainer: the loop (its config, model, engine, task, device, distributed state and callbacks).
        optimizers: the optimizers; the first is the one the learning-rate schedule drives.
    """

    step_graph_class = StepGraph  # tests without a GPU put convolab.train.cuda_graphs.EagerStep here

    def __init__(self, trainer, optimizers: list[torch.optim.Optimizer]):
        self.t = trainer
        self.optimizers = optimizers
        cfg = trainer.config
        self.autocast_dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[trainer.precision]
        self.scaler = torch.amp.GradScaler(trainer.device.type) if trainer.precision == "fp16" else None
        self.step_graph: StepGraph | None = None  # --cuda-graphs: the whole step recorded ...
        self.graphed: GraphedForward | None = None  # ... or the model's passes only
        self.cuda_graphs = cfg.cuda_graphs
        # --l1: the weights it regularises, among those this step's optimizer trains
        trained = {id(p) for p in self.params()}
        self.l1_params = [p for p in l1_parameters(trainer.model, cfg.decay_norm_and_bias)
                          if id(p) in trained] if cfg.l1 else []

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers[0]

    # -- pieces ------------------------------------------------------------------------------------------
    def autocast(self):
        """bf16/fp16 autocast for the forward pass and the loss (--precision), else nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # CUDA graphs record the casts themselves: autocast's cache of cast weights would go stale
        return torch.autocast(self.t.device.type, dtype=self.autocast_dtype, cache_enabled=not self.cuda_graphs)

    def augmented_forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augment a training batch, then forward and loss: outputs, mean loss, and the targets the batch's figures
        are counted against (for a mixed batch, those of the larger share)."""
        t = self.t
        mix = None
        if t.augment is not None:
            x, y, mix = t.task.augment(t.augment, x, y)
            if t.channels_last:
                x = x.contiguous(memory_format=t.memory_format(x.ndim))
        with self.autocast():
            outputs = self.graphed(x) if self.graphed is not None else t.engine.forward(t.net, x)
            loss = t.engine.loss(t.task, outputs, y)
            if mix is None:
                return outputs, loss, y
            loss = mix.lam * loss + (1 - mix.lam) * t.engine.loss(t.task, outputs, mix.y2)
        return outputs, loss, y if mix.lam >= 0.5 else mix.y2

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def params(self) -> list:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def micro_batch(self, x: torch.Tensor, y: torch.Tensor, share: float, sync: bool):
        """Forward and backward of one training batch; ``share``: its weight in the step's loss (its samples over
        the step's). ``sync``: the last micro-batch of the step (DDP averages gradients then). Returns
        (stats on the device, weighted loss, samples) — stats holds ``loss_sum`` and the task's sums."""
        t = self.t
        context = contextlib.nullcontext() if sync or not t.dist.enabled else t.net.no_sync()
        with context:
            outputs, loss, y = self.augmented_forward(x, y)
            # Each micro-batch's mean loss is weighted by its share of the group's samples, so the accumulated
            # gradient is the mean over the whole group (a short last group included).
            weighted = loss if share == 1 else loss * share
            (weighted if self.scaler is None else self.scaler.scale(weighted)).backward()
        with torch.no_grad():
            stats = {"loss_sum": loss.detach() * len(y), **t.task.batch_stats(outputs.detach(), y)}
        return stats, weighted.detach(), len(y)

    # -- taking the step ---------------------------------------------------------------------------------
    def take(self, step_loss: torch.Tensor, row: dict) -> bool:
        """The optimizer step after the step's micro-batches, unless its loss is non-finite (decided on the host;
        every process decides alike). Returns whether it was taken."""
        t, cfg, opt = self.t, self.t.config, self.optimizer
        finite = bool(torch.isfinite(step_loss))
        if t.dist.enabled:  # every process takes the step, or none does
            finite = all_min(finite, t.device)
        if not finite:
            return False
        if self.scaler is not None and (cfg.clip_grad_norm is not None or self.l1_params):
            self.scaler.unscale_(opt)  # clip (and add L1 to) the true gradients, not the scaled ones
        if cfg.clip_grad_norm is not None:
            row["grad_norm"] = t.engine.clip_grad_norm(self.params(), cfg.clip_grad_norm)
        if self.l1_params:  # after clipping, as the optimizers add weight decay
            add_l1_gradient(self.l1_params, cfg.l1)
        if self.scaler is None:
            opt.step()
        else:  # skips the step if a gradient overflowed, and adapts the scale
            self.scaler.step(opt)
            self.scaler.update()
            row["scale"] = self.scaler._scale.detach().clone()
        return True

    def use_deferred_nan_check(self) -> bool:
        """Whether steps are skipped on the device (see :meth:`take_deferred`): on a GPU, where reading each
        step's loss would stall the queue of kernels, with a fused optimizer that takes the skip flag (torch's
        Adam, AdamW, SGD), no fp16 loss scaler (it skips steps its own way) and no weight average."""
        opt = self.optimizer
        supported = getattr(opt, "_step_supports_amp_scaling", False) and opt.defaults.get("fused")
        return (self.t.device.type == "cuda" and bool(supported) and self.scaler is None
                and not self.t.config.ema and len(self.optimizers) == 1)

    def take_deferred(self, step_loss: torch.Tensor, row: dict) -> torch.Tensor:
        """Take the optimizer step unless the loss is non-finite, decided on the device: the fused kernels skip
        the update (and undo their step count) where ``found_inf`` is 1, as they do for torch's loss scaler.
        Returns the device flag (True: the step was taken); the loop reads it later."""
        t, cfg = self.t, self.t.config
        ok = torch.isfinite(step_loss)
        if t.dist.enabled:  # every process takes the step, or none does
            ok = all_min_on_device(ok)
        if cfg.clip_grad_norm is not None:
            row["grad_norm"] = t.engine.clip_grad_norm(self.params(), cfg.clip_grad_norm)
        if self.l1_params:
            add_l1_gradient(self.l1_params, cfg.l1)
        opt = self.optimizer
        opt.found_inf = (~ok).float()
        try:
            opt.step()
        finally:
            del opt.found_inf
        return ok

    def prepare_deferred(self) -> None:
        """A skipped first step would leave torch's fused SGD a momentum buffer of uninitialised memory; zeros give
        the same first step (buffer = 0 * momentum + grad) and a clean skip. (A resumed run's buffers replace
        these when its optimizer state is loaded.)"""
        if isinstance(self.optimizer, torch.optim.SGD):
            for group in self.optimizer.param_groups:
                if group["momentum"]:
                    for p in group["params"]:
                        self.optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)

    # -- CUDA graphs -------------------------------------------------------------------------------------
    def records_whole_steps(self) -> bool:
        """Whether --cuda-graphs can record the whole training step (augmentation, forward pass, loss, backward
        pass, optimizer step, the epoch's sums) rather than only the model's passes: with the finiteness check on
        the device and torch's fused SGD (which reads a learning rate from the device), one batch per step, no
        gradient clipping, and no mixup or cutmix (their shares are drawn on the host, once per batch)."""
        t, cfg = self.t, self.t.config
        return (t.deferred_nan_check and isinstance(self.optimizer, torch.optim.SGD) and cfg.accum_steps == 1
                and cfg.clip_grad_norm is None and not t.augment_spec.mixes and not t.dist.enabled)

    def capture_graphs(self) -> None:
        """--cuda-graphs: record the whole step (or else the model's forward and backward pass) for training
        batches of the full size; an epoch's short last batch runs as usual."""
        t = self.t
        loader = t.train_loader
        size = loader.batch_sizes()[0]
        sample = loader.normalize(loader.images[:size]).contiguous(memory_format=t.memory_format(4))
        t0 = time.perf_counter()
        if not self.records_whole_steps():
            self.graphed = GraphedForward(t.model, sample, self.autocast())
            log.info("--cuda-graphs: forward and backward pass captured for batches of %d in %.2f s", size,
                     time.perf_counter() - t0)
            return
        opt = self.optimizer
        for group in opt.param_groups:  # the recorded optimizer step reads the rate the schedule writes here
            group["lr"] = torch.tensor(float(group["lr"]), device=t.device)
        self.graph_inputs = (sample, loader.labels[:size].clone())
        self.graph_sums = {"loss_sum": torch.zeros((), device=t.device),
                           **{k: torch.zeros((), device=t.device, dtype=d) for k, d in t.task.stat_dtypes().items()}}
        state = [*t.model.parameters(), *t.model.buffers(),
                 *(v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))]
        generators = (t.augment.generator,) if t.augment is not None else ()
        self.step_graph = self.step_graph_class(self.graph_step, state, generators)
        log.info("--cuda-graphs: whole training step captured for batches of %d in %.2f s", size,
                 time.perf_counter() - t0)

    def graph_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step on ``graph_inputs``, written to be recorded (no host reads; every output and sum in a
        fixed tensor): what the epoch loop does for a batch with the deferred finiteness check. Returns the loss
        and whether the step was taken (both on the device)."""
        self.optimizer.zero_grad(set_to_none=True)  # the recorded backward pass writes (not adds) the gradients
        outputs, loss, y = self.augmented_forward(*self.graph_inputs)
        loss.backward()
        loss = loss.detach()
        ok = self.take_deferred(loss, {})  # no clipping and one process here: nothing goes into the row
        with torch.no_grad():
            stats = {"loss_sum": loss * len(y), **self.t.task.batch_stats(outputs.detach(), y)}
            for k, v in stats.items():
                self.graph_sums[k].add_(torch.where(ok, v, 0).to(self.graph_sums[k].dtype))
        return loss, ok

    # -- state -------------------------------------------------------------------------------------------
    def extra_state(self) -> dict | None:
        """What a subclass adds to the checkpoint (other optimizers, iterators ...), or None."""
        return None

    def load_extra_state(self, state: dict | None) -> None:
        """Restore :meth:`extra_state`."""

    def before_step(self, batch_index: int) -> None:
        """Called before the first micro-batch of each optimizer step (a subclass steps its other optimizers)."""


class AlternatingStep(StandardStep):
    """Bilevel optimisation as a differentiable architecture search (Liu et al. 2019, DARTS, first order) runs it:
    before each weight step on a training batch, ``outer`` (over other parameters, e.g. architecture weights)
    takes a step on the next batch of ``outer_loader`` (the validation split). The outer loader's position and
    generator and the outer optimizer's state go into the checkpoint, so a resumed run continues bit-exactly.

    Args:
        trainer: the loop.
        optimizers: ``[inner, outer]``: the weights' optimizer (the schedule drives it) and the outer one.
        outer_loader: a resumable loader (``state_dict``/``load_state_dict(skip_batches)``) cycled endlessly.
    """

    def __init__(self, trainer, optimizers: list[torch.optim.Optimizer], outer_loader):
        if len(optimizers) != 2:
            raise ValueError("AlternatingStep takes two optimizers: [inner (weights), outer]")
        super().__init__(trainer, optimizers)
        self.outer_loader = outer_loader
        self.outer_batch = 0  # batches of the outer loader's current pass already used
        self._outer_iter = None

    def _next_outer(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._outer_iter is None:
            self._outer_iter = iter(self.outer_loader)
        try:
            batch = next(self._outer_iter)
        except StopIteration:
            self._outer_iter, self.outer_batch = iter(self.outer_loader), 0
            batch = next(self._outer_iter)
        self.outer_batch += 1
        return batch

    def before_step(self, batch_index: int) -> None:
        t = self.t
        x, y = self._next_outer()
        outer = self.optimizers[1]
        outer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = t.engine.loss(t.task, t.engine.forward(t.net, x), y)
        loss.backward()
        if bool(torch.isfinite(loss.detach())):
            outer.step()
        self.zero_grad()  # the outer pass's gradients on the weights are not the inner step's

    def extra_state(self) -> dict:
        return {"outer_optimizer": self.optimizers[1].state_dict(), "outer_loader": self.outer_loader.state_dict(),
                "outer_batch": self.outer_batch}

    def load_extra_state(self, state: dict | None) -> None:
        if state is None:
            raise ValueError(f"{self.t.resume_file}: the checkpoint has no state of the outer optimizer and loader "
                             "this step rule (AlternatingStep) needs; was it written by a run with one optimizer?")
        self.optimizers[1].load_state_dict(state["outer_optimizer"])
        self.outer_batch = state["outer_batch"]
        self.outer_loader.load_state_dict(state["outer_loader"], skip_batches=self.outer_batch)
        self._outer_iter = None
