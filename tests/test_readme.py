"""Every shell command in README.md runs as written.

What is extracted: every line of the README's ```bash blocks and every ``$ `` line of its ```console
blocks (a ``\\`` at a line's end joins the next line; ``#`` starts a comment, as in the shell). Each
command must appear in ``COMMANDS`` below, keyed by its words without the comment; a README command
missing there, an entry no longer in the README, or fewer than ``MIN_COMMANDS`` commands found fails
the test, so the table follows the README and a change of the README's structure is noticed.

How each command is treated (``How.kind``):

- ``fast``: run as written (``bash -o pipefail -c``) in a fresh temporary working directory, in the
  fast suite; where the README quotes its output (a ```console block), every quoted line that is not
  elided with ``...`` must be in the real output.
- ``run``: the same, in the slow suite, in README order in one shared working directory, so that a
  command finds the run directories the README's earlier commands made. Quoted output that holds
  figures of a training (``How.figures``: explain's probabilities, TCAV's scores) is not compared: they
  are the README's measurements, and the test's runs are shorter.
- ``adapt``: the README's command trains for minutes (Fashion-MNIST or CIFAR-10 for many epochs) or
  needs data that is downloaded; the test runs it as written with ``How.extra`` appended (``--data
  digits``, ``--epochs 1`` ...). argparse keeps the last value of a repeated option, so every other
  option of the example is still parsed and trained with. The rule: ``--data digits`` where the point
  of the example does not need the README's dataset, ``--epochs 1`` (or a few) where even digits would
  train for long; nothing else is changed.
- ``gpu``: needs CUDA. Adapted as above; it must exit 0 where CUDA is available and otherwise be
  refused with one ``error:`` line and exit code 2.
- ``bf16``: needs a CPU with bfloat16 instructions (or a GPU): exit 0 there, one line and exit 2
  elsewhere.
- ``killed``: the README's "the job is killed" step: run adapted in the background and killed with
  SIGKILL once its first checkpoint is on disk, so that ``--resume`` after it has something to do.
- ``skip``: not run; ``How.reason`` says why (a GPU cluster, torchrun with several processes, the
  internet, this test suite itself, minutes of work).

What the commands need and the README does not make (image files, an image folder in ``~/pictures``,
concept and random folders) is made first from scikit-learn's digits and Fashion-MNIST test images;
``HOME`` is a temporary folder. ``runs/demo`` comes from ``make demo``'s train command with ``--epochs
1`` (Fashion-MNIST kept: the explain example targets the class Sneaker). The ```python blocks then run
in the same directory. Every command's output and its seconds are appended to ``outputs.txt`` in the test's tmp folder,
for re-measuring the figures the README quotes; pytest deletes that folder when the test passes, so
``CONVOLAB_README_OUTPUTS=FILE`` names a file that stays instead.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

README = Path(__file__).resolve().parents[1] / "README.md"
VENV_BIN = Path(sys.executable).parent
MIN_COMMANDS = 40  # the README had 53 when this test was written; far fewer means the extraction broke


@dataclass(frozen=True)
class How:
    kind: str  # fast, run, adapt, gpu, bf16, killed, skip
    extra: str = ""  # appended to the command (adapt, gpu, bf16, killed)
    reason: str = ""  # why it is skipped or adapted
    figures: bool = False  # its quoted output holds measured figures that depend on the training: not compared


def _fast() -> How:
    return How("fast")


def _run() -> How:
    return How("run")


def _adapt(extra: str, reason: str) -> How:
    return How("adapt", extra, reason)


def _skip(reason: str) -> How:
    return How("skip", reason=reason)


_LONG = "Fashion-MNIST for minutes"
_SERVE = ("serves until Ctrl-C; tests/serve start the same server (test_security.py as a process, test_browser.py "
          "with Chromium on its page)")
_CIFAR = "CIFAR-10 is downloaded (internet) and trains for minutes"
# without --epochs a run takes about 2,500 steps: 200 epochs of digits, 15-20 s each here; 6 epochs check the same
_DIGITS_BUDGET = _LONG + "; on digits, 6 epochs (the step budget would make 200)"

# Every README command, keyed by its words (comment dropped), and how the test treats it. README order.
COMMANDS: dict[str, How] = {
    "make demo": _skip("installs into .venv and trains 5 epochs on Fashion-MNIST; its train command makes runs/demo "
                       "below with --epochs 1"),
    "make test": _skip("runs this test suite"),
    "convolab train --model tutorial_cnn --data fashion-mnist --epochs 5 --out runs/fm":
        _adapt("--data digits --epochs 1", _LONG),
    "convolab train --model lenet5 --data digits --epochs 20 --lr 3e-3 --out runs/digits": _run(),
    "convolab train --recipe speedrun-cpu --out runs/fast": _adapt("--data digits", _LONG),
    "convolab train --recipe speedrun-cpu --epochs 6 --out runs/f6": _adapt("--data digits", _LONG),
    "convolab train --model mnist_cnn --data ~/pictures/letters --optimizer sgd --lr 0.05 --momentum 0.9 "
    "--out runs/letters": _adapt("--epochs 30", "the test's folder holds 90 letters: one step an epoch, so the default "
                                 "budget makes 300 epochs (a minute); 30 train the same way"),
    "convolab train --optimizer sgd --lr 0.05 --momentum 0.9 --nesterov --weight-decay 5e-4 --out runs/sgd":
        _adapt("--data digits --epochs 6", _DIGITS_BUDGET),
    "convolab train --optimizer adamw --lr 2e-3 --weight-decay 0.05 --label-smoothing 0.1 --out runs/adamw":
        _adapt("--data digits --epochs 6", _DIGITS_BUDGET),
    "convolab train --model resnet20 --batch-size 64 --accum-steps 4 --clip-grad-norm 1.0 --out runs/accum":
        _adapt("--data digits --epochs 1", _LONG),
    "convolab train --schedule cosine --warmup-epochs 1 --epochs 10 --out runs/cosine": _adapt("--data digits", _LONG),
    "convolab train --schedule onecycle --lr 0.01 --optimizer sgd --epochs 8 --out runs/onecycle":
        _adapt("--data digits", _LONG),
    "convolab train --schedule multistep --milestones 6 9 --gamma 0.1 --epochs 12 --out runs/multistep":
        _adapt("--data digits", _LONG),
    "convolab train --schedule cyclic --min-lr 1e-4 --lr 3e-3 --cycle-epochs 4 --epochs 8 --out runs/clr":
        _adapt("--data digits", _LONG),
    "convolab train --schedule sgdr --restart-epochs 2 --restart-mult 2 --epochs 14 --out runs/sgdr":
        _adapt("--data digits", _LONG),
    "convolab train --data fashion-mnist --augment light --epochs 10 --out runs/light": _adapt("--data digits", _LONG),
    "convolab train --data cifar10 --model resnet20 --augment standard --cutmix 1.0 --out runs/c10-cutmix":
        _adapt("--data digits --epochs 1", _CIFAR),
    "convolab train --data mnist --augment standard --out runs/mnist":
        _adapt("--data digits --epochs 6", "MNIST is downloaded (internet); digits get the same rotations; 6 epochs "
               "(the step budget would make 200)"),
    "convolab train --data fashion-mnist --crop-pad 3 --no-hflip --cutout 0.25 --mixup 0.2 --out runs/custom":
        _adapt("--data digits --epochs 6", _DIGITS_BUDGET),
    "convolab train --precision bf16 --out runs/bf16": How("bf16", "--data digits --epochs 1", _LONG),
    "convolab train --device cuda --precision fp16 --out runs/fp16": How("gpu", "--data digits --epochs 1", _LONG),
    "convolab train --model resnet50 --data cifar10 --grad-checkpointing --device cuda --out runs/r50":
        How("gpu", "--data digits --epochs 1", _CIFAR),
    "convolab train --ema 0.999 --tta --augment light --out runs/ema":
        _adapt("--data digits --epochs 6", _DIGITS_BUDGET),
    "convolab train --compile --tensorboard --out runs/tb":
        _skip("needs the optional tensorboard package, and torch.compile compiles for minutes on a CPU"),
    "torchrun --nproc-per-node 4 -m convolab train --model resnet20 --data cifar10 --device cuda --batch-size 512 "
    "--out runs/ddp": _skip("needs 4 GPUs"),
    "torchrun --nproc-per-node 2 -m convolab train --data fashion-mnist --device cpu --out runs/ddp-cpu":
        _skip("torchrun with 2 processes on 2 shared cores for minutes; tests/train cover 2-process training"),
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint node0.example:29400 --rdzv-id fm1 "
    "-m convolab train --model resnet50 --data cifar10 --device cuda --batch-size 1024 --out runs/2x8":
        _skip("needs two machines with 8 GPUs each"),
    "convolab train --model unet --data fashion-scenes-coarse --model-arg base_channels=16 depth=3 --epochs 12 "
    "--batch-size 64 --label-smoothing 0 --monitor val_mean_iou --out runs/scenes":
        _adapt("--epochs 1 --model-arg base_channels=4 depth=2", "12 epochs of a U-Net take minutes"),
    "convolab train --model unet --data ~/pictures/roads --image-size 128x128 --dice-weight 1 --out runs/roads":
        _skip("needs a folder of road photos with masks; tests/train/test_tasks.py trains on a segmentation folder"),
    "convolab train --model c3d --data moving-fashion --model-arg widths=[8,16,32,64,64] fc_width=128 drop_rate=0.2 "
    "--batch-size 64 --out runs/moving": _adapt("--epochs 1", "6 epochs of a 3D CNN take minutes"),
    "convolab train --model r3d_18 --data ~/videos/actions --frames 16 --image-size 112x112 --out runs/actions":
        _skip("needs a folder of videos; tests/train/test_tasks.py trains r3d_18 on a folder of written videos"),
    "convolab train --data ~/pictures/huge --image-size 128x128 --max-memory 2GiB --out runs/huge":
        _skip("needs a folder larger than memory; tests/train/test_streaming_train.py trains through the streaming "
              "path"),
    "torchrun --nproc-per-node 2 -m convolab train --model vgg11 --data cifar10 --pipeline-stages 2 --out runs/pipe":
        _skip("torchrun with 2 processes and CIFAR-10 (downloaded); tests/train/test_pipeline*.py split models "
              "across 2 processes on gloo"),
    "convolab train --model resnet18 --init-from ~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth --freeze layer2 "
    "--lr-decay-per-stage 0.5 --input-size 64x64 --data fashion-mnist --schedule cosine --lr 1e-3 --epochs 3 "
    "--out runs/ft":
        _skip("needs torchvision's ImageNet weights file (internet); tests/train/test_transfer.py trains this way "
              "from a seeded torchvision resnet18 file it writes"),
    "convolab train --model vgg11_bn --init-from vgg11_bn.pth --freeze features.* --input-size 224 "
    "--data ~/pictures/flowers --out runs/ft-vgg":
        _skip("needs torchvision's ImageNet vgg11_bn weights (internet) and minutes at 224x224; "
              "tests/train/test_freeze.py covers patterns"),
    "convolab train --model resnet20 --data cifar10 --epochs 30 --checkpoint-every 200 --out runs/c10":
        How("killed", "--data digits --epochs 3", _CIFAR),
    "convolab train --resume runs/c10": _run(),
    "convolab train --resume runs/c10/checkpoints/step-00004000.pt":
        _skip("the step number is one the 30-epoch CIFAR-10 run would have; a digits run has others"),
    "convolab train --early-stopping 3 --monitor val_loss --epochs 50 --out runs/es":
        _adapt("--data digits --epochs 8", _LONG),
    "convolab lr-find --model tutorial_cnn --data fashion-mnist --optimizer sgd --out runs/lrf": _run(),
    "convolab lr-find --data digits --json | python3 -c import json,sys; print(json.load(sys.stdin)[\"suggested_lr\"])":
        _run(),
    "convolab eval runs/fm": _run(),
    "convolab eval runs/fm --split val --json": _run(),
    "convolab predict runs/fm shoe.png shirt.jpg --top-k 3": _run(),
    "convolab predict runs/fm photos/*.jpg --json": _run(),
    "convolab models": _run(),  # builds every model: ~20 s on the shared 2 cores
    "convolab models lenet --json": _fast(),
    "convolab train --model spec:conv(6,5),relu,maxpool(2),conv(16,5),relu,maxpool(2),flatten,fc(120),relu,fc(84),"
    "relu,fc --data fashion-mnist --out runs/simplecnn": _adapt("--epochs 1", _LONG),
    "convolab train --model spec:conv(6,5,p=2),tanh,avgpool(2),conv(16,5),tanh,avgpool(2),flatten,fc(120),tanh,"
    "fc(84),tanh,fc --data fashion-mnist --engine numpy --out runs/lenet-glass":
        _adapt("--epochs 1", "the NumPy engine on Fashion-MNIST for minutes (one epoch: about 20 s)"),
    "convolab summary spec:2*(conv(32,3,p=same),bn,relu),res(conv(32,3,p=same),bn,relu,conv(32,3,p=same),bn),"
    "cat(conv(16,1)|sepconv(16,3,p=1)|maxpool(3,s=1,p=1)),cbam(8),gap,fc(10) --input 3,32,32": _fast(),
    "convolab models --spec-help": _fast(),
    "convolab summary resnet18 --input 3,32,32 --depth 1": _fast(),
    "convolab summary conv5 conv3,conv3 --input 64,32,32": _fast(),
    "convolab summary runs/demo --verify": _run(),
    "convolab explain runs/demo boot.png --method gradcam integrated-gradients --out expl": How("run", figures=True),
    "convolab explain runs/demo *.png --method occlusion --target Sneaker --out expl --overwrite": _run(),
    "convolab report runs/demo": _run(),
    "convolab viz runs/digits --kernels --feature-maps seven.png --filters --layer features.act2 --units 8 --out viz":
        _run(),
    "convolab tcav runs/digits --concept concepts/zeros --random random/0 --random random/1 --random random/2 "
    "--random random/3 --random random/4 --random random/5 --random random/6 --random random/7 --target 0 "
    "--layer features.act1 --layer features.act2": How("run", figures=True),
    "convolab datasets": _fast(),
    "convolab datasets --download mnist": _skip("needs the internet"),
    "convolab compress runs/demo --method ptq --out runs/demo-int8":
        _adapt("--repeats 1 --calibration 256", "times every variant five times; once is enough for the test"),
    "convolab compress runs/demo --method qat --epochs 1 --control --out runs/demo-qat":
        _skip("fine-tunes twice on Fashion-MNIST (minutes); tests/cli/test_compress_cli.py runs it on digits"),
    "convolab compress runs/demo --method prune --macs-fraction 0.5 --epochs 3 --out runs/demo-pruned":
        _skip("fine-tunes on Fashion-MNIST for minutes; tests/cli/test_compress_cli.py runs it on digits"),
    "convolab compress runs/demo --method distill --student perceptron --control --out runs/demo-student":
        _skip("trains two students on Fashion-MNIST (minutes); tests/cli/test_compress_cli.py runs it on digits"),
    "convolab export runs/demo --format onnx": _run(),
    "convolab export runs/demo --format c --out export/demo": _run(),
    "convolab export runs/demo --format c --dtype int8 --out export/demo-int8": _run(),
    "convolab compare runs/act --variant relu=--act relu --variant tanh=--act tanh --seeds 3 -- --data digits "
    "--epochs 2": _run(),
    "convolab compare runs/zoo --variant tutorial_cnn --variant lenet5 --seeds 5 --jobs 2 -- --data fashion-mnist":
        _skip("trains 10 runs on Fashion-MNIST (minutes); the command above runs a comparison on digits"),
    "convolab study --list": _fast(),
    "convolab study cnn-vs-mlp --jobs 2":
        _skip("trains 6 runs on Fashion-MNIST (minutes); tests/experiments/test_studies.py runs a study on digits"),
    "convolab sweep lr --space lr=loguniform(1e-4,1e-1) --space batch_size=choice(64,128,256) --trials 20 -- "
    "--data fashion-mnist --epochs 3":
        _skip("trains 20 runs on Fashion-MNIST (minutes); tests/experiments/test_sweep.py sweeps on digits"),
    "convolab search macro --strategy evolution --trials 30 -- --data fashion-mnist --epochs 2":
        _skip("trains 30 candidates on Fashion-MNIST (minutes); tests/experiments/test_search.py searches digits"),
    "convolab search cell --strategy darts --order 2 --partial-channels 4 -- --data fashion-mnist --epochs 10":
        _skip("a second-order supernet on Fashion-MNIST for 10 epochs (an hour); the tests search digits"),
    "convolab serve runs/": _skip(_SERVE),
    "convolab serve runs/demo --open": _skip(_SERVE),
    "convolab serve": _skip(_SERVE),
    "convolab landscape runs/demo": _adapt("--images 512", "evaluates 21 points; 512 images are enough to check it"),
    "convolab landscape runs/demo --2d --out runs/demo/landscape-2d":
        _adapt("--points 5 --images 256", "441 evaluations take minutes; a 5x5 grid checks the command"),
    "convolab train --engine numpy --model tutorial_cnn --data fashion-mnist --epochs 2 --out runs/fm-numpy":
        _adapt("--data digits", _LONG),
    "convolab train --model fastcnn --data fashion-mnist --epochs 15 --batch-size 512 --optimizer sgd --lr 0.2 "
    "--momentum 0.9 --nesterov --weight-decay 5e-4 --schedule onecycle --pct-start 0.25 --label-smoothing 0.1 "
    "--augment light --tta --val-fraction 0": _adapt("--data digits --epochs 1", _LONG + " (about 400 s on 2 cores)"),
    "make test-all": _skip("runs this test suite"),
    "make test-full": _skip("runs this test suite"),
    "make lint": _skip("lints the whole tree, which .ci/run does"),
    "make bench": _skip("times the tutorial against convolab for minutes"),
}


@dataclass(frozen=True)
class Command:
    line: str  # as the README writes it (continuations joined), comment included
    key: str  # its words without the comment: the key into COMMANDS
    output: tuple[str, ...]  # the output a ```console block quotes under it


def readme_commands(text: str) -> list[Command]:
    """The commands of the README's ```bash and ```console blocks, in order.

    Raises:
        AssertionError: no such block, or a block without a command (the README's structure changed).
    """
    blocks = re.findall(r"^```(bash|console)\n(.*?)^```", text, re.S | re.M)
    assert blocks, "README.md has no ```bash or ```console block: did its structure change?"
    commands: list[Command] = []
    for lang, body in blocks:
        found = 0
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if lang == "console":
                if not line.startswith("$ "):
                    if commands and found:  # output of the previous command
                        c = commands[-1]
                        commands[-1] = Command(c.line, c.key, c.output + (line,))
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            while line.rstrip().endswith("\\") and i < len(lines):
                line = line.rstrip()[:-1].rstrip() + " " + lines[i].strip()
                i += 1
            commands.append(Command(line, " ".join(shlex.split(line, comments=True)), ()))
            found += 1
        assert found, f"a ```{lang} block of README.md has no command:\n{body}"
    return commands


def _commands() -> list[Command]:
    return readme_commands(README.read_text(encoding="utf-8"))


def test_every_readme_command_is_classified():
    """The table follows the README both ways, and the extraction finds the README's commands."""
    commands = _commands()
    assert len(commands) >= MIN_COMMANDS, f"only {len(commands)} commands found in README.md"
    keys = [c.key for c in commands]
    unknown = [k for k in keys if k not in COMMANDS]
    stale = [k for k in COMMANDS if k not in keys]
    assert not unknown, "README commands this test does not know (add them to COMMANDS):\n" + "\n".join(unknown)
    assert not stale, "COMMANDS entries no longer in README.md (remove them):\n" + "\n".join(stale)
    for key, how in COMMANDS.items():
        assert how.kind in {"fast", "run", "adapt", "gpu", "bf16", "killed", "skip"}, key
        assert how.kind in {"fast", "run"} or how.reason, f"{key}: say why it is not run as written"


def test_readme_extraction_joins_continuations_and_quoted_output():
    text = ("```bash\nconvolab a \\\n    --b 1   # note\n# comment only\n```\n"
            "```console\n$ convolab c\nout 1\nout 2\n$ convolab d\n```\n")
    got = readme_commands(text)
    assert [(c.key, c.output) for c in got] == [("convolab a --b 1", ()), ("convolab c", ("out 1", "out 2")),
                                                 ("convolab d", ())]
    with pytest.raises(AssertionError, match="structure"):
        readme_commands("no blocks at all")
    with pytest.raises(AssertionError, match="has no command"):
        readme_commands("```bash\n# only a comment\n```\n")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVOLAB_DATA", "CONVOLAB_DEBUG")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}",
               MPLBACKEND="Agg", COLUMNS="120")
    return env


def _sh(line: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _squash(s: str) -> str:
    return " ".join(s.split())


def _check_quoted_output(cmd: Command, stdout: str) -> list[str]:
    """Quoted lines (not elided with '...') missing from the real output, compared with spaces squashed."""
    if COMMANDS[cmd.key].figures:
        return []
    real = _squash(stdout)
    return [q for q in cmd.output if q.strip() and "..." not in q and _squash(q) not in real]


def _describe(cmd: Command, proc: subprocess.CompletedProcess) -> str:
    tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-1500:]).strip()
    return f"$ {cmd.line}\nexit {proc.returncode}\n{tail}"


FAST = [c for c in _commands() if COMMANDS.get(c.key, How("")).kind == "fast"]


@pytest.mark.parametrize("cmd", FAST, ids=[c.key for c in FAST])
def test_fast_readme_command_runs_as_written(cmd, tmp_path):
    proc = _sh(cmd.line, tmp_path, _env(tmp_path / "home"), timeout=120)
    assert proc.returncode == 0, _describe(cmd, proc)
    assert "Traceback" not in proc.stderr, _describe(cmd, proc)
    missing = _check_quoted_output(cmd, proc.stdout)
    assert not missing, "the README quotes lines the command does not print:\n" + "\n".join(missing)


# -- the slow walk through the README ---------------------------------------------------------------------------


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_inputs(cwd: Path, home: Path) -> None:
    """Files the README's commands read and do not make: images, an image folder, concept folders."""
    import convolab

    fm = convolab.load_dataset("fashion-mnist").test
    first = {int(c): int((fm.labels == c).nonzero()[0]) for c in (6, 7, 9)}  # Shirt, Sneaker, Ankle boot
    _save(fm.images[first[7], 0].numpy(), cwd / "shoe.png")
    _save(fm.images[first[6], 0].numpy(), cwd / "shirt.jpg")
    _save(fm.images[first[9], 0].numpy(), cwd / "boot.png")
    for i in range(3):
        _save(fm.images[i, 0].numpy(), cwd / "photos" / f"photo{i}.jpg")

    digits = convolab.load_dataset("digits")
    test = digits.test.images[:, 0].numpy()
    _save(test[int(np.flatnonzero(digits.test.labels.numpy() == 7)[0])], cwd / "seven.png")
    # TCAV's folders come from the training split: its inputs are the test split's zeros
    images, labels = digits.train.images[:, 0].numpy(), digits.train.labels.numpy()
    for k, i in enumerate(np.flatnonzero(labels == 0)[:20]):  # concepts/zeros: 20 handwritten zeros
        _save(images[i], cwd / "concepts" / "zeros" / f"{k}.png")
    rng = np.random.default_rng(0)
    for r in range(8):  # random/0..7: 20 training digits of any class each
        for k, i in enumerate(rng.choice(len(images), 20, replace=False)):
            _save(images[i], cwd / "random" / str(r) / f"{k}.png")

    for letter in "ABC":  # ~/pictures/letters/<class>/: 30 drawn letters each, shifted at random
        for k in range(30):
            img = Image.new("L", (28, 28))
            dx, dy = rng.integers(2, 14, size=2)
            ImageDraw.Draw(img).text((int(dx), int(dy)), letter, fill=255)
            img.save(_mkdir(home / "pictures" / "letters" / letter) / f"{k}.png")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_killed(line: str, cwd: Path, env: dict[str, str], out: str) -> str | None:
    """Start ``line``, SIGKILL it once a step checkpoint of ``out`` is on disk; an error, or None."""
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    folder = cwd / out / "checkpoints"
    while time.monotonic() < deadline and proc.poll() is None:
        if folder.is_dir() and any(p.name.startswith("step-") for p in folder.iterdir()):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None
        time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate()
    return f"$ {line}\nended (exit {proc.returncode}) before it could be killed after its first checkpoint\n{err}"


@pytest.mark.slow
@pytest.mark.longest
def test_readme_walkthrough(tmp_path):
    """Every command not skipped, in README order, in one working directory; then the ```python blocks."""
    cwd, home = _mkdir(tmp_path / "work"), _mkdir(tmp_path / "home")
    env = _env(home)
    _make_inputs(cwd, home)
    prep = _sh("convolab train --model tutorial_cnn --data fashion-mnist --epochs 1 --out runs/demo", cwd, env)
    assert prep.returncode == 0, prep.stderr  # make demo's train command, 1 epoch

    from convolab.train.step import cpu_has_native_bf16

    failures = []
    outputs = Path(os.environ.get("CONVOLAB_README_OUTPUTS") or tmp_path / "outputs.txt")
    for cmd in _commands():
        how = COMMANDS[cmd.key]
        if how.kind == "skip":
            continue
        line = f"{cmd.line.split(' #')[0]} {how.extra}".strip() if how.extra else cmd.line
        if how.kind == "killed":
            error = _run_killed(line, cwd, env, out=shlex.split(cmd.key)[-1])
            if error:
                failures.append(error)
            continue
        started = time.monotonic()
        proc = _sh(line, cwd, env)
        with open(outputs, "a", encoding="utf-8") as log:  # for re-measuring the README's figures
            # (and each command's seconds: where this test's minutes go)
            log.write(f"$ {line}\nexit {proc.returncode} after {time.monotonic() - started:.1f} s\n"
                      f"{proc.stdout}{proc.stderr}\n")
        expect_ok = {"gpu": torch.cuda.is_available(), "bf16": cpu_has_native_bf16() or torch.cuda.is_available()}
        if expect_ok.get(how.kind, True):
            ok = proc.returncode == 0 and "Traceback" not in proc.stderr
            ok = ok and not _check_quoted_output(cmd, proc.stdout)
        else:  # refused with one line, before any work
            lines = proc.stderr.strip().splitlines()
            ok = proc.returncode == 2 and len(lines) == 1 and "error:" in lines[0]
        if not ok:
            failures.append(_describe(cmd, proc) + "\nquoted but not printed: " +
                            "; ".join(_check_quoted_output(cmd, proc.stdout)))

    text = README.read_text(encoding="utf-8")
    for k, block in enumerate(re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)):
        proc = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            failures.append(f"```python block {k + 1}:\n{block}\nexit {proc.returncode}\n{proc.stderr[-2000:]}")
    assert not failures, f"{len(failures)} README commands failed:\n\n" + "\n\n".join(failures)
