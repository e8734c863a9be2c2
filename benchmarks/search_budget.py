"""Architecture search at equal budget on Fashion-MNIST: aging evolution against random search (the baseline Li &
Talwalkar 2019 found hard to beat), over several search seeds; then the best network found, retrained from scratch
with convolab's default recipe, against ``tutorial_cnn``, which costs as many MACs or more.

* ``--part macro``: for each search seed, ``convolab search`` with ``--strategy random`` and ``--strategy
  evolution``, the same number of candidates each (``--trials``), every candidate trained ``--epochs`` on the
  training split and judged by its validation accuracy, every network capped at ``tutorial_cnn``'s MACs on 28x28
  (``--max-macs``). Prints, per strategy, the best validation accuracy (mean +- sample std over the seeds) and the
  test accuracy of the chosen network (kept beside it, never used to choose), Welch's test between the two, and
  draws the best-so-far curves (``OUT/search_budget.png``).
* ``--part retrain``: the best candidate of every search (by validation accuracy) -- the search's answer --,
  ``tutorial_cnn`` and the hand-designed zoo models of ``--zoo``, each trained from scratch with the default recipe
  (``convolab train --model ...``) for ``--retrain-seeds`` seeds with ``convolab compare``; prints each one's MACs
  and test accuracy, and Welch's test of the searched network against ``tutorial_cnn``.
* ``--part darts``: DARTS (first order, partial channels) against random search in DARTS's own cell space, at
  equal wall time: see :func:`darts_part`. On a CPU the supernet is small (4 channels, 3 cells of 3 nodes by
  default) and both sides train on 6,000 training images (``--darts-train-size``): DARTS's separable and dilated
  convolutions run far from the CPU's peak.

Every search is a normal study folder under ``OUT`` (SQLite), so a second run of this script resumes the missing
candidates only; the DARTS part starts again each time (its folders under ``OUT/darts-s*`` are replaced).
Timings are whatever the machine gave: run it on a quiet machine for figures to quote.

Usage: python benchmarks/search_budget.py [--part macro|retrain|darts|all] [--seeds 3] [--trials 30]
       [--epochs 1] [--population 10] [--sample 3] [--max-macs tutorial_cnn] [--out runs/bench-search]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from convolab.atomic import write_json
from convolab.cli.search import _max_macs
from convolab.cli.train import train_config
from convolab.experiments.nas.space import MacroSpace
from convolab.experiments.search import search_architectures
from convolab.experiments.stats import describe, welch_test


def _shape(data: str) -> tuple[tuple[int, int, int], int]:
    from convolab.data import load_dataset

    ds = load_dataset(data)
    return tuple(ds.input_size), ds.num_classes


def _fmt(values: list[float]) -> str:
    s = describe(values)
    return f"{s.mean:.4f} +- {s.std:.4f}" if s.std is not None else f"{s.mean:.4f}"


def macro_part(args, out: Path) -> dict:
    common = ["--data", args.data, "--epochs", str(args.epochs), "--quiet", "--no-plots"]
    base = train_config(common)
    shape, classes = _shape(args.data)
    cap = _max_macs(args.max_macs, shape, classes)
    space = MacroSpace(input_shape=shape, max_macs=cap, num_classes=classes)
    print(f"macro space: {args.trials} candidates per search, {args.epochs} epoch(s) each, networks of at most "
          f"{cap / 1e6:.3f} M MACs ({args.max_macs}); seeds {list(range(args.seeds))}", flush=True)
    results: dict[str, list[dict]] = {"random": [], "evolution": []}
    for seed in range(args.seeds):
        for strategy in ("random", "evolution"):
            name = f"{strategy}-s{seed}"
            t0 = time.perf_counter()
            outcome = search_architectures(name, strategy=strategy, trials=args.trials, space=space,
                                           population=args.population, sample=args.sample, seed=seed,
                                           out=out / name, common=base, pruner="none")
            seconds = time.perf_counter() - t0
            rows = sorted(outcome.candidates, key=lambda r: r["number"])
            best = outcome.best
            curve, top = [], 0.0
            for r in rows:
                top = max(top, r["value"])
                curve.append(top)
            results[strategy].append({"seed": seed, "best_val": best["value"], "best_test": best["test"],
                                      "best_macs": best["macs"], "best_spec": best["spec"], "curve": curve,
                                      "candidates": len(rows), "seconds": seconds})
            print(f"  {name}: {len(rows)} candidates in {seconds:.0f} s; best val {best['value']:.4f} "
                  f"(test {best['test']:.4f}, {best['macs'] / 1e6:.3f} M MACs) {best['spec']}", flush=True)
    print("\nbest validation accuracy after the whole budget (mean +- std over search seeds):")
    for strategy, rows in results.items():
        print(f"  {strategy:<10} val {_fmt([r['best_val'] for r in rows])}   test of the chosen "
              f"{_fmt([r['best_test'] for r in rows])}   ({args.trials} candidates each)")
    w = welch_test([r["best_val"] for r in results["evolution"]], [r["best_val"] for r in results["random"]])
    if w is not None:
        print(f"  evolution - random: {w.diff:+.4f}, Welch t = {w.t:.2f}, df = {w.df:.1f}, p = {w.p:.3f} "
              f"({'significant' if w.p < 0.05 else 'not significant'} at p < 0.05)")
    _plot(results, out / "search_budget.png")
    return {"cap_macs": cap, "trials": args.trials, "epochs": args.epochs, "results": results,
            "welch": None if w is None else {"diff": w.diff, "t": w.t, "df": w.df, "p": w.p}}


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for strategy, color in (("random", "tab:gray"), ("evolution", "tab:blue")):
        curves = [r["curve"] for r in results[strategy]]
        for c in curves:
            ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.3, lw=1)
        n = min(len(c) for c in curves)
        ax.plot(range(1, n + 1), [statistics.fmean(c[i] for c in curves) for i in range(n)], color=color, lw=2.2,
                label=f"{strategy} (mean of {len(curves)} searches)")
    ax.set_xlabel("candidates trained")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title("Architecture search at equal budget (Fashion-MNIST)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    plt.close(fig)
    print(f"plot: {path}")


def retrain_part(args, out: Path, macro: dict) -> dict:
    from convolab.analysis import summarize
    from convolab.experiments.compare import compare
    from convolab.models import create_model

    every = [r for rows in macro["results"].values() for r in rows]
    best = max(every, key=lambda r: r["best_val"])
    variants = {"tutorial_cnn": ["--model", "tutorial_cnn"], "searched": ["--model", best["best_spec"]]}
    variants.update({name: ["--model", name] for name in args.zoo.split(",") if name and name not in variants})
    shape, classes = _shape(args.data)
    macs = {name: summarize(create_model(flags[1], num_classes=classes, in_chans=shape[0], input_size=shape[1:]),
                            shape).macs for name, flags in variants.items()}
    print(f"\nretraining from scratch with the default recipe, {args.retrain_seeds} seeds each (the best network "
          f"of every search, val {best['best_val']:.4f} there: {best['best_spec']}):", flush=True)
    # six epochs written out: the recipe these runs were first measured with (the step budget gives six on
    # Fashion-MNIST too), so runs trained before the budget existed still resume
    result = compare(out / "retrain", variants, args.retrain_seeds,
                     common=["--data", args.data, "--no-plots", "--epochs", "6"],
                     metric="test_accuracy", say=print)
    print(result.table())
    values = {name: [r.value for r in result.runs if r.variant == name and r.value is not None] for name in variants}
    for name, vals in sorted(values.items(), key=lambda kv: macs[kv[0]]):
        print(f"  {name:<13} {macs[name] / 1e6:7.3f} M MACs   test accuracy {_fmt(vals)}")
    w = welch_test(values["searched"], values["tutorial_cnn"])
    if w is not None:
        print(f"  searched - tutorial_cnn: {w.diff:+.4f}, Welch p = {w.p:.3f}; MACs ratio "
              f"{macs['searched'] / macs['tutorial_cnn']:.2f}")
    return {"spec": best["best_spec"], "macs": macs, "test": values,
            "welch": None if w is None else {"diff": w.diff, "p": w.p}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("macro", "retrain", "darts", "all"), default="all")
    p.add_argument("--data", default="fashion-mnist", help="the dataset (digits for a smoke run)")
    p.add_argument("--seeds", type=int, default=3, help="search seeds per strategy")
    p.add_argument("--trials", type=int, default=30, help="candidates per search")
    p.add_argument("--epochs", type=int, default=1, help="training epochs per candidate")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--sample", type=int, default=3)
    p.add_argument("--max-macs", default="tutorial_cnn", help="the networks' MACs cap (a count or a model)")
    p.add_argument("--retrain-seeds", type=int, default=3)
    p.add_argument("--zoo", default="lenet5", help="zoo models retrained beside tutorial_cnn and the "
                   "searched network (comma-separated)")
    p.add_argument("--darts-epochs", type=int, default=2, help="DARTS search epochs")
    p.add_argument("--darts-channels", type=int, default=4, help="first width of the supernet and the cells")
    p.add_argument("--darts-layers", type=int, default=3, help="cells of the supernet and the trained cells")
    p.add_argument("--darts-nodes", type=int, default=3, help="intermediate nodes per cell")
    p.add_argument("--darts-partial", type=int, default=2, help="PC-DARTS's K")
    p.add_argument("--darts-train-size", type=int, default=6000,
                   help="training images for the DARTS search and every cell it is compared on (0: all); the "
                        "validation split is whole")
    p.add_argument("--out", default="runs/bench-search")
    args = p.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    record_path = out / "search_budget.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if args.part in ("macro", "all", "retrain"):
        if args.part != "retrain" or "macro" not in record:
            record["macro"] = macro_part(args, out)
            write_json(record_path, record)
    if args.part in ("retrain", "all"):
        record["retrain"] = retrain_part(args, out, record["macro"])
        write_json(record_path, record)
    if args.part in ("darts", "all"):
        record["darts"] = darts_part(args, out)
        write_json(record_path, record)
    print(f"figures: {record_path}")
    return 0


def darts_part(args, out: Path) -> dict:
    """DARTS against random search in DARTS's cell space, at equal wall time, for each search seed:

    1. DARTS (first order, ``--darts-partial`` partial channels, the DARTS+ skip guard) searches a supernet of
       ``--darts-layers`` cells of ``--darts-nodes`` nodes from ``--darts-channels`` channels for
       ``--darts-epochs`` epochs on the training split (architecture steps on the validation split), and its
       derived cell is trained from scratch like every candidate below (``--epochs`` epochs, the same network
       size); DARTS's cost is the search plus that training.
    2. Random search draws cells (:func:`convolab.experiments.nas.darts.random_cell`) and trains each the same
       way, starting new ones while its time is under DARTS's cost (so it may overrun by one candidate: both
       times are printed).

    Time is the process's CPU time (``time.process_time``), not the wall clock, so that other work on the machine
    does not tilt the budget; run with ``OMP_NUM_THREADS=1`` so that CPU time is compute time (spinning threads
    count too).

    The comparison is the validation accuracy of DARTS's cell against the best random cell's, mean +- std over
    the seeds; the test accuracy of each chosen cell is printed beside it, never used to choose.
    """
    import dataclasses

    from convolab.experiments.nas.darts import darts_search, random_cell, train_network

    size = dict(init_channels=args.darts_channels, layers=args.darts_layers)
    print(f"\nDARTS against random search in the cell space: supernet and candidates of {args.darts_channels} "
          f"channels x {args.darts_layers} cells of {args.darts_nodes} nodes; DARTS searches {args.darts_epochs} "
          f"epoch(s) (partial channels 1/{args.darts_partial}); every cell trained {args.epochs} epoch(s); "
          f"{args.darts_train_size or 'all'} training images", flush=True)
    rows = []
    for seed in range(args.seeds):
        flags = ["--data", args.data, "--quiet", "--no-plots", "--seed", str(seed)]
        if args.darts_train_size:
            flags += ["--train-size", str(args.darts_train_size)]
        search_cfg = dataclasses.replace(train_config([*flags, "--epochs", str(args.darts_epochs)]),
                                         out=str(out / f"darts-s{seed}" / "supernet"), model=f"darts-s{seed}",
                                         overwrite=True)
        proxy = train_config([*flags, "--epochs", str(args.epochs)])
        t0 = time.process_time()
        found = darts_search(search_cfg, order=1, partial_channels=args.darts_partial, steps=args.darts_nodes,
                             **size)
        search_s = time.process_time() - t0
        t1 = time.process_time()
        derived = train_network(found.genotype, dataclasses.replace(proxy, out=str(out / f"darts-s{seed}" / "cell"),
                                                                    model="darts_net", overwrite=True), **size)
        darts_s = search_s + time.process_time() - t1
        rng = random.Random(seed)
        spent, randoms = 0.0, []
        while spent < darts_s:
            t2 = time.process_time()
            cell = random_cell(rng, steps=args.darts_nodes)
            where = out / f"darts-s{seed}" / f"random-{len(randoms)}"
            r = train_network(cell, dataclasses.replace(proxy, out=str(where), model="darts_net", overwrite=True),
                              **size)
            spent += time.process_time() - t2
            randoms.append({"genotype": cell.to_dict(), "val": r.summary["final_val_accuracy"],
                            "test": r.summary["test_accuracy"]})
        best = max(randoms, key=lambda r: r["val"])
        row = {"seed": seed, "darts_val": derived.summary["final_val_accuracy"],
               "darts_test": derived.summary["test_accuracy"], "darts_seconds": darts_s,
               "search_seconds": search_s, "stop_reason": found.stop_reason, "genotype": found.genotype.to_dict(),
               "random_val": best["val"], "random_test": best["test"], "random_seconds": spent,
               "random_candidates": len(randoms), "random_best_genotype": best["genotype"]}
        rows.append(row)
        print(f"  seed {seed}: DARTS val {row['darts_val']:.4f} (test {row['darts_test']:.4f}) in {darts_s:.0f} CPU s "
              f"({search_s:.0f} searching{'; ' + found.stop_reason if found.stop_reason else ''}); random search: "
              f"{len(randoms)} cells in {spent:.0f} CPU s, best val {best['val']:.4f} (test {best['test']:.4f})",
              flush=True)
    print("\nat equal time (mean +- std over search seeds):")
    for name, key in (("DARTS", "darts"), ("random (cells)", "random")):
        print(f"  {name:<15} val {_fmt([r[key + '_val'] for r in rows])}   "
              f"test {_fmt([r[key + '_test'] for r in rows])}")
    w = welch_test([r["darts_val"] for r in rows], [r["random_val"] for r in rows])
    if w is not None:
        print(f"  DARTS - random: {w.diff:+.4f}, Welch p = {w.p:.3f}")
    return {"rows": rows, "size": size, "nodes": args.darts_nodes, "search_epochs": args.darts_epochs,
            "partial_channels": args.darts_partial, "welch": None if w is None else {"diff": w.diff, "p": w.p}}


if __name__ == "__main__":
    sys.exit(main())
