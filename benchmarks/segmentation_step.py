"""convolab's segmentation training step against a minimal hand-written loop, side by side in one process.

Issue 16 asks for the segmentation training step within 10 % of a minimal hand-written loop over the same
model and batches. Both sides here train the same network (``unet``, default base_channels=8, depth=3, on
``fashion-scenes``' 64x64 images, 11 classes) from the same initial weights, on the same batches in the same
order (the first ``steps * batch_size`` training images, reshuffled each round by a generator seeded alike),
with Adam at a constant rate, no augmentation, in the same precision, layout and number of threads:

* **hand-written**: per batch, index the resident uint8 images and masks, ``(x / 255 - mean) / std``,
  forward, per-pixel ``F.cross_entropy(ignore_index=255)``, ``zero_grad``, backward, ``Adam.step``.
* **convolab**: the loop's training epoch (``Trainer._train_epoch``, as ``fit()`` runs it) over the same data:
  its loader, its step rule (precision, the host-side non-finite check), the segmentation task's loss and
  device-side sums (loss, correct pixels, pixels), the learning-rate schedule and the steps.jsonl rows (built
  and read off the device each epoch). What is left out: evaluation, plots, checkpoints and file writes (the
  trainer has no run folder; its sink discards the rows), and the one-time setup of both sides.

Timing runs in rounds of ``--steps`` steps per side, the order alternating each round (drift on a shared
machine falls on both sides alike); round 0 warms both up (oneDNN's primitives, the allocator) and is printed
apart. Wall time and process CPU time (all threads) are printed per round; the ratio is that of the timed
rounds' total wall times, and of their CPU times (which drift less than wall time on a shared machine;
``--check`` compares the one ``--metric`` names). Both sides see identical batches and, with ``--optimizer fused``
(the default, the fused Adam kernel convolab's loop uses), the same arithmetic up to rounding (convolab normalises
with one multiply-add): their per-step losses are compared and printed, so the work timed is shown to be the same.

``--layout channels-last`` (the default, convolab's layout on the CPU) or ``contiguous`` applies to both sides.

Usage: python benchmarks/segmentation_step.py [--steps 40] [--batch-size 32] [--rounds 5] [--precision 32|bf16]
           [--threads N] [--device cpu|cuda] [--optimizer fused|plain] [--check [--metric wall|cpu]] [--quick]
           [--json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from convolab.train.callbacks import Callback

IGNORE_INDEX = 255  # convolab's default --ignore-index (no fashion-scenes pixel carries it)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="unet")
    ap.add_argument("--data", default="fashion-scenes")
    ap.add_argument("--base-channels", type=int, default=8, help="unet's width (the paper's is 64)")
    ap.add_argument("--depth", type=int, default=3, help="unet's number of down-sampling stages")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per side per round")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--precision", default="32", choices=("32", "bf16"), help="both sides (bf16: autocast)")
    ap.add_argument("--layout", default="channels-last", choices=("channels-last", "contiguous"),
                    help="memory layout of the model and batches, both sides (convolab's default: channels-last)")
    ap.add_argument("--optimizer", default="fused", choices=("fused", "plain"),
                    help="the hand-written loop's Adam: fused (convolab's kernel: the ratio measures the loop "
                         "alone) or plain (torch.optim.Adam's defaults, as a tutorial writes it)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="exit 1 if convolab is more than 10 %% slower")
    ap.add_argument("--tolerance", type=float, default=0.10, help="--check's allowed slow-down (0.10: 10 %%)")
    ap.add_argument("--metric", default="wall", choices=("wall", "cpu"),
                    help="what --check compares: wall time, or process CPU time (steadier on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3 steps of batch 8, 1 timed round")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.rounds = 3, 8, 1
    for name in ("steps", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    return args


class LossRecorder(Callback):
    """A convolab callback that keeps each logged step's loss (the rows steps.jsonl would get)."""

    def __init__(self):
        self.losses: list[float] = []

    def on_steps_logged(self, trainer, rows: list[dict]) -> None:
        self.losses.extend(r["loss"] for r in rows)


class HandLoop:
    """The minimal hand-written training loop over the same uint8 split, order, model and optimizer settings."""

    def __init__(self, model: torch.nn.Module, split, mean, std, args, device: torch.device,
                 memory_format: torch.memory_format):
        self.model, self.args, self.device, self.memory_format = model, args, device, memory_format
        self.images = split.images.to(device)  # (N, 1, H, W) uint8, resident
        self.masks = split.labels.to(device)  # (N, H, W) uint8
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.generator = torch.Generator().manual_seed(args.seed)  # the convolab loader's order, drawn alike
        fused = {"fused": True} if args.optimizer == "fused" else {}
        self.optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, **fused)
        self.autocast = args.precision == "bf16"
        self.losses: list[float] = []

    def epoch(self) -> None:
        model, b = self.model, self.args.batch_size
        model.train()
        order = torch.randperm(len(self.images), generator=self.generator).to(self.device)
        losses = []
        for idx in order.split(b):
            x = (self.images[idx].float() / 255 - self.mean) / self.std  # (B, 1, H, W) float32
            x = x.contiguous(memory_format=self.memory_format)
            y = self.masks[idx].long()  # (B, H, W)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = model(x)  # (B, K, H, W)
                loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach())
        self.losses.extend(torch.stack(losses).tolist())  # one read per epoch, as the loop does


def build(args):
    """The two sides, set up (untimed): (hand loop, convolab trainer, loss recorder, the subset's description)."""
    import convolab
    from convolab.data.dataset import Split
    from convolab.train.config import TrainConfig
    from convolab.train.loop import Trainer
    from convolab.train.tasks.segmentation import Segmentation

    device = torch.device(args.device)
    data = convolab.load_dataset(args.data)
    if data.task != "segmentation":
        sys.exit(f"--data {args.data} is a {data.task} dataset; this benchmark needs segmentation data")
    n = args.steps * args.batch_size
    if n > len(data.train):
        sys.exit(f"--steps {args.steps} x --batch-size {args.batch_size} = {n} images, but {args.data}'s training "
                 f"split has {len(data.train)}")
    empty = Split(data.train.images[:0], data.train.labels[:0])
    # One epoch = exactly --steps batches: the first n training images (the test split is left empty: nothing
    # is evaluated, and nothing is held out of the subset).
    subset = dataclasses.replace(data, train=Split(data.train.images[:n], data.train.labels[:n]), val=empty,
                                 test=empty)
    torch.manual_seed(args.seed)
    model = convolab.create_model(args.model, num_classes=data.num_classes, in_chans=data.in_chans,
                                  input_size=data.image_size, base_channels=args.base_channels, depth=args.depth)
    channels_last = args.layout == "channels-last"
    config = TrainConfig(model=args.model, data=args.data, epochs=args.rounds + 1, batch_size=args.batch_size,
                         lr=args.lr, optimizer="adam", schedule="constant", label_smoothing=0.0, augment="none",
                         weight_decay=0.0, precision=args.precision, device=args.device, seed=args.seed,
                         channels_last=channels_last, checkpoints=False, plots=False, progress=False,
                         ignore_index=IGNORE_INDEX, val_fraction=0.0,
                         model_kwargs={"base_channels": args.base_channels, "depth": args.depth})
    recorder = LossRecorder()
    # task= is given: Trainer infers it from model.input_kind, which registry models do not carry (it would
    # pick classification for a built unet)
    trainer = Trainer(config, model=copy.deepcopy(model), data=subset, task=Segmentation, callbacks=[recorder])
    trainer._setup()  # no run folder: the sink is the null one (nothing written)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    hand_model = model.to(device, memory_format=fmt)
    hand = HandLoop(hand_model, subset.train, data.mean, data.std, args, device, fmt)
    return hand, trainer, recorder, data, hand_model


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds over all threads) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hand, trainer, recorder, data, model = build(args)
    params = sum(p.numel() for p in model.parameters())
    images = args.steps * args.batch_size
    print(f"{args.model} (base_channels={args.base_channels}, depth={args.depth}, {params:,} parameters) on "
          f"{args.data} {data.image_size[0]}x{data.image_size[1]}, {args.steps} steps of batch {args.batch_size} "
          f"per side per round, Adam lr {args.lr} ({args.optimizer} on the hand-written side, fused in convolab), "
          f"precision {args.precision}, {args.layout}, {torch.get_num_threads()} threads on {device}", flush=True)

    def convolab_epoch(epoch: int):
        def run():
            trainer.batch = 0  # as fit() does between epochs
            trainer._train_epoch(epoch)
            trainer.epoch = epoch + 1
        return run

    rows = []
    for r in range(args.rounds + 1):
        sides = [("hand", hand.epoch), ("convolab", convolab_epoch(r + 1))]
        if r % 2:
            sides.reverse()
        got = {}
        for name, fn in sides:
            got[name] = timed(fn, device)
        h = hand.losses[-args.steps:]
        c = recorder.losses[-args.steps:]
        diff = max(abs(a - b) for a, b in zip(h, c))
        rows.append(dict(round=r, hand_seconds=got["hand"][0], convolab_seconds=got["convolab"][0],
                         hand_cpu=got["hand"][1], convolab_cpu=got["convolab"][1], hand_loss=statistics.mean(h),
                         convolab_loss=statistics.mean(c), max_loss_diff=diff))
        row = rows[-1]
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: hand-written {images / row['hand_seconds']:.1f} images/s "
              f"({row['hand_seconds']:.2f} s wall, {row['hand_cpu']:.2f} s CPU), convolab "
              f"{images / row['convolab_seconds']:.1f} images/s ({row['convolab_seconds']:.2f} s wall, "
              f"{row['convolab_cpu']:.2f} s CPU); mean loss {row['hand_loss']:.4f} vs {row['convolab_loss']:.4f}, "
              f"largest per-step difference {diff:.2e}", flush=True)
    timed_rows = rows[1:]
    hand_s = sum(r["hand_seconds"] for r in timed_rows)
    cl_s = sum(r["convolab_seconds"] for r in timed_rows)
    hand_cpu = sum(r["hand_cpu"] for r in timed_rows)
    cl_cpu = sum(r["convolab_cpu"] for r in timed_rows)
    total = images * len(timed_rows)
    slowdown = (cl_s / hand_s if args.metric == "wall" else cl_cpu / hand_cpu) - 1
    print()
    print(f"{'':<14}{'images/s':>10}{'wall s':>9}{'CPU s':>9}")
    print(f"{'hand-written':<14}{total / hand_s:>10.1f}{hand_s:>9.2f}{hand_cpu:>9.2f}")
    print(f"{'convolab':<14}{total / cl_s:>10.1f}{cl_s:>9.2f}{cl_cpu:>9.2f}")
    print(f"convolab / hand-written time: {cl_s / hand_s:.3f} wall ({100 * (cl_s / hand_s - 1):+.1f} %), "
          f"{cl_cpu / hand_cpu:.3f} CPU ({100 * (cl_cpu / hand_cpu - 1):+.1f} %); per-step losses agree to "
          f"{max(r['max_loss_diff'] for r in rows):.2e}")
    if args.json:
        print(json.dumps({"args": vars(args), "rounds": rows, "hand_images_per_second": total / hand_s,
                          "convolab_images_per_second": total / cl_s, "time_ratio": cl_s / hand_s,
                          "cpu_ratio": cl_cpu / hand_cpu}))
    if args.check and slowdown > args.tolerance:
        print(f"--check: convolab's step takes {100 * slowdown:.1f} % more {args.metric} time than the hand-written "
              f"loop (allowed: {100 * args.tolerance:.0f} %)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
