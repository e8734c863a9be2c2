"""The tutorials' Fashion-MNIST recipe as they write it, shared by tutorial_speed.py and time_to_accuracy.py.

The PyTorch quickstart's loop: tutorial_cnn's layers written out, Adam at lr 1e-3, batch 64, torchvision's
``FashionMNIST`` dataset with per-sample ``ToTensor`` + ``Normalize`` behind ``DataLoader``s, and a test pass
(loss and accuracy, batch 64) after every epoch. It runs as its own process (``run_tutorial``), so its
imports and data loading count as they do for a user.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# What both versions of the loop share, as the tutorials write it: imports, the network, the data (per-sample
# transforms behind a shuffled DataLoader of batch 64) and Adam at 1e-3. argv: ROOT EPOCHS DEVICE SEED [TARGET].
_COMMON = r'''
import sys, time, torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

root, epochs, device, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.manual_seed(seed)

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

model = Net().to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

def train_one_epoch():
    model.train()
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
'''

# The PyTorch quickstart's version: a test pass (loss and accuracy, batch 64) after every epoch, stopping at the
# first epoch whose test accuracy reaches TARGET.
SCRIPT = _COMMON + r'''
target = float(sys.argv[5])
test_loader = DataLoader(test_set, batch_size=64)
for epoch in range(epochs):
    train_one_epoch()
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            pred = model(images)
            test_loss += F.cross_entropy(pred, labels).item()
            correct += (pred.argmax(1) == labels).sum().item()
    accuracy = correct / len(test_set)
    print(f"EPOCH {epoch + 1} {accuracy} {test_loss / len(test_loader)} {time.time()} {time.process_time()}",
          flush=True)
    print(f"epoch {epoch + 1}: test loss {test_loss / len(test_loader):.4f}, accuracy {accuracy:.4f}",
          file=sys.stderr, flush=True)
    if accuracy >= target:
        break
'''

# The loop exactly as the tutorials print it: no test pass between epochs, one at the end, at batch 1000.
PRINTED_SCRIPT = _COMMON + r'''
for epoch in range(epochs):
    train_one_epoch()
    print(f"epoch {epoch + 1} done", file=sys.stderr, flush=True)
test_loader = DataLoader(test_set, batch_size=1000)
model.eval()
correct = 0
with torch.no_grad():
    for images, labels in test_loader:
        images, labels = images.to(device), labels.to(device)
        correct += (model(images).argmax(1) == labels).sum().item()
print(f"TEST {correct / len(test_set)} {time.process_time()}", flush=True)
'''


@dataclass
class Epoch:
    epoch: int
    accuracy: float
    loss: float
    seconds: float  # wall time from starting the process to the end of this epoch's test pass
    cpu_seconds: float  # the process's CPU time (all threads) by then


@dataclass
class TutorialRun:
    wall: float  # the whole process, start to exit
    epochs: list[Epoch] = field(default_factory=list)

    def first_reaching(self, target: float) -> Epoch | None:
        return next((e for e in self.epochs if e.accuracy >= target), None)


def run_tutorial(root: Path, epochs: int, device: str, seed: int, target: float = 2.0) -> TutorialRun:
    """Run the recipe for ``epochs`` epochs (stopping early at test accuracy ``target``), as its own process."""
    start_wall, start = time.time(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(epochs), device, str(seed), str(target)],
                          stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the tutorial recipe failed ({proc.returncode})")
    run = TutorialRun(wall)
    for line in proc.stdout.splitlines():
        if line.startswith("EPOCH "):
            e, acc, loss, t, cpu = line.split()[1:]
            run.epochs.append(Epoch(int(e), float(acc), float(loss), float(t) - start_wall, float(cpu)))
    return run


def run_printed_tutorial(root: Path, epochs: int, device: str, seed: int) -> tuple[float, float, float]:
    """The loop as the tutorials print it (``PRINTED_SCRIPT``), as its own process: (its wall time start to exit,
    its test accuracy, its CPU seconds before exit)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PRINTED_SCRIPT, str(root), str(epochs), device, str(seed)],
                          stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the tutorial loop failed ({proc.returncode})")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("TEST "))
    accuracy, cpu = (float(v) for v in line.split()[1:])
    return wall, accuracy, cpu


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
