"""``TrainConfig``: everything one training run needs, as plain data (the CLI fills it in)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TrainConfig", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class TrainConfig:
    """A training run's configuration. Defaults are the tutorials' recipe (Adam 1e-3, batch 64)."""

    model: str = "tutorial_cnn"  # registry name (convolab models)
    data: str = "fashion-mnist"  # dataset name or image-folder path
    data_dir: str | None = None  # searched first for named datasets
    out: str | None = None  # run directory; None: runs/<model>-<data>-<time>
    overwrite: bool = False  # replace an existing run directory at `out`
    epochs: int = 5  # passes over the training split
    batch_size: int = 64  # training batch size
    eval_batch_size: int = 1000  # batch size for validation and test
    lr: float = 1e-3  # learning rate
    optimizer: str = "adam"  # sgd, adam or adamw
    momentum: float = 0.9  # SGD momentum (ignored by Adam/AdamW)
    weight_decay: float = 0.0  # L2 (sgd, adam) or decoupled (adamw) weight decay
    seed: int = 0  # seeds weights, data order and the validation split
    device: str = "auto"  # auto, cpu, cuda, mps
    val_fraction: float = 0.1  # share of the training split held out for validation
    download: bool = True  # allow a torchvision download when the data is nowhere on disk
    channels_last: bool = True  # NHWC activations: faster convolutions on CPUs (and AMP on GPUs)
    model_kwargs: dict = field(default_factory=dict)  # extra create_model arguments (drop_rate ...)
    init_from: str | None = None  # start from weights in a .safetensors/.pth file (classifier replaced if needed)
    progress: bool = True  # progress bar and per-epoch lines on stderr
    plots: bool = True  # write plots/*.png

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for any impossible setting."""
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1; got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be >= 1; got {self.eval_batch_size}"),
            (self.lr > 0, f"--lr must be > 0; got {self.lr}"),
            (self.optimizer in OPTIMIZERS,
             f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1); got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1); got {self.val_fraction}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return asdict(self)
