"""``convolab report RUN``: one self-contained HTML page about a trained run.

Everything is inline (images as ``data:`` URIs, CSS in the page, no script, nothing fetched), so
the file can be mailed, archived or opened offline. Sections: the configuration, learning curves,
test results (confusion matrix, per-class accuracy, the most-confused pairs with examples, the
prediction grid), the model summary (``convolab.analysis``), first-layer kernels, feature maps
for one example per class, Grad-CAM for right and wrong predictions, and the sanity checks of the
attributions (``convolab.explain.sanity``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from convolab.explain.sanity import (
    CAM_TOLERANCE,
    COMPLETENESS_THRESHOLD,
    RANDOMIZATION_THRESHOLD,
    SANITY_METHODS,
    pixel_importance,
    sanity_checks,
)
from convolab.plotting import plt

__all__ = ["build_report", "REPORT"]

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


def _png(fig) -> str:
    """A matplotlib figure -> an <img> with the PNG inline (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return _img(buf.getvalue())


def _img(data: bytes, alt: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


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
    model = run.model
    stages = ["data", "config", "curves", "test", "model", "kernels", "feature maps", "Grad-CAM",
              *(f"randomization {m}" for m in SANITY_METHODS), "completeness", "CAM",
              *(f"deletion {m}" for m in SANITY_METHODS), "page"]
    with progress_bar(total=len(stages), desc="report", unit="step", enabled=progress) as bar:
        def step(name: str) -> None:
            bar.update()
            nxt = stages[min(bar.n, len(stages) - 1)]
            bar.set_postfix_str(nxt)

        bar.set_postfix_str(stages[0])
        data = _load_test_data(run, data_dir)
        step("data")
        sections = [_config_section(run)]
        step("config")
        sections.append(_curves_section(run))
        step("curves")
        evaluation, test_section = _test_section(run, data)
        sections.append(test_section)
        step("test")
        sections.append(_summary_section(run))
        step("model")
        sections.append(_kernels_section(model))
        step("kernels")
        sections.append(_feature_maps_section(run, data, evaluation))
        step("feature maps")
        x, y, picked = _pick_examples(run, data, evaluation, samples)
        sections.append(_gradcam_section(run, data, evaluation))
        step("Grad-CAM")
        checks = sanity_checks(model, x, SANITY_METHODS, step=step)
        sections.append(_sanity_section(checks))
        title = f"{run.config.get('model', type(model).__name__)} on {run.config.get('dataset', {}).get('name', '?')}"
        acc = run.summary.get("test_accuracy")
        nav = " ".join(f'<a href="#{a}">{t}</a>' for a, t in (
            ("trust", "summary"), ("config", "config"), ("curves", "curves"), ("test", "test results"),
            ("model", "model"), ("kernels", "kernels"), ("features", "feature maps"), ("gradcam", "Grad-CAM"),
            ("sanity", "sanity checks")))
        page = (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>convolab report: {html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1>"
            f"<p>run {html.escape(str(run.path))}"
            + (f" · test accuracy {100 * acc:.2f}%" if acc is not None else "")
            + f" · report written {time.strftime('%Y-%m-%d %H:%M')} by convolab</p></header>"
            f"<main><nav>{nav}</nav>{_trust_section(checks)}{''.join(sections)}</main></body></html>"
        )
        with writing(dest):
            write_text(dest, page)
        step("page")
    log.info("report written in %.1fs", time.perf_counter() - start)
    return dest


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


# -- data ----------------------------------------------------------------------------------------
def _load_test_data(run, data_dir):
    from convolab.explain.inputs import run_dataset

    return run_dataset(run, data_dir=data_dir)


def _evaluate(run, data):
    from convolab.data import DeviceLoader
    from convolab.train import evaluate

    loader = DeviceLoader(data.test, 500, mean=run.mean, std=run.std, device=run.device)
    return evaluate(run.model, loader, keep_predictions=True)


def _batch(run, images: torch.Tensor) -> torch.Tensor:
    from convolab.data.loader import Normalizer

    return Normalizer(run.mean, run.std, run.device)(images.to(run.device))


# -- sections ------------------------------------------------------------------------------------
def _config_section(run) -> str:
    cfg = run.config
    recipe = cfg.get("recipe", {})
    ds = cfg.get("dataset", {})
    rows = [["model", html.escape(str(cfg.get("model")))],
            ["model arguments", html.escape(json.dumps(cfg.get("model_kwargs", {})))],
            ["dataset", html.escape(f"{ds.get('name')} ({ds.get('source', '')})")],
            ["split sizes", html.escape(json.dumps(ds.get("sizes", {})))],
            ["input", "x".join(map(str, run.input_size))],
            ["seed", str(cfg.get("seed"))], ["device", html.escape(str(cfg.get("device")))]]
    rows += [[html.escape(k), html.escape(json.dumps(v))] for k, v in recipe.items()]
    s = run.summary
    for key in ("test_accuracy", "test_loss", "best_val_accuracy", "epochs", "train_seconds", "samples_per_second",
                "params"):
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


def _curves_section(run) -> str:
    from convolab.atomic import read_jsonl
    from convolab.plotting import curve_figures, lr_steps_figure

    rows = run.metrics()
    if not rows:
        return _section("curves", "Learning curves", '<p class="note">no metrics.jsonl in the run</p>')
    recipe, augment = run.config.get("recipe") or {}, run.config.get("augment") or {}
    figs = [fig for _, fig in curve_figures(rows, label_smoothing=recipe.get("label_smoothing"),
                                            num_classes=len(run.classes),
                                            mixed=bool(augment.get("mixup") or augment.get("cutmix")))]
    steps_file = run.path / "steps.jsonl"
    if steps_file.exists():
        steps = read_jsonl(steps_file)
        if steps and "lr" in steps[0]:
            figs.append(lr_steps_figure(steps))
    imgs = "".join(f"<figure>{_png(fig)}</figure>" for fig in figs)
    return _section("curves", "Learning curves", f'<div class="grid">{imgs}</div>')


def _test_section(run, data) -> tuple:
    from convolab.plotting import confusion_figure, predictions_figure
    from convolab.train.metrics import confusion_matrix

    ev = _evaluate(run, data)
    k = len(run.classes)
    cm = confusion_matrix(ev.labels, ev.predictions, k)
    per_class = cm.diag().double() / cm.sum(1).clamp_min(1).double()
    conf = _png(confusion_figure(cm, run.classes))
    grid = _png(predictions_figure(data.test.images, ev.labels, ev.predictions, ev.probabilities, run.classes))
    rows = [[html.escape(c), f"{int(cm[i].sum()):,}", f"{100 * float(per_class[i]):.1f}%",
             f'<span class="bar" style="width:{int(150 * float(per_class[i]))}px"></span>']
            for i, c in enumerate(run.classes)]
    body = (f"<p>test accuracy <b>{100 * ev.accuracy:.2f}%</b> on {ev.n:,} images (loss {ev.loss:.4f}).</p>"
            f'<div class="grid"><figure>{conf}</figure><figure><h3>per-class accuracy</h3>'
            f'{_table(["class", "images", "accuracy", ""], rows)}</figure></div>')
    body += "<h3>most-confused pairs</h3>" + _confused_pairs(run, data, ev, cm)
    body += f"<h3>predictions (mistakes in red, with the true class)</h3>{grid}"
    return ev, _section("test", "Test results", body)


def _confused_pairs(run, data, ev, cm, pairs: int = 5, examples: int = 8) -> str:
    off = cm.clone()
    off.fill_diagonal_(0)
    flat = off.flatten()
    k = len(run.classes)
    top = [int(i) for i in flat.argsort(descending=True)[:pairs] if flat[i] > 0]
    if not top:
        return '<p class="note">no mistakes on the test split.</p>'
    parts = []
    for idx in top:
        t, p = divmod(idx, k)
        where = ((ev.labels == t) & (ev.predictions == p)).nonzero().flatten()[:examples]
        imgs = data.test.images[where]  # (n, C, H, W) uint8
        fig, axes = plt.subplots(1, len(imgs), figsize=(1.1 * len(imgs), 1.3), squeeze=False)
        for ax, im in zip(axes[0], imgs):
            a = im.numpy().transpose(1, 2, 0)
            ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray", vmin=0, vmax=255)
            ax.set_axis_off()
        parts.append(f"<p><b>{html.escape(run.classes[t])}</b> taken for <b>{html.escape(run.classes[p])}</b>: "
                     f"{int(off[t, p])} times ({100 * int(off[t, p]) / max(int(cm[t].sum()), 1):.1f}% of "
                     f"{html.escape(run.classes[t])})</p>{_png(fig)}")
    return "".join(parts)


def _summary_section(run) -> str:
    from convolab.analysis import summarize

    s = summarize(run)  # the loaded run: analysis does not read run folders
    depth = None if len(s.trace.rows) <= 60 else 2
    layers = s.layers(depth)
    rows = [[html.escape(r["name"]), html.escape(r["type"]), "x".join(map(str, r["output_shape"][1:])),
             f"{r['params'] + r['frozen_params']:,}", f"{r['macs']:,}", _fmt(r["receptive_field"]),
             _fmt(r["effective_stride"])] for r in layers]
    t = s.totals()
    body = (f"<p>{t['params']:,} parameters · {t['macs'] / 1e6:.2f} M MACs ({t['flops'] / 1e6:.2f} M FLOPs) "
            "per image · "
            f"peak activation memory {t['activation_bytes'] / 2**10:.1f} KiB at batch 1 · receptive field "
            f"{_fmt(t['receptive_field'])} px, effective stride {_fmt(t['effective_stride'])}</p>"
            + _table(["layer", "type", "output", "params", "MACs", "RF", "jump"], rows, left=2)
            + '<p class="note">from <code>convolab summary</code>; MACs count convolutions and matrix products.</p>')
    return _section("model", "Model summary", body)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return "x".join(str(x) for x in v) if isinstance(v, list) else str(v)


def _kernels_section(model) -> str:
    from convolab.explain.viz import kernel_figure, kernel_grid

    try:
        grid = kernel_grid(model)
    except ValueError as e:
        return _section("kernels", "First-layer kernels", f'<p class="note">{html.escape(str(e))}</p>')
    return _section("kernels", "First-layer kernels", _png(kernel_figure(grid))
                    + '<p class="note">each filter scaled to its own range (dark: its smallest weight).</p>')


def _feature_maps_section(run, data, ev, max_classes: int = 10) -> str:
    from convolab.explain.viz import feature_map_figure, feature_maps

    parts = []
    for c in range(min(len(run.classes), max_classes)):
        idx = (ev.labels == c).nonzero().flatten()
        if not len(idx):
            continue
        i = int(idx[0])
        image = data.test.images[i]
        maps = feature_maps(run.model, _batch(run, image[None]))
        parts.append(f"<h3>{html.escape(run.classes[c])}</h3>"
                     + _png(feature_map_figure(maps, image.numpy(), max_channels=16)))
    note = "" if len(run.classes) <= max_classes else f'<p class="note">first {max_classes} classes shown.</p>'
    return _section("features", "Feature maps, one test image per class", "".join(parts) + note)


def _pick_examples(run, data, ev, samples: int):
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ev.labels), generator=g)[:samples]
    return _batch(run, data.test.images[idx]), ev.labels[idx], idx


def _gradcam_section(run, data, ev, n: int = 6) -> str:
    from convolab.explain.attribution import attribute
    from convolab.explain.layers import resolve_layer

    layer = resolve_layer(run.model, None)[0]
    right = (ev.predictions == ev.labels).nonzero().flatten()[:n]
    wrong = (ev.predictions != ev.labels).nonzero().flatten()[:n]
    parts = []
    for label, idx in (("right", right), ("wrong", wrong)):
        if not len(idx):
            parts.append(f'<p class="note">no {label} predictions on the test split.</p>')
            continue
        x = _batch(run, data.test.images[idx])
        maps = attribute(run.model, x, "gradcam", ev.predictions[idx].to(x.device))
        fig, axes = plt.subplots(1, len(idx), figsize=(1.6 * len(idx), 2.0), squeeze=False)
        for ax, i, m in zip(axes[0], idx.tolist(), maps):
            _overlay(ax, data.test.images[i], m)
            t, p = int(ev.labels[i]), int(ev.predictions[i])
            cap = run.classes[p] if t == p else f"{run.classes[p]}\n(true {run.classes[t]})"
            ax.set_title(cap, fontsize=7, color="#1b7f3b" if t == p else "#b00020")
        parts.append(f"<h3>{label} predictions</h3>{_png(fig)}")
    body = (f'<p class="note">Grad-CAM of the predicted class at layer <code>{html.escape(layer)}</code> '
            "(the last feature stage), over the image.</p>" + "".join(parts))
    return _section("gradcam", "Grad-CAM", body)


def _overlay(ax, image: torch.Tensor, m: torch.Tensor) -> None:
    a = image.numpy().transpose(1, 2, 0)
    ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray", vmin=0, vmax=255)
    s = m.detach().float().cpu().numpy()
    s = s - s.min()
    s = s / (s.max() or 1.0)
    rgba = plt.get_cmap("jet")(s)
    rgba[..., 3] = 0.7 * s
    ax.imshow(rgba)
    ax.set_axis_off()


_VERDICT_CLASS = {"passes": "good", "better than random": "good", "trusted": "good", "fails": "bad",
                  "worse than random": "bad", "not trusted": "bad"}


def _verdict(v: str) -> str:
    return f'<span class="{_VERDICT_CLASS.get(v, "unsure")}">{html.escape(v)}</span>'


def _trust_section(checks: dict) -> str:
    """The page's summary: which attribution methods can be trusted on this model, and why."""
    rows = [[html.escape(m), _verdict(v), html.escape(why)] for m, (v, why) in checks["trust"].items()]
    trusted = [m for m, (v, _) in checks["trust"].items() if v == "trusted"]
    lead = ("On this model, " + ", ".join(trusted) + (" passes" if len(trusted) == 1 else " pass")
            + " every sanity check." if trusted else "On this model, no attribution method passes every sanity check.")
    body = (f"<p><b>{html.escape(lead)}</b> A method is trusted when its maps change once the weights are "
            "re-initialised and remove or restore the class faster than a random pixel order; it is not trusted "
            f'when one of these fails (details in <a href="#sanity">the sanity checks</a>, on {checks["n"]} test '
            "images).</p>" + _table(["method", "verdict", "why"], rows, left=3))
    return _section("trust", "Summary: which attribution methods to trust on this model", body)


def _sanity_section(checks: dict) -> str:
    parts = []
    # (a) parameter randomization
    rows, figs = [], []
    for method, r in checks["randomization"].items():
        seeds = r["seed_correlations"]
        rows.append([method, f"{r['mean_correlation']:.3f} ± {r['std_correlation']:.3f}",
                     f"{min(seeds):.3f} .. {max(seeds):.3f}", _verdict(r["verdict"])])
        figs.append((method, pixel_importance(r["trained"][:4]), pixel_importance(r["randomized"][:4])))
    n_seeds = len(next(iter(checks["randomization"].values()))["seeds"])
    fig, axes = plt.subplots(len(figs) * 2, 4, figsize=(6.4, 3.3 * len(figs)), squeeze=False)
    for k, (method, trained, rand) in enumerate(figs):
        for j in range(min(4, len(trained))):
            for row, maps, tag in ((2 * k, trained, "trained"), (2 * k + 1, rand, "random weights, first seed")):
                axes[row, j].imshow(maps[j].detach().cpu().numpy(), cmap="jet")
                axes[row, j].set_axis_off()
                if j == 0:
                    axes[row, j].set_title(f"{method}, {tag}", fontsize=8, loc="left")
    parts.append("<h3>(a) parameter randomization (Adebayo et al. 2018)</h3>"
                 '<p class="note">Spearman rank correlation between the maps of the trained model and of the same '
                 f"model with re-initialized weights, mean over {checks['n']} test images, then mean ± standard "
                 f"deviation over {n_seeds} seeded re-initialisations (range: the seeds' lowest and highest). A map "
                 f"that explains the model must change: passes when mean + std is below {RANDOMIZATION_THRESHOLD}, "
                 "fails when mean − std is at or above it, else inconclusive.</p>"
                 + _table(["method", "rank correlation (mean ± std over seeds)", "range over seeds", "verdict"], rows)
                 + _png(fig))
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
