"""Variants x seeds of ``convolab train``, each a normal run directory, with a table of their statistics.

``compare(out, {"relu": ["--act", "relu"], "tanh": ["--act", "tanh"]}, seeds=3, common=["--data", "digits"])``
trains ``OUT/<variant>/seed-<s>`` for every pair, each as its own ``python -m convolab train`` process (``jobs`` at
once, its output in ``OUT/<variant>/seed-<s>.log``), then writes ``OUT/results.csv`` (one row per run),
``OUT/results.json`` (the statistics of :mod:`convolab.experiments.stats` per variant, and the runs) and
``OUT/plots/compare.png``.

Resuming is running the same call again: a run with ``summary.json`` is kept, one with a checkpoint but no summary
(killed) continues with ``convolab train --resume``, a convolab run folder with neither (killed before its first
checkpoint, or failed) is trained again. ``OUT/compare.json`` records each variant's definition (its flags and the
``TrainConfig`` they give): the same name with another definition is refused, new variants and seeds are added.

Every variant's flags are parsed by ``convolab train``'s own parser and checked as ``TrainConfig`` before anything
runs, so a flag train would refuse stops the comparison at once, naming the variant.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from convolab.atomic import write_json, write_text
from convolab.experiments import stats
from convolab.runs.layout import CHECKPOINTS, SUMMARY, is_run_dir
from convolab.runs.session import config_differences
from convolab.train.config import RESUME_FREE, TrainConfig

__all__ = ["compare", "CompareResult", "RunResult", "VariantResult", "check_variant", "variant_from_text", "FlagParser",
           "PLAN", "RESULTS_CSV", "RESULTS_JSON", "PLOT"]

PLAN, RESULTS_CSV, RESULTS_JSON, PLOT = "compare.json", "results.csv", "results.json", "plots/compare.png"
_LOCK = ".compare.lock"
_KIND = "convolab-compare"
# `convolab train`'s flags -> (the TrainConfig they give, the argparse destinations they set); a ValueError for a flag
# train refuses (convolab.train.flags.read_flags, the default).
FlagParser = Callable[[Sequence[str]], tuple[TrainConfig, set[str]]]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED = ("plots",)  # OUT/plots holds the figure
# what compare itself sets for every run (argparse destinations of `convolab train`)
_OWNED = {"out": "--out (each run goes to OUT/<variant>/seed-<s>)", "seed": "--seed (use --seeds)",
          "resume": "--resume (re-running compare resumes what is missing)",
          "overwrite": "--overwrite (compare replaces only its own unfinished runs)"}


@dataclass
class RunResult:
    """One (variant, seed): where it is, how this call got it and its figures."""

    variant: str
    seed: int
    run_dir: Path
    status: str  # trained, resumed, kept (finished before this call) or failed
    value: float | None = None  # the metric from summary.json (None: failed, or the summary has no finite value)
    seconds: float | None = None  # summary.json's train_seconds: the run's fit time, summed over its resumes
    error: str | None = None  # a failed run: its exit status and its log's last line

    def to_dict(self) -> dict:
        return {"variant": self.variant, "seed": self.seed, "status": self.status, "value": self.value,
                "seconds": self.seconds, "run_dir": str(self.run_dir), "error": self.error}


@dataclass
class VariantResult:
    """A variant's statistics over the seeds that finished (Welch's test against the first variant)."""

    name: str
    flags: list[str]
    sample: stats.Sample
    welch: stats.Welch | None  # None for the first variant, or where the test is undefined (n < 2, no spread)
    median_seconds: float | None
    failed: list[int] = field(default_factory=list)  # seeds whose run failed

    def to_dict(self) -> dict:
        s, w = self.sample, self.welch
        return {"name": self.name, "flags": self.flags, "n": s.n, "mean": s.mean, "std": s.std,
                "ci95": list(s.ci95) if s.ci95 else None,
                "welch": None if w is None else {"diff": w.diff, "t": w.t, "df": w.df, "p": w.p},
                "median_seconds": self.median_seconds, "failed_seeds": self.failed}


@dataclass
class CompareResult:
    """What :func:`compare` returns: the statistics per variant (in the order given) and every run."""

    out: Path
    metric: str
    seeds: list[int]
    variants: list[VariantResult]
    runs: list[RunResult]

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "failed"]

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "out": str(self.out), "seeds": self.seeds,
                "reference": self.variants[0].name if self.variants else None,
                "variants": [v.to_dict() for v in self.variants], "runs": [r.to_dict() for r in self.runs]}

    def table(self) -> str:
        """The console table: n, mean, std, 95 % interval, difference and Welch's test against the first variant,
        median seconds per run."""
        ref = self.variants[0].name
        head = ["variant", "n", "mean", "std", "95 % interval", f"vs {ref}", "t", "df", "p", "s/run"]
        rows = []
        for v in self.variants:
            s, w = v.sample, v.welch
            rows.append([v.name + (f" ({len(v.failed)} failed)" if v.failed else ""), str(s.n), _num(s.mean),
                         _num(s.std), "-" if s.ci95 is None else f"[{s.ci95[0]:.4f}, {s.ci95[1]:.4f}]",
                         "-" if w is None else f"{w.diff:+.4f}", "-" if w is None else f"{w.t:.2f}",
                         "-" if w is None else f"{w.df:.1f}", "-" if w is None else _p(w.p),
                         "-" if v.median_seconds is None else f"{v.median_seconds:.1f}"])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [f"{self.metric} over seeds {_seeds_text(self.seeds)} (mean, sample std, Student-t 95 % interval; "
                 f"Welch's t-test against {ref})"]
        for r in [head, *rows]:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


# -- the variants ------------------------------------------------------------------------------------------------------
def variant_from_text(text: str) -> tuple[str, list[str]]:
    """``NAME=TRAIN FLAGS`` (shell words) -> ``(NAME, [flags])``; a bare ``NAME`` is a model: ``--model NAME``."""
    name, eq, flags = text.partition("=")
    if not eq:
        return name, ["--model", name]
    try:
        return name, shlex.split(flags)
    except ValueError as e:  # an unclosed quote
        raise ValueError(f"variant {name}: cannot split its flags {flags!r} ({e}); quote them as one shell word") \
            from None


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or name in _RESERVED:
        raise ValueError(f"variant name {name!r}: use letters, digits, '_', '.' and '-' (starting with a letter or "
                         f"digit){', not ' + name if name in _RESERVED else ''}; e.g. --variant relu='--act relu'")


def check_variant(name: str, flags: Sequence[str], common: Sequence[str],
                  parse_flags: FlagParser | None = None) -> dict:
    """Check a variant as ``convolab train`` would before any data loads; returns its ``TrainConfig`` as a dict
    (less ``seed`` and the settings that do not change results), the variant's definition in ``compare.json``.

    ``parse_flags``: flags -> (TrainConfig, the options given), a ValueError for a flag train refuses (default:
    :func:`convolab.train.flags.read_flags`, the options of ``convolab train``).

    Raises:
        ValueError: one line naming the variant: a bad name, a flag train refuses, a flag compare owns, an unknown
            model.
    """
    from convolab.models import get_model_entry
    from convolab.models.spec import resolve_model_name
    from convolab.train.flags import read_flags

    parse_flags = parse_flags or read_flags
    _check_name(name)
    for who, argv in (("the common train flags", list(common)), (f"variant {name}", list(flags))):
        try:
            _, given = parse_flags(argv)
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None
        owned = [why for dest, why in _OWNED.items() if dest in given]
        if owned:
            raise ValueError(f"{who}: compare sets {owned[0]}; drop it from the flags")
    try:
        config, _ = parse_flags([*common, *flags])
        config = replace(config, model=resolve_model_name(config.model))
        config.validate()
        get_model_entry(config.model)  # an unknown model: train refuses it before loading data, so do we
    except ValueError as e:
        raise ValueError(f"variant {name}: {e}") from None
    return _definition(config.to_dict())


def _definition(config: dict) -> dict:
    """A config as compare.json compares it: JSON values, without seed and the results-free settings."""
    keep = {k: v for k, v in config.items() if k not in RESUME_FREE and k != "seed"}
    return json.loads(json.dumps(keep, default=str))


# -- the folder --------------------------------------------------------------------------------------------------------
def _read_plan(out: Path) -> dict:
    """OUT/compare.json, or an empty plan for a new or empty OUT; refuses any other folder."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"compare OUT {out} is a file; give a new folder (or one made by convolab compare)")
    plan_file = out / PLAN
    if not plan_file.is_file():
        if out.is_dir() and any(p.name != _LOCK for p in out.iterdir()):
            raise ValueError(f"compare OUT {out} is not empty and is not a convolab compare folder (no {PLAN}); "
                             "give a new or empty folder")
        return {"kind": _KIND, "format": 1, "variants": {}, "seeds": []}
    try:
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
        if plan.get("kind") != _KIND or not isinstance(plan.get("variants"), dict):
            raise ValueError("not a compare plan")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        raise ValueError(f"{plan_file} is damaged or not written by convolab compare; give another OUT") from None
    return plan


def _differs(old: dict, new: dict) -> bool:
    """Whether a variant's stored definition and this call's differ. A setting the stored one lacks (a field
    convolab added since) counts as its default, so a new version resumes an old comparison."""
    default = _definition(TrainConfig().to_dict())
    return any(old.get(key, default.get(key)) != value for key, value in new.items())


def _merge_plan(plan: dict, out: Path, defined: dict[str, dict], seeds: list[int]) -> dict:
    """The plan with this call's variants and seeds added; a variant already there must be defined the same."""
    variants = dict(plan["variants"])
    for name, d in defined.items():
        old = variants.get(name)
        if old is not None and _differs(old["config"], d["config"]):
            changed = config_differences(old["config"], d["config"]) or ["its settings"]
            raise ValueError(f"variant {name} in {out} was trained as `{shlex.join(old['argv'])}`, now "
                             f"`{shlex.join(d['argv'])}` ({', '.join(changed).replace('run:', 'before:')}); "
                             "give it another name or use another OUT")
        variants[name] = d
    return {**plan, "variants": variants, "seeds": sorted(set(plan.get("seeds", [])) | set(seeds))}


def _state(run_dir: Path) -> str:
    """What to do with a run folder: done (summary.json), resume (a checkpoint), train (absent or empty), replace
    (a convolab run with neither); refuses anything else."""
    if not run_dir.exists():
        return "train"
    if run_dir.is_dir() and not run_dir.is_symlink() and not any(run_dir.iterdir()):
        return "train"
    if not is_run_dir(run_dir):
        raise ValueError(f"{run_dir} exists and is not a convolab run directory; move it away (compare replaces only "
                         "its own unfinished runs)")
    if (run_dir / SUMMARY).is_file():
        return "done"
    if any((run_dir / CHECKPOINTS).glob("step-*.pt")):
        return "resume"
    return "replace"


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One compare at a time in OUT (an advisory lock the system drops when the process dies, even by SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # (no fcntl: Windows) nothing to lock with
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / _LOCK, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another convolab compare is running in {out}; wait for it or use another OUT") \
                from None
        yield


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, between fork and exec)
    """Linux: the training process gets SIGKILL when compare dies, so a killed compare leaves no run training
    unseen into a folder the next compare would resume or replace; and it takes Ctrl-C again (see _sigint_held)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT back while a child is forked: a Ctrl-C that lands in the fork's after-fork hooks would be printed
    as 'Exception ignored' and lost. Released at the end (a pending Ctrl-C is raised then, once the child is known);
    the child unblocks it itself (:func:`_die_with_parent`)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@dataclass
class _Job:
    variant: str
    seed: int
    run_dir: Path
    action: str  # train, replace or resume
    argv: list[str]
    started: float = 0.0
    process: subprocess.Popen | None = None
    log: Path | None = None
    log_start: int = 0


def _last_line(log: Path, start: int) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(start)
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def _read_summary(run_dir: Path) -> dict:
    try:
        s = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return s if isinstance(s, dict) else {}


def _figures(run: RunResult, metric: str, summary: dict) -> None:
    value, seconds = summary.get(metric), summary.get("train_seconds")
    run.value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    run.seconds = float(seconds) if isinstance(seconds, (int, float)) else None


def _train_command(job: _Job, common: Sequence[str], flags: Sequence[str]) -> list[str]:
    base = [sys.executable, "-m", "convolab", "train"]
    if job.action == "resume":
        return [*base, "--resume", str(job.run_dir), "--quiet"]
    extra = ["--overwrite"] if job.action == "replace" else []
    return [*base, *common, *flags, "--seed", str(job.seed), "--out", str(job.run_dir), "--quiet", *extra]


def _start(job: _Job, env: dict) -> None:
    job.log = job.run_dir.parent / f"{job.run_dir.name}.log"  # beside the run: train wants its folder to itself
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "ab") as log:
        job.log_start = log.tell()
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} convolab compare: {job.action}: "
                  f"{shlex.join(job.argv[2:])}\n".encode())
        log.flush()
        linux = sys.platform == "linux"
        with _sigint_held() if linux else contextlib.nullcontext():
            job.process = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, preexec_fn=_die_with_parent if linux else None)
    job.started = time.perf_counter()


def _run_jobs(jobs: list[_Job], n_parallel: int, metric: str, results: dict, say: Callable[[str], None]) -> None:
    """Run ``jobs`` (n_parallel at a time) and put each one's RunResult in ``results``; one line per finished run."""
    env = dict(os.environ)
    # each run gets its share of the cores (unless the user chose): n processes x all cores would fight over them
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_parallel)))
    pending, running, total = list(jobs), [], len(jobs)
    try:
        while pending or running:
            while pending and len(running) < n_parallel:
                job = pending.pop(0)
                running.append(job)  # (before it starts: a Ctrl-C during the start still finds it)
                _start(job, env)
            time.sleep(0.1)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                wall = time.perf_counter() - job.started
                run = RunResult(job.variant, job.seed, job.run_dir, "resumed" if job.action == "resume" else
                                "trained")
                code = job.process.returncode
                if code == 0 and (job.run_dir / SUMMARY).is_file():
                    _figures(run, metric, _read_summary(job.run_dir))
                    what = f"{metric} {_num(run.value)}"
                else:
                    why = f"exit {code}" if code >= 0 else f"killed by signal {-code}"
                    run.status, run.error = "failed", f"{why}: {_last_line(job.log, job.log_start)}"
                    what = f"FAILED ({run.error}; log: {job.log})"
                results[(job.variant, job.seed)] = run
                done = total - len(pending) - len(running)
                say(f"[{done}/{total}] {job.variant} seed {job.seed}: {what} in {wall:.1f} s"
                    f"{' (resumed)' if job.action == 'resume' else ''}; {len(pending) + len(running)} left")
    except BaseException as e:  # Ctrl-C (the runs got it too) or an error here: no run is left training unseen
        if isinstance(e, KeyboardInterrupt):
            say(f"interrupted: {len(running) + len(pending)} runs unfinished; the same command continues them "
                "(finished runs are kept, killed ones resume from their last checkpoint)")
        running = [job for job in running if job.process is not None]
        for job in running:
            with contextlib.suppress(OSError):
                job.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        for job in running:
            try:
                job.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
        raise


# -- the comparison ----------------------------------------------------------------------------------------------------
def compare(out: str | os.PathLike, variants: dict[str, list[str]], seeds: int | list[int], common: Sequence[str] = (),
            jobs: int = 1, metric: str = "test_accuracy", say: Callable[[str], None] = print, *,
            parse_flags: FlagParser | None = None) -> CompareResult:
    """Train every variant with every seed (what ``OUT`` does not hold yet) and compare them on ``metric``.

    Args:
        out: the comparison's folder (new, empty, or one a previous compare made).
        variants: name -> ``convolab train`` flags (``{"relu": ["--act", "relu"]}``); the first is the reference of
            Welch's test.
        seeds: how many (seeds 0 .. n-1) or which.
        common: flags every variant gets, before its own (a variant's value wins).
        jobs: training processes at once.
        metric: a number of summary.json (``test_accuracy``, ``test_loss``, ``test_mean_iou`` ...).
        say: where the progress lines go.
        parse_flags: the parser of the flags (default :func:`convolab.train.flags.read_flags`: ``convolab
            train``'s options).

    Returns:
        The statistics per variant and every run (failed ones included, with their log's last line).

    Raises:
        ValueError: before anything runs: a bad variant (named), seeds or jobs, an OUT that is not a compare folder or
            defines a variant otherwise; after the runs: a metric that no summary.json has.
    """
    out = Path(out).expanduser()
    if not variants:
        raise ValueError("no variants to compare; give at least one, e.g. --variant relu='--act relu'")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if isinstance(seeds, int) and seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    if not seed_list or len(set(seed_list)) != len(seed_list) or any(
            not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seed_list):
        raise ValueError(f"seeds must be distinct integers >= 0; got {seeds}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be >= 1; got {jobs}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", metric):
        raise ValueError(f"--metric {metric!r}: give a field of summary.json, e.g. test_accuracy")
    defined = {}
    for name, flags in variants.items():
        config = check_variant(name, flags, common, parse_flags)
        defined[name] = {"argv": [*common, *flags], "common": list(common), "flags": list(flags), "config": config}
    plan = _merge_plan(_read_plan(out), out, defined, seed_list)
    with _locked(out):
        plan = _merge_plan(_read_plan(out), out, defined, seed_list)  # (read again: now no one else writes it)
        work, results = [], {}
        for seed in seed_list:  # seed by seed: an interrupted comparison has every variant's first seeds
            for name in variants:
                run_dir = out / name / f"seed-{seed}"
                action = _state(run_dir)
                if action == "done":
                    results[(name, seed)] = run = RunResult(name, seed, run_dir, "kept")
                    _figures(run, metric, _read_summary(run_dir))
                else:
                    job = _Job(name, seed, run_dir, action, [])
                    job.argv = _train_command(job, common, variants[name])
                    work.append(job)
        write_json(out / PLAN, plan)
        kept = len(results)
        say(f"compare {out}: {len(variants)} variants x {len(seed_list)} seeds; {kept} finished before, "
            f"{sum(j.action == 'resume' for j in work)} to resume, {sum(j.action != 'resume' for j in work)} to "
            f"train{f', {min(jobs, len(work))} at a time' if work else ''}")
        _run_jobs(work, jobs, metric, results, say)
    runs = [results[(name, seed)] for name in variants for seed in seed_list]
    finished = [r for r in runs if r.status != "failed"]
    if finished and all(r.value is None for r in finished):
        numbers = sorted(k for k, v in _read_summary(finished[0].run_dir).items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ValueError(f"--metric {metric}: not a number in {finished[0].run_dir / SUMMARY}; choose one of "
                         f"{', '.join(numbers)} (the runs are kept: the same command with it trains nothing)")
    result = _result(out, metric, seed_list, variants, runs)
    _write_outputs(result)
    return result


def _result(out: Path, metric: str, seeds: list[int], variants: dict[str, list[str]],
            runs: list[RunResult]) -> CompareResult:
    per = {name: [r for r in runs if r.variant == name] for name in variants}
    ref_name = next(iter(variants))
    ref_values = [r.value for r in per[ref_name] if r.value is not None]
    out_variants = []
    for name, flags in variants.items():
        values = [r.value for r in per[name] if r.value is not None]
        seconds = [r.seconds for r in per[name] if r.value is not None and r.seconds is not None]
        out_variants.append(VariantResult(
            name, list(flags), stats.describe(values),
            None if name == ref_name else stats.welch_test(values, ref_values), stats.median(seconds),
            [r.seed for r in per[name] if r.status == "failed"]))
    return CompareResult(out, metric, seeds, out_variants, runs)


def _write_outputs(result: CompareResult) -> None:
    """results.csv, results.json and plots/compare.png, each atomically."""
    import csv

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["variant", "seed", result.metric, "seconds", "run_dir", "status"])
    for r in result.runs:
        writer.writerow([r.variant, r.seed, "" if r.value is None else repr(r.value),
                         "" if r.seconds is None else r.seconds, str(r.run_dir), r.status])
    write_text(result.out / RESULTS_CSV, text.getvalue())
    write_json(result.out / RESULTS_JSON, result.to_dict())
    _plot(result, result.out / PLOT)


def _plot(result: CompareResult, path: Path) -> None:
    """Every seed's point per variant, with the mean and its 95 % interval beside them."""
    from convolab.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(result.variants) + 1.5), 3.6))
    for i, v in enumerate(result.variants):
        values = [r.value for r in result.runs if r.variant == v.name and r.value is not None]
        offsets = [(k - (len(values) - 1) / 2) * min(0.05, 0.3 / max(1, len(values))) for k in range(len(values))]
        ax.scatter([i - 0.12 + o for o in offsets], values, s=18, color="#1f77b4", alpha=0.8,
                   label="one seed" if i == 0 else None, zorder=3)
        s = v.sample
        if s.mean is not None:
            err = None if s.ci95 is None else [[s.mean - s.ci95[0]], [s.ci95[1] - s.mean]]
            ax.errorbar([i + 0.12], [s.mean], yerr=err, fmt="o", color="#d62728", capsize=4, zorder=4,
                        label="mean and 95 % interval" if i == 0 else None)
    ax.set_xticks(range(len(result.variants)), [v.name for v in result.variants], rotation=20 if len(
        result.variants) > 4 else 0)
    ax.set_ylabel(result.metric)
    ax.set_title(f"{result.metric}: every seed, the mean and its 95 % interval", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)
