"""``convolab search NAME --strategy evolution|random|darts [-- COMMON TRAIN FLAGS]``: architecture search.

random and evolution search the macro space (:mod:`convolab.experiments.nas.space`) as an Optuna study
(:mod:`convolab.experiments.search`): every candidate a run directory, any number of workers sharing one study
through ``--storage``. darts trains a supernet of DARTS cells with architecture weights in one process
(:mod:`convolab.experiments.nas.darts`) and derives a cell."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from convolab.cli._common import HelpFormatter, TrainFlagsParser, positive_int, print_json
from convolab.cli.sweep import _common_config

HELP = "search architectures: random search, aging evolution (many workers, one study) or DARTS"

_EPILOG = """examples:
  convolab search macro --strategy evolution --trials 30 -- --data fashion-mnist --epochs 2
  convolab search macro-random --strategy random --trials 30 -- --data fashion-mnist --epochs 2
  convolab search cell --strategy darts --order 2 --partial-channels 4 -- --data fashion-mnist --epochs 10
The found network of random/evolution is a spec: `convolab train --model 'spec:...'` retrains it from scratch.
A candidate's value is its last epoch's validation accuracy; the test figure is kept beside it, never used to choose.
More workers (here or on other machines) join the same study: the same NAME and --storage URL."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("search", help=HELP, formatter_class=HelpFormatter,
                       description=HELP[0].upper() + HELP[1:] + ".", epilog=_EPILOG,
                       usage="%(prog)s NAME [--strategy evolution|random|darts] [options] [-- COMMON TRAIN FLAGS]")
    p.__class__ = TrainFlagsParser  # (everything after -- is the common training flags)
    p.add_argument("name", metavar="NAME", help="the search's name (workers with the same NAME and --storage join it)")
    p.add_argument("--strategy", choices=("evolution", "random", "darts"), default="evolution",
                   help="aging evolution (Real et al. 2019), random search (the baseline), or DARTS")
    g = p.add_argument_group("random and evolution (the macro space)")
    g.add_argument("--trials", type=positive_int, default=20, help="candidates in all (over every worker)")
    g.add_argument("--stages", type=positive_int, default=3, help="stages per network")
    g.add_argument("--population", type=positive_int, default=10, help="evolution: the population (the most "
                   "recent finished candidates; the older have died)")
    g.add_argument("--sample", type=positive_int, default=3, help="evolution: candidates drawn per tournament")
    g.add_argument("--seed", type=int, default=0, help="the search's seed (each candidate's draws: seed and number)")
    g.add_argument("--max-macs", metavar="N|MODEL", help="only networks of at most N multiply-accumulates per image "
                   "(1.2M, 5e5, 800k), or of at most MODEL's on this data (e.g. tutorial_cnn): search at the cost of "
                   "a hand-designed network")
    g.add_argument("--pruner", choices=("median", "none"), default="median",
                   help="stop a candidate below the median of the earlier ones at the same epoch")
    g.add_argument("--storage", metavar="URL",
                   help="the study's database (default: sqlite:///OUT/study.db); PostgreSQL for many machines")
    g.add_argument("--heartbeat", type=positive_int, default=30, metavar="SECONDS",
                   help="a running candidate's heartbeat; one silent for twice as long is failed and replaced")
    g = p.add_argument_group("darts")
    g.add_argument("--order", type=int, choices=(1, 2), default=1, help="first- or second-order architecture steps")
    g.add_argument("--partial-channels", type=positive_int, default=1, metavar="K",
                   help="PC-DARTS: 1/K of the channels through the mixed operations")
    g.add_argument("--max-skips", type=int, default=2, metavar="N",
                   help="stop once the normal cell holds N skip connections (DARTS+; 0: never)")
    g.add_argument("--init-channels", type=positive_int, default=8, metavar="C", help="the supernet's first width")
    g.add_argument("--layers", type=positive_int, default=5, metavar="N", help="cells in the supernet")
    g.add_argument("--nodes", type=positive_int, default=4, metavar="N", help="intermediate nodes per cell")
    p.add_argument("--out", metavar="DIR", help="the search's folder (default: runs/search-NAME)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
    return p


def _refuse_misplaced(args: argparse.Namespace) -> None:
    from convolab.cli._common import explicit_options

    given = explicit_options(args.argv) if hasattr(args, "argv") else set()
    macro = {"trials", "stages", "population", "sample", "seed", "pruner", "storage", "heartbeat", "max_macs"}
    darts = {"order", "partial_channels", "max_skips", "init_channels", "layers", "nodes"}
    wrong = sorted(darts & given) if args.strategy != "darts" else sorted(macro & given)
    if wrong:
        flag = "--" + wrong[0].replace("_", "-")
        owner = "darts" if wrong[0] in darts else "random and evolution"
        raise ValueError(f"{flag} applies to --strategy {owner}, not {args.strategy}")


def run(args: argparse.Namespace) -> int:
    import optuna

    _refuse_misplaced(args)
    base = _common_config(args.common)
    out = Path(args.out or f"runs/search-{args.name}")
    if args.strategy == "darts":
        return _darts(args, base, out)
    from convolab.data import load_dataset
    from convolab.experiments.nas.space import MacroSpace
    from convolab.experiments.search import pareto, search_architectures

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_dataset(base.data, data_dir=base.data_dir, val_fraction=base.val_fraction, seed=base.seed,
                        download=base.download)
    if data.task != "classification" or len(data.input_size) != 3:
        raise ValueError(f"{base.data}: architecture search here takes image classification data")
    max_macs = _max_macs(args.max_macs, tuple(data.input_size), data.num_classes) if args.max_macs else None
    space = MacroSpace(input_shape=tuple(data.input_size), num_stages=args.stages, max_macs=max_macs,
                       num_classes=data.num_classes)
    if max_macs is not None:
        print(f"searching networks of at most {max_macs / 1e6:.3f} M MACs per image ({args.max_macs})", flush=True)
    result = search_architectures(args.name, strategy=args.strategy, trials=args.trials, space=space,
                                  population=args.population, sample=args.sample, seed=args.seed,
                                  storage=args.storage, out=out, common=base, pruner=args.pruner,
                                  heartbeat=args.heartbeat)
    if args.json:
        print_json(result.to_dict())
        return 0 if result.best else 1
    c = result.sweep.counts
    print(f"search {args.name} ({args.strategy}): {sum(c.values())} candidates ({c.get('COMPLETE', 0)} complete, "
          f"{c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed)")
    if not result.best:
        print("no candidate has completed yet")
        return 1
    print("best candidates by validation accuracy (last epoch):")
    for r in result.candidates[:5]:
        test = "-" if r["test"] is None else f"{r['test']:.4f}"
        print(f"  trial {r['number']:>3}  val {r['value']:.4f}  test {test}  {r['macs'] / 1e6:7.2f} M MACs  "
              f"{r['spec']}")
    print("accuracy against MACs, the Pareto front: "
          + ", ".join(f"trial {r['number']} ({r['value']:.4f}, {r['macs'] / 1e6:.2f} M)"
                      for r in sorted(pareto(result.candidates), key=lambda r: r["macs"])))
    best = result.best
    print(f"retrain the best from scratch: convolab train --model '{best['spec']}' --data {base.data}")
    return 0


_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9}


def _max_macs(text: str, input_shape: tuple[int, ...], num_classes: int) -> int:
    """``--max-macs``: a count (``1.2M``, ``5e5``, ``800k``) or a model whose MACs on this data set the cap."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmg]?)\s*", text.lower())
    if m:
        value = int(float(m.group(1)) * _SUFFIX.get(m.group(2), 1))
        if value < 1:
            raise ValueError(f"--max-macs must be at least 1; got {text!r}")
        return value
    from convolab.analysis import summarize
    from convolab.models import create_model, list_models
    from convolab.models.spec import is_spec

    if not is_spec(text) and text not in list_models():
        raise ValueError(f"--max-macs takes a count (1.2M, 5e5, 800k) or a model name (see `convolab models`); "
                         f"got {text!r}")
    model = create_model(text, num_classes=num_classes, in_chans=input_shape[0], input_size=tuple(input_shape[1:]))
    return int(summarize(model, tuple(input_shape)).macs)


def _darts(args: argparse.Namespace, base, out: Path) -> int:
    import dataclasses

    from convolab.experiments.nas.darts import darts_search

    config = dataclasses.replace(base, out=str(out), model=f"darts-{args.name}")
    result = darts_search(config, order=args.order, partial_channels=args.partial_channels,
                          max_skips=args.max_skips or None, init_channels=args.init_channels, layers=args.layers,
                          steps=args.nodes)
    info = {"genotype": result.genotype.to_dict(), "stop_reason": result.stop_reason,
            "run_dir": str(result.run_dir) if result.run_dir else None, "per_epoch": result.genotypes,
            "retrain": shlex.join(["convolab", "train", "--model", "darts_net", "--model-arg",
                                   f"genotype={Path(result.run_dir or out) / 'genotype.json'}", "--data",
                                   str(base.data)])}
    if args.json:
        print_json(info)
        return 0
    print(f"DARTS ({'second' if args.order == 2 else 'first'} order, partial channels 1/{args.partial_channels}): "
          f"the derived cell {result.genotype.to_dict()}")
    if result.stop_reason:
        print(f"stopped early: {result.stop_reason}")
    print(f"written: {out}/genotype.json (the supernet's run folder)")
    print("retrain the cell from scratch: " + info["retrain"])
    return 0
