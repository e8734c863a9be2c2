"""``convolab summary``: per-layer shapes, parameters, MACs, memory and receptive fields."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, positive_int, print_json, refuse_unused

HELP = "per-layer shapes, parameters, MACs, memory and receptive fields"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.analysis.summary import STACK_HELP

    p = sub.add_parser(
        "summary", help=HELP, formatter_class=HelpFormatter,
        description="Trace one forward pass and print every layer's output shape, parameters, MACs and receptive "
                    "field (size, effective stride, centre of the first unit), with totals: parameters, MACs "
                    "(FLOPs = 2 x MACs), peak activation memory at batch 1 and the feature map's receptive field. "
                    "Several models print side by side. --verify checks every figure against execution.",
        epilog="examples:\n  convolab summary resnet50 --input 3,224,224\n"
               "  convolab summary conv5 conv3,conv3 --input 64,32,32   # one 5x5 against two 3x3\n"
               "  convolab summary runs/demo --verify\n  convolab summary vgg16 --depth 1 --json")
    p.add_argument("models", nargs="+", metavar="MODEL_OR_RUN",
                   help=f"a model name (convolab models), a run directory, or {STACK_HELP}")
    p.add_argument("--input", metavar="C,H,W", help="input shape without the batch (C,T,H,W for clips); default: "
                                                   "the input the model is made for (as `convolab models` counts "
                                                   "it, e.g. 1,28,28 for tutorial_cnn), or the size a run was "
                                                   "trained on")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="classifier size for models built by name (default: the model's own, as `convolab models` "
                        "counts it)")
    p.add_argument("--depth", type=positive_int, metavar="N", help="fold layers deeper than N into their parent")
    p.add_argument("--json", action="store_true",
                   help='print {"layers": [...], "totals": {...}} (a list of them for several models)')
    p.add_argument("--verify", action="store_true",
                   help="check shapes against a real forward, MACs against torch.utils.flop_counter and receptive "
                        "fields against gradient impulses; exit code 1 on any mismatch")
    p.add_argument("--verify-all", action="store_true",
                   help="with --verify: measure the receptive field of every layer, not only each stage's last")
    p.add_argument("--hardware", action="store_true",
                   help="also each conv/linear layer as a matrix product (M x K) @ (K x N): its cycles and utilisation "
                        "on a systolic array (SCALE-Sim's model) and its roofline bound on this CPU (measured)")
    p.add_argument("--array", metavar="RxC", default="16x16", help="with --hardware: the array's rows x columns")
    p.add_argument("--dataflow", choices=("ws", "os"), default="ws",
                   help="with --hardware: weight- or output-stationary")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the summaries (side by side for several); exit code 1 when --verify finds a mismatch."""
    from convolab.analysis import format_side_by_side, parse_input, summarize
    from convolab.analysis.summary import looks_like_run
    from convolab.runs import load_run
    from convolab.runs.quantized import refuse_graph

    refuse_unused(args, {"verify_all": "verify", "array": "hardware", "dataflow": "hardware"})
    hardware = _hardware(args) if args.hardware else None
    input_shape = parse_input(args.input) if args.input else None
    summaries = []
    for target in args.models:
        # analysis sits below the run format: a run directory or weights file is loaded here and passed as a run
        model = load_run(target) if looks_like_run(target) else target
        if looks_like_run(target):
            refuse_graph(model, "summary")
        summaries.append(summarize(model, input_shape, num_classes=args.num_classes, verify=args.verify,
                                   rf_rows="all" if args.verify_all else "stages"))
    if args.json:
        docs = [s.to_dict(depth=args.depth) for s in summaries]
        for doc, s in zip(docs, summaries):
            if hardware:
                doc["hardware"] = hardware(s, as_json=True)
        print_json(docs[0] if len(docs) == 1 else docs)
    elif len(summaries) == 1:
        print(summaries[0].format(depth=args.depth))
        if hardware:
            print("\n" + hardware(summaries[0]))
    else:
        for s in summaries:
            print(s.format(depth=args.depth))
            if hardware:
                print("\n" + hardware(s))
            print()
        print(format_side_by_side(summaries))
    return 1 if any(s.verification is not None and not s.verification.ok for s in summaries) else 0


def _hardware(args: argparse.Namespace):
    """A function of a summary giving its --hardware table (or dict); the machine is measured once."""
    from convolab.analysis import systolic

    rows, cols = systolic.parse_array(args.array)
    machine = systolic.measure_machine()

    def report(summary, as_json: bool = False):
        shapes, skipped = systolic.layer_matmuls(summary)
        layers = systolic.hardware_rows(shapes, rows, cols, args.dataflow, machine)
        if as_json:
            return {"array": [rows, cols], "dataflow": args.dataflow, "peak_flops": machine.peak_flops,
                    "bandwidth": machine.bandwidth, "layers": [h.to_dict() for h in layers], "skipped": skipped}
        return systolic.format_hardware(layers, rows, cols, args.dataflow, machine, skipped)

    return report
