"""A network written as a spec against the same network written as an ``nn.Module``, side by side in one process.

Issue 17 asks that a spec model run at the speed of the same network hand-written as a module (within 5 %).
Both sides here are the tutorials' networks on 28x28 single-channel images, 10 classes:

* ``simple``: SimpleCNN, conv 5x5 6 -> relu -> pool -> conv 5x5 16 -> relu -> pool -> fc 120 -> 84 -> 10;
* ``lenet5``: LeNet-5, conv 5x5 6 (padding 2) -> tanh -> avg pool -> conv 5x5 16 -> tanh -> avg pool -> fc 120
  -> 84 -> 10.

The hand-written module is the textbook ``nn.Module`` with a ``forward`` that calls its layers in order; it gets
the spec model's weights (the same values, so both compute the same numbers: the losses are compared). Each
round times ``--steps`` training steps (forward, cross-entropy, backward, SGD with momentum) per side on the same
random batches, alternating which side goes first; round 0 warms both up and is left out. The ratio is of the
timed rounds' total times (CPU time of the process and wall time both printed; on a shared machine CPU time
drifts less).

Usage: python benchmarks/spec_speed.py [--net simple|lenet5|both] [--steps 200] [--batch-size 128] [--rounds 7]
           [--threads N] [--device cpu|cuda] [--check 1.05]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from convolab.models import create_model

SPECS = {
    "simple": "spec:conv(6,5),relu,maxpool(2),conv(16,5),relu,maxpool(2),flatten,fc(120),relu,fc(84),relu,fc",
    "lenet5": "spec:conv(6,5,p=2),tanh,avgpool(2),conv(16,5),tanh,avgpool(2),flatten,fc(120),tanh,fc(84),tanh,fc",
}


class HandWritten(nn.Module):
    """The network as a tutorial writes it: layers as attributes, a forward that calls them in order."""

    def __init__(self, net: str):
        super().__init__()
        self.act = F.relu if net == "simple" else torch.tanh
        self.pool = F.max_pool2d if net == "simple" else F.avg_pool2d
        self.conv1 = nn.Conv2d(1, 6, 5, padding=0 if net == "simple" else 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4 if net == "simple" else 16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)), 2)
        x = self.pool(self.act(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


def copy_weights(spec_model: nn.Module, hand: HandWritten) -> None:
    """The spec model's five weight layers, in order, into the hand-written one's."""
    ours = [m for m in spec_model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    theirs = [hand.conv1, hand.conv2, hand.fc1, hand.fc2, hand.fc3]
    with torch.no_grad():
        for a, b in zip(ours, theirs, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, batches: list, sync) -> tuple[float, float, list]:
    """(wall seconds, CPU seconds, losses) of one training step per batch."""
    losses = []
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu, [float(v) for v in losses]


def run(net: str, args) -> float:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    spec_model = create_model(SPECS[net], num_classes=10, in_chans=1, input_size=28).to(device)
    hand = HandWritten(net).to(device)
    copy_weights(spec_model, hand)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(args.batch_size, 1, 28, 28, generator=gen).to(device),
                torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)) for _ in range(args.steps)]
    sides = {"nn.Module": hand, "spec": spec_model}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in sides.items()}
    totals = {k: [0.0, 0.0] for k in sides}
    per_round = {k: [] for k in sides}
    first_losses = {}
    for r in range(args.rounds + 1):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for k in order:
            wall, cpu, losses = train_steps(sides[k], opts[k], batches, sync)
            if r == 0:
                first_losses[k] = losses
                continue
            totals[k][0] += wall
            totals[k][1] += cpu
            per_round[k].append(wall / args.steps * 1e3)
    same = max(abs(a - b) for a, b in zip(first_losses["nn.Module"], first_losses["spec"]))
    print(f"\n{net}: {sum(p.numel() for p in spec_model.parameters()):,} parameters, batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} timed rounds on {device} ({torch.get_num_threads()} threads); "
          f"round 0's losses differ by at most {same:.2e} (the same weights and batches)")
    print(f"{'':<12} {'ms/step (median round)':>24} {'wall s':>9} {'CPU s':>9}")
    for k in sides:
        print(f"{k:<12} {statistics.median(per_round[k]):>24.3f} {totals[k][0]:>9.2f} {totals[k][1]:>9.2f}")
    wall_ratio = totals["spec"][0] / totals["nn.Module"][0]
    cpu_ratio = totals["spec"][1] / totals["nn.Module"][1]
    print(f"spec / nn.Module: {wall_ratio:.3f}x wall time, {cpu_ratio:.3f}x CPU time")
    return cpu_ratio if device.type == "cpu" else wall_ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", choices=("simple", "lenet5", "both"), default="both")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--check", type=float, default=None, metavar="RATIO",
                    help="exit 1 if a spec model is slower than RATIO times the module (e.g. 1.05)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ratios = [run(net, args) for net in (("simple", "lenet5") if args.net == "both" else (args.net,))]
    if args.check is not None and max(ratios) > args.check:
        print(f"FAILED: spec / nn.Module {max(ratios):.3f} > {args.check}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
