"""Builders of bad inputs for tests/cli/test_bad_input_corpus.py: broken run directories, IDX files, image
folders, checkpoints and weight files, each made under a test's tmp_path by a small function.

Every builder takes ``(tmp, run)``: the test's folder and the path of its private copy of a trained run
(``tmp/run``), and returns nothing; the corpus' argv then names the files it made.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from convolab.data.idx import write_idx


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, copied out of its memory map (so the file may be rewritten)."""
    return {k: v.clone() for k, v in load_file(str(path)).items()}

# -- images ----------------------------------------------------------------------------------------


def png(path: Path, size=(8, 8), mode="L", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((3,) if mode == "RGB" else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def good_png(tmp: Path, run: Path) -> None:
    png(tmp / "digit.png")


def bad_image(name: str, content: bytes | None):
    """A builder writing ``tmp/NAME`` with ``content`` (None: a folder of that name), plus tmp/digit.png."""

    def build(tmp: Path, run: Path) -> None:
        png(tmp / "digit.png")
        if content is None:
            (tmp / name).mkdir()
        else:
            (tmp / name).write_bytes(content)

    return build


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


def bomb_png(tmp: Path, run: Path) -> None:
    """A 1-bit PNG of 2.2x Pillow's pixel limit (its DecompressionBombError), a few kB on disk."""
    png(tmp / "digit.png")
    side = int((Image.MAX_IMAGE_PIXELS * 2.2) ** 0.5) + 1
    Image.new("1", (side, side)).save(tmp / "bomb.png", optimize=True)


def image_folder(root: Path, classes=("a", "b"), per_class=10, size=(8, 8)) -> None:
    for i, c in enumerate(classes):
        for j in range(per_class):
            png(root / c / f"{j}.png", size=size, seed=100 * i + j)


# -- image-folder datasets ---------------------------------------------------------------------------


def folder_empty(tmp, run):
    (tmp / "imgs").mkdir()


def folder_no_classes(tmp, run):
    png(tmp / "imgs" / "loose.png")


def folder_one_class(tmp, run):
    image_folder(tmp / "imgs", classes=("only",))


def folder_empty_classes(tmp, run):
    (tmp / "imgs" / "a").mkdir(parents=True)
    (tmp / "imgs" / "b").mkdir(parents=True)


def folder_garbage(tmp, run):
    for c in ("a", "b"):
        (tmp / "imgs" / c).mkdir(parents=True)
        for j in range(5):
            (tmp / "imgs" / c / f"{j}.png").write_bytes(b"not an image at all")


def folder_test_only(tmp, run):
    image_folder(tmp / "imgs" / "test")


def folder_test_extra_class(tmp, run):
    image_folder(tmp / "imgs" / "train")
    image_folder(tmp / "imgs" / "test", classes=("a", "b", "c"), per_class=2)


def folder_empty_test(tmp, run):
    image_folder(tmp / "imgs" / "train")
    (tmp / "imgs" / "test" / "a").mkdir(parents=True)
    (tmp / "imgs" / "test" / "b").mkdir(parents=True)


def cifar_garbage(tmp, run):
    folder = tmp / "cif" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))):
        (folder / name).write_bytes(b"not a pickle")


def svhn_garbage(tmp, run):
    (tmp / "svhn").mkdir()
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp / "svhn" / name).write_bytes(b"MATLAB 5.0 MAT-file, garbage")


def file_as_data(tmp, run):
    png(tmp / "digit.png")


# -- IDX datasets (an MNIST-like folder for --data mnist --data-dir tmp/idx) ----------------------------
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_arrays(n_train=60, n_test=20):
    rng = np.random.default_rng(0)
    return {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }


def idx_set(change):
    """A builder of a small valid MNIST IDX set in tmp/idx with ``change(arrays, folder)`` applied.

    ``change`` edits the dict of arrays (name -> array) in place, or writes files itself and returns the names it
    wrote (those are not written from the arrays).
    """

    def build(tmp: Path, run: Path) -> None:
        folder = tmp / "idx"
        folder.mkdir()
        arrays = _idx_arrays()
        written = change(arrays, folder) or ()
        for name, arr in arrays.items():
            if name not in written:
                write_idx(folder / name, arr)

    return build


def _raw(name, data: bytes):
    def change(arrays, folder):
        (folder / name).write_bytes(data)
        return (name,)

    return change


def _header(code: int, shape) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape)


def idx_truncated(arrays, folder):
    write_idx(folder / IDX_NAMES[0], arrays[IDX_NAMES[0]])
    data = (folder / IDX_NAMES[0]).read_bytes()
    (folder / IDX_NAMES[0]).write_bytes(data[: len(data) // 2])
    return (IDX_NAMES[0],)


def idx_gzip_bomb(arrays, folder):
    """Header: 60 images of 28x28; the gzip stream then grows to 64 MB of zeros."""
    with gzip.open(folder / (IDX_NAMES[0] + ".gz"), "wb", compresslevel=9) as f:
        f.write(_header(0x08, (60, 28, 28)))
        chunk = bytes(1 << 20)
        for _ in range(64):
            f.write(chunk)
    return (IDX_NAMES[0],)


def idx_bad_gzip(arrays, folder):
    (folder / (IDX_NAMES[0] + ".gz")).write_bytes(b"\x1f\x8b" + os.urandom(200))
    return (IDX_NAMES[0],)


def idx_dir(arrays, folder):
    (folder / IDX_NAMES[0]).mkdir()
    return (IDX_NAMES[0],)


def idx_set_label(value, dtype=np.uint8):
    def change(arrays, folder):
        labels = arrays[IDX_NAMES[1]].astype(dtype)
        labels[3] = value
        arrays[IDX_NAMES[1]] = labels

    return change


def idx_labels_2d(arrays, folder):
    arrays[IDX_NAMES[1]] = arrays[IDX_NAMES[1]].reshape(-1, 1)


def idx_float_images(arrays, folder):
    arrays[IDX_NAMES[0]] = arrays[IDX_NAMES[0]].astype(">f4") * 3.7


def idx_count_mismatch(arrays, folder):
    arrays[IDX_NAMES[1]] = arrays[IDX_NAMES[1]][:-5]


def idx_test_size(arrays, folder):
    arrays[IDX_NAMES[2]] = arrays[IDX_NAMES[2]][:, :14, :14].copy()


def idx_one_class(arrays, folder):
    arrays[IDX_NAMES[1]][:] = 0
    arrays[IDX_NAMES[3]][:] = 0


def idx_empty_test(arrays, folder):
    arrays[IDX_NAMES[2]] = arrays[IDX_NAMES[2]][:0]
    arrays[IDX_NAMES[3]] = arrays[IDX_NAMES[3]][:0]


def idx_images_1d(arrays, folder):
    arrays[IDX_NAMES[0]] = arrays[IDX_NAMES[0]].reshape(-1)


def idx_zero_images(arrays, folder):
    arrays[IDX_NAMES[0]] = arrays[IDX_NAMES[0]][:0]
    arrays[IDX_NAMES[1]] = arrays[IDX_NAMES[1]][:0]


# -- run directories -----------------------------------------------------------------------------------


def write_file(rel: str, content: bytes | str | None):
    """A builder replacing RUN/REL by ``content`` (None: removes it; a folder named REL if content is ...)."""

    def build(tmp: Path, run: Path) -> None:
        png(tmp / "digit.png")
        path = run / rel
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        if content is Ellipsis:
            path.mkdir(parents=True)
        elif content is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)

    return build


def edit_json(rel: str, edit):
    """A builder applying ``edit(doc)`` (returns the new document) to RUN/REL."""

    def build(tmp: Path, run: Path) -> None:
        png(tmp / "digit.png")
        path = run / rel
        doc = edit(json.loads(path.read_text()))
        path.write_text(json.dumps(doc))

    return build


def _set(doc, keys, value):
    d = doc
    for k in keys[:-1]:
        d = d[k]
    if value is Ellipsis:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value
    return doc


def set_config(*keys, value):
    return edit_json("config.json", lambda doc: _set(doc, keys, value))


DEEP_JSON = "[" * 100_000 + "]" * 100_000


def edit_meta(edit):
    """A builder rewriting model.safetensors with its convolab metadata changed by ``edit(meta) -> text``."""

    def build(tmp: Path, run: Path) -> None:
        png(tmp / "digit.png")
        path = run / "model.safetensors"
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["convolab"])
        save_file(read_state(path), str(path), metadata={"convolab": edit(meta)})

    return build


def set_meta(*keys, value):
    return edit_meta(lambda meta: json.dumps(_set(meta, keys, value)))


def edit_weights(edit):
    """A builder rewriting model.safetensors' tensors with ``edit(state)``, metadata kept."""

    def build(tmp: Path, run: Path) -> None:
        png(tmp / "digit.png")
        path = run / "model.safetensors"
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        save_file(edit(read_state(path)), str(path), metadata=meta)

    return build


def _drop_key(state):
    state.pop(sorted(state)[0])
    return state


def _extra_key(state):
    state["extra.weight"] = torch.zeros(3)
    return state


def _wrong_shape(state):
    key = sorted(state)[0]
    state[key] = torch.zeros(state[key].numel() + 1)
    return state


def truncate(rel: str, keep: float = 0.5):
    def build(tmp: Path, run: Path) -> None:
        png(tmp / "digit.png")
        path = run / rel
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return build


def huge_safetensors_header(tmp, run):
    png(tmp / "digit.png")
    (run / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")


def bad_safetensors_header(tmp, run):
    png(tmp / "digit.png")
    header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}'
    (run / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))


def pickle_as_safetensors(tmp, run):
    png(tmp / "digit.png")
    torch.save(read_state(run / "model.safetensors"), run / "model.safetensors")


# -- checkpoints -----------------------------------------------------------------------------------------


def _step_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*.pt"))[-1]


class _Payload:
    """Unpickling it calls os.remove(tmp/sentinel): the snapshot would see the file gone."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.remove, (self.target,))


def pickle_payload(path_of):
    """A builder writing a pickle that deletes tmp/sentinel.txt when loaded unsafely, at ``path_of(tmp, run)``."""

    def build(tmp: Path, run: Path) -> None:
        (tmp / "sentinel.txt").write_text("must survive")
        dest = path_of(tmp, run)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            pickle.dump({"model": _Payload(str(tmp / "sentinel.txt"))}, f)

    return build


def edit_checkpoint(edit, which="step"):
    """A builder applying ``edit(ckpt)`` to the run's newest step checkpoint (or best.pt)."""

    def build(tmp: Path, run: Path) -> None:
        path = _step_checkpoint(run) if which == "step" else run / "checkpoints" / "best.pt"
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        torch.save(edit(ckpt), path)

    return build


def garbage_checkpoints(tmp, run):
    """Every step checkpoint damaged (best.pt intact)."""
    for p in (run / "checkpoints").glob("step-*.pt"):
        p.write_bytes(b"garbage")


def no_checkpoints(tmp, run):
    import shutil

    shutil.rmtree(run / "checkpoints")


def empty_checkpoints(tmp, run):
    for p in (run / "checkpoints").iterdir():
        p.unlink()


def project_folder(tmp, run):
    """A user's project folder that happens to hold a config.json (and files convolab did not make)."""
    proj = tmp / "project"
    (proj / "data").mkdir(parents=True)
    (proj / "config.json").write_text('{"name": "my thesis"}')
    (proj / "thesis.tex").write_text("\\documentclass{article}")
    (proj / "data" / "measurements.csv").write_text("a,b\n1,2\n")


def text_file(name: str, text: str = "notes"):
    def build(tmp: Path, run: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)

    return build


# -- --init-from files ------------------------------------------------------------------------------------


def init_file(name: str, make):
    """A builder writing tmp/NAME from ``make(state, path)``; ``state`` is the run's weights (tutorial_cnn)."""

    def build(tmp: Path, run: Path) -> None:
        make(read_state(run / "model.safetensors"), tmp / name)

    return build


def save_torch(transform):
    return lambda state, path: torch.save(transform(state), path)


def save_st(transform):
    return lambda state, path: save_file(transform(state), str(path))


def _nan_state(state):
    out = dict(state)
    key = sorted(out)[0]
    out[key] = out[key].clone()
    out[key].view(-1)[0] = float("nan")
    return out


def _meta_state(state):
    return {k: torch.empty(v.shape, device="meta") for k, v in state.items()}


def _sparse_state(state):
    out = dict(state)
    key = next(k for k, v in out.items() if v.dim() == 2)
    out[key] = out[key].to_sparse()
    return out


def _other_model_state(state):
    from convolab.models import create_model

    return create_model("lenet5", num_classes=10, in_chans=1, input_size=(28, 28)).state_dict()


# -- tcav folders -------------------------------------------------------------------------------------------


def tcav_folders(concept_images=12, random_sets=2, garbage=False):
    def build(tmp: Path, run: Path) -> None:
        for j in range(concept_images):
            if garbage:
                (tmp / "concept").mkdir(exist_ok=True)
                (tmp / "concept" / f"{j}.png").write_bytes(b"junk")
            else:
                png(tmp / "concept" / f"{j}.png", seed=j)
        if concept_images == 0:
            (tmp / "concept").mkdir()
        for r in range(random_sets):
            for j in range(12):
                png(tmp / f"random{r}" / f"{j}.png", seed=1000 * (r + 1) + j)

    return build


def both(*builders):
    def build(tmp: Path, run: Path) -> None:
        for b in builders:
            b(tmp, run)

    return build
