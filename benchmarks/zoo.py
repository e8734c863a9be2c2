"""convolab's models against torchvision's same models: latency, throughput, parameters, MACs, in one run.

For every convolab model whose name torchvision also has (the classifiers, and the segmentation
``fcn_resnet50`` and video ``r3d_18``), both models are built with the same weights (torchvision's
state dict loaded into convolab's with strict=True), put in eval mode, and timed alternately in this
one process: forward latency at batch 1 (median of repeats) and throughput at batch 64 (samples per
second). Images are ``--size`` square, clips ``--clip`` (T x H x W). MACs come from
``torch.utils.flop_counter`` (FLOPs / 2) on convolab's model at batch 1.

Usage: python benchmarks/zoo.py [--models resnet18,fcn_resnet50] [--size 224] [--clip 16x112x112] [--repeats 7]
       [--batch 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchvision
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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    clip = tuple(int(v) for v in args.clip.lower().split("x"))
    torchvision_names = set(torchvision.models.list_models(module=torchvision.models)) | set(TORCHVISION_OTHERS)
    names = args.models.split(",") if args.models else [n for n in list_models() if n in torchvision_names]
    rows = []
    print(f"{'model':<20} {'params':>12} {'GMACs':>7} {'lat1 tv':>9} {'lat1 cl':>9} {'ratio':>6} "
          f"{'smp/s tv':>9} {'smp/s cl':>9} {'ratio':>6}", flush=True)
    for name in names:
        torch.manual_seed(0)
        ref, ours, sample = build_pair(name, args.size, clip)
        params = sum(p.numel() for p in ours.parameters())
        assert params == sum(p.numel() for p in ref.parameters())
        x1 = torch.randn(1, *sample)
        xb = torch.randn(args.batch, *sample)
        # Alternate the two so drifts in machine speed hit both alike.
        lat_tv, lat_cl, thr_tv, thr_cl = [], [], [], []
        for _ in range(2):
            lat_tv.append(_time(ref, x1, args.repeats))
            lat_cl.append(_time(ours, x1, args.repeats))
            thr_tv.append(args.batch / _time(ref, xb, max(1, args.repeats // 3)))
            thr_cl.append(args.batch / _time(ours, xb, max(1, args.repeats // 3)))
        row = dict(model=name, params=params, macs=macs(ours, x1), latency_tv=min(lat_tv), latency_cl=min(lat_cl),
                   throughput_tv=max(thr_tv), throughput_cl=max(thr_cl))
        row["latency_ratio"] = row["latency_cl"] / row["latency_tv"]
        row["throughput_ratio"] = row["throughput_cl"] / row["throughput_tv"]
        rows.append(row)
        print(f"{name:<20} {params:>12,} {row['macs'] / 1e9:>7.2f} {1e3 * row['latency_tv']:>7.1f}ms "
              f"{1e3 * row['latency_cl']:>7.1f}ms {row['latency_ratio']:>6.2f} {row['throughput_tv']:>9.1f} "
              f"{row['throughput_cl']:>9.1f} {row['throughput_ratio']:>6.2f}", flush=True)
    print("ratio: convolab / torchvision (latency: lower is better; throughput: higher is better)")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
