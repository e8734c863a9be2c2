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
import tempfile
import time
from pathlib import Path

import torch

from convolab.report.plots import plt

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
.bad{color:#b00020;font-weight:600}.good{color:#1b7f3b;font-weight:600}
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


def _file_img(path: Path) -> str:
    return _img(path.read_bytes(), path.stem)


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def build_report(run_path: str | Path, *, data_dir: str | None = None, samples: int = 32,
                 out: str | Path | None = None) -> Path:
    """Write ``RUN/report.html`` (or ``out``) and return its path.

    ``samples``: test images used for Grad-CAM examples and the sanity checks.
    """
    from convolab.atomic import write_text
    from convolab.run import load_run

    start = time.perf_counter()
    run = load_run(run_path)
    model = run.model
    data = _load_test_data(run, data_dir)
    sections = [
        _config_section(run),
        _curves_section(run),
    ]
    evaluation, test_section = _test_section(run, data)
    sections.append(test_section)
    sections.append(_summary_section(run))
    sections.append(_kernels_section(model))
    sections.append(_feature_maps_section(run, data, evaluation))
    x, y, picked = _pick_examples(run, data, evaluation, samples)
    sections.append(_gradcam_section(run, data, evaluation))
    sections.append(_sanity_section(run, x, picked))
    title = f"{run.config.get('model', type(model).__name__)} on {run.config.get('dataset', {}).get('name', '?')}"
    acc = run.summary.get("test_accuracy")
    nav = " ".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("config", "config"), ("curves", "curves"), ("test", "test results"), ("model", "model"),
        ("kernels", "kernels"), ("features", "feature maps"), ("gradcam", "Grad-CAM"), ("sanity", "sanity checks")))
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>convolab report: {html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1>"
        f"<p>run {html.escape(str(run.path))}"
        + (f" · test accuracy {100 * acc:.2f}%" if acc is not None else "")
        + f" · report written {time.strftime('%Y-%m-%d %H:%M')} by convolab</p></header>"
        f"<main><nav>{nav}</nav>{''.join(sections)}</main></body></html>"
    )
    dest = Path(out) if out else run.path / REPORT
    write_text(dest, page)
    log.info("report written in %.1fs", time.perf_counter() - start)
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
    from convolab.report.plots import plot_curves, plot_lr_steps

    rows = run.metrics()
    if not rows:
        return _section("curves", "Learning curves", '<p class="note">no metrics.jsonl in the run</p>')
    with tempfile.TemporaryDirectory() as tmp:
        paths = plot_curves(rows, tmp)
        steps_file = run.path / "steps.jsonl"
        if steps_file.exists():
            steps = read_jsonl(steps_file)
            if steps and "lr" in steps[0]:
                paths.append(plot_lr_steps(steps, Path(tmp) / "lr.png"))
        imgs = "".join(f"<figure>{_file_img(p)}</figure>" for p in paths)
    return _section("curves", "Learning curves", f'<div class="grid">{imgs}</div>')


def _test_section(run, data) -> tuple:
    from convolab.report.plots import plot_confusion, plot_predictions
    from convolab.train.metrics import confusion_matrix

    ev = _evaluate(run, data)
    k = len(run.classes)
    cm = confusion_matrix(ev.labels, ev.predictions, k)
    per_class = cm.diag().double() / cm.sum(1).clamp_min(1).double()
    with tempfile.TemporaryDirectory() as tmp:
        conf = _file_img(plot_confusion(cm, run.classes, Path(tmp) / "c.png"))
        grid = _file_img(plot_predictions(data.test.images, ev.labels, ev.predictions, ev.probabilities, run.classes,
                                          Path(tmp) / "p.png"))
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

    s = summarize(run.path)
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


def _sanity_section(run, x, picked) -> str:
    from convolab.explain.attribution import check_cam_head
    from convolab.explain.sanity import (
        cam_gradcam_agreement,
        deletion_insertion,
        ig_completeness,
        parameter_randomization,
        pixel_importance,
    )

    model = run.model
    parts = []
    # (a) parameter randomization
    rows, figs = [], []
    for method in ("gradcam", "saliency", "integrated-gradients"):
        r = parameter_randomization(model, x, method)
        ok = r["mean_correlation"] < 0.5
        rows.append([method, f"{r['mean_correlation']:.3f}",
                     f'<span class="{"good" if ok else "bad"}">{"passes" if ok else "fails"}</span>'])
        figs.append((method, pixel_importance(r["trained"][:4]), pixel_importance(r["randomized"][:4])))
    fig, axes = plt.subplots(len(figs) * 2, 4, figsize=(6.4, 3.3 * len(figs)), squeeze=False)
    for k, (method, trained, rand) in enumerate(figs):
        for j in range(min(4, len(trained))):
            for row, maps, tag in ((2 * k, trained, "trained"), (2 * k + 1, rand, "random weights")):
                axes[row, j].imshow(maps[j].detach().cpu().numpy(), cmap="jet")
                axes[row, j].set_axis_off()
                if j == 0:
                    axes[row, j].set_title(f"{method}, {tag}", fontsize=8, loc="left")
    parts.append("<h3>(a) parameter randomization (Adebayo et al. 2018)</h3>"
                 '<p class="note">Spearman rank correlation between the maps of the trained model and of the same '
                 "model with re-initialized weights, mean over the sample: a map that explains the model must change "
                 "(below 0.5).</p>" + _table(["method", "rank correlation", ""], rows) + _png(fig))
    # (b) integrated-gradients completeness
    ig = ig_completeness(model, x)
    parts.append("<h3>(b) integrated gradients: completeness</h3>"
                 "<p>attributions sum to f(x) − f(baseline) within "
                 f"<b>{100 * ig['max_gap']:.2f}%</b> (largest gap; mean "
                 f"{100 * ig['mean_gap']:.2f}%) with {ig['steps']} steps, baseline: the mean image.</p>")
    # (c) CAM against Grad-CAM
    try:
        with torch.no_grad():
            check_cam_head(model, model.forward_features(x[:1]))
        agree = cam_gradcam_agreement(model, x)
        parts.append("<h3>(c) CAM = Grad-CAM for a global-average-pool + linear head</h3>"
                     "<p>largest difference of the two maps, each scaled to 1: "
                     f"<b>{agree['max_abs_difference']:.2e}</b></p>")
    except ValueError as e:
        parts.append(f'<h3>(c) CAM = Grad-CAM</h3><p class="note">not applicable: {html.escape(str(e))}</p>')
    # (d) deletion / insertion
    rows = []
    for method in ("gradcam", "saliency", "integrated-gradients", "occlusion"):
        from convolab.explain.attribution import attribute

        maps = attribute(model, x, method)
        d = deletion_insertion(model, x, maps)
        rows.append([method, f"{d['deletion_auc']:.3f}", f"{d['random_deletion_auc']:.3f}",
                     f"{d['insertion_auc']:.3f}", f"{d['random_insertion_auc']:.3f}"])
    parts.append("<h3>(d) faithfulness: deletion and insertion (Petsiuk et al. 2018)</h3>"
                 '<p class="note">area under the target probability as the most important pixels are removed '
                 "(lower is better) or inserted into the mean image (higher is better), against a random order, "
                 f"on {len(x)} test images.</p>"
                 + _table(["method", "deletion", "random deletion", "insertion", "random insertion"], rows))
    return _section("sanity", "Sanity checks of the attributions", "".join(parts))
