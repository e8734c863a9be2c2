"""Fine-tuning a torchvision-layout ResNet-18 checkpoint on a small image folder with ``--freeze`` and
``--input-size``, end to end; the device-side resize (``convolab.data.resize``) against torchvision's and the
grey-image rule against torchvision's model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from safetensors.torch import load_file
from tests.cli.test_cli import assert_one_line_error, cli
from torchvision.transforms.v2 import functional as TF

import convolab
from convolab.data.resize import InputResize, resize_images
from convolab.models import create_model
from convolab.train import TrainConfig
from convolab.train.init_from import load_initial_weights
from convolab.train.loop import Trainer

FROZEN_TOPS = ("conv1", "bn1", "layer1", "layer2", "layer3")  # --freeze layer3, in torchvision's module order


def _write_checkpoint(path):
    """torchvision's resnet18 with a fixed seed, saved as its plain state dict (as the ImageNet file is)."""
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def _write_folder(root, per_class=12, side=32):
    """Two classes of 32x32 RGB PNGs: reddish and bluish noise."""
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            a = (rng.normal(0, 30, (side, side, 3)) + np.array(colour)).clip(0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    """`convolab train --model resnet18 --init-from FILE --freeze layer3 --input-size 64x64 --data FOLDER --epochs 1`:
    (run dir, checkpoint file, data folder)."""
    base = tmp_path_factory.mktemp("transfer")
    ckpt = _write_checkpoint(base / "resnet18.pth")
    folder = _write_folder(base / "folder")
    out = base / "run"
    code = convolab.cli.main(["train", "--model", "resnet18", "--init-from", str(ckpt), "--freeze", "layer3",
                              "--input-size", "64x64", "--data", str(folder), "--epochs", "1", "--out", str(out),
                              "--device", "cpu", "--quiet", "--no-plots",
                              # a few steps at a fixed rate (one onecycle step of one would be at lr / 25 / 1e4)
                              "--batch-size", "6", "--schedule", "constant", "--lr", "1e-3"])
    assert code == 0
    return out, ckpt, folder


@pytest.mark.slow
def test_frozen_weights_stay_the_checkpoints_and_the_rest_train(transfer_run):
    out, ckpt, _ = transfer_run
    source = torch.load(ckpt, weights_only=True)
    trained = load_file(str(out / "model.safetensors"))
    frozen = [k for k in source if k.split(".")[0] in FROZEN_TOPS]
    assert len(frozen) > 80  # weights, biases, running statistics and counters of the stem and three stages
    for k in frozen:  # running statistics too: frozen BatchNorm layers stayed in eval mode
        assert torch.equal(trained[k], source[k]), k
    live = [k for k in source if k.startswith("layer4.") and k.endswith(("weight", "running_mean"))]
    for k in live:
        assert not torch.equal(trained[k], source[k]), f"{k} did not train"
    assert trained["fc.weight"].shape == (2, 512)  # the 1000-class classifier replaced
    tv = torchvision.models.resnet18(weights=None)  # parameter counts from torchvision's own model
    frozen_count = sum(p.numel() for n, p in tv.named_parameters() if n.split(".")[0] in FROZEN_TOPS)
    total = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc.")) + 2 * 512 + 2
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frozen_params"], summary["trainable_params"], summary["params"]) == \
        (frozen_count, total - frozen_count, total)
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["freeze"] == "layer3" and config["config"]["input_size"] == [64, 64]
    assert config["dataset"]["input_size"] == [3, 32, 32]  # the data stayed at its own size
    assert config["model_kwargs"]["input_size"] == [64, 64] and config["model_kwargs"]["resize_inputs"] is True


@pytest.mark.slow
def test_the_run_reloads_and_predicts_as_torchvision_on_the_resized_image(transfer_run):
    out, _, folder = transfer_run
    run = convolab.load_run(out)
    assert run.model.conv1.kernel_size == (7, 7) and run.input_size == (3, 32, 32)  # torchvision's stem
    image = folder / "class1" / "03.png"
    top = run.predict(image, top_k=2)[0]
    # independently: torchvision's resnet18 with the run's weights, on the image normalised and resized to 64x64
    tv = torchvision.models.resnet18(num_classes=2)
    tv.load_state_dict(load_file(str(out / "model.safetensors")))
    x = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(run.mean).view(1, 3, 1, 1)) / torch.tensor(run.std).view(1, 3, 1, 1)
    x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        probs = tv.eval()(x).softmax(1)[0]
    for entry in top:
        assert entry["probability"] == pytest.approx(float(probs[entry["index"]]), abs=1e-5)
    assert top[0]["index"] == int(probs.argmax())


def test_resize_matches_torchvision_and_commutes_with_normalisation():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 28, 28)
    for size in [(64, 64), (14, 20), (28, 28)]:  # up, down (antialiased), unchanged
        want = TF.resize(x, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        torch.testing.assert_close(resize_images(x, size), want, rtol=0, atol=1e-6)
        mean, std = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1), torch.tensor([0.3, 0.2, 0.25]).view(1, 3, 1, 1)
        torch.testing.assert_close(resize_images((x - mean) / std, size), (resize_images(x, size) - mean) / std,
                                   rtol=0, atol=1e-5)
    assert resize_images(x, (28, 28)) is x
    with pytest.raises(ValueError, match="float batch"):
        resize_images(x.to(torch.uint8), (8, 8))
    args = InputResize((16, 16))(None, (x, "other"))
    assert args[0].shape == (2, 3, 16, 16) and args[1] == "other"


def test_grey_images_on_an_rgb_checkpoint_equal_torchvision_on_replicated_channels(tmp_path):
    """The grey rule: conv1's RGB filters summed over colour (--init-from) respond to a grey image as the original
    filters to the grey image copied into three channels (convolution is linear in its input channels)."""
    ckpt = _write_checkpoint(tmp_path / "r18.pth")
    model = create_model("resnet18", num_classes=1000, in_chans=1, input_size=64, resize_inputs=True)
    notes = load_initial_weights(model, ckpt)
    assert notes == ["conv1.weight: 3 input channels summed to 1"]
    tv = torchvision.models.resnet18()
    tv.load_state_dict(torch.load(ckpt, weights_only=True))
    grey = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ours = model.eval()(grey)  # (2, 1, 28, 28) resized to 64x64 in the model
        ref = tv.eval()(F.interpolate(grey.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear",
                                      align_corners=False))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_input_size_keeps_the_data_small_and_builds_the_model_at_hxw(tmp_path):
    cfg = TrainConfig(model="resnet18", data="digits", out=str(tmp_path / "run"), epochs=1, device="cpu",
                      progress=False, plots=False, model_kwargs={"widths": [4, 8, 8, 16]}, input_size=[64, 64])
    trainer = Trainer(cfg)
    trainer._setup()
    assert tuple(trainer.train_loader.images.shape[-2:]) == (8, 8)  # uint8 8x8 digits in memory
    assert trainer.model.input_size == (64, 64) and trainer.model.conv1.kernel_size == (7, 7)
    x, _ = next(iter(trainer.train_loader))
    seen = []
    trainer.model.conv1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)) and None)
    with torch.no_grad():
        trainer.model(x)
    assert seen == [(len(x), 1, 64, 64)]  # what conv1 gets: the batch resized on the device


def test_input_size_refusals(tmp_path, capsys):
    code, _, err = cli(["train", "--model", "unet", "--data", "digits", "--input-size", "64x64", "--out",
                        tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "--input-size", "unet is a segmentation model", "--image-size")
    code, _, err = cli(["train", "--data", "digits", "--engine", "numpy", "--input-size", "32", "--out",
                        tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "--input-size", "--engine torch")
    with pytest.raises(ValueError, match="resize_inputs resizes images; unet takes segmentation inputs"):
        create_model("unet", num_classes=3, resize_inputs=True)


def test_a_checkpoint_that_needs_another_stem_points_at_input_size(tmp_path):
    ckpt = _write_checkpoint(tmp_path / "r18.pth")
    small = create_model("resnet18", num_classes=10, in_chans=3, input_size=32)  # below 64: the CIFAR stem
    with pytest.raises(ValueError, match=r"conv1.weight has shape \[64, 3, 7, 7\] in the file but \[64, 3, 3, 3\].*"
                                         r"--input-size HxW builds the model at the checkpoint's size"):
        load_initial_weights(small, ckpt)
