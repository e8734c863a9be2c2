"""eval, predict and datasets on segmentation and clip runs (issue 16): eval's figures against summary.json,
predict's palette masks against Run.predict and an independent forward pass, clip predictions against the model
on the decoded frames, and the refusals (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.cli.test_cli import assert_one_line_error, cli
from tests.train.test_tasks import CLIP_CLASSES, SEG_CLASSES, write_segmentation_folder, write_video_folder

import convolab
from convolab.cli.predict import mask_palette
from convolab.runs.session import train


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> tuple[Path, Path]:
    """A unet (base_channels 4, depth 2) trained 1 epoch on a tiny segmentation folder: (run, data folder)."""
    base = tmp_path_factory.mktemp("seg")
    root = write_segmentation_folder(base / "data", n_train=16, n_test=6)
    out = base / "run"
    train(model="unet", data=str(root), out=str(out), model_kwargs=dict(base_channels=4, depth=2), epochs=1,
          batch_size=8, lr=3e-3, optimizer="adam", seed=0, device="cpu", progress=False, precision="32")
    return out, root


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> tuple[Path, Path]:
    """An r3d_18 (widths 4, 4, 8, 8) trained 1 epoch on tiny grey videos, clips of 4 frames: (run, data folder)."""
    base = tmp_path_factory.mktemp("clips")
    root = write_video_folder(base / "data", per_class=4, per_class_test=2)
    out = base / "run"
    train(model="r3d_18", data=str(root), out=str(out), model_kwargs=dict(widths=[4, 4, 8, 8]), frames=4, epochs=1,
          batch_size=8, lr=3e-3, optimizer="adam", seed=0, device="cpu", progress=False, precision="32")
    return out, root


# -- eval ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # trains a tiny run (module fixture, 2-5 s on a shared CPU)
def test_eval_segmentation_equals_summary(seg_run, capsys):
    out, _ = seg_run
    s = json.loads((out / "summary.json").read_text())
    code, stdout, err = cli(["eval", out, "--json"], capsys)
    assert code == 0, err
    r = json.loads(stdout)
    assert r["task"] == "segmentation" and r["samples"] == 6
    assert r["pixel_accuracy"] == s["test_pixel_accuracy"]
    assert r["mean_iou"] == s["test_mean_iou"]
    assert r["per_class_iou"] == s["test_per_class_iou"] and set(r["per_class_iou"]) == set(SEG_CLASSES)
    assert r["loss"] == pytest.approx(s["test_loss"], rel=1e-6)
    code, stdout, err = cli(["eval", out], capsys)
    assert code == 0, err
    line = stdout.strip()
    assert "\n" not in line and f"pixel accuracy {s['test_pixel_accuracy']:.4f}" in line
    assert f"mean IoU {s['test_mean_iou']:.4f}" in line and " on 6 " in line


@pytest.mark.slow  # trains a tiny run (module fixture, 2-5 s on a shared CPU)
def test_eval_segmentation_by_hand(seg_run, capsys):
    """Pixel accuracy on the train split recomputed from the model's argmax over the decoded images."""
    out, root = seg_run
    code, stdout, err = cli(["eval", out, "--split", "train", "--json", "--batch-size", "5"], capsys)
    assert code == 0, err
    r = json.loads(stdout)
    run = convolab.load_run(out)
    data = convolab.load_dataset(str(root))
    x = (data.train.images.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(
        data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        pred = run.model(x).argmax(1)
    y = data.train.labels.long()
    valid = y != 255
    assert r["samples"] == len(y) and r["recorded"] is None
    assert r["pixel_accuracy"] == pytest.approx(float((pred[valid] == y[valid]).double().mean()), abs=1e-12)


@pytest.mark.slow  # trains a tiny run (module fixture, 2-5 s on a shared CPU)
def test_eval_clips_equals_summary(clip_run, capsys):
    out, _ = clip_run
    s = json.loads((out / "summary.json").read_text())
    code, stdout, err = cli(["eval", out, "--json"], capsys)
    assert code == 0, err
    r = json.loads(stdout)
    assert r["task"] == "clips" and r["samples"] == s["test_samples"] == 2 * 2 * 2
    assert r["clip_accuracy"] == s["test_clip_accuracy"]
    assert r["video_accuracy"] == s["test_video_accuracy"]
    assert r["loss"] == pytest.approx(s["test_loss"], rel=1e-6)
    # per clip (issue 17): precision, recall and F1 as summary.json has them; no top-5 with 2 classes
    for key in ("macro_precision", "macro_recall", "macro_f1", "per_class_precision", "per_class_recall",
                "per_class_f1"):
        assert r[key] == s[f"test_{key}"] and r["recorded"][key] == s[f"test_{key}"], key
    assert set(r["per_class_f1"]) == set(CLIP_CLASSES)
    assert r["top5_accuracy"] is None and s["test_top5_accuracy"] is None
    code, stdout, _ = cli(["eval", out], capsys)
    assert code == 0 and f"video accuracy {s['test_video_accuracy']:.4f}" in stdout


# -- predict: segmentation ----------------------------------------------------------------------------------------
@pytest.mark.slow  # trains a tiny run (module fixture, 2-5 s on a shared CPU)
def test_predict_segmentation_writes_palette_masks(seg_run, capsys, tmp_path):
    out, root = seg_run
    images = sorted((root / "test" / "images").glob("*.png"))[:2]
    rgb = tmp_path / "colour.jpg"  # a colour image of another size: converted to grey 16x16 as in training
    Image.open(images[0]).convert("RGB").resize((40, 30)).save(rgb)
    masks = tmp_path / "masks"
    code, stdout, err = cli(["predict", out, *images, rgb, "--out", masks, "--json"], capsys)
    assert code == 0, err
    rows = json.loads(stdout)
    run = convolab.load_run(out)
    for row, image in zip(rows, [*images, rgb]):
        png = Image.open(masks / f"{Path(image).stem}.png")
        assert png.mode == "P" and png.size == (16, 16)
        assert png.getpalette()[:9] == mask_palette()[:9]
        mask = np.asarray(png)
        expected = run.predict([image])[0]
        assert expected.dtype == torch.uint8 and expected.shape == (16, 16)
        assert np.array_equal(mask, expected.numpy())
        # independent: the model's argmax on the image converted by PIL and normalised by hand
        grey = np.asarray(Image.open(image).convert("L").resize((16, 16), Image.Resampling.BILINEAR), np.float32)
        x = (torch.from_numpy(grey)[None, None] / 255 - run.mean[0]) / run.std[0]
        with torch.no_grad():
            assert np.array_equal(mask, run.model(x).argmax(1)[0].numpy())
        counts = np.bincount(mask.ravel(), minlength=3)
        assert row["shares"] == {c: pytest.approx(n / 256) for c, n in zip(SEG_CLASSES, counts)}
        assert sum(row["shares"].values()) == pytest.approx(1.0)
    code, stdout, err = cli(["predict", out, images[0], "--out", masks, "--overwrite"], capsys)
    assert code == 0 and "%" in stdout and str(masks / images[0].name) in stdout, err


@pytest.mark.slow  # trains a tiny run (module fixture, 2-5 s on a shared CPU)
def test_predict_segmentation_refusals(seg_run, capsys, tmp_path):
    out, root = seg_run
    image = sorted((root / "test" / "images").glob("*.png"))[0]
    code, _, err = cli(["predict", out, image], capsys)
    assert_one_line_error(code, err, "--out")
    (tmp_path / image.name).write_bytes(b"keep")
    code, _, err = cli(["predict", out, image, "--out", tmp_path], capsys)
    assert_one_line_error(code, err, str(tmp_path / image.name), "--overwrite")
    assert (tmp_path / image.name).read_bytes() == b"keep"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, _, err = cli(["predict", out, bad, "--out", tmp_path / "m"], capsys)
    assert_one_line_error(code, err, "bad.png")
    assert not (tmp_path / "m" / "bad.png").exists()


# -- predict: clips -----------------------------------------------------------------------------------------------
@pytest.mark.slow  # trains a tiny run (module fixture, 2-5 s on a shared CPU)
def test_predict_clip_top_k(clip_run, capsys, tmp_path):
    from convolab.data.video_io import read_video, write_video

    out, root = clip_run
    video = sorted((root / "test" / "right").glob("*.mkv"))[0]
    code, stdout, err = cli(["predict", out, video, "--top-k", "2", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(stdout)
    run = convolab.load_run(out)
    frames = read_video(video)[:4].permute(3, 0, 1, 2).float()  # (C, T, H, W): the first 4 frames, 16x16 already
    x = (frames[None] / 255 - run.mean[0]) / run.std[0]
    with torch.no_grad():
        probs = run.model(x).softmax(1)[0]
    assert [t["class"] for t in row["top_k"]] == [CLIP_CLASSES[i] for i in probs.argsort(descending=True)]
    assert [t["probability"] for t in row["top_k"]] == pytest.approx(probs.sort(descending=True).values.tolist(),
                                                                    abs=1e-6)
    # a larger RGB video is cut to 4 frames, made grey and resized as training clips are
    big = tmp_path / "big.mkv"
    write_video(big, read_video(video).repeat_interleave(2, 1).repeat_interleave(2, 2).expand(-1, -1, -1, 3))
    assert run.to_clip(big).shape == (1, 4, 16, 16)
    code, stdout, err = cli(["predict", out, big], capsys)
    assert code == 0 and stdout.startswith(f"{big}: "), err


@pytest.mark.slow  # trains a tiny run (module fixture, 2-5 s on a shared CPU)
def test_predict_clip_refusals(clip_run, capsys, tmp_path):
    from convolab.data.video_io import write_video

    out, _ = clip_run
    short = tmp_path / "short.mkv"
    write_video(short, np.zeros((3, 16, 16, 1), np.uint8))
    code, _, err = cli(["predict", out, short], capsys)
    assert_one_line_error(code, err, "short.mkv", "3 frames", "4 frames")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    code, _, err = cli(["predict", out, broken], capsys)
    assert_one_line_error(code, err, "broken.mp4", "cannot decode video")
    code, _, err = cli(["predict", out, short, "--out", tmp_path], capsys)
    assert_one_line_error(code, err, "--out", "clips")


# -- datasets -----------------------------------------------------------------------------------------------------
def test_datasets_lists_segmentation_and_clips(capsys):
    from convolab.data.clips import CLIP_DATASETS
    from convolab.data.segmentation import SEGMENTATION_DATASETS

    code, stdout, err = cli(["datasets", "--json"], capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(stdout)}
    assert all(rows[n]["task"] == "segmentation" for n in SEGMENTATION_DATASETS)
    assert all(rows[n]["task"] == "clips" for n in CLIP_DATASETS)
    assert rows["fashion-mnist"]["task"] == "classification"
    scenes = convolab.load_dataset("fashion-scenes-coarse")  # the table's figures against the loaded dataset
    assert rows["fashion-scenes-coarse"]["classes"] == len(scenes.classes)
    assert rows["fashion-scenes-coarse"]["shape"] == "x".join(map(str, scenes.input_size))
    assert rows["ucf101"]["status"] == "needs files (--data-dir)"
    code, stdout, _ = cli(["datasets"], capsys)
    (line,) = [r for r in stdout.splitlines() if r.startswith("moving-fashion ")]
    assert "clips" in line and "1x8x32x32" in line
