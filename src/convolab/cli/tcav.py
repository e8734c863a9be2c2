"""``convolab tcav``: does a concept (a folder of images) drive a class? With a significance test."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, float_arg, positive_int, print_json

HELP = "TCAV: does a concept (a folder of images) drive a class? with a significance test"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.explain.tcav import MIN_CONCEPT_IMAGES, MIN_RANDOM_SETS

    p = sub.add_parser(
        "tcav", help=HELP, formatter_class=HelpFormatter,
        description="Testing with Concept Activation Vectors (Kim et al. 2018): a linear classifier separates the "
                    "layer's activations for concept images from those for each random folder; the TCAV score is "
                    "the share of the target class's inputs whose class logit grows along that direction. A "
                    "two-sided t-test compares the concept's scores with random-vs-random scores (Bonferroni over "
                    f"concepts x layers). Folders need at least {MIN_CONCEPT_IMAGES} images; images of any size/"
                    "mode are preprocessed like the training data.",
        epilog="example: convolab tcav runs/demo --concept concepts/stripes --random random/0 --random random/1 "
               "--random random/2 --layer features.relu2 --target Shirt")
    p.add_argument("run", help="run directory")
    p.add_argument("--concept", action="append", required=True, metavar="DIR",
                   help="folder of concept images (repeat for several concepts)")
    p.add_argument("--random", action="append", required=True, metavar="DIR",
                   help=f"folder of random images (repeat; at least {MIN_RANDOM_SETS})")
    p.add_argument("--layer", action="append", metavar="NAME",
                   help="layer to test (repeat for several; default: the last feature stage)")
    p.add_argument("--target", required=True, metavar="CLASS", help="class by name or index")
    p.add_argument("--inputs", metavar="DIR",
                   help="images of the target class to score (default: its test images in the run's dataset)")
    p.add_argument("--max-inputs", type=positive_int, default=200, help="at most this many inputs (a seeded sample)")
    p.add_argument("--alpha", type=float_arg(lambda v: 0 < v < 1, "in (0, 1)"), default=0.05,
                   help="significance level before the Bonferroni correction")
    p.add_argument("--seed", type=int, default=0, help="seed of the linear classifiers and the input sample")
    p.add_argument("--json", action="store_true", help="print the scores, p-values and CAV accuracies as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the test and print each concept and layer's score, its random baseline and the verdict."""
    from convolab.explain.tcav import tcav_run
    from convolab.runs import load_run
    from convolab.runs.quantized import refuse_graph

    run = load_run(args.run)
    refuse_graph(run, "tcav")
    result = tcav_run(run, args.concept, args.random, args.target, args.layer, inputs=args.inputs,
                      max_inputs=args.max_inputs, alpha=args.alpha, seed=args.seed, progress=not args.quiet)
    if args.json:
        print_json({"run": str(run.path), **result.to_dict()})
        return 0
    tests = len(result.scores)
    print(f"TCAV for class {result.target_name!r}: {result.n_inputs} inputs, {len(result.random_sets)} random folders, "
          f"significance level {result.alpha:g}" + (f" / {tests} tests = {result.alpha_corrected:.3g} (Bonferroni)"
                                                    if tests > 1 else ""))
    w = max(len("concept"), *(len(s.concept) for s in result.scores))
    lw = max(len("layer"), *(len(s.layer) for s in result.scores))
    print(f"  {'concept':<{w}}  {'layer':<{lw}}  {'score':>11}  {'random':>11}  {'p-value':>8}  {'CAV acc':>7}")
    for s in result.scores:
        accuracy = sum(s.cav_accuracies) / len(s.cav_accuracies)
        verdict = "significant" if s.significant else "not significant"
        if not s.separable:
            verdict += (f" (but the layer tells this concept from random images no better than random folders "
                        f"from each other: CAV accuracy {accuracy:.2f} vs {s.random_mean_accuracy:.2f}; likely "
                        "spurious)")
        print(f"  {s.concept:<{w}}  {s.layer:<{lw}}  {s.mean:.2f} ± {s.std:.2f}  {s.random_mean:.2f} ± "
              f"{s.random_std:.2f}  {s.p_value:8.2g}  {accuracy:7.2f}  {verdict}")
    return 0
