"""convolab's models against torchvision's same models: latency, throughput, parameters, MACs, in one run.

For every convolab model whose name torchvision also has (the classifiers, and the segmentation
``fcn_resnet50`` and video ``r3d_18``), both models are built with the same weights (torchvision's
state dict loaded into convolab's with strict=True), put in eval mode, and timed alternately in this
one process: forward latency at batch 1 (median of repeats) and throughput at batch 64 (samples per
second). Images are ``--size`` square, clips ``--clip`` (T x H x W). MACs come from
``torch.utils.flop_counter`` (FLOPs / 2) on convolab's model at batch 1.

Timings on a shared machine drift by several per cent between rounds, so the script also checks the
thing that decides them: "same ops" says whether both forwards run the same aten operations on the
same shapes and strides, as many times each, whatever their order and whether written in place
(``--ops-only`` checks just that, in a minute). Where they
do, the two models cost the same and any gap in the timings is the machine's noise.

Usage: python benchmarks/zoo.py [--models resnet18,fcn_resnet50] [--size 224] [--clip 16x112x112] [--repeats 7]
       [--batch 64] [--rounds 2] [--ops-only] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter

import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from convolab.models import create_model, get_model_entry, list_models

# torchvision builds GoogLeNet with its auxiliary heads by default; convolab's default has none.
TORCHVISION_KWARGS = {"googlenet": dict(aux_logits=False, init_weights=True)}
# The models outside torchvision.models' classification namespace: builder and arguments (the class
# counts of their reference weights; no auxiliary FCN head, as convolab's default).
TORCHVISION_OTHERS = {
    "fcn_resnet50": (torchvision.models.segmentation.fcn_resnet50,
                     dict(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)),
    "r3d_18": (torchvision.models.video.r3d_18, dict(weights=None, num_classes=400)),
}


def build_pair(name: str, size: int, clip: tuple[int, int, int]) -> tuple[torch.nn.Module, torch.nn.Module, tuple]:
    """(torchvision's model, convolab's with its weights, the shape of one sample)."""
    if name in TORCHVISION_OTHERS:
        builder, kwargs = TORCHVISION_OTHERS[name]
        ref = builder(**kwargs)
    else:
        kwargs = dict(num_classes=1000)
        ref = torchvision.models.get_model(name, weights=None, **TORCHVISION_KWARGS.get(name, {}))
    sample = (3, *clip) if get_model_entry(name).input_kind == "clip" else (3, size, size)
    ours = create_model(name, num_classes=kwargs["num_classes"], in_chans=3, input_size=sample[1:])
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval(), sample


def _time(model, x, repeats: int) -> float:
    """Median seconds of one forward pass over ``repeats`` runs (after one warm-up)."""
    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


_COMMUTATIVE = ("aten.add.Tensor", "aten.mul.Tensor", "aten.maximum.default", "aten.minimum.default")


class OpLog(TorchDispatchMode):
    """The aten operations a forward pass runs, each with its arguments (tensors as shape and strides)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        def describe(a):
            return f"T{tuple(a.shape)}/{a.stride()}" if isinstance(a, torch.Tensor) else a

        described = tree_map(describe, (args, kwargs or {}))
        # The same work whichever way it is written: an in-place variant (add_, relu_) as its out-of-place
        # form, the operands of a commutative elementwise op in a fixed order.
        name = str(func).replace("_.", ".")
        if name in _COMMUTATIVE:
            described = (tuple(sorted(described[0], key=str)), described[1])
        self.ops.append(f"{name}{described}")
        return func(*args, **(kwargs or {}))


# Identities in eval mode: a dropout (of any rate) returns its input.
_FREE = ("aten.dropout.", "aten.feature_dropout.", "aten.alpha_dropout.")


def op_counts(model, x) -> Counter:
    """How often ``model``'s forward runs each aten operation on each argument layout (eval-mode dropouts,
    which return their input, left out)."""
    with torch.inference_mode(), OpLog() as log:
        model(x)
    return Counter(op for op in log.ops if not op.startswith(_FREE))


def same_ops(ref, ours, x) -> tuple[bool, int]:
    """Whether the two forwards run the same aten operations on the same shapes and strides, as many times
    each (the order may differ: convolab's residual blocks compute the shortcut first; ``x + y`` counts
    as ``y += x``), so their costs can differ only by noise; and how many operations that is."""
    a, b = op_counts(ref, x), op_counts(ours, x)
    return a == b, sum(b.values())


def macs(model, x) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops() // 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated names (default: every model torchvision also has)")
    ap.add_argument("--size", type=int, default=224, help="image side")
    ap.add_argument("--clip", default="16x112x112", help="clip shape T x H x W (the video models)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median)")
    ap.add_argument("--batch", type=int, default=64, help="batch size of the throughput measurement")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of measurements per model, the order of the two alternating (best of the rounds)")
    ap.add_argument("--ops-only", action="store_true",
                    help="no timing: only whether each model runs the same aten operations as torchvision's")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    clip = tuple(int(v) for v in args.clip.lower().split("x"))
    torchvision_names = set(torchvision.models.list_models(module=torchvision.models)) | set(TORCHVISION_OTHERS)
    names = args.models.split(",") if args.models else [n for n in list_models() if n in torchvision_names]
    rows = []
    if args.ops_only:
        print(f"{'model':<20} {'params':>12} {'aten ops':>9}  same operations as torchvision's", flush=True)
    else:
        print(f"{'model':<20} {'params':>12} {'GMACs':>7} {'lat1 tv':>9} {'lat1 cl':>9} {'ratio':>6} "
              f"{'smp/s tv':>9} {'smp/s cl':>9} {'ratio':>6} {'same ops':>8}", flush=True)
    for name in names:
        torch.manual_seed(0)
        ref, ours, sample = build_pair(name, args.size, clip)
        identical, n_ops = same_ops(ref, ours, torch.randn(1, *sample))
        if args.ops_only:
            params = sum(p.numel() for p in ours.parameters())
            rows.append(dict(model=name, params=params, ops=n_ops, same_ops=identical))
            print(f"{name:<20} {params:>12,} {n_ops:>9}  {'yes' if identical else 'NO'}", flush=True)
            continue
        params = sum(p.numel() for p in ours.parameters())
        assert params == sum(p.numel() for p in ref.parameters())
        x1 = torch.randn(1, *sample)
        xb = torch.randn(args.batch, *sample)
        # Alternate the two, and which goes first in each round, so drifts in machine speed and the
        # allocator's state after the other model hit both alike.
        lat = {"tv": [], "cl": []}
        thr = {"tv": [], "cl": []}
        models = {"tv": ref, "cl": ours}
        for r in range(args.rounds):
            for side in ("tv", "cl") if r % 2 == 0 else ("cl", "tv"):
                lat[side].append(_time(models[side], x1, args.repeats))
                thr[side].append(args.batch / _time(models[side], xb, max(1, args.repeats // 3)))
        lat_tv, lat_cl, thr_tv, thr_cl = lat["tv"], lat["cl"], thr["tv"], thr["cl"]
        row = dict(model=name, params=params, macs=macs(ours, x1), latency_tv=min(lat_tv), latency_cl=min(lat_cl),
                   throughput_tv=max(thr_tv), throughput_cl=max(thr_cl), ops=n_ops, same_ops=identical)
        row["latency_ratio"] = row["latency_cl"] / row["latency_tv"]
        row["throughput_ratio"] = row["throughput_cl"] / row["throughput_tv"]
        rows.append(row)
        print(f"{name:<20} {params:>12,} {row['macs'] / 1e9:>7.2f} {1e3 * row['latency_tv']:>7.1f}ms "
              f"{1e3 * row['latency_cl']:>7.1f}ms {row['latency_ratio']:>6.2f} {row['throughput_tv']:>9.1f} "
              f"{row['throughput_cl']:>9.1f} {row['throughput_ratio']:>6.2f} {'yes' if identical else 'NO':>8}",
              flush=True)
    if args.ops_only:
        print(f"{sum(r['same_ops'] for r in rows)} of {len(rows)} models run torchvision's operations exactly")
    else:
        print("ratio: convolab / torchvision (latency: lower is better; throughput: higher is better); same ops: "
              "the same aten operations on the same shapes, as many times each, at batch 1")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
