"""``TrainConfig``: everything one training run needs, as plain data (the CLI fills it in)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from convolab.data.augment import PRESETS as AUGMENT_PRESETS
from convolab.train.optim import OPTIMIZERS
from convolab.train.schedule import SCHEDULES, LRSchedule

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "ON_NAN", "MONITORS", "RESUME_FREE", "ENGINES"]

ON_NAN = ("stop", "skip")
PRECISIONS = ("auto", "32", "bf16", "fp16")
ENGINES = ("torch", "numpy")  # numpy: convolab.glass computes every step, each backward written by hand
MONITORS = ("val_accuracy", "val_loss", "val_mean_iou", "val_video_accuracy")
# Settings a resumed run may change: they do not affect the numbers it computes.
RESUME_FREE = ("out", "overwrite", "data_dir", "download", "device", "progress", "plots", "tensorboard", "max_memory")


@dataclass
class TrainConfig:
    """A training run's configuration.

    The defaults are convolab's recipe for the tutorials' CNN: Adam at a peak rate of 3e-3 on a one-cycle
    schedule, batch 128, label smoothing 0.1, 6 epochs: 0.918 test accuracy on Fashion-MNIST in about
    30 s on a 2-core CPU, where the tutorials' recipe (Adam 1e-3 constant, batch 64) gives 0.903 after 5
    epochs (``benchmarks/time_to_accuracy.py``; ``schedule="constant", label_smoothing=0, lr=1e-3,
    batch_size=64`` is the tutorials' recipe).
    """

    model: str = "tutorial_cnn"  # registry name (convolab models)
    data: str = "fashion-mnist"  # dataset name or image-folder path
    data_dir: str | None = None  # searched first for named datasets
    out: str | None = None  # run directory; None: runs/<model>-<data>-<time>
    overwrite: bool = False  # replace an existing run directory at `out`
    epochs: int = 6  # passes over the training split
    batch_size: int = 128  # training batch size
    eval_batch_size: int = 1000  # batch size for validation and test
    lr: float = 3e-3  # learning rate (the peak of the schedule)
    optimizer: str = "adam"  # sgd, adam, adamw or rmsprop
    momentum: float = 0.9  # momentum of sgd and rmsprop (adam/adamw keep beta1 = 0.9 and refuse another value)
    nesterov: bool = False  # Nesterov momentum (sgd only)
    weight_decay: float = 0.0  # L2 (sgd, adam, rmsprop) or decoupled (adamw) weight decay
    decay_norm_and_bias: bool = False  # also decay biases and norm scales/shifts (skipped by default)
    clip_grad_norm: float | None = None  # clip the global gradient L2 norm to this value
    accum_steps: int = 1  # micro-batches whose gradients add up to one optimizer step
    label_smoothing: float = 0.1  # cross-entropy target smoothing (Szegedy et al. 2016)
    schedule: str = "onecycle"  # learning-rate schedule, stepped per optimizer step (see train/schedule.py)
    warmup_epochs: float = 0.0  # linear warmup length in epochs ...
    warmup_steps: int = 0  # ... or in optimizer steps (give one of the two)
    min_lr: float | None = None  # floor of cosine/sgdr (default 0), bottom of cyclic (default lr/10)
    gamma: float = 0.1  # decay factor of step and multistep
    decay_epochs: float | None = None  # step: decay every this many epochs (default: a third of the run)
    milestones: list[float] | None = None  # multistep: decay at these epochs (default: 1/2 and 3/4 of the run)
    pct_start: float = 0.3  # onecycle: share of the run spent raising the learning rate
    cycle_epochs: float | None = None  # cyclic: length of one triangle (up and down) in epochs (default 4)
    restart_epochs: float | None = None  # sgdr: first period in epochs (default: a quarter of the run)
    restart_mult: int = 1  # sgdr: each period is this many times longer than the one before
    augment: str = "none"  # augmentation preset: none, light or standard (see convolab.data.augment)
    crop_pad: int | None = None  # random shifts of up to this many pixels (None: the preset's)
    hflip: bool | None = None  # mirror half of the images (None: the preset's, never for digits)
    rotate: float | None = None  # random rotations of up to this many degrees (None: the preset's)
    cutout: float | None = None  # erase a square of this fraction of the side (None: the preset's)
    mixup: float = 0.0  # mixup's Beta(alpha, alpha) (0: off)
    cutmix: float = 0.0  # cutmix's Beta(alpha, alpha) (0: off)
    # auto (bf16 on a CPU with native bfloat16 instructions, else 32), 32, bf16 (autocast; CPUs and GPUs that
    # have it) or fp16 (CUDA, dynamic loss scaling)
    precision: str = "auto"
    grad_checkpointing: bool = False  # recompute activations in the backward pass (models with set_grad_checkpointing)
    # decay of an exponential moving average of the weights, evaluated and saved; warmed up as
    # min(decay, (1 + t) / (10 + t)) at step t, so that short runs do not average in the initial weights
    ema: float | None = None
    tta: bool = False  # evaluate on each image and its mirror image, averaging the probabilities
    compile: bool = False  # torch.compile the model for training
    cuda_graphs: bool = False  # record the training step as a CUDA graph and replay it (CUDA; small, CPU-bound models)
    tensorboard: bool = False  # also log to RUN/tensorboard/ (needs the tensorboard package)
    checkpoints: bool = True  # write RUN/checkpoints/ (full state) at every epoch's end
    checkpoint_every: int = 0  # ... and every this many optimizer steps (0: only at epoch ends)
    deterministic: bool = False  # deterministic algorithms only (torch.use_deterministic_algorithms)
    on_nan: str = "stop"  # a step with a non-finite loss is skipped; "stop": stop after nan_patience in a row
    nan_patience: int = 3  # consecutive non-finite steps that stop the run (on_nan="stop")
    early_stopping: int | None = None  # stop after this many epochs without improvement of `monitor`
    # val_accuracy or val_loss (segmentation: also val_mean_iou; clips: val_video_accuracy): picks best.pt (and the
    # early-stopping epoch)
    monitor: str = "val_accuracy"
    min_delta: float = 0.0  # smallest change of `monitor` that counts as an improvement
    seed: int = 0  # seeds weights, data order and the validation split
    device: str = "auto"  # auto, cpu, cuda, mps
    engine: str = "torch"  # torch, or numpy: convolab.glass takes the steps (CPU; the models glass can convert)
    val_fraction: float = 0.1  # share of the training split held out for validation
    # [H, W] every image of a folder dataset is resized to (None: the folder's most common size; folders of large
    # photos are refused without it); named datasets keep their own size
    image_size: list[int] | None = None
    download: bool = True  # allow a torchvision download when the data is nowhere on disk
    channels_last: bool = True  # NHWC activations: faster convolutions on CPUs (and AMP on GPUs)
    # decoded data larger than this many bytes streams from disk instead of living in memory (None: the
    # default budget of convolab.data.limits)
    max_memory: int | None = None
    frames: int = 16  # clips: frames per clip (T) cut from each video
    dice_weight: float = 0.0  # segmentation: loss = cross-entropy + dice_weight * soft Dice loss
    ignore_index: int = 255  # segmentation: mask value of pixels that count in no loss or metric
    pipeline_stages: int = 1  # split the model into this many stages, one per process (torchrun; pipelining)
    model_kwargs: dict = field(default_factory=dict)  # extra create_model arguments (drop_rate ...)
    init_from: str | None = None  # start from weights in a .safetensors/.pth file (classifier replaced if needed)
    progress: bool = True  # progress bar and per-epoch lines on stderr
    plots: bool = True  # write plots/*.png

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for any impossible setting."""
        for name, value in self.to_dict().items():  # inf or nan would pass a '> 0' check, or fail much later
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number; got {value}")
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1; got {self.epochs}"),
            (self.image_size is None or (len(self.image_size) == 2 and all(isinstance(v, int) and 1 <= v <= 8192
                                                                            for v in self.image_size)),
             f"--image-size must be HxW (or one side) with sides from 1 to 8192; got {self.image_size}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be >= 1; got {self.eval_batch_size}"),
            (self.lr > 0, f"--lr must be > 0; got {self.lr}"),
            (self.optimizer in OPTIMIZERS,
             f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1); got {self.momentum}"),
            (self.momentum == type(self).momentum or self.optimizer not in ("adam", "adamw"),
             f"--momentum sets sgd and rmsprop; {self.optimizer} keeps its own (beta1 = 0.9): drop --momentum or "
             f"choose --optimizer sgd"),
            (not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
             "--nesterov needs --optimizer sgd with --momentum > 0"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}"),
            (self.clip_grad_norm is None or self.clip_grad_norm > 0,
             f"--clip-grad-norm must be > 0; got {self.clip_grad_norm}"),
            (self.accum_steps >= 1, f"--accum-steps must be >= 1; got {self.accum_steps}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1); got {self.label_smoothing}"),
            (self.schedule in SCHEDULES,
             f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"),
            (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0,
             f"--warmup-epochs must be >= 0; got {self.warmup_epochs}"),
            (self.warmup_steps >= 0, f"--warmup-steps must be >= 0; got {self.warmup_steps}"),
            (not (self.warmup_epochs and self.warmup_steps), "give --warmup-epochs or --warmup-steps, not both"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1); got {self.val_fraction}"),
            (self.augment in AUGMENT_PRESETS,
             f"unknown augmentation preset {self.augment!r}; choose one of {', '.join(AUGMENT_PRESETS)}"),
            (self.crop_pad is None or self.crop_pad >= 0, f"--crop-pad must be >= 0; got {self.crop_pad}"),
            (self.rotate is None or 0 <= self.rotate <= 180, f"--rotate must be in [0, 180]; got {self.rotate}"),
            (self.cutout is None or 0 <= self.cutout < 1, f"--cutout must be in [0, 1); got {self.cutout}"),
            (self.mixup >= 0, f"--mixup must be >= 0; got {self.mixup}"),
            (self.cutmix >= 0, f"--cutmix must be >= 0; got {self.cutmix}"),
            (self.precision in PRECISIONS,
             f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"),
            (self.ema is None or 0 < self.ema < 1, f"--ema must be in (0, 1), e.g. 0.999; got {self.ema}"),
            (self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0; got {self.checkpoint_every}"),
            (self.checkpoints or not self.checkpoint_every, "--checkpoint-every needs checkpoints; drop "
                                                            "--no-checkpoints"),
            (self.on_nan in ON_NAN, f"--on-nan must be one of {', '.join(ON_NAN)}; got {self.on_nan!r}"),
            (self.nan_patience >= 1, f"--nan-patience must be >= 1; got {self.nan_patience}"),
            (self.early_stopping is None or self.early_stopping >= 1,
             f"--early-stopping must be >= 1 epoch; got {self.early_stopping}"),
            (self.early_stopping is None or self.val_fraction > 0,
             "--early-stopping watches the validation split; use --val-fraction > 0"),
            (self.monitor in MONITORS, f"--monitor must be one of {', '.join(MONITORS)}; got {self.monitor!r}"),
            (self.min_delta >= 0, f"--min-delta must be >= 0; got {self.min_delta}"),
            (not (self.cuda_graphs and self.compile),
             "--cuda-graphs and --compile both take over the model's forward pass; choose one"),
            (not (self.cuda_graphs and self.grad_checkpointing),
             "--cuda-graphs cannot record --grad-checkpointing's recomputation; choose one"),
            # A replayed backward pass hands autograd the graph's own gradient buffers, which the next replay
            # overwrites: gradients accumulated over micro-batches would be wrong.
            (not (self.cuda_graphs and self.accum_steps > 1),
             "--cuda-graphs does not support --accum-steps > 1; use a larger --batch-size instead"),
            (self.max_memory is None or self.max_memory >= 1, f"--max-memory must be > 0; got {self.max_memory}"),
            (1 <= self.frames <= 1024, f"--frames must be from 1 to 1024; got {self.frames}"),
            (self.dice_weight >= 0, f"--dice-weight must be >= 0; got {self.dice_weight}"),
            (0 <= self.ignore_index <= 255, f"--ignore-index must be a mask value from 0 to 255; got {self.ignore_index}"),
            (self.pipeline_stages >= 1, f"--pipeline-stages must be >= 1; got {self.pipeline_stages}"),
            (self.engine in ENGINES, f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}"),
            (self.engine != "numpy" or self.device in ("auto", "cpu"),
             f"--engine numpy runs on the CPU; drop --device {self.device}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"--warmup-epochs {self.warmup_epochs:g} must be shorter than the run (--epochs "
                             f"{self.epochs})")
        # The schedule's own checks, before any data loads, with a stand-in for the steps per epoch (the data
        # gives the real count). --warmup-steps is checked against the real count once the data has loaded:
        # here it counts only as 'a warmup' (for onecycle's refusal), so no message quotes the stand-in's steps.
        replace(self, warmup_steps=min(self.warmup_steps, 1)).lr_schedule(steps_per_epoch=1000)

    def lr_schedule(self, steps_per_epoch: int) -> LRSchedule:
        """The run's learning-rate schedule for ``steps_per_epoch`` optimizer steps per epoch."""
        warmup = self.warmup_steps or round(self.warmup_epochs * steps_per_epoch)
        return LRSchedule(self.schedule, self.lr, total_steps=self.epochs * steps_per_epoch,
                          steps_per_epoch=steps_per_epoch, warmup_steps=warmup, min_lr=self.min_lr,
                          gamma=self.gamma, decay_epochs=self.decay_epochs, milestones=self.milestones,
                          pct_start=self.pct_start, cycle_epochs=self.cycle_epochs,
                          restart_epochs=self.restart_epochs, restart_mult=self.restart_mult)

    def to_dict(self) -> dict:
        return asdict(self)
