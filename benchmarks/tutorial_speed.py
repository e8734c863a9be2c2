"""The tutorials' Fashion-MNIST recipe, as they write it, against `convolab train`, in one run.

Both train the same network (tutorial_cnn: conv16-pool-conv32-pool-FC128-FC10) with Adam at lr 1e-3,
batch 64, for 5 epochs, and report test accuracy. Each side runs as its own process and is timed
from start to exit: Python and torch imports, data loading, training, evaluation, and (for convolab)
writing the run directory with its plots all count.

* tutorial: torchvision's FashionMNIST dataset with per-sample ``ToTensor`` + ``Normalize``, a
  ``DataLoader`` (batch 64, shuffled), the training loop of the PyTorch tutorials and a test pass
  after every epoch, as they do.
* convolab: ``python -m convolab train --model tutorial_cnn --data fashion-mnist ...`` (its default
  10 % validation split is held out of training and evaluated every epoch).

Untimed preparation: the IDX files are unpacked into torchvision's folder layout for the tutorial,
and convolab's decoded-dataset cache is filled once, since both are one-time costs for a user.

Usage: python benchmarks/tutorial_speed.py [--epochs 5] [--device cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUTORIAL = r'''
import sys, torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

root, epochs, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)

transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
train_set = datasets.FashionMNIST(root, train=True, download=False, transform=transform)
test_set = datasets.FashionMNIST(root, train=False, download=False, transform=transform)
train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
test_loader = DataLoader(test_set, batch_size=1000)

model = Net().to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(epochs):
    model.train()
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            correct += (model(images).argmax(1) == labels).sum().item()
    accuracy = correct / len(test_set)
    print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}", file=sys.stderr, flush=True)
print(accuracy)
'''


def prepare_torchvision_root(tmp: Path) -> Path:
    """Unpack the Fashion-MNIST IDX files convolab finds into torchvision's layout (ROOT/FashionMNIST/raw)."""
    from convolab.data import DATASETS, locate_dataset

    folder, looked = locate_dataset(DATASETS["fashion-mnist"])
    if folder is None:
        sys.exit("Fashion-MNIST not found (looked in " + "; ".join(looked) + "); run `make data` first")
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        src = folder / name
        if src.exists():
            shutil.copyfile(src, raw / name)
        else:
            with gzip.open(folder / f"{name}.gz", "rb") as f, open(raw / name, "wb") as g:
                shutil.copyfileobj(f, g)
    return tmp


def timed(cmd: list[str]) -> tuple[float, str]:
    """Run ``cmd``; return its wall time and stdout (its stderr streams through)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return seconds, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides use it)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = ap.parse_args()

    from convolab.data import load_dataset

    load_dataset("fashion-mnist")  # fill convolab's decoded cache (untimed, a one-time cost)
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare_torchvision_root(Path(tmp) / "tv")
        print(f"tutorial recipe: torchvision DataLoader + ToTensor/Normalize, {args.epochs} epochs on {args.device}",
              flush=True)
        t_tut, out = timed([sys.executable, "-c", TUTORIAL, str(root), str(args.epochs), args.device])
        acc_tut = float(out.strip().splitlines()[-1])
        print(f"convolab train: same model and recipe, {args.epochs} epochs on {args.device}", flush=True)
        t_cl, out = timed([sys.executable, "-m", "convolab", "train", "--model", "tutorial_cnn", "--data",
                           "fashion-mnist", "--epochs", str(args.epochs), "--batch-size", "64", "--lr", "1e-3",
                           "--optimizer", "adam", "--device", args.device, "--out", str(Path(tmp) / "run"),
                           "--json"])
        summary = json.loads(out)
    acc_cl = summary["test_accuracy"]
    ratio = t_tut / t_cl
    print()
    print(f"{'':<10} {'wall time':>10} {'test accuracy':>14}")
    print(f"{'tutorial':<10} {t_tut:>9.1f}s {acc_tut:>14.4f}")
    print(f"{'convolab':<10} {t_cl:>9.1f}s {acc_cl:>14.4f}")
    print(f"speed-up: {ratio:.2f}x   accuracy difference (convolab - tutorial): {100 * (acc_cl - acc_tut):+.2f} points")
    if args.json:
        print(json.dumps({"device": args.device, "epochs": args.epochs, "tutorial_seconds": t_tut,
                          "convolab_seconds": t_cl, "speedup": ratio, "tutorial_accuracy": acc_tut,
                          "convolab_accuracy": acc_cl}))


if __name__ == "__main__":
    main()
