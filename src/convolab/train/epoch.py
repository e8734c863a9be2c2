"""One training epoch: batches -> optimizer steps (through the step rule), the epoch's figures kept on the device,
steps.jsonl rows, non-finite steps, mid-epoch checkpoints and progress."""

from __future__ import annotations

import logging
import math
import sys
import time

import torch
from tqdm.auto import tqdm

from convolab.train.callbacks import Checkpointing
from convolab.train.distributed import all_reduce_sum

__all__ = ["EpochRunner"]

log = logging.getLogger(__name__)


class EpochRunner:
    """Runs epoch ``epoch`` of ``trainer`` (a :class:`convolab.train.loop.Trainer`); returns (train loss, train
    accuracy) over every process's share."""

    def __init__(self, trainer):
        self.t = trainer
        self.saver = trainer.callbacks.find(Checkpointing)

    # -- the epoch's sums, on the device ------------------------------------------------------------------
    def _zeros(self) -> dict[str, torch.Tensor]:
        t = self.t
        return {"loss_sum": torch.zeros((), device=t.device),
                **{k: torch.zeros((), device=t.device, dtype=d) for k, d in t.task.stat_dtypes().items()}}

    def _totals(self) -> dict[str, torch.Tensor]:
        graph = self.t.step.step_graph
        if graph is None:
            return self.sums
        return {k: v + self.t.step.graph_sums[k] for k, v in self.sums.items()}

    def _group_sizes(self) -> list[int]:
        """Samples in each optimizer step's group of ``accum_steps`` micro-batches, for one epoch."""
        sizes, a = self.t.train_loader.batch_sizes(), self.t.config.accum_steps
        return [sum(sizes[i:i + a]) for i in range(0, len(sizes), a)]

    def run(self, epoch: int) -> tuple[float, float]:
        t, cfg, step = self.t, self.t.config, self.t.step
        loader = t.train_loader
        group_sizes = self._group_sizes()
        t.model.train()
        saved, t.epoch_sums = t.epoch_sums, None
        # Epoch sums stay on the device (no host sync per step); a resumed epoch starts from its saved sums.
        self.sums = self._zeros()
        if saved:
            for k in self.sums:
                self.sums[k] += saved[k].to(t.device)
        seen = saved["seen"] if saved else 0
        seconds = saved["seconds"] if saved else 0.0
        # The step in progress: its weighted loss (the value optimised), and its share of the epoch sums, added
        # only if the step is taken.
        step_loss = torch.zeros((), device=t.device)
        step_stats = self._zeros()
        step_seen = 0
        step_rows: list[dict] = []  # steps.jsonl rows not yet written (losses stay on the device until then)
        # With the deferred check: the steps whose finiteness is still on the device, (row, flag, samples)
        pending: list[tuple[dict, torch.Tensor, int]] = []
        bar = tqdm(total=len(loader), initial=t.batch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   unit="batch", disable=None if cfg.progress and t.dist.is_main else True, file=sys.stderr,
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        first_batch = t.batch  # (a resumed epoch starts mid-way)
        next_note = t0 + t.PROGRESS_EVERY  # without a progress bar: a log line at least this often
        if cfg.cuda_graphs and step.graphed is None and step.step_graph is None:
            t._capture_graphs()
        graph = step.step_graph
        if graph is not None:  # the recorded steps add to their own sums on the device
            for v in step.graph_sums.values():
                v.zero_()

        step.zero_grad()
        for batch, (x, y) in enumerate(loader, start=t.batch):
            step_ends = (batch + 1) % cfg.accum_steps == 0 or batch + 1 == len(loader)
            recorded = graph is not None and len(y) == len(step.graph_inputs[1])
            if batch % cfg.accum_steps == 0:
                step.before_step(batch)
            if recorded:  # --cuda-graphs: the whole step in one launch (see StandardStep.graph_step)
                step.graph_inputs[0].copy_(x), step.graph_inputs[1].copy_(y)
                graph_loss, graph_ok = graph.replay()
                row = {"step": t.global_step + 1, "epoch": epoch, "lr": t.lr_now, "loss": graph_loss.clone()}
                pending.append((row, graph_ok.clone(), len(y)))
            else:
                share = 1.0 if cfg.accum_steps == 1 else len(y) / group_sizes[batch // cfg.accum_steps]
                stats, weighted, n = step.micro_batch(x, y, share, sync=step_ends)
                with torch.no_grad():
                    for k, v in stats.items():
                        step_stats[k] += v
                    step_loss += weighted
                step_seen += n
            if step_ends:
                if not recorded:
                    row = {"step": t.global_step + 1, "epoch": epoch, "lr": t.lr_now, "loss": step_loss.clone()}
                    if t.deferred_nan_check:
                        ok = step.take_deferred(step_loss, row)
                        for k, v in step_stats.items():
                            self.sums[k] += torch.where(ok, v, 0)
                        pending.append((row, ok, step_seen))
                    elif step.take(step_loss, row):
                        t.callbacks.call("on_optimizer_step", t)
                        for k, v in step_stats.items():
                            self.sums[k] += v
                        seen += step_seen
                        t.nan_streak = 0
                    else:
                        self._nonfinite_step(row, epoch, step_rows)
                    step_loss.zero_()
                    for v in step_stats.values():
                        v.zero_()
                step.zero_grad()
                step_seen = 0
                step_rows.append(row)
                t.global_step += 1
                t.batch = batch + 1
                if t.global_step < t.schedule.total_steps:
                    t.set_lr(t.schedule(t.global_step))
                checkpoint_now = self.saver is not None and self.saver.due(t.global_step)
                if pending and (checkpoint_now or len(pending) >= t.NAN_CHECK_EVERY):
                    seen += self._resolve_deferred(pending, epoch, step_rows)
                    pending = []
                if checkpoint_now:
                    self._write_steps(step_rows)
                    step_rows = []
                    so_far = self._totals()
                    self.saver.save(t, {**{k: v.cpu() for k, v in so_far.items()}, "seen": seen,
                                        "seconds": seconds + time.perf_counter() - t0})
            if not bar.disable:
                bar.update()
                # Deferred check: right after each read of the flags, when the sums and seen agree.
                if (not pending if t.deferred_nan_check else (batch + 1) % 25 == 0 or batch + 1 == len(loader)):
                    loss, acc = t.task.train_figures({k: float(v) for k, v in self._totals().items()}, max(seen, 1))
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", refresh=False)
            # No bar (no terminal, or --quiet: then logging shows warnings only): a line with the step, the running
            # loss and the time left. Under the deferred check, only when the sums and seen agree.
            elif t.dist.is_main and time.perf_counter() >= next_note and not pending:
                now = time.perf_counter()
                next_note = now + t.PROGRESS_EVERY
                loss, acc = t.task.train_figures({k: float(v) for k, v in self._totals().items()}, max(seen, 1))
                left = (len(loader) - batch - 1) + (cfg.epochs - epoch) * len(loader)  # batches, this run
                eta = (now - t0) / (batch + 1 - first_batch) * left
                log.info("epoch %d/%d  batch %d/%d  step %d/%d  loss %.4f  acc %.4f  ETA %s (training)", epoch,
                         cfg.epochs, batch + 1, len(loader), t.global_step, t.schedule.total_steps, loss, acc,
                         time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 else f"{eta / 3600:.0f} h")
        bar.close()
        if pending:
            seen += self._resolve_deferred(pending, epoch, step_rows)
        self._write_steps(step_rows)
        t.train_seconds += seconds + time.perf_counter() - t0
        totals = self._totals()
        if t.dist.enabled and t.pipeline is None:  # the epoch's figures over every process's share (pipeline
            # stages: every process counted the same batches, the last stage's outputs broadcast)
            seen_t = torch.tensor(seen, device=t.device)
            all_reduce_sum(*totals.values(), seen_t)
            seen = int(seen_t)
        if seen == 0:
            raise FloatingPointError(f"training diverged in epoch {epoch}: every step had a non-finite loss; "
                                     "try a lower --lr")
        return t.task.train_figures({k: float(v) if v.is_floating_point() else int(v) for k, v in totals.items()},
                                    seen)

    # -- non-finite steps -------------------------------------------------------------------------------
    def _resolve_deferred(self, pending: list[tuple[dict, torch.Tensor, int]], epoch: int,
                          step_rows: list[dict]) -> int:
        """Read the deferred flags (one transfer), mark and count the skipped steps, stop as --on-nan says (at the
        step where the streak reached its limit); returns the samples of the steps taken."""
        t = self.t
        flags = torch.stack([ok for _, ok, _ in pending]).tolist()
        taken = 0
        for (row, _, samples), ok in zip(pending, flags):
            if ok:
                taken += samples
                t.nan_streak = 0
            else:
                row.pop("grad_norm", None)  # a skipped step's rows say nothing of its gradients, as without deferral
                self._nonfinite_step(row, epoch, step_rows, recorded=True)
        return taken

    def _nonfinite_step(self, row: dict, epoch: int, step_rows: list[dict], recorded: bool = False) -> None:
        """A step whose loss is NaN or inf: skip it (no update), count it, and stop when --on-nan says so.
        ``recorded``: the row is in ``step_rows`` already (a deferred check), and rows after it are dropped when
        the run stops."""
        t, cfg = self.t, self.t.config
        t.nan_streak += 1
        t.skipped_steps += 1
        row["skipped"] = True
        loss = float(row["loss"])
        if cfg.on_nan == "stop" and t.nan_streak >= cfg.nan_patience:
            if recorded:
                del step_rows[next(i for i, r in enumerate(step_rows) if r is row) + 1:]
            else:
                step_rows.append(row)
            self._write_steps(step_rows)
            step_rows.clear()
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (loss is {loss} at step {row['step']}, "
                f"{t.nan_streak} non-finite step(s) in a row); try a lower --lr")
        log.info("step %d: non-finite loss (%s); step skipped", row["step"], loss)

    def _write_steps(self, rows: list[dict]) -> None:
        """Append the per-step rows to steps.jsonl: the device values are read in one transfer."""
        t = self.t
        if not rows:
            return
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, torch.Tensor)})
        nan = torch.tensor(float("nan"), device=t.device)
        values = torch.stack([torch.stack([r.get(k, nan).float() for k in keys]) for r in rows])  # (steps, keys)
        if t.dist.enabled and t.pipeline is None:  # each process's loss is that of its share: log their mean
            losses = values[:, keys.index("loss")].contiguous()
            all_reduce_sum(losses)
            values[:, keys.index("loss")] = losses / t.dist.world_size
        if not t.dist.is_main:  # (pipeline stages: every process has the broadcast loss already)
            return
        values = values.tolist()
        for r, vals in zip(rows, values):
            r.update((k, v if math.isfinite(v) else None) for k, v in zip(keys, vals) if k in r)
            if r.get("scale") is not None:  # fp16: a lower scale than the step before means an overflow, skipped
                if t._last_scale is not None and r["scale"] < t._last_scale:
                    r["overflow"] = True
                    t.overflow_steps += 1
                t._last_scale = r["scale"]
        t.run.append_steps(rows)
        t.callbacks.call("on_steps_logged", t, rows)
