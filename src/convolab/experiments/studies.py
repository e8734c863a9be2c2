"""Built-in studies: the tutorials' claims, each as variants x seeds of ordinary training runs and a verdict.

Every study is a :func:`convolab.experiments.compare.compare` of a few variants (``convolab train`` flag sets) on
Fashion-MNIST, at least 3 seeds each, followed by a plain-language verdict that says whether the claim held *at
this budget*: a difference counts only when Welch's t-test against the other variant gives p < 0.05 (with 3 seeds
only large effects can; "not shown" is an honest answer, not a failure). ``equivariance`` measures instead of
comparing: trained networks' feature maps under shifted inputs, layer by layer
(:mod:`convolab.experiments.equivariance`).

The budgets (epochs, widths) are chosen so that each study runs in well under an hour on a 2-core CPU; the README
gives the measured tables and verdicts. ``convolab study NAME --epochs N --seeds K`` changes the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Study", "STUDIES", "get_study", "Verdict", "run_study", "pair_verdict"]

ALPHA = 0.05  # the significance level of every verdict


@dataclass(frozen=True)
class Study:
    """One claim: its variants (name -> ``convolab train`` flags), flags common to all, and how to judge."""

    name: str
    claim: str
    variants: dict[str, list[str]] | Callable[[], dict[str, list[str]]]  # (a callable: computed when run)
    common: list[str]
    epochs: int
    judge: Callable[[dict[str, list[float]], dict[str, dict]], list[str]] | None = None
    note: str = ""
    metric: str = "test_accuracy"
    kind: str = "compare"  # or "equivariance"


@dataclass
class Verdict:
    """A study's outcome: per-variant values, the verdict lines, where the runs are."""

    study: str
    claim: str
    values: dict[str, list[float]]
    extras: dict[str, dict] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    table: str = ""
    out: Path | None = None

    def to_dict(self) -> dict:
        return {"study": self.study, "claim": self.claim, "values": self.values, "extras": self.extras,
                "verdict": self.lines, "out": str(self.out) if self.out else None}


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def pair_verdict(values: dict[str, list[float]], better: str, worse: str, what: str = "test accuracy") -> str:
    """One line: does ``better`` beat ``worse`` (Welch's t-test, two-sided, p < :data:`ALPHA`)?"""
    from convolab.experiments.stats import welch_test

    a, b = values.get(better, []), values.get(worse, [])
    if len(a) < 2 or len(b) < 2:
        return f"{better} vs {worse}: too few finished runs to test ({len(a)} and {len(b)})"
    diff = 100 * (_mean(a) - _mean(b))
    w = welch_test(a, b)
    p = 1.0 if w is None else w.p  # (None: no spread on either side, every seed gave the same figure)
    text = f"{better} {_mean(a):.4f} vs {worse} {_mean(b):.4f} {what} ({diff:+.2f} points, Welch p = {p:.3g})"
    if p < ALPHA and diff > 0:
        return "HELD: " + text
    if p < ALPHA:
        return "REVERSED: " + text
    return "NOT SHOWN at this budget: " + text


def _ordered(values: dict[str, list[float]]) -> list[str]:
    return sorted(values, key=lambda k: -_mean(values[k]) if values[k] else math.inf)


def _judge_pairs(*pairs: tuple[str, str]) -> Callable:
    def judge(values, extras):
        return [pair_verdict(values, a, b) for a, b in pairs]
    return judge


def _judge_best(expected: str) -> Callable:
    """The claim names a best variant: it is tested against every other one."""
    def judge(values, extras):
        order = _ordered(values)
        lines = [f"ranking by mean: {', '.join(order)}"]
        lines += [pair_verdict(values, expected, other) for other in values if other != expected]
        return lines
    return judge


def _judge_params(cnn: str, mlp: str) -> Callable:
    def judge(values, extras):
        line = pair_verdict(values, cnn, mlp)
        pa, pb = extras.get(cnn, {}).get("params"), extras.get(mlp, {}).get("params")
        if pa and pb:
            line += f"; parameters: {cnn} {pa:,} vs {mlp} {pb:,} ({pb / pa:.1f}x)"
        return [line]
    return judge


def _spec(body: str) -> str:
    return f"spec:{body}"


_FM = ["--data", "fashion-mnist"]
_TUT = "conv(32,{k},p=same),bn,relu,maxpool(2),conv(64,{k},p=same),bn,relu,maxpool(2),flatten,fc(128),relu,fc"
_STEM = "conv(32,3,p=same),bn,relu,"
_HEAD = ",maxpool(2),conv(64,3,p=same),bn,relu,maxpool(2),flatten,fc"
_PLAIN_BLOCK = "conv(16,3,p=same),bn,relu,conv(16,3,p=same),bn,relu"
_RES_BLOCK = "res(conv(16,3,p=same),bn,relu,conv(16,3,p=same),bn),relu"


# EfficientNet's compound scaling (Tan & Le 2019), its small grid search at phi = 1 on a small base network: 3 stages
# of (2, 2, 2) 3x3 convolutions of (16, 32, 64) channels at 28x28. Depth x alpha (rounded), width x beta (to
# multiples of 4), resolution x gamma (`--input-size`: batches resized on the device). The paper's constraint is
# alpha * beta^2 * gamma^2 ~ 2; rounding makes the nominal product a poor guide on a network this small, so the
# grid keeps the candidates whose *measured* MACs (convolab.analysis) are within 2 +- 0.2x the base's, and the study
# trains the base, the best single-dimension candidates and the four compound ones closest to 2x (the
# single-dimension ones closest to 2x, inside the tolerance or not: depth moves in whole layers).
_ALPHAS, _BETAS, _GAMMAS = (1.0, 1.5, 2.0), (1.0, 1.1, 1.2, 1.3, 1.4, 1.5), (1.0, 1.1, 1.2, 1.3, 1.4, 1.5)


def scaled_net(alpha: float, beta: float, gamma: float, base_depths=(2, 2, 2), base_widths=(16, 32, 64),
               base_resolution: int = 28) -> tuple[str, int]:
    """The base network scaled: (its spec, its input resolution)."""
    stages = []
    for i, (d, w) in enumerate(zip(base_depths, base_widths)):
        depth, width = max(1, int(round(d * alpha))), max(4, int(round(w * beta / 4)) * 4)
        pool = ",maxpool(2)" if i < len(base_depths) - 1 else ""
        stages.append(f"{depth}*(conv({width},3,p=same),bn,relu){pool}")
    return _spec(",".join(stages) + ",gap,fc"), int(round(base_resolution * gamma))


def compound_grid(target: float = 2.0, tolerance: float = 0.2, compound: int = 4) -> dict[str, dict]:
    """The grid search's candidates: name -> {alpha, beta, gamma, spec, resolution, macs, ratio}."""
    from convolab.analysis.summary import summarize

    def cost(spec, res):
        return summarize(spec, (1, res, res), num_classes=10).macs

    base_spec, base_res = scaled_net(1, 1, 1)
    base = cost(base_spec, base_res)
    every = []
    for a in _ALPHAS:
        for b in _BETAS:
            for g in _GAMMAS:
                spec, res = scaled_net(a, b, g)
                every.append(dict(alpha=a, beta=b, gamma=g, spec=spec, resolution=res, ratio=cost(spec, res) / base))
    cands = [c for c in every if abs(c["ratio"] - target) <= tolerance]
    out = {"base": dict(alpha=1.0, beta=1.0, gamma=1.0, spec=base_spec, resolution=base_res, ratio=1.0)}
    for dim, key in (("depth-only", "alpha"), ("width-only", "beta"), ("resolution-only", "gamma")):
        # (the closest to the target even outside the tolerance: depth moves in whole layers)
        single = [c for c in every if c[key] > 1.0 and all(c[k] == 1.0 for k in ("alpha", "beta", "gamma")
                                                           if k != key)]
        if single:
            out[dim] = min(single, key=lambda c: abs(c["ratio"] - target))
    multi = [c for c in cands if sum(c[k] > 1.0 for k in ("alpha", "beta", "gamma")) >= 2]
    for c in sorted(multi, key=lambda c: abs(c["ratio"] - target))[:compound]:
        out[f"a{c['alpha']:g}-b{c['beta']:g}-g{c['gamma']:g}"] = c
    return out


def _scaling_variants() -> dict[str, list[str]]:
    out = {}
    for name, c in compound_grid().items():
        res = c["resolution"]
        out[name] = ["--model", c["spec"]] + (["--input-size", f"{res}x{res}"] if res != 28 else [])
    return out


def _judge_scaling(values, extras):
    singles = [v for v in ("depth-only", "width-only", "resolution-only") if values.get(v)]
    compounds = [v for v in values if v.startswith("a") and values[v]]
    if not singles or not compounds:
        return ["too few finished variants to judge"]
    best_c = max(compounds, key=lambda v: _mean(values[v]))
    best_s = max(singles, key=lambda v: _mean(values[v]))
    return [f"best compound coefficients: {best_c}", pair_verdict(values, best_c, best_s)]


def _depth_net(blocks: int, residual: bool) -> str:
    block = _RES_BLOCK if residual else _PLAIN_BLOCK
    # the stem halves the resolution (as ResNet's does) so that the 19-layer networks train in minutes here
    return _spec(f"conv(16,3,p=same),bn,relu,maxpool(2),{blocks}*({block}),gap,fc")


STUDIES: dict[str, Study] = {s.name: s for s in [
    Study("cnn-vs-mlp", "a CNN beats a fully connected network on images, with a fraction of the parameters",
          {"cnn": ["--model", "tutorial_cnn"], "mlp": ["--model", "mlp"]}, _FM, 3,
          _judge_params("cnn", "mlp")),
    Study("7x7-vs-3x3", "three stacked 3x3 convolutions beat one 7x7 (same receptive field, fewer parameters)",
          {"three-3x3": ["--model", _spec(_STEM + "3*(conv(32,3,p=same),bn,relu)" + _HEAD)],
           "one-7x7": ["--model", _spec(_STEM + "conv(32,7,p=same),bn,relu" + _HEAD)]}, _FM, 3,
          _judge_pairs(("three-3x3", "one-7x7"))),
    Study("kernel-size", "small (3x3) kernels are the best choice",
          {f"k{k}": ["--model", _spec(_TUT.format(k=k))] for k in (3, 5, 7)}, _FM, 3, _judge_best("k3")),
    Study("batchnorm", "BatchNorm speeds up convergence (judged after one epoch of a 6-convolution network)",
          {"bn": ["--model", _spec("3*(conv(32,3,p=same),bn,relu),maxpool(2),3*(conv(64,3,p=same),bn,relu),"
                                   "maxpool(2),gap,fc")],
           "no-bn": ["--model", _spec("3*(conv(32,3,p=same),relu),maxpool(2),3*(conv(64,3,p=same),relu),"
                                      "maxpool(2),gap,fc")]},
          [*_FM, "--optimizer", "sgd", "--lr", "0.05"], 1, _judge_pairs(("bn", "no-bn"))),
    Study("dropout", "dropout and spatial dropout improve generalisation",
          {"none": ["--model", _spec(_TUT.format(k=3).replace("fc(128)", "fc(512)"))],
           "dropout": ["--model", _spec(_TUT.format(k=3).replace("fc(128),relu", "fc(512),relu,dropout(0.5)"))],
           "spatial-dropout": ["--model", _spec(_TUT.format(k=3).replace("fc(128)", "fc(512)")
                                                .replace("bn,relu,maxpool(2)", "bn,relu,dropout2d(0.1),maxpool(2)"))]},
          [*_FM, "--augment", "none"], 10, _judge_pairs(("dropout", "none"), ("spatial-dropout", "none"))),
    Study("augmentation", "data augmentation improves generalisation",
          {"none": ["--augment", "none"], "light": ["--augment", "light"], "standard": ["--augment", "standard"]},
          [*_FM, "--model", "tutorial_cnn"], 8, _judge_pairs(("light", "none"), ("standard", "none"))),
    Study("schedules", "warmup and cosine schedules beat a constant learning rate",
          {"constant": ["--schedule", "constant"],
           "step": ["--schedule", "step", "--decay-epochs", "2", "--gamma", "0.3"],
           "cosine": ["--schedule", "cosine"],
           "warmup-cosine": ["--schedule", "cosine", "--warmup-epochs", "1"],
           "onecycle": ["--schedule", "onecycle"]},
          [*_FM, "--model", "tutorial_cnn"], 5,
          _judge_pairs(("cosine", "constant"), ("warmup-cosine", "constant"), ("onecycle", "constant"),
                       ("step", "constant"))),
    Study("linear-scaling", "the learning rate should scale with the batch size (Goyal et al. 2017)",
          {"b64-lr0.02": ["--batch-size", "64", "--lr", "0.02"],
           "b512-lr0.02": ["--batch-size", "512", "--lr", "0.02"],
           "b512-lr0.16": ["--batch-size", "512", "--lr", "0.16"]},
          [*_FM, "--model", "tutorial_cnn", "--optimizer", "sgd", "--momentum", "0.9", "--schedule", "cosine",
           "--warmup-epochs", "1"], 4,
          _judge_pairs(("b512-lr0.16", "b512-lr0.02"))),
    Study("residual-depth", "residual connections fix the degradation of deep plain networks",
          {"plain-7": ["--model", _depth_net(3, False)], "residual-7": ["--model", _depth_net(3, True)],
           "plain-19": ["--model", _depth_net(9, False)], "residual-19": ["--model", _depth_net(9, True)]},
          [*_FM, "--optimizer", "sgd", "--lr", "0.05"], 3,
          _judge_pairs(("residual-19", "plain-19"), ("plain-7", "plain-19"))),
    Study("sgd-vs-adam", "Adam trains faster than SGD; SGD with momentum generalises as well or better",
          {"sgd": ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9"],
           "adam": ["--optimizer", "adam", "--lr", "0.003"]},
          [*_FM, "--model", "tutorial_cnn"], 4, _judge_pairs(("adam", "sgd"))),
    Study("losses", "cross-entropy trains a classifier better than MSE, MAE or hinge",
          {name: ["--loss", name] for name in ("cross_entropy", "mse", "mae", "hinge")},
          [*_FM, "--model", "tutorial_cnn"], 4, _judge_best("cross_entropy")),
    Study("compound-scaling", "scaling depth, width and resolution together (EfficientNet) beats scaling one of them "
          "for the same FLOPs",
          _scaling_variants, _FM, 3, _judge_scaling),
    Study("equivariance", "convolution is translation-equivariant; pooling adds invariance to small shifts",
          {"tutorial_cnn": ["--model", "tutorial_cnn"]}, _FM, 2, None, kind="equivariance"),
]}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        import difflib

        close = difflib.get_close_matches(name, list(STUDIES), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"unknown study {name!r}{hint} (studies: {', '.join(STUDIES)})")
    return STUDIES[name]


def _model_extras(run_dir: Path) -> dict:
    """Parameters and MACs of a finished run's model (at the size it was trained on)."""
    from convolab.analysis.summary import summarize
    from convolab.runs.reader import load_run

    summary = summarize(load_run(run_dir))  # (at the run's input size; an --input-size resize is in the model)
    return {"params": summary.totals()["params"], "macs": summary.macs}


def run_study(name: str, out: str | Path | None = None, *, seeds: int = 3, jobs: int = 1, epochs: int | None = None,
              extra: list[str] | tuple[str, ...] = (), parse_flags=None, say: Callable[[str], None] = print
              ) -> Verdict:
    """Run study ``name`` into ``out`` (default ``runs/study-NAME``): its comparison (re-running trains only what is
    missing), then its verdict, written to ``out/verdict.json`` and ``out/verdict.txt``.

    Args:
        seeds: seeds per variant (at least 3 for a verdict that can say anything).
        jobs: training processes at once.
        epochs: the training budget (default: the study's).
        extra: more ``convolab train`` flags for every variant (``--batch-size 256``).
        parse_flags: the flag parser (default ``convolab.train.flags.read_flags``: ``convolab train``'s), which
            checks every variant before anything runs (see :func:`convolab.experiments.compare.compare`).

    Raises:
        ValueError: an unknown study, or a flag ``convolab train`` refuses (before anything runs).
    """
    from convolab.atomic import write_json, write_text
    from convolab.experiments.compare import compare

    study = get_study(name)
    out = Path(out or f"runs/study-{name}").expanduser()
    variants = study.variants() if callable(study.variants) else study.variants
    common = [*study.common, "--epochs", str(epochs or study.epochs), *extra]
    say(f"study {name}: {study.claim}")
    result = compare(out, variants, seeds, common=common, jobs=jobs, metric=study.metric, say=say,
                     parse_flags=parse_flags)
    values = {v.name: [r.value for r in result.runs if r.variant == v.name and r.value is not None]
              for v in result.variants}
    extras: dict[str, dict] = {}
    for v in result.variants:
        done = [r for r in result.runs if r.variant == v.name and r.value is not None]
        if done:
            extras[v.name] = _model_extras(done[0].run_dir)
    verdict = Verdict(name, study.claim, values, extras, out=out)
    if study.kind == "equivariance":
        verdict.lines, verdict.table = _equivariance_verdict(result, say)
    else:
        verdict.lines = study.judge(values, extras) if study.judge else []
        verdict.table = result.table()
    if study.note:
        verdict.lines.append(study.note)
    write_json(out / "verdict.json", verdict.to_dict())
    write_text(out / "verdict.txt", verdict.table + "\n\nclaim: " + study.claim + "\n" + "\n".join(verdict.lines)
               + "\n")
    return verdict


def _equivariance_verdict(result, say) -> tuple[list[str], str]:
    """Measure every trained seed's model on (up to) 1,000 images of its test split shifted by 1, 2 and 4 pixels."""
    from convolab.experiments.equivariance import format_equivariance, measure_equivariance
    from convolab.runs.reader import load_run
    from convolab.runs.recipe import load_data, run_config

    runs = [r for r in result.runs if r.value is not None]
    if not runs:
        return ["no finished run to measure"], result.table()
    measured = []
    for r in runs:
        run = load_run(r.run_dir)
        images = load_data(run, run_config(run)).test.images[:1000]
        measured.append(measure_equivariance(run.model, images, run.mean, run.std, shifts=(1, 2, 4)))
    first = measured[0]
    worst_eq = max((v for m in measured for layer in m.layers for v in layer.equivariance.values()), default=0.0)
    convs = [layer for layer in first.layers if layer.type.startswith("Conv")]
    s0 = first.shifts[0]
    named = [layer.name for layer in first.layers if s0 in layer.change]  # (layers with interior units at s0)
    if not named:
        return [f"NOT SHOWN: no layer has units away from the borders at a {s0}-pixel shift"], result.table()

    def change(name):
        return sum(next(x for x in m.layers if x.name == name).change.get(s0, 0.0) for m in measured) / len(measured)

    change_first, change_last = change(named[0]), change(named[-1])
    same = {s: sum(m.same_prediction[s] for m in measured) / len(measured) for s in first.shifts}
    held = "HELD" if worst_eq < 1e-5 else "NOT SHOWN"
    lines = [f"{held}: equivariance -- every layer, shifted back by the shift / its stride, differs by at most "
             f"{worst_eq:.1e} of its norm away from the borders ({len(convs)} convolutions, {len(measured)} seeds)",
             f"{'HELD' if change_last < 0.8 * change_first else 'NOT SHOWN'}: invariance from pooling (HELD: the last "
             f"layer changes at least 20 % less than the first) -- a {s0}-pixel shift "
             f"changes {named[0]}'s map by {change_first:.2f} of its norm and {named[-1]}'s by "
             f"{change_last:.2f}; the predictions stay the same for "
             + ", ".join(f"{100 * same[s]:.1f} % at {s} px" for s in first.shifts)
             + " (invariance is partial: exact only for shifts the pooled grid can represent)"]
    return lines, result.table() + "\n\n" + format_equivariance(first) + f"\n(seed {runs[0].seed}; "\
        f"figures above averaged over {len(measured)} seeds)"
