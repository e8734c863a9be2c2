"""``convolab viz`` and ``convolab tcav`` on the shared digits run: files, JSON, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tests.cli.test_cli import assert_one_line_error, cli

from convolab.data import load_dataset
from convolab.explain.tcav import MIN_CONCEPT_IMAGES


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Digit images as files: RGB 16x16 zeros (another size and mode than the 1x8x8 training data), random digits."""
    root = tmp_path_factory.mktemp("images")
    train = load_dataset("digits").train

    def save(folder, images, size=None, mode="L"):
        folder = root / folder
        folder.mkdir(parents=True)
        for i, im in enumerate(images):
            img = Image.fromarray(im[0].numpy())
            (img.resize(size) if size else img).convert(mode).save(folder / f"{i:02d}.png")
        return folder

    rng = np.random.default_rng(0)
    return dict(
        zeros=save("zeros", train.images[train.labels == 0][:20], size=(16, 16), mode="RGB"),
        randoms=[save(f"random{r}", train.images[rng.choice(len(train), 15, replace=False)]) for r in range(4)],
        few=save("few", train.images[:MIN_CONCEPT_IMAGES - 1]),
        inputs=save("inputs", train.images[train.labels == 0][20:32]),
        root=root,
    )


@pytest.fixture(scope="module")
def rgb_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("png") / "colour.png"
    Image.fromarray((np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _is_png(path) -> bool:
    with Image.open(path) as img:
        img.load()
        return img.format == "PNG" and img.size[0] > 50


# -- viz ------------------------------------------------------------------------------------------
def test_viz_writes_every_picture(digits_run, rgb_png, tmp_path, capsys):
    out = tmp_path / "viz"
    code, stdout, err = cli(["viz", digits_run.run_dir, "--kernels", "--feature-maps", rgb_png, "--filters",
                             "--units", "2", "--steps", "20", "--out", out, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    kinds = {r["kind"]: r for r in doc["files"]}
    assert kinds["kernels"]["path"] == str(out / "kernels.png")
    assert kinds["kernels"]["layer"] == "features.conv1" and kinds["kernels"]["weight_shape"] == [16, 1, 3, 3]
    assert kinds["feature_maps"]["path"] == str(out / "feature_maps_colour.png")
    assert kinds["feature_maps"]["layers"] == {"features.relu1": [16, 4, 4], "features.relu2": [32, 2, 2]}
    assert kinds["filters"]["path"] == str(out / "filters_features.relu2.png")
    assert kinds["filters"]["units"] == [0, 1] and len(kinds["filters"]["activations"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["feature_maps_colour.png", "filters_features.relu2.png",
                                                     "kernels.png"]  # no temporary files left
    assert all(_is_png(r["path"]) for r in doc["files"])


def test_viz_refuses_to_overwrite(digits_run, tmp_path, capsys):
    out = tmp_path / "viz"
    code, stdout, err = cli(["viz", digits_run.run_dir, "--kernels", "--diverging", "--out", out], capsys)
    assert code == 0, err
    assert stdout.startswith("kernels") and str(out / "kernels.png") in stdout and "16 filters of 1x3x3" in stdout
    before = (out / "kernels.png").stat().st_mtime_ns
    code, _, err = cli(["viz", digits_run.run_dir, "--kernels", "--out", out], capsys)
    assert_one_line_error(code, err, "kernels.png already exists", "--overwrite")
    assert (out / "kernels.png").stat().st_mtime_ns == before
    code, _, err = cli(["viz", digits_run.run_dir, "--kernels", "--out", out, "--overwrite"], capsys)
    assert code == 0, err


def test_viz_feature_maps_of_chosen_layers(digits_run, rgb_png, tmp_path, capsys):
    code, stdout, err = cli(["viz", digits_run.run_dir, "--feature-maps", rgb_png, rgb_png, "--layers",
                             "features.conv2", "--out", tmp_path], capsys)
    assert code == 0, err
    assert (tmp_path / "feature_maps_colour.png").exists() and (tmp_path / "feature_maps_colour-2.png").exists()
    assert "features.conv2" in stdout


@pytest.mark.parametrize("args,needles", [
    ([], ["nothing to draw", "--kernels"]),
    (["--feature-maps", "IMG", "--layers", "features.relu3"], ["unknown layer 'features.relu3'", "features.relu1"]),
    (["--filters", "--layer", "fc2"], ["unknown layer 'fc2'", "classifier.fc2"]),
    (["--feature-maps", "NOTIMG"], ["not an image file"]),
    (["--filters", "--units", "0"], ["--units", "positive integer"]),
])
def test_viz_errors_are_one_line(digits_run, rgb_png, tmp_path, capsys, args, needles):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    args = [str(rgb_png) if a == "IMG" else str(not_image) if a == "NOTIMG" else a for a in args]
    code, _, err = cli(["viz", digits_run.run_dir, *args, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- tcav -----------------------------------------------------------------------------------------
def _randoms(folders):
    return [a for f in folders["randoms"] for a in ("--random", f)]


def test_tcav_json(digits_run, folders, capsys):
    code, stdout, err = cli(["tcav", digits_run.run_dir, "--concept", folders["zeros"], *_randoms(folders),
                             "--layer", "features.relu2", "--target", "0", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    test_zeros = int((load_dataset("digits").test.labels == 0).sum())
    assert doc["target"] == 0 and doc["target_name"] == "0" and doc["inputs"] == test_zeros
    assert doc["random_sets"] == ["random0", "random1", "random2", "random3"] and doc["tests"] == 1
    (r,) = doc["results"]
    assert r["concept"] == "zeros" and r["layer"] == "features.relu2"
    assert len(r["scores"]) == 4 and len(r["random_scores"]) == 12
    assert r["score"] > 0.9 and r["separable"]  # zeros push the class "0" up, and the layer knows a zero
    assert 0 <= r["p_value"] <= 1 and r["significant"] == (r["p_value"] < 0.05)


def test_tcav_text_with_inputs_folder(digits_run, folders, capsys):
    code, stdout, err = cli(["tcav", digits_run.run_dir, "--concept", folders["zeros"], *_randoms(folders)[:4],
                             "--target", "0", "--inputs", folders["inputs"]], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("TCAV for class '0': 12 inputs, 2 random folders, significance level 0.05")
    assert lines[1].split()[:3] == ["concept", "layer", "score"]
    assert lines[2].split()[:2] == ["zeros", "features.relu2"]  # the default layer: the last feature stage


@pytest.mark.parametrize("change,needles", [
    (dict(concept="few"), [f"has only {MIN_CONCEPT_IMAGES - 1} readable image files",
                           f"at least {MIN_CONCEPT_IMAGES} are needed"]),
    (dict(randoms=1), ["needs at least 2 random folders"]),
    (dict(target="zero"), ["unknown class 'zero'"]),
    (dict(target="10"), ["class index 10 is out of range"]),
    (dict(layer="features.relu"), ["unknown layer 'features.relu'", "did you mean"]),
    (dict(concept="missing"), ["no such folder"]),
])
def test_tcav_errors_are_one_line(digits_run, folders, capsys, change, needles):
    concept = folders["root"] / "missing" if change.get("concept") == "missing" else folders[change.get("concept",
                                                                                                       "zeros")]
    randoms = _randoms(folders)[:2 * change.get("randoms", 2)]
    args = ["tcav", digits_run.run_dir, "--concept", concept, *randoms, "--target", change.get("target", "0")]
    if "layer" in change:
        args += ["--layer", change["layer"]]
    code, _, err = cli(args, capsys)
    assert_one_line_error(code, err, *needles)
