"""``convolab eval``: recompute a run's metrics from its saved weights, through the run's task (classification:
accuracy, loss and expected calibration error (with --mc-samples also of MC-dropout predictions), with --json also
macro precision, recall and F1, top-5 accuracy and the per-class figures;
segmentation: pixel accuracy and mean IoU, per-class IoU with --json; clips: clip and video accuracy, with --json
the per-clip precision, recall, F1 and top-5 accuracy)."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, positive_int, print_json

HELP = "recompute a run's test metrics from its saved weights"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.device import DEVICE_CHOICES

    p = sub.add_parser("eval", help=HELP, formatter_class=HelpFormatter, description=HELP[0].upper() + HELP[1:] + ".",
                       epilog="example: convolab eval runs/demo")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split to evaluate")
    p.add_argument("--data", help="evaluate on this dataset instead of the run's own")
    p.add_argument("--data-dir", help="folder searched first for the dataset's files")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="evaluation batch size (default: 1000 for classification, else the run's own)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device")
    p.add_argument("--no-download", action="store_true", help="never download")
    p.add_argument("--mc-samples", type=positive_int, metavar="N",
                   help="classification: also N MC-dropout passes (N >= 2, dropout on, BatchNorm in evaluation "
                        "mode): their accuracy and expected calibration error (ece_mc) beside the plain ones")
    p.add_argument("--seed", type=int, default=0, help="with --mc-samples: seed of the dropout masks")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate the run's model on the chosen split and print its task's figures."""
    from convolab.data import DeviceLoader
    from convolab.device import resolve_device
    from convolab.explain.inputs import run_dataset
    from convolab.explain.uncertainty import ECE_BINS, check_dropout, expected_calibration_error, mc_dropout_batches
    from convolab.runs import load_run
    from convolab.train import evaluate
    from convolab.train.metrics import class_summary

    device = resolve_device(args.device)
    run = load_run(args.run, device=device)
    if not (args.data or (run.config.get("dataset") or {}).get("name")):
        raise ValueError(f"{args.run}: config.json does not say which dataset the run used; pass --data")
    if run.task != "classification":
        if args.mc_samples is not None:
            raise ValueError(f"--mc-samples is for classification runs; {args.run} is a {run.task} run")
        return _run_task(args, run)
    if args.mc_samples is not None:
        check_dropout(run.model, args.mc_samples)  # before the data loads
    data = run_dataset(run, name=args.data, data_dir=args.data_dir, download=not args.no_download)
    split = getattr(data, args.split)
    loader = DeviceLoader(split, args.batch_size or 1000, mean=run.mean, std=run.std, device=device)
    res = evaluate(run.model, loader, keep_predictions=True)
    out = {"run": str(run.path), "dataset": data.name, "split": args.split, "samples": res.n,
           "accuracy": res.accuracy, "loss": res.loss, "ece": expected_calibration_error(res.probabilities, res.labels),
           "ece_bins": ECE_BINS}
    if args.mc_samples is not None:  # the same batches again, N passes each with the dropout layers on
        mc, labels = mc_dropout_batches(run.model, loader, args.mc_samples, args.seed)
        out.update(ece_mc=expected_calibration_error(mc.probabilities, labels), mc_samples=mc.samples,
                   accuracy_mc=float((mc.probabilities.argmax(1) == labels).double().mean()),
                   mean_std_mc=float(mc.top_std.mean()))
    recorded = run.summary.get("test_accuracy") if args.split == "test" else None
    if args.json:  # summary.json's test_macro_f1 ... without the prefix (run_dataset refused other classes)
        print_json({**out, **class_summary(res, list(run.classes), prefix=""), "recorded_accuracy": recorded})
    else:
        note = f" (summary.json recorded {recorded:.4f})" if recorded is not None else ""
        print(f"{args.split} accuracy {res.accuracy:.4f}, loss {res.loss:.4f}, ECE {out['ece']:.4f} ({ECE_BINS} bins) "
              f"on {res.n:,} {data.name} images{note}")
        if args.mc_samples is not None:
            print(f"MC dropout ({out['mc_samples']} passes, seed {args.seed}): accuracy {out['accuracy_mc']:.4f}, "
                  f"ECE {out['ece_mc']:.4f}")
    return 0


def _load_task_data(args: argparse.Namespace, run, config):
    """The run's dataset with its recorded settings (frames, image size, split seed), or ``--data`` loaded alike."""
    from convolab.data import load_dataset
    from convolab.runs.recipe import load_data

    if not args.data:
        return load_data(run, config, args.data_dir)
    data = load_dataset(args.data, data_dir=args.data_dir, val_fraction=config.val_fraction, seed=config.seed,
                        download=not args.no_download, max_bytes=config.max_memory, frames=config.frames,
                        image_size=tuple(config.image_size) if config.image_size is not None else None)
    have, want = tuple(data.input_size), tuple(run.input_size)
    if have != want:
        raise ValueError(f"--data {args.data}: {'x'.join(map(str, have))} inputs, but the model was trained on "
                         f"{'x'.join(map(str, want))}")
    if list(data.classes) != list(run.classes):
        raise ValueError(f"--data {args.data}: its classes differ from the run's ({len(data.classes)} vs "
                         f"{len(run.classes)}); expected {', '.join(run.classes)}")
    return data


def _run_task(args: argparse.Namespace, run) -> int:
    """Segmentation and clip runs: the split through ``TASKS[run.task].evaluate``, as the training loop evaluated
    the test split (its batch size, memory format and --tta), so the figures are summary.json's."""
    from convolab.data.loader import memory_format
    from convolab.runs.recipe import run_config
    from convolab.train.loop import make_loader
    from convolab.train.tasks import TASKS

    if run.task not in TASKS:
        raise ValueError(f"{run.path}: config.json names task {run.task!r}; this convolab evaluates "
                         f"{', '.join(TASKS)}")
    config = run_config(run)
    data = _load_task_data(args, run, config)
    task = TASKS[run.task](config, data)
    split = getattr(data, args.split)
    channels_last = config.channels_last and run.device.type != "mps"
    run.model.to(memory_format=memory_format(channels_last, split.images.ndim))  # the kernels training used
    loader = make_loader(split, args.batch_size or config.eval_batch_size, mean=run.mean, std=run.std,
                         device=run.device, channels_last=channels_last)
    res = task.evaluate(task.eval_model(run.model, config.tta), loader)
    # summary.json's test_* figures of the task, without the prefix: accuracy, loss and the task's own
    fields = {key.removeprefix("test_"): value for key, value in
              {"test_accuracy": res.accuracy, "test_loss": res.loss, **task.summary_fields(res)}.items()}
    recorded = {key: run.summary.get(f"test_{key}") for key in fields} if args.split == "test" else None
    if args.json:
        print_json({"run": str(run.path), "task": run.task, "dataset": data.name, "split": args.split,
                    "samples": res.n, **fields, "recorded": recorded})
        return 0
    shown = [(label.removeprefix("test "), key.removeprefix("test_")) for label, key, _ in task.headline]
    shown.append(("loss", "loss"))
    figures = ", ".join(f"{label} {_fmt(fields[key])}" for label, key in shown)
    line = f"{args.split} {figures} on {res.n:,} {data.name} {task.unit}"
    if recorded and any(recorded[key] is not None for _, key in shown):
        line += " (summary.json recorded " + ", ".join(f"{label} {_fmt(recorded[key])}" for label, key in shown) + ")"
    print(line)
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
