"""``convolab report RUN``: one self-contained HTML page about a trained run.

Everything is inline (images as ``data:`` URIs, CSS in the page, no script, nothing fetched), so
the file can be mailed, archived or opened offline. The report first gathers its data
(:func:`convolab.report.data.gather`: the run, its dataset, ONE evaluation of the test split through the
run's task, the figures) and then renders it here; nothing in this module loads or evaluates.

Sections: the configuration, learning curves, test results (classification: confusion matrix, per-class
accuracy, the most-confused pairs with examples, the prediction grid; segmentation: pixel accuracy, mean and
per-class IoU, mask overlays; clips: clip and video accuracy, confusion matrix), calibration (ECE and reliability
diagrams of the plain and the MC-dropout predictions, for a model with dropout), the model summary
(``convolab.analysis``), first-layer kernels, feature maps, Grad-CAM for right and wrong predictions, and the
sanity checks of the attributions (``convolab.explain.sanity``). A section that does not apply to the run's
task says so in one sentence.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from convolab.explain.sanity import CAM_TOLERANCE, COMPLETENESS_THRESHOLD, RANDOMIZATION_THRESHOLD
from convolab.report.data import ClassRow, ReportData, TestResults, gather, gather_stages
from convolab.report.figures import Figure

__all__ = ["build_report", "render", "REPORT"]

REPORT = "report.html"
log = logging.getLogger("convolab")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:2px 0;opacity:.9}main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px 20px;margin:18px 0}
h2{font-size:19px;margin:6px 0 10px;color:#1f3b57}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f1f4f7}td.l,th.l{text-align:left}img{max-width:100%;height:auto;display:block;margin:6px 0}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}.grid img{max-width:560px}
.note{color:#555;font-size:13px}
.bar{display:inline-block;height:10px;background:#4a90d9;vertical-align:middle}
.bad{color:#b00020;font-weight:600}.good{color:#1b7f3b;font-weight:600}.unsure{color:#a15c00;font-weight:600}
nav a{margin-right:12px;color:#1f3b57}pre{font-size:12px;background:#f6f8fa;padding:8px;overflow:auto}
"""

# (anchor, title) of every section, in page order
SECTIONS = (("trust", "Summary: which attribution methods to trust on this model"), ("config", "Configuration"),
            ("compress", "Compression: what it gained and lost"), ("curves", "Learning curves"),
            ("test", "Test results"),
            ("calibration", "Calibration: plain and MC-dropout predictions"), ("model", "Model summary"),
            ("kernels", "First-layer kernels"), ("features", "Feature maps"), ("gradcam", "Grad-CAM"),
            ("sanity", "Sanity checks of the attributions"))
_NAV = {"trust": "summary", "config": "config", "compress": "compression", "curves": "curves", "test": "test results",
        "calibration": "calibration", "model": "model",
        "kernels": "kernels", "features": "feature maps", "gradcam": "Grad-CAM", "sanity": "sanity checks"}


def build_report(run_path: str | Path, *, data_dir: str | None = None, samples: int = 32,
                 out: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``RUN/report.html`` (or ``out``) and return its path.

    ``samples``: test images used for Grad-CAM examples and the sanity checks. ``RUN/report.html`` is
    convolab's own file and is replaced; a file the user names as ``out`` is replaced only with
    ``overwrite``. The destination is checked before any work. ``progress``: a bar on a terminal.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is not set.
        IsADirectoryError: ``out`` (or ``RUN/report.html``) is a folder.
        NotADirectoryError, PermissionError: the file cannot be written there (one line naming it).
    """
    from convolab.atomic import write_text
    from convolab.explain.output import writing
    from convolab.explain.progress import progress_bar
    from convolab.runs.reader import load_run

    start = time.perf_counter()
    run = load_run(run_path)
    dest = _destination(run, out, overwrite)
    stages = [*gather_stages(run.task), "page"]
    with progress_bar(total=len(stages), desc="report", unit="step", enabled=progress) as bar:
        def step(name: str) -> None:
            bar.update()
            bar.set_postfix_str(stages[min(bar.n, len(stages) - 1)])

        bar.set_postfix_str(stages[0])
        data = gather(run, data_dir=data_dir, samples=samples, step=step)
        page = render(data)
        with writing(dest):
            write_text(dest, page)
        step("page")
    log.info("report written in %.1fs", time.perf_counter() - start)
    return dest


def render(data: ReportData) -> str:
    """The self-contained page of a gathered report (no loading, evaluating or drawing here)."""
    parts = {"trust": _trust_section(data), "config": _config_section(data), "compress": _compress_section(data),
             "curves": _curves_section(data),
             "test": _test_section(data), "calibration": _calibration_section(data),
             "model": _summary_section(data), "kernels": _kernels_section(data),
             "features": _feature_maps_section(data), "gradcam": _gradcam_section(data),
             "sanity": _sanity_section(data)}
    shown = [(a, t) for a, t in SECTIONS if parts[a]]
    nav = " ".join(f'<a href="#{a}">{_NAV[a]}</a>' for a, _ in shown)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>convolab report: {html.escape(data.title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(data.title)}</h1>"
            f"<p>run {html.escape(str(data.path))}{_headline(data)}"
            f" · report written {time.strftime('%Y-%m-%d %H:%M')} by convolab</p></header>"
            f"<main><nav>{nav}</nav>{''.join(parts[a] for a, _ in shown)}</main></body></html>")


def _figure(value, kind: str) -> str:
    """A headline figure: a percentage ("%") or a ratio to 4 decimals ("")."""
    return "-" if value is None else f"{100 * value:.2f}%" if kind == "%" else f"{value:.4f}"


def _headline(data: ReportData) -> str:
    """The header's figures: the task's main test figures (``Task.headline``)."""
    s = data.test.fields if data.test is not None else data.summary
    return "".join(f" · {label} {_figure(s[key], kind)}" for label, key, kind in data.layout.headline
                   if s.get(key) is not None)


def _destination(run, out: str | Path | None, overwrite: bool) -> Path:
    """Where the page goes, refused before any work when it cannot or must not be written."""
    dest = Path(out).expanduser() if out else run.path / REPORT
    option = f"--out {dest}" if out else str(dest)
    if dest.is_dir():
        raise IsADirectoryError(f"{option} is a folder; give a file name (such as {dest / REPORT})")
    if out and dest.exists() and not overwrite:
        raise FileExistsError(f"--out {dest} exists; pass --overwrite to replace it, or choose another --out")
    folder = dest.parent
    while not folder.exists() and folder != folder.parent:  # atomic writes make the missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"{option}: {folder} is a file, not a folder")
    try:  # a real probe: permissions, read-only mounts and root's exemptions all show
        fd, probe = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".probe", dir=folder)
    except OSError as e:
        hint = "" if out else "; write the page elsewhere with --out FILE"
        raise PermissionError(f"cannot write {dest} ({e.strerror or e} in {folder}){hint}") from None
    os.close(fd)
    os.unlink(probe)
    return dest


# -- pieces --------------------------------------------------------------------------------------
def _img(fig: Figure | bytes, alt: str = "") -> str:
    """A figure's PNG as an inline <img>."""
    data = fig.png if isinstance(fig, Figure) else fig
    alt = alt or (fig.caption if isinstance(fig, Figure) else "")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _skipped(data: ReportData, anchor: str) -> str:
    """The one-sentence section that says why ``anchor`` does not apply to this run's task."""
    title = dict(SECTIONS)[anchor]
    return _section(anchor, title, f'<p class="note">{html.escape(data.skipped[anchor])}</p>')


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return "x".join(str(x) for x in v) if isinstance(v, list) else str(v)


# -- sections: each renders a part of the ReportData ("" when there is nothing to show) ------------------
def _config_section(data: ReportData) -> str:
    cfg = data.config
    recipe = cfg.get("recipe", {})
    ds = cfg.get("dataset", {})
    rows = [["model", html.escape(str(cfg.get("model")))],
            ["model arguments", html.escape(json.dumps(cfg.get("model_kwargs", {})))],
            ["dataset", html.escape(f"{ds.get('name')} ({ds.get('source', '')})")],
            ["split sizes", html.escape(json.dumps(ds.get("sizes", {})))],
            ["input", "x".join(map(str, data.input_size))],
            ["seed", str(cfg.get("seed"))], ["device", html.escape(str(cfg.get("device")))]]
    rows += [[html.escape(k), html.escape(json.dumps(v))] for k, v in recipe.items()]
    s = data.summary
    for key in ("test_accuracy", "test_loss", "test_pixel_accuracy", "test_mean_iou", "test_clip_accuracy",
                "test_video_accuracy", "test_macro_f1", "test_top5_accuracy", "best_val_accuracy", "epochs",
                "train_seconds", "samples_per_second", "params"):
        if key in s:
            v = s[key]
            rows.append([key, f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))])
    versions = cfg.get("versions")
    body = _table(["setting", "value"], rows, left=2)
    if cfg.get("command"):
        body += f"<p class=\"note\">command: <code>{html.escape(' '.join(cfg['command']))}</code></p>"
    if versions:
        body += f"<p class=\"note\">versions: {html.escape(json.dumps(versions))}</p>"
    return _section("config", "Configuration", body)


def _curves_section(data: ReportData) -> str:
    if not data.metrics:
        return _section("curves", "Learning curves", '<p class="note">no metrics.jsonl in the run</p>')
    imgs = "".join(f"<figure>{_img(fig)}</figure>" for fig in data.curves)
    return _section("curves", "Learning curves", f'<div class="grid">{imgs}</div>')


def _class_table(rows: list[ClassRow], count: str, value: str, scores: bool = False) -> str:
    """Per-class table with a bar per class (a class that occurs nowhere: n/a); with ``scores``, the class's
    precision, recall and F1 too (n/a where undefined)."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    cells = [[html.escape(r.name), f"{r.count:,}", pct(r.value),
              "" if r.value is None else f'<span class="bar" style="width:{int(150 * r.value)}px"></span>']
             + ([pct(r.precision), pct(r.recall), pct(r.f1)] if scores else []) for r in rows]
    return _table(["class", count, value, "", *(("precision", "recall", "F1") if scores else ())], cells)


# how the precision, recall and F1 figures are defined (convolab.train.metrics), under the per-class table
_SCORES_NOTE = ("precision = TP / (TP + FP), recall = TP / (TP + FN) (a class's accuracy; n/a without test "
                "samples), F1 = 2 TP / (2 TP + FP + FN); n/a: undefined (a class never predicted has no precision) "
                "and left out of the macro means, as scikit-learn's zero_division=nan.")


def _macro_scores(f: dict) -> str:
    """The macro precision, recall and F1 and the top-5 accuracy where the task wrote them ("" otherwise)."""
    if "test_macro_f1" not in f:
        return ""
    text = ", ".join(f"{name} <b>{_figure(f.get(key), '')}</b>" for name, key in (
        ("precision", "test_macro_precision"), ("recall", "test_macro_recall"), ("F1", "test_macro_f1")))
    top5 = f.get("test_top5_accuracy")
    return f"<p>macro {text}" + (f"; top-5 accuracy <b>{_figure(top5, '%')}</b>" if top5 is not None else "") + ".</p>"


def _tta_note(test: TestResults) -> str:
    return (' <span class="note">(each image and its mirror averaged, as the run was evaluated with --tta)</span>'
            if test.tta else "")


# the captions of the task's test figures (``Task.report_figures``) after the first, which stands beside the table
_CAPTIONS = {"predictions": "predictions (mistakes in red, with the true class)",
             "masks": "masks: image | true | predicted"}


def _test_section(data: ReportData) -> str:
    """The task's figures (``Task.headline``), its first figure beside the per-class table, the most-confused pairs
    (for tasks that have them) and the task's other figures."""
    test, layout = data.test, data.layout
    if test is None:
        return ""
    (label, key, kind), *more = layout.headline
    f = test.fields
    body = (f"<p>{label} <b>{_figure(f[key], kind)}</b> on {test.n:,} {layout.unit} (loss {test.loss:.4f})"
            + "".join(f"; {label} <b>{_figure(f[key], kind)}</b>" for label, key, kind in more
                      if f.get(key) is not None) + f".{_tta_note(test)}</p>")
    body += _macro_scores(f)
    if layout.note:
        body += f'<p class="note">{html.escape(layout.note)}</p>'
    (_, first), *others = test.figures.items()
    count, measure = layout.columns
    scores = "test_per_class_f1" in f
    body += (f'<div class="grid"><figure>{_img(first)}</figure><figure><h3>per-class {html.escape(measure)}</h3>'
             f'{_class_table(test.per_class, count, measure, scores)}'
             + (f'<p class="note">{html.escape(_SCORES_NOTE)}</p>' if scores else "") + '</figure></div>')
    if test.confused_pairs is not None:
        body += "<h3>most-confused pairs</h3>" + _confused_pairs(test)
    for name, fig in others:
        body += f"<h3>{html.escape(_CAPTIONS.get(name, name))}</h3>{_img(fig)}"
    return _section("test", "Test results", body)


def _calibration_section(data: ReportData) -> str:
    """ECE and reliability diagrams of the plain and the MC-dropout test predictions (or why there are none)."""
    title = dict(SECTIONS)["calibration"]
    c = data.calibration
    if c is None:
        return ""
    if isinstance(c, str):
        return _section("calibration", title, f'<p class="note">{html.escape(c)}</p>')
    rows = [[name, f"{100 * cal.accuracy_all:.2f}%", f"{100 * cal.confidence_all:.2f}%", f"<b>{cal.ece:.4f}</b>"]
            for name, cal in (("plain (dropout off)", c.plain), (f"MC dropout ({c.samples} passes, seed {c.seed})",
                                                                   c.mc))]
    lower = "MC dropout" if c.mc.ece < c.plain.ece else "the plain predictions" if c.plain.ece < c.mc.ece else None
    verdict = (f"Here {lower} {'are' if lower.startswith('the') else 'is'} better calibrated (lower ECE)."
               if lower else "Both have the same ECE here.")
    bins = len(c.plain.counts)
    body = (f"<p>{verdict} MC dropout's spread: the top class's probability varies by "
            f"<b>{100 * c.mean_std:.2f}</b> percentage points (standard deviation over the passes, mean over the "
            f"test split); mutual information {c.mean_mutual_information:.4f} nats on average.</p>"
            + _table(["predictions", "accuracy", "mean confidence", f"ECE ({bins} bins)"], rows)
            + _img(c.diagram, "reliability diagrams")
            + '<p class="note">confidence: the top class probability; ECE = Σ_m (|B_m| / n) |acc(B_m) − conf(B_m)| '
            f"over {bins} equal-width confidence bins (Guo et al. 2017); MC dropout (Gal &amp; Ghahramani 2016): "
            "the mean of the class probabilities of passes with the dropout layers on and everything else, "
            "BatchNorm included, in evaluation mode. A bar below the diagonal: over-confident in that bin.</p>")
    return _section("calibration", title, body)


def _confused_pairs(test: TestResults) -> str:
    if not test.confused_pairs:
        return '<p class="note">no mistakes on the test split.</p>'
    return "".join(f"<p><b>{html.escape(p.true)}</b> taken for <b>{html.escape(p.predicted)}</b>: {p.count} times "
                   f"({100 * p.count / max(p.of_true, 1):.1f}% of {html.escape(p.true)})</p>"
                   + (_img(p.examples) if p.examples is not None else "") for p in test.confused_pairs)


def _compress_section(data: ReportData) -> str:
    """convolab compress's table (summary.json's ``compress``) and its Pareto plot."""
    c = data.compress
    if not c or not isinstance(c.get("rows"), list):
        return ""
    rows = [r for r in c["rows"] if isinstance(r, dict)]
    ref = {r.get("name"): r for r in rows if r.get("name") in ("fp32 compiled", "fp32 onnxruntime")}
    base = rows[0] if rows else {}

    def ms(r, b):
        v = (r.get("ms") or {}).get(str(b))
        return v if isinstance(v, (int, float)) else None

    body = []
    for r in rows:
        acc, size = r.get("accuracy"), r.get("size_bytes")
        line = [html.escape(str(r.get("name"))), "-" if acc is None else f"{acc:.4f}",
                "-" if not size else f"{size / 1e3:,.1f} kB",
                "-" if not (size and base.get("size_bytes")) else f"{base['size_bytes'] / size:.2f}x",
                *["-" if ms(r, b) is None else f"{ms(r, b):.3f}" for b in (1, 256)]]
        for name in ref:
            line += ["-" if not (ms(r, b) and ms(ref[name], b)) else f"{ms(ref[name], b) / ms(r, b):.2f}x"
                     for b in (1, 256)]
        body.append(line)
    head = ["variant", "test accuracy", "size", "smaller", "ms @1", "ms @256",
            *[f"vs {n} @{b}" for n in ref for b in (1, 256)]]
    settings = ", ".join(f"{k} {html.escape(json.dumps(v))}" for k, v in c.items()
                         if k not in ("rows", "main") and v is not None)
    note = (f'<p class="note">{settings}. Latency: milliseconds per batch (median), the speed-ups are the '
            "baseline's time over the variant's; the baselines are float32 compiled by inductor and float32 in "
            "ONNX Runtime, not eager float32.</p>")
    return _section("compress", dict(SECTIONS)["compress"], note + _table(head, body)
                    + (_img(data.pareto, "accuracy against latency and size") if data.pareto else ""))


def _summary_section(data: ReportData) -> str:
    m = data.model
    if m is None:
        return ""
    rows = [[html.escape(r["name"]), html.escape(r["type"]), "x".join(map(str, r["output_shape"][1:])),
             f"{r['params'] + r['frozen_params']:,}", f"{r['macs']:,}", _fmt(r["receptive_field"]),
             _fmt(r["effective_stride"])] for r in m.layers]
    t = m.totals
    body = (f"<p>{t['params']:,} parameters · {t['macs'] / 1e6:.2f} M MACs ({t['flops'] / 1e6:.2f} M FLOPs) "
            f"per {m.unit} · "
            f"peak activation memory {t['activation_bytes'] / 2**10:.1f} KiB at batch 1 · receptive field "
            f"{_fmt(t['receptive_field'])} px, effective stride {_fmt(t['effective_stride'])}</p>"
            + _table(["layer", "type", "output", "params", "MACs", "RF", "jump"], rows, left=2)
            + '<p class="note">from <code>convolab summary</code>; MACs count convolutions and matrix products.</p>')
    return _section("model", "Model summary", body)


def _kernels_section(data: ReportData) -> str:
    if not data.shows("kernels"):
        return _skipped(data, "kernels")
    if data.kernels is None:
        return ""
    if isinstance(data.kernels, str):
        return _section("kernels", "First-layer kernels", f'<p class="note">{html.escape(data.kernels)}</p>')
    return _section("kernels", "First-layer kernels", _img(data.kernels)
                    + '<p class="note">each filter scaled to its own range (dark: its smallest weight).</p>')


def _feature_maps_section(data: ReportData) -> str:
    if not data.shows("features"):
        return _skipped(data, "features")
    if not data.feature_maps:
        return ""
    parts = "".join(f"<h3>{html.escape(caption)}</h3>{_img(fig)}" for caption, fig in data.feature_maps)
    note = f'<p class="note">{html.escape(data.feature_maps_note)}</p>' if data.feature_maps_note else ""
    title = "Feature maps, one test image per class" if data.layout.one_class_images else "Feature maps"
    return _section("features", title, parts + note)


def _gradcam_section(data: ReportData) -> str:
    if not data.shows("gradcam"):
        return _skipped(data, "gradcam")
    g = data.gradcam
    if g is None:
        return ""
    parts = []
    for label in ("right", "wrong"):
        if isinstance(g[label], str):
            parts.append(f'<p class="note">{html.escape(g[label])}</p>')
        else:
            parts.append(f"<h3>{label} predictions</h3>{_img(g[label])}")
    body = (f'<p class="note">Grad-CAM of the predicted class at layer <code>{html.escape(g["layer"])}</code> '
            "(the last feature stage), over the image.</p>" + "".join(parts))
    return _section("gradcam", "Grad-CAM", body)


_VERDICT_CLASS = {"passes": "good", "better than random": "good", "trusted": "good", "fails": "bad",
                  "worse than random": "bad", "not trusted": "bad"}


def _verdict(v: str) -> str:
    return f'<span class="{_VERDICT_CLASS.get(v, "unsure")}">{html.escape(v)}</span>'


def _trust_section(data: ReportData) -> str:
    """The page's summary: which attribution methods can be trusted on this model, and why."""
    if data.sanity is None:  # (no checks: the sanity section says why)
        return ""
    checks = data.sanity.checks
    rows = [[html.escape(m), _verdict(v), html.escape(why)] for m, (v, why) in checks["trust"].items()]
    trusted = [m for m, (v, _) in checks["trust"].items() if v == "trusted"]
    lead = ("On this model, " + ", ".join(trusted) + (" passes" if len(trusted) == 1 else " pass")
            + " every sanity check." if trusted else "On this model, no attribution method passes every sanity check.")
    body = (f"<p><b>{html.escape(lead)}</b> A method is trusted when its maps change once the weights are "
            "re-initialised and remove or restore the class faster than a random pixel order; it is not trusted "
            f'when one of these fails (details in <a href="#sanity">the sanity checks</a>, on {checks["n"]} test '
            "images).</p>" + _table(["method", "verdict", "why"], rows, left=3))
    return _section("trust", "Summary: which attribution methods to trust on this model", body)


def _sanity_section(data: ReportData) -> str:
    if not data.shows("sanity"):
        return _skipped(data, "sanity")
    if data.sanity is None:
        return ""
    checks = data.sanity.checks
    parts = []
    # (a) parameter randomization
    rows = []
    for method, r in checks["randomization"].items():
        seeds = r["seed_correlations"]
        rows.append([method, f"{r['mean_correlation']:.3f} ± {r['std_correlation']:.3f}",
                     f"{min(seeds):.3f} .. {max(seeds):.3f}", _verdict(r["verdict"])])
    n_seeds = len(next(iter(checks["randomization"].values()))["seeds"])
    parts.append("<h3>(a) parameter randomization (Adebayo et al. 2018)</h3>"
                 '<p class="note">Spearman rank correlation between the maps of the trained model and of the same '
                 f"model with re-initialized weights, mean over {checks['n']} test images, then mean ± standard "
                 f"deviation over {n_seeds} seeded re-initialisations (range: the seeds' lowest and highest). A map "
                 f"that explains the model must change: passes when mean + std is below {RANDOMIZATION_THRESHOLD}, "
                 "fails when mean − std is at or above it, else inconclusive.</p>"
                 + _table(["method", "rank correlation (mean ± std over seeds)", "range over seeds", "verdict"], rows)
                 + _img(data.sanity.randomization))
    # (b) integrated-gradients completeness
    ig = checks["completeness"]
    parts.append("<h3>(b) integrated gradients: completeness</h3>"
                 "<p>attributions sum to f(x) − f(baseline) within a relative gap of "
                 f"<b>{100 * ig['mean_gap']:.2f}% ± {100 * ig['std_gap']:.2f}%</b> (mean ± std over "
                 f"{len(ig['gap'])} images; largest {100 * ig['max_gap']:.2f}%) with {ig['steps']} steps, baseline: "
                 f"the mean image: {_verdict(ig['verdict'])} (largest gap below {100 * COMPLETENESS_THRESHOLD:.0f}%)."
                 "</p>")
    # (c) CAM against Grad-CAM
    cam = checks["cam"]
    if "not_applicable" in cam:
        parts.append('<h3>(c) CAM = Grad-CAM</h3><p class="note">not applicable: '
                     f'{html.escape(cam["not_applicable"])}</p>')
    else:
        parts.append("<h3>(c) CAM = Grad-CAM for a global-average-pool + linear head</h3>"
                     "<p>largest difference of the two maps, each scaled to 1: "
                     f"<b>{cam['max_abs_difference']:.2e}</b>: {_verdict(cam['verdict'])} (below {CAM_TOLERANCE:g}; "
                     "the two are equal in exact arithmetic).</p>")
    # (d) deletion / insertion
    rows = []
    for method, d in checks["faithfulness"].items():
        rows.append([method, f"{d['deletion_auc']:.3f}", f"{d['random_deletion_auc']:.3f}",
                     f"{d['deletion_margin']:+.3f} ± {d['deletion_margin_se']:.3f}", _verdict(d["deletion_verdict"]),
                     f"{d['insertion_auc']:.3f}", f"{d['random_insertion_auc']:.3f}",
                     f"{d['insertion_margin']:+.3f} ± {d['insertion_margin_se']:.3f}",
                     _verdict(d["insertion_verdict"])])
    parts.append("<h3>(d) faithfulness: deletion and insertion (Petsiuk et al. 2018)</h3>"
                 '<p class="note">area under the target probability as the most important pixels are removed '
                 "(lower is better) or inserted into the mean image (higher is better), against a random order, "
                 f"mean over {checks['n']} test images. Margin: how much better than the random order (positive: "
                 "better), mean ± standard error over the images; better or worse than random when the margin is "
                 "more than two standard errors from 0.</p>"
                 + _table(["method", "deletion", "random", "margin", "", "insertion", "random", "margin", ""], rows))
    return _section("sanity", "Sanity checks of the attributions", "".join(parts))
