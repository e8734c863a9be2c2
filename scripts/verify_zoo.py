"""Run ``convolab summary --verify`` over the whole model zoo and print one line per model.

Usage: python scripts/verify_zoo.py [--size 32] [--rf stages|all|none] [PATTERN]

Each line: parameters, MACs (analytic = torch.utils.flop_counter?), receptive field and effective
stride of the feature map, how many shapes / MAC counts / receptive-field extents were checked
against execution, mismatches, seconds. Exit code 1 if any model has a mismatch.
"""

from __future__ import annotations

import argparse
import sys
import time

from convolab.analysis import summarize
from convolab.models import list_models
from convolab.models._registry import get_model_entry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pattern", nargs="?")
    ap.add_argument("--size", type=int, default=32, help="input height and width (clips: 16 frames)")
    ap.add_argument("--rf", default="stages", choices=["stages", "all", "none"])
    args = ap.parse_args()
    bad = 0
    print(f"{'model':<22} {'params':>12} {'MACs':>15} {'=counter':>8} {'RF':>6} {'jump':>5} {'shapes':>6} "
          f"{'MACs':>5} {'RF ext':>6} {'bad':>4} {'s':>6}", flush=True)
    for name in list_models(args.pattern):
        clip = get_model_entry(name).input_kind == "clip"
        shape = (3, 16, args.size, args.size) if clip else (3, args.size, args.size)
        t0 = time.perf_counter()
        try:
            s = summarize(name, shape, num_classes=10, verify=True, rf_rows=args.rf)
        except Exception as e:  # noqa: BLE001 - report and go on with the next model
            bad += 1
            print(f"{name:<22} FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        v, t = s.verification, s.totals()
        bad += not v.ok
        rf = t["receptive_field"]
        print(f"{name:<22} {t['params']:>12,} {t['macs']:>15,} {str(v.analytic_macs == v.flop_counter_macs):>8} "
              f"{str(rf):>6} {str(t['effective_stride']):>5} {v.shapes_checked:>6} {v.macs_checked:>5} "
              f"{v.rf_checked:>6} {len(v.mismatches):>4} {time.perf_counter() - t0:>6.1f}", flush=True)
        for m in v.mismatches[:5]:
            print(f"    {m}", flush=True)
    print(f"{bad} model(s) with mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
