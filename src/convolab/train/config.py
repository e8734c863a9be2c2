"""``TrainConfig``: everything one training run needs, as plain data (the CLI fills it in).

Each field carries its command-line option in its metadata (``convolab.train.options.option``: ``help``,
``group``, ``flag``, ``metavar``, ``choices``, ``type``, ``nargs``, ``cli``), so the option is defined once:
``convolab.train.flags`` builds the parser of ``convolab train`` and ``convolab lr-find`` from it, and
``convolab.cli.docs`` the README's table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from convolab.data.augment import PRESETS as AUGMENT_PRESETS
from convolab.device import DEVICE_CHOICES
from convolab.models import ACTIVATIONS, INIT_SCHEMES, list_models
from convolab.models._factory import check_takes_act
from convolab.train.freeze import check_transfer
from convolab.train.losses import LOSSES
from convolab.train.optim import OPTIMIZERS
from convolab.train.options import (
    byte_size,
    fraction,
    hxw,
    integer,
    model_arg,
    nonneg_float,
    nonneg_int,
    number,
    open_fraction,
    option,
    positive_float,
    positive_int,
)
from convolab.train.recipes import RECIPES, check_recipe_device
from convolab.train.recipes import describe as describe_recipes
from convolab.train.schedule import SCHEDULES, LRSchedule

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "ON_NAN", "MONITORS", "RESUME_FREE", "ENGINES"]

ON_NAN = ("stop", "skip")
PRECISIONS = ("auto", "32", "bf16", "fp16")
ENGINES = ("torch", "numpy")  # numpy: convolab.glass computes every step, each backward written by hand
MONITORS = ("val_accuracy", "val_loss", "val_mean_iou", "val_video_accuracy")
# Without --epochs a run takes about this many optimizer steps: 6 epochs of Fashion-MNIST at batch 128, where the
# default recipe was tuned, and as many steps on a smaller folder (87 epochs of 3,600 images), where six epochs
# under-train: LeNet-5 on 4,000 MNIST PNGs, 0.953 after 6 epochs, 0.976-0.983 after 2,500 steps.
STEP_BUDGET = 2500
MAX_AUTO_EPOCHS = 300


def auto_epochs(steps_per_epoch: int) -> int:
    """The epochs a run takes without ``--epochs``: about ``STEP_BUDGET`` optimizer steps (at most
    ``MAX_AUTO_EPOCHS``)."""
    return max(1, min(MAX_AUTO_EPOCHS, math.ceil(STEP_BUDGET / max(1, steps_per_epoch))))


# Settings a resumed run may change: they do not affect the numbers it computes.
RESUME_FREE = ("out", "overwrite", "data_dir", "download", "device", "progress", "plots", "tensorboard", "max_memory")


@dataclass
class TrainConfig:
    """A training run's configuration.

    The defaults are convolab's recipe for the tutorials' CNN: Adam at a peak rate of 3e-3 on a one-cycle
    schedule, batch 128, label smoothing 0.1, about 2,500 optimizer steps (6 epochs): 0.918 test accuracy on
    Fashion-MNIST in about 30 s on a 2-core CPU, where the tutorials' recipe (Adam 1e-3 constant, batch 64) gives
    0.903 after 5 epochs (``benchmarks/time_to_accuracy.py``; ``schedule="constant", label_smoothing=0, lr=1e-3,
    batch_size=64`` is the tutorials' recipe).

    Each field's ``help`` (in its metadata) is its documentation; comments add what the option's help leaves out.
    """

    model: str = option("tutorial_cnn", group="data", metavar="NAME", help="model name (see `convolab models`)")
    data: str = option("fashion-mnist", group="data", metavar="NAME_OR_DIR",
                       help="dataset name (see `convolab datasets`) or image-folder path")
    data_dir: str | None = option(group="data", metavar="DIR", help="folder searched first for the dataset's files")
    out: str | None = option(group="output", metavar="DIR",
                             help="run directory to create (default: runs/MODEL-DATA-TIME)")
    overwrite: bool = option(False, group="output",
                             help="replace an existing convolab run directory at --out (never another folder)")
    recipe: str | None = option(group="optimisation", choices=tuple(RECIPES), metavar="NAME",
                                help="a preset of convolab train flags that fills the ones not given: "
                                     + describe_recipes())
    epochs: int | None = option(group="optimisation", type=positive_int,
                                help="passes over the training split (default: about 2,500 optimizer steps: 6 "
                                     "epochs of Fashion-MNIST at batch 128, more on smaller data, at most 300)")
    batch_size: int = option(128, group="optimisation", type=positive_int, help="training batch size")
    eval_batch_size: int = option(1000, group="evaluation", type=positive_int,
                                  help="batch size for validation and test")
    lr: float = option(3e-3, group="optimisation", type=positive_float,
                       help="learning rate (the peak of a schedule)")
    optimizer: str = option("adam", group="optimisation", choices=OPTIMIZERS,
                            help="the optimizer (see --momentum, --nesterov, --weight-decay)")
    momentum: float = option(0.9, group="optimisation", type=fraction,
                             help="momentum of sgd and rmsprop (adam and adamw keep beta1 = 0.9 and refuse another "
                                  "value)")
    nesterov: bool = option(False, group="optimisation", help="Nesterov momentum (sgd)")
    weight_decay: float = option(0.0, group="optimisation", type=nonneg_float,
                                 help="weight decay: L2 for sgd/adam/rmsprop, decoupled for adamw; biases and norm "
                                      "layers are left out")
    l1: float = option(0.0, group="optimisation", type=nonneg_float, metavar="LAMBDA",
                       help="L1 regularisation: LAMBDA x sign(w) added to the gradient of every weight, the gradient "
                            "of LAMBDA x sum |w| (the weights --weight-decay decays: no biases or normalisation "
                            "parameters); not part of the logged loss")
    decay_norm_and_bias: bool = option(False, group="optimisation",
                                       help="apply --weight-decay and --l1 to biases and normalisation parameters too")
    clip_grad_norm: float | None = option(group="optimisation", type=positive_float, metavar="MAX",
                                          help="clip the gradients' global L2 norm to MAX (logged per step in "
                                               "steps.jsonl)")
    accum_steps: int = option(1, group="optimisation", type=positive_int, metavar="N",
                              help="accumulate the gradients of N batches per optimizer step (effective batch N x "
                                   "--batch-size)")
    label_smoothing: float = option(0.1, group="optimisation", type=fraction, metavar="EPS",
                                    help="cross-entropy against (1 - EPS) one-hot + EPS / classes (Szegedy et al. "
                                         "2016); the targets of --loss kl, mse and mae too (not hinge)")
    loss: str = option("cross_entropy", group="optimisation", choices=LOSSES,
                       help="the training loss of classifiers and clips: cross_entropy; mse or mae between the "
                            "softmax probabilities and the one-hot targets (mean over classes); hinge (multi-class, "
                            "Weston-Watkins, on the logits); kl (KL divergence to the target distribution: "
                            "cross-entropy minus its entropy). Validation and test losses stay cross-entropy")
    schedule: str = option("onecycle", group="schedule", choices=SCHEDULES,
                           help="constant; step (x gamma every --decay-epochs); multistep (x gamma at --milestones); "
                                "cosine (to --min-lr); onecycle (up for --pct-start of the run, then down); cyclic "
                                "(triangles between --min-lr and --lr, --cycle-epochs long); sgdr (cosine "
                                "restarting after --restart-epochs, x --restart-mult longer each time)")
    # (the warmup is given in epochs or in steps, not both)
    warmup_epochs: float = option(0.0, group="schedule", type=nonneg_float, metavar="EPOCHS",
                                  help="linear warmup from lr/(W+1) over this many epochs (any schedule but "
                                       "onecycle)")
    warmup_steps: int = option(0, group="schedule", type=nonneg_int, metavar="STEPS",
                               help="the warmup in optimizer steps instead of epochs")
    min_lr: float | None = option(group="schedule", type=nonneg_float,
                                  help="floor of cosine and sgdr (default 0); bottom of cyclic (default lr/10)")
    gamma: float = option(0.1, group="schedule", type=number(lambda v: 0 < v <= 1, "in (0, 1]"),
                          help="decay factor of step and multistep")
    decay_epochs: float | None = option(group="schedule", type=positive_float, metavar="EPOCHS",
                                        help="step: period in epochs (default: a third of the run)")
    milestones: list[float] | None = option(group="schedule", type=positive_float, nargs="+", metavar="EPOCH",
                                            help="multistep: epochs at which the rate is multiplied by --gamma "
                                                 "(default: 1/2 and 3/4 of the run)")
    pct_start: float = option(0.3, group="schedule", type=open_fraction,
                              help="onecycle: share of the run spent raising the rate from lr/25 to --lr")
    cycle_epochs: float | None = option(group="schedule", type=positive_float, metavar="EPOCHS",
                                        help="cyclic: one triangle, up and down, in epochs (default 4)")
    restart_epochs: float | None = option(group="schedule", type=positive_float, metavar="EPOCHS",
                                          help="sgdr: first period in epochs (default: a quarter of the run)")
    restart_mult: int = option(1, group="schedule", type=positive_int, metavar="N",
                               help="sgdr: each period is this many times longer than the previous")
    augment: str = option("none", group="augmentation", choices=AUGMENT_PRESETS,
                          help="preset, adapted to the dataset: light = shifts of up to 1/14 of the side + flips "
                               "where they keep the class; standard = shifts of up to 1/8 + flips + cutout 0.5 (+ "
                               "rotations of 10° for digits and characters, which are never flipped)")
    # crop_pad, hflip, rotate, cutout: None keeps the preset's setting
    crop_pad: int | None = option(group="augmentation", type=nonneg_int, metavar="PIXELS",
                                  help="random crop of the image padded by PIXELS (shifts of up to PIXELS; 0: off)")
    hflip: bool | None = option(group="augmentation",
                                help="mirror half of the images left-right (default: the preset's)")
    rotate: float | None = option(group="augmentation", type=number(lambda v: 0 <= v <= 180, "in [0, 180]"),
                                  metavar="DEGREES", help="random rotations of up to DEGREES")
    cutout: float | None = option(group="augmentation", type=fraction, metavar="FRACTION",
                                  help="erase a square of FRACTION of the image side from half of the images (0: "
                                       "off)")
    mixup: float = option(0.0, group="augmentation", type=nonneg_float, metavar="ALPHA",
                          help="mixup with Beta(ALPHA, ALPHA) weights (0.2 is common; 0: off)")
    cutmix: float = option(0.0, group="augmentation", type=nonneg_float, metavar="ALPHA",
                           help="cutmix with Beta(ALPHA, ALPHA) areas (1.0 is common; 0: off); with --mixup, each "
                                "batch gets one of the two")
    jitter: float = option(0.0, group="augmentation", type=number(lambda v: 0 <= v <= 1, "in [0, 1]"),
                           metavar="STRENGTH",
                           help="colour jitter: each image's brightness, contrast and saturation scaled by factors "
                                "drawn from [1 - STRENGTH, 1 + STRENGTH] (0.4 is common; 0: off); grey images: "
                                "brightness and contrast only")
    precision: str = option("auto", group="speed", choices=PRECISIONS,
                            help="auto: bf16 on a CPU with bfloat16 instructions, 32 elsewhere; 32: float32; bf16: "
                                 "bf16 autocast (CPUs with AVX512-BF16/AMX, recent GPUs); fp16: autocast with a "
                                 "dynamic loss scaler (CUDA only; scale and overflow steps logged)")
    grad_checkpointing: bool = option(False, group="speed",
                                      help="recompute activations during the backward pass: less memory, more time "
                                           "(models with set_grad_checkpointing: resnet, densenet, vgg, mobilenet "
                                           "...); on a GPU each epoch's line shows the peak memory")
    # the warm-up keeps short runs from averaging in the initial weights
    ema: float | None = option(group="evaluation", type=open_fraction, metavar="DECAY",
                               help="keep an exponential moving average of the weights (e.g. 0.999), evaluate and "
                                    "save it; the decay warms up as min(DECAY, (1 + t) / (10 + t)) at step t, so "
                                    "short runs do not keep the initial weights")
    tta: bool = option(False, group="evaluation",
                       help="evaluate each image and its mirror image, averaging the probabilities (not for digits)")
    compile: bool = option(False, group="speed", help="torch.compile the model (slow first steps)")
    cuda_graphs: bool = option(False, group="speed",
                               help="record the training step as a CUDA graph (the whole step with SGD, else the "
                                    "model's forward and backward pass) and replay it: one launch instead of "
                                    "hundreds per step, for small models whose GPU steps wait on the CPU (CUDA "
                                    "only)")
    tensorboard: bool = option(False, group="output",
                               help="also log to RUN/tensorboard/ (pip install tensorboard)")
    checkpoints: bool = option(True, group="checkpoints", flag="--no-checkpoints",
                               help="write no RUN/checkpoints/ (no --resume then)")
    checkpoint_every: int = option(0, group="checkpoints", type=nonneg_int, metavar="N",
                                   help="also checkpoint every N optimizer steps (0: only at the end of each epoch)")
    deterministic: bool = option(False, group="checkpoints",
                                 help="use only deterministic algorithms (torch.use_deterministic_algorithms; "
                                      "slower on GPUs)")
    on_nan: str = option("stop", group="checkpoints", choices=ON_NAN,
                         help="a step with a NaN/inf loss is skipped; stop: stop the run after --nan-patience in a "
                              "row; skip: never stop for it")
    nan_patience: int = option(3, group="checkpoints", type=positive_int, metavar="N",
                               help="consecutive non-finite steps that stop the run (--on-nan stop)")
    early_stopping: int | None = option(group="checkpoints", type=positive_int, metavar="PATIENCE",
                                        help="stop after PATIENCE epochs without improvement of --monitor and keep "
                                             "the best epoch's weights")
    # val_mean_iou is segmentation's, val_video_accuracy clips'
    monitor: str = option("val_accuracy", group="checkpoints", choices=MONITORS,
                          help="validation figure that picks checkpoints/best.pt and the early-stopping epoch")
    min_delta: float = option(0.0, group="checkpoints", type=nonneg_float,
                              help="smallest change of --monitor that counts as an improvement")
    stop_at_loss: float | None = option(group="checkpoints", type=nonneg_float, metavar="LOSS",
                                        help="stop after the first epoch whose training loss (the mean of --loss "
                                             "over the epoch) is <= LOSS")
    stop_at_accuracy: float | None = option(group="checkpoints", type=number(lambda v: 0 < v <= 1, "in (0, 1]"),
                                            metavar="ACCURACY",
                                            help="stop after the first epoch whose validation accuracy is >= "
                                                 "ACCURACY (e.g. 0.9)")
    seed: int = option(0, group="data", type=integer(), help="seed for weights, data order and the val split")
    device: str = option("auto", group="speed", choices=DEVICE_CHOICES, help="compute device")
    engine: str = option("torch", group="speed", choices=ENGINES,
                         help="torch, or numpy: convolab.glass computes every forward and backward pass with NumPy "
                              "(CPU; tutorial_cnn, lenet5, mnist_cnn, the basic-block ResNets, DenseNets)")
    val_fraction: float = option(0.1, group="data", type=fraction,
                                 help="share of the training split held out for validation (lr-find holds out the "
                                      "same images)")
    train_size: int | None = option(group="data", type=positive_int, metavar="N",
                                    help="train on N images of the training split, drawn per class in proportion "
                                         "(by --seed); validation and test splits unchanged: quick trials, search "
                                         "proxies, learning curves")
    image_size: list[int] | None = option(group="data", type=hxw, metavar="HxW",
                                          help="resize every image of a folder dataset to HxW (or SxS) pixels; "
                                               "needed for folders of large photos (longer side over 1,024), which "
                                               "are refused at full size (default: the folder's most common size); "
                                               "named datasets keep their size")
    download: bool = option(True, group="data", flag="--no-download",
                            help="never download; fail if the data is not on disk")
    channels_last: bool = option(True, group="speed", cli=False,
                                 help="NHWC activations: faster convolutions on CPUs (and AMP on GPUs)")
    max_memory: int | None = option(group="data", type=byte_size, metavar="SIZE",
                                    help="decoded data larger than SIZE (2GiB, 500MB or bytes; K, M, G are powers of "
                                         "1024) streams from disk instead of living in memory (default: "
                                         "convolab.data.limits's budget)")
    frames: int | None = option(None, group="tasks", type=integer(1, 1024), metavar="T",
                                help="clips: frames per clip cut from each video (default: the dataset's own: 8 "
                                     "for moving-fashion, 16 for a folder of videos)")
    dice_weight: float = option(0.0, group="tasks", type=nonneg_float, metavar="W",
                                help="segmentation: loss = cross-entropy + W x soft Dice loss")
    ignore_index: int = option(255, group="tasks", type=integer(0, 255), metavar="VALUE",
                               help="segmentation: mask value of pixels that count in no loss or metric")
    pipeline_stages: int = option(1, group="speed", type=positive_int, metavar="N",
                                  help="split the model into N stages, one per process (torchrun; pipeline "
                                       "parallelism)")
    model_kwargs: dict = option(group="data", default_factory=dict, flag="--model-arg", type=model_arg, nargs="+",
                                metavar="KEY=VALUE",
                                help="extra create_model arguments, e.g. --model-arg base_channels=16 depth=3 (a "
                                     "narrower U-Net) or widths=[8,16,32,64]; `convolab models NAME` lists them")
    act: str | None = option(group="data", choices=ACTIVATIONS,
                             help="the activation of every layer, for the model families that take one (tutorial_cnn, "
                                  "mnist_cnn, lenet5, mlp, alexnet, vgg, resnet ...; default: the model's own); "
                                  "swish is silu (x sigmoid(x)), gelu the erf form")
    init: str = option("default", group="data", choices=INIT_SCHEMES,
                       help="re-draw every convolution and linear weight, biases to zero: he = kaiming_normal_ "
                            "(fan_in, ReLU gain: std sqrt(2/fan_in)); xavier = xavier_uniform_ (U(-a, a), a = "
                            "sqrt(6/(fan_in+fan_out))); normal = N(0, 0.01^2); default: the model's own")
    init_from: str | None = option(group="data", metavar="FILE",
                                   help="start from the weights in a .safetensors or .pth file (e.g. a run's "
                                        "model.safetensors or torchvision weights on disk); the classifier is "
                                        "replaced when the class count differs")
    freeze: str | None = option(group="data", metavar="SPEC",
                                help="freeze every parameter up to and including layer SPEC, in module order "
                                     "(layer2: a ResNet's conv1, bn1, layer1, layer2), or those matching an fnmatch "
                                     "pattern ('features.*'): not trained, not in the optimizer, their BatchNorm "
                                     "layers kept in eval mode (running statistics fixed)")
    lr_decay_per_stage: float = option(1.0, group="optimisation", type=number(lambda v: 0 < v <= 1, "in (0, 1]"),
                                       metavar="F",
                                       help="discriminative rates: the classifier trains at --lr, the stage before "
                                            "it at lr x F, the one before at lr x F^2 ... (stages: the model's "
                                            "feature_info; 1: one rate)")
    input_size: list[int] | None = option(group="data", type=hxw, metavar="HxW",
                                          help="build the model at HxW (an ImageNet checkpoint's 224x224 stem) and "
                                               "resize every batch to HxW on the device as the model's first step; "
                                               "the data stays at its own size in memory (classifiers)")
    progress: bool = option(True, group="output", flag="--quiet", help="no progress bar or per-epoch lines")
    plots: bool = option(True, group="output", flag="--no-plots", help="write no plots/*.png")

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for any impossible setting."""
        check_recipe_device(self.recipe, self.device)
        for name, value in self.to_dict().items():  # inf or nan would pass a '> 0' check, or fail much later
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number; got {value}")
        checks = [
            (self.recipe is None or self.recipe in RECIPES,
             f"unknown --recipe {self.recipe!r}; choose one of: {describe_recipes()}"),
            (self.epochs is None or self.epochs >= 1, f"--epochs must be >= 1; got {self.epochs}"),
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
            (self.loss in LOSSES, f"unknown --loss {self.loss!r}; choose one of {', '.join(LOSSES)}"),
            (self.l1 >= 0, f"--l1 must be >= 0; got {self.l1}"),
            (self.engine != "numpy" or (self.loss == "cross_entropy" and not self.l1),
             "--engine numpy trains with cross-entropy and no --l1 (glass's hand-written backward pass); drop --loss "
             "and --l1 or use --engine torch"),
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
            (0 <= self.jitter <= 1, f"--jitter must be in [0, 1]; got {self.jitter}"),
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
            (self.stop_at_loss is None or self.stop_at_loss >= 0,
             f"--stop-at-loss must be >= 0; got {self.stop_at_loss}"),
            (self.stop_at_accuracy is None or 0 < self.stop_at_accuracy <= 1,
             f"--stop-at-accuracy must be in (0, 1]; got {self.stop_at_accuracy}"),
            (self.stop_at_accuracy is None or self.val_fraction > 0,
             "--stop-at-accuracy watches the validation split; use --val-fraction > 0"),
            (not (self.cuda_graphs and self.compile),
             "--cuda-graphs and --compile both take over the model's forward pass; choose one"),
            (not (self.cuda_graphs and self.grad_checkpointing),
             "--cuda-graphs cannot record --grad-checkpointing's recomputation; choose one"),
            # A replayed backward pass hands autograd the graph's own gradient buffers, which the next replay
            # overwrites: gradients accumulated over micro-batches would be wrong.
            (not (self.cuda_graphs and self.accum_steps > 1),
             "--cuda-graphs does not support --accum-steps > 1; use a larger --batch-size instead"),
            (self.max_memory is None or self.max_memory >= 1, f"--max-memory must be > 0; got {self.max_memory}"),
            (self.frames is None or 1 <= self.frames <= 1024, f"--frames must be from 1 to 1024; got {self.frames}"),
            (self.dice_weight >= 0, f"--dice-weight must be >= 0; got {self.dice_weight}"),
            (0 <= self.ignore_index <= 255,
             f"--ignore-index must be a mask value from 0 to 255; got {self.ignore_index}"),
            (self.pipeline_stages >= 1, f"--pipeline-stages must be >= 1; got {self.pipeline_stages}"),
            (self.engine in ENGINES, f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}"),
            (self.engine != "numpy" or self.device in ("auto", "cpu"),
             f"--engine numpy runs on the CPU; drop --device {self.device}"),
            (self.act is None or self.act in ACTIVATIONS,
             f"unknown activation {self.act!r}; choose one of {', '.join(ACTIVATIONS)}"),
            (self.act is None or "act" not in self.model_kwargs,
             "--act and --model-arg act=... both set the activation; give one"),
            (self.init in INIT_SCHEMES, f"unknown --init {self.init!r}; choose one of {', '.join(INIT_SCHEMES)}"),
            (self.init == "default" or not self.init_from,
             f"--init {self.init} draws weights that --init-from then replaces; give one"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        _check_spec_on_builtin(self)  # a spec that cannot fit a built-in dataset: refused before any data loads
        check_transfer(self)  # --freeze naming no layer (close matches), --input-size on a non-classifier ...
        act = self.model_args().get("act")  # --act, or --model-arg act=...
        if act is not None and self.model in list_models():  # refused before any data loads
            check_takes_act(self.model)
        if self.pipeline_stages > 1:  # what the pipelined loop (convolab.train.pipeline_step) does not do
            refused = [("--accum-steps > 1", self.accum_steps > 1), ("--ema", self.ema is not None),
                       ("--cuda-graphs", self.cuda_graphs), ("--compile", self.compile),
                       ("--precision fp16", self.precision == "fp16"), ("--engine numpy", self.engine == "numpy"),
                       ("--early-stopping", self.early_stopping is not None),
                       ("--clip-grad-norm (each stage would clip its own norm)", self.clip_grad_norm is not None),
                       ("--checkpoint-every (pipeline runs keep no checkpoints)", self.checkpoint_every > 0),
                       ("--freeze", self.freeze is not None), ("--input-size", self.input_size is not None),
                       ("--lr-decay-per-stage", self.lr_decay_per_stage != 1.0)]  # (stages are traced pieces)
            names = [name for name, bad in refused if bad]
            if names:
                raise ValueError(f"--pipeline-stages {self.pipeline_stages} cannot be combined with "
                                 f"{', '.join(names)}; drop it or use --pipeline-stages 1")
        if self.epochs is not None and self.warmup_epochs >= self.epochs:
            raise ValueError(f"--warmup-epochs {self.warmup_epochs:g} must be shorter than the run (--epochs "
                             f"{self.epochs})")
        # The schedule's own checks, before any data loads, with a stand-in for the steps per epoch (the data
        # gives the real count). --warmup-steps is checked against the real count once the data has loaded:
        # here it counts only as 'a warmup' (for onecycle's refusal), so no message quotes the stand-in's steps.
        # Without --epochs the data sets the run's length; the stand-in is long enough for any warmup here.
        epochs = self.epochs or max(6, math.floor(self.warmup_epochs) + 1)
        replace(self, warmup_steps=min(self.warmup_steps, 1), epochs=epochs).lr_schedule(steps_per_epoch=1000)

    def lr_schedule(self, steps_per_epoch: int) -> LRSchedule:
        """The run's learning-rate schedule for ``steps_per_epoch`` optimizer steps per epoch."""
        warmup = self.warmup_steps or round(self.warmup_epochs * steps_per_epoch)
        epochs = self.epochs if self.epochs is not None else auto_epochs(steps_per_epoch)
        return LRSchedule(self.schedule, self.lr, total_steps=epochs * steps_per_epoch,
                          steps_per_epoch=steps_per_epoch, warmup_steps=warmup, min_lr=self.min_lr,
                          gamma=self.gamma, decay_epochs=self.decay_epochs, milestones=self.milestones,
                          pct_start=self.pct_start, cycle_epochs=self.cycle_epochs,
                          restart_epochs=self.restart_epochs, restart_mult=self.restart_mult)

    def model_args(self) -> dict:
        """``create_model``'s model-specific arguments: ``--model-arg``'s, ``act`` when ``--act`` is given, and
        ``resize_inputs`` with ``--input-size`` (:mod:`convolab.data.resize`)."""
        return {**self.model_kwargs, **({"act": self.act} if self.act is not None else {}),
                **({"resize_inputs": True} if self.input_size is not None else {})}

    def to_dict(self) -> dict:
        return asdict(self)


def _check_spec_on_builtin(config: TrainConfig) -> None:
    """Build a ``spec:`` network on the meta device at a built-in dataset's size (known without loading it), so a
    map that collapses or an ``fc`` on a map is one line before the data loads (folders are checked once read)."""
    import torch

    from convolab.data.builtin import canonical_name
    from convolab.data.named import DATASETS
    from convolab.models.spec import build_spec, is_spec

    name = canonical_name(config.data) if isinstance(config.data, str) else None
    if not is_spec(config.model) or name is None or config.image_size is not None:
        return
    spec = DATASETS[name]
    with torch.device("meta"):
        build_spec(config.model, num_classes=len(spec.classes), in_chans=spec.in_chans, input_size=spec.image_size)

