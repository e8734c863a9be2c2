"""Pruning: structured (whole channels removed, so the network really does less work) and unstructured (weights
zeroed, for teaching: the dense kernels do the same work, so nothing gets faster).

``prune_structured`` follows torch-pruning's dependency graph (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023): the channels coupled through residual sums, concatenations and flattening are removed
together, and the tensors shrink. It aims at a fraction of the multiply-accumulates (MACs) rather than of the
channels: a channel ratio is searched (bisection) until the pruned network's MACs are closest to the target. The
final classifier keeps all its outputs. The pruned model records what changed (``convolab_build``), so a run
trained from it reloads (:mod:`convolab.runs.pruned`).

``prune_unstructured`` is ``torch.nn.utils.prune``'s global L1 magnitude pruning, made permanent.

``prune_run`` prunes a trained run and fine-tunes the result into a new run (:func:`convolab.compress.finetune`).
"""

from __future__ import annotations

import copy
import math
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["PruneResult", "prune_structured", "prune_unstructured", "count_macs", "pruned_build", "IMPORTANCES",
           "prune_run", "PruneRunResult"]

IMPORTANCES = ("l2", "l1", "taylor")  # channel importance: group L2 / L1 norm of the weights, first-order Taylor
_MAX_RATIO = 0.95  # the largest channel ratio the search tries (a layer keeps at least 5 % of its channels)
_SEARCH_STEPS = 12  # at most this many bisection steps (they stop at half a channel of the widest layer)
_CLOSE_ENOUGH = 0.0025  # the search stops once the MACs are this close to the target (as a fraction of the total)
_SHAPE_TYPES = (int, float)  # module attributes recorded when pruning changed them (sizes, and their tuples)


@dataclass
class PruneResult:
    """What :func:`prune_structured` did: the pruned model and its figures before and after.

    MACs are per image: the multiply-accumulates of the convolutions' and linear layers' weights, as
    torch-pruning's counter finds them (bias additions left out), the figure ``convolab summary`` gives.
    """

    model: nn.Module  # the pruned copy (the model given is left as it was)
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channels_before: dict[str, int]  # conv/linear layer -> output channels (features)
    channels_after: dict[str, int]
    analysis_macs_before: int  # convolab.analysis's count of the same MACs (an independent check)
    analysis_macs_after: int
    channel_ratio: float  # the channel ratio torch-pruning was given to reach the MAC target
    importance: str = "l2"
    iterative_steps: int = 1
    target_fraction: float = 0.5
    notes: list[str] = field(default_factory=list)

    @property
    def macs_removed(self) -> float:
        """The fraction of MACs removed (0.5: half)."""
        return 1 - self.macs_after / self.macs_before if self.macs_before else 0.0

    @property
    def params_removed(self) -> float:
        return 1 - self.params_after / self.params_before if self.params_before else 0.0

    def to_dict(self) -> dict:
        """The figures as plain JSON values (no model)."""
        return {"macs_before": self.macs_before, "macs_after": self.macs_after, "macs_removed": self.macs_removed,
                "target_fraction": self.target_fraction, "params_before": self.params_before,
                "params_after": self.params_after, "params_removed": self.params_removed,
                "analysis_macs_before": self.analysis_macs_before, "analysis_macs_after": self.analysis_macs_after,
                "channel_ratio": self.channel_ratio, "importance": self.importance,
                "iterative_steps": self.iterative_steps,
                "channels": {k: [v, self.channels_after.get(k, v)] for k, v in self.channels_before.items()},
                "notes": list(self.notes)}

    def format(self) -> str:
        """A small table: channels per layer, then MACs and parameters before and after."""
        width = max([len(k) for k in self.channels_before] + [5])
        lines = [f"{'layer'.ljust(width)}  channels before -> after"]
        for k, v in self.channels_before.items():
            lines.append(f"{k.ljust(width)}  {v:>6} -> {self.channels_after.get(k, v)}")
        lines.append(f"MACs: {self.macs_before:,} -> {self.macs_after:,} ({self.macs_removed:.1%} removed; "
                     f"target {self.target_fraction:.0%})")
        lines.append(f"parameters: {self.params_before:,} -> {self.params_after:,} ({self.params_removed:.1%} "
                     "removed)")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


# -- counting ---------------------------------------------------------------------------------------------------


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates per image of ``model``'s convolutions and linear layers, by torch-pruning's counter.

    The counter adds one operation per bias value, per norm and activation element; only the weights' products
    are kept here (on a copy whose conv/linear biases are removed, summed over those layers), which is what
    ``torch.utils.flop_counter`` and :func:`convolab.analysis.summarize` call MACs.
    """
    import torch_pruning as tp

    bare = copy.deepcopy(model).eval()
    for m in bare.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.bias is not None:
            m.bias = None
    _, _, layer_ops, _ = tp.utils.count_ops_and_params(bare, example[:1], layer_wise=True)
    return int(sum(v or 0 for m, v in layer_ops.items() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))))


def _analysis_macs(model: nn.Module, example: torch.Tensor) -> int:
    from convolab.analysis import summarize

    return summarize(model, tuple(example.shape[1:])).macs


def _channels(model: nn.Module) -> dict[str, int]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out


# -- checks -----------------------------------------------------------------------------------------------------


def _leaf_io(model: nn.Module, example: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple]]:
    """The model's output on ``example``, and each parameter-free leaf module's (input shape, output shape)."""
    seen: dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if name and not list(m.children()) and not list(m.parameters(recurse=False)):
            def hook(mod, args, out, name=name):
                if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    seen.setdefault(name, (tuple(args[0].shape), tuple(out.shape)))
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(example)
    except RuntimeError as e:
        raise ValueError(f"example images of shape {tuple(example.shape[1:])} do not fit the model "
                         f"({(str(e).splitlines() or [''])[0]})") from None
    finally:
        for h in hooks:
            h.remove()
    return out, seen


def _refuse_channel_changers(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """torch-pruning reads a parameter-free op as keeping its channels; one that adds or drops channels (the
    zero-padding shortcut of resnet20's option A) would be pruned wrongly: refuse it, naming the layer."""
    out, seen = _leaf_io(model, example)
    for name, (i, o) in seen.items():
        m = model.get_submodule(name)
        if isinstance(m, nn.Flatten) or len(i) != len(o) or len(i) < 3:
            continue  # flattening is a reshape torch-pruning follows
        if i[1] != o[1] and sorted(i[1:]) != sorted(o[1:]):  # (a permutation to channels-last is followed too)
            hint = " (build resnet20..110 with shortcut='B', 1x1 projections)" if "ZeroPad" in type(m).__name__ else ""
            raise ValueError(f"layer {name} ({type(m).__name__}) turns {i[1]} channels into {o[1]} without weights; "
                             f"torch-pruning cannot follow such a layer{hint}")
    return out


def _classifier(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Module) else None


def _check_forward(model: nn.Module, example: torch.Tensor, shape: tuple) -> None:
    """The pruned model must run and give outputs of the original shape; otherwise name the layer that failed."""
    stack: list[str] = []
    failed: list[str] = []
    hooks = []
    for name, m in model.named_modules():
        if name:
            hooks.append(m.register_forward_pre_hook(lambda mod, a, name=name: stack.append(name)))
            hooks.append(m.register_forward_hook(lambda mod, a, o: [stack.pop()] and None))  # None: output kept
    try:
        with torch.no_grad():
            out = model(example)
    except RuntimeError as e:
        failed = stack[-1:]
        first = (str(e).splitlines() or [""])[0]
        where = f"layer {failed[0]} ({type(model.get_submodule(failed[0])).__name__})" if failed else "the model"
        raise ValueError(f"torch-pruning left {where} inconsistent ({first}); this model cannot be pruned "
                         "structurally (pass the layer in ignore=...)") from None
    finally:
        for h in hooks:
            h.remove()
    if tuple(out.shape) != shape:
        raise ValueError(f"the pruned model gives outputs of shape {tuple(out.shape)}, not {shape}: torch-pruning "
                         "changed the classifier (pass its layers in ignore=...)")


# -- structured ---------------------------------------------------------------------------------------------------


def _importance(name: str):
    import torch_pruning as tp

    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    return tp.importance.GroupTaylorImportance()


def _prune_copy(model: nn.Module, example: torch.Tensor, ratio: float, *, importance: str, steps: int,
                ignore: list[str], targets: torch.Tensor | None, global_pruning: bool,
                round_to: int | None) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of the channels of each prunable group removed by torch-pruning."""
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    head = _classifier(m)
    ignored = [m.get_submodule(n) for n in ignore] + ([head] if head is not None else [])
    try:
        pruner = tp.pruner.BasePruner(m, example[:1], importance=_importance(importance), pruning_ratio=ratio,
                                      iterative_steps=steps, ignored_layers=ignored, global_pruning=global_pruning,
                                      round_to=round_to)
        for _ in range(steps):
            if importance == "taylor":  # first-order Taylor needs the loss's gradients on real images
                m.zero_grad()
                nn.functional.cross_entropy(m(example), targets).backward()
            pruner.step()
    except (ArithmeticError, IndexError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        frame = traceback.extract_tb(e.__traceback__)[-1]
        raise ValueError(f"torch-pruning cannot follow this model's graph ({type(e).__name__} in its "
                         f"{frame.name}: {(str(e).splitlines() or [''])[0]}); channel shuffles and other reshapes "
                         "of the channel dimension are beyond it") from None
    m.zero_grad(set_to_none=True)
    return m


def prune_structured(model: nn.Module, example: torch.Tensor, *, macs_fraction: float = 0.5,
                     importance: str = "l2", iterative_steps: int = 1, ignore: Iterable[str] | None = None,
                     targets: torch.Tensor | None = None, global_pruning: bool = False,
                     round_to: int | None = None) -> PruneResult:
    """Remove whole channels from a copy of ``model`` until about ``macs_fraction`` of its MACs are gone.

    Channels are ranked in the groups torch-pruning's dependency graph couples (a residual sum's inputs, a
    concatenation's parts, a flattened map and the linear layer it feeds) and removed together, so every tensor
    shrinks and the network really does less work. A channel ratio is searched by bisection so that the MACs
    removed come closest to ``macs_fraction`` (channels are whole, so the figure is reached to within a channel
    of a layer). Each trial prunes a fresh copy; a small network takes a few seconds, a DenseNet minutes. The
    classifier (``model.get_classifier()``) keeps all its outputs.

    Args:
        model: the network (left unchanged; a pruned copy is returned). A model built by ``create_model`` (with
            ``convolab_cfg``) gets ``convolab_build`` on the copy, so a run trained from it reloads.
        example: a batch of inputs ``(N, C, H, W)`` on the model's device, for tracing (and for ``taylor``, real
            images).
        macs_fraction: the fraction of MACs to remove, in (0, 1): 0.5 halves them.
        importance: ``"l2"`` (group L2 norm of the weights), ``"l1"``, or ``"taylor"`` (first-order Taylor
            expansion of the loss, Molchanov et al. 2019; needs ``targets``).
        iterative_steps: prune in this many steps (importance re-estimated between them).
        ignore: qualified names of layers whose outputs must not be pruned (beyond the classifier).
        targets: class labels of ``example``, for ``taylor``.
        global_pruning: rank channels across layers (one threshold) instead of the same ratio in every layer.
        round_to: keep channel counts multiples of this (vector-friendly sizes).

    Raises:
        ValueError: a bad argument; a model torch-pruning cannot handle (naming the layer); a target that cannot
            be reached (naming the largest fraction that can).
    """
    if isinstance(macs_fraction, bool) or not isinstance(macs_fraction, (int, float)) \
            or not 0 < macs_fraction < 1:
        raise ValueError(f"macs_fraction must be between 0 and 1 (the fraction of MACs to remove, 0.5 = half); "
                         f"got {macs_fraction!r}")
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {', '.join(IMPORTANCES)}; got {importance!r}")
    if isinstance(iterative_steps, bool) or not isinstance(iterative_steps, int) or not 1 <= iterative_steps <= 100:
        raise ValueError(f"iterative_steps must be an integer from 1 to 100; got {iterative_steps!r}")
    if not isinstance(example, torch.Tensor) or example.ndim < 2 or example.shape[0] < 1:
        raise ValueError("example must be a batch of inputs, a tensor (N, C, H, W) with N >= 1")
    if importance == "taylor" and (targets is None or len(targets) != len(example)):
        raise ValueError("importance='taylor' needs targets: the class labels of the example images (one each)")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to must be a positive integer; got {round_to!r}")
    build = getattr(model, "convolab_build", None)
    if isinstance(build, dict) and build.get("kind") not in (None, "pruned", "registry"):
        raise ValueError(f"this model was built as {build.get('kind')!r}; prune the float model before that step")
    ignore = list(ignore or ())
    names = dict(model.named_modules())
    for n in ignore:
        if n not in names or not n:
            raise ValueError(f"ignore names layer {n!r}, which the model does not have (use qualified names such "
                             "as 'features.conv1')")
    was_training = model.training
    model.eval()
    try:
        out = _refuse_channel_changers(model, example[:1])
        shape = tuple(out.shape)  # (1, num_classes): one image traces the graph as well as a batch
        macs0, params0 = count_macs(model, example), _params(model)
        target = macs0 * (1 - macs_fraction)
        kw = dict(importance=importance, steps=iterative_steps, ignore=ignore, targets=targets,
                  global_pruning=global_pruning, round_to=round_to)
        best: list = []  # [distance, ratio, model, macs] of the trial closest to the target

        def trial(ratio: float) -> int:
            pruned = _prune_copy(model, example, ratio, **kw)
            _check_forward(pruned, example[:1], shape)
            macs = count_macs(pruned, example)
            if not best or abs(macs - target) < best[0]:
                best[:] = [abs(macs - target), ratio, pruned, macs]
            return macs

        # Bracket the target, starting from the ratio that removes it from a chain of layers pruned alike
        # ((1 - r)^2 of each layer's MACs stay), then bisect until the ratio is finer than half a channel of
        # the widest layer. (Past the bracket the MACs need not fall with the ratio: torch-pruning leaves a
        # layer whole rather than empty.)
        lo, hi = 0.0, 1 - math.sqrt(1 - macs_fraction)
        while trial(hi) > target and abs(best[0]) > _CLOSE_ENOUGH * macs0:
            if hi >= _MAX_RATIO:
                raise ValueError(f"at most {1 - best[3] / macs0:.1%} of the MACs can be removed from this model "
                                 f"(its ignored layers and classifier keep the rest); asked {macs_fraction:.1%}")
            lo, hi = hi, min(_MAX_RATIO, hi + (1 - hi) / 2)
        resolution = 0.5 / max(_channels(model).values() or [1])
        for _ in range(_SEARCH_STEPS):
            if best[0] <= _CLOSE_ENOUGH * macs0 or hi - lo < resolution:
                break
            mid = (lo + hi) / 2
            if trial(mid) > target:
                lo = mid
            else:
                hi = mid
    finally:
        model.train(was_training)
    _, ratio, pruned, macs1 = best
    pruned.train(was_training)
    result = PruneResult(model=pruned, macs_before=macs0, macs_after=macs1, params_before=params0,
                         params_after=_params(pruned), channels_before=_channels(model),
                         channels_after=_channels(pruned), analysis_macs_before=_analysis_macs(model, example),
                         analysis_macs_after=_analysis_macs(pruned, example), channel_ratio=ratio,
                         importance=importance, iterative_steps=iterative_steps, target_fraction=macs_fraction)
    cfg = getattr(model, "convolab_cfg", None)
    if isinstance(cfg, dict) and "name" in cfg:
        pruned.convolab_cfg = dict(cfg)
        pruned.convolab_build = pruned_build(pruned, cfg)
    else:
        result.notes.append("the model has no convolab_cfg (not built by create_model): a run trained from it "
                            "cannot be reloaded")
    return result


def _shape_value(v):
    """A module attribute as config.json records it: an int or float, a tuple of them as a list; None otherwise."""
    if isinstance(v, bool):
        return None
    if isinstance(v, _SHAPE_TYPES):
        return v
    if isinstance(v, (tuple, list, torch.Size)) and v and all(isinstance(x, int) and not isinstance(x, bool)
                                                              for x in v):
        return list(v)
    return None


def pruned_build(model: nn.Module, cfg: dict) -> dict:
    """``{"kind": "pruned", "base": {"name", "kwargs"}, "modules": {name: {attr: value}}, "shapes": {tensor:
    shape}}``: how :mod:`convolab.runs.pruned` rebuilds ``model`` from the registry model ``cfg`` describes (its
    ``convolab_cfg``): the size attributes that differ from the base's, and the tensors whose shapes do."""
    from convolab.models import create_model

    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    with torch.device("meta"):
        base = create_model(cfg["name"], **kwargs)
    base_modules = dict(base.named_modules())
    modules: dict[str, dict] = {}
    for name, m in model.named_modules():
        b = base_modules.get(name)
        if b is None or type(b) is not type(m):
            raise ValueError(f"layer {name or '(model)'} is not the base model's ({cfg['name']}): only pruning may "
                             "change a model that is to be rebuilt")
        changed = {}
        for attr, v in vars(m).items():
            if attr.startswith("_") or attr == "training":
                continue
            new, old = _shape_value(v), _shape_value(getattr(b, attr, None))
            if new is not None and old is not None and new != old:
                changed[attr] = new
        if changed:
            modules[name] = changed
    base_shapes = {k: list(v.shape) for k, v in base.state_dict().items()}
    shapes = {k: list(v.shape) for k, v in model.state_dict().items() if base_shapes.get(k) != list(v.shape)}
    return {"kind": "pruned", "base": {"name": cfg["name"], "kwargs": kwargs}, "modules": modules, "shapes": shapes}


# -- unstructured ---------------------------------------------------------------------------------------------------

NO_SPEEDUP = ("unstructured pruning zeroes weights but keeps every tensor dense: the kernels multiply the zeros "
              "too, so the model is no faster and no smaller on disk (structured pruning removes channels)")


def prune_unstructured(model: nn.Module, amount: float, *,
                       layers: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)) -> dict:
    """Zero the ``amount`` smallest-magnitude weights of all ``layers`` together (global L1 magnitude pruning with
    ``torch.nn.utils.prune``), made permanent (``prune.remove``), in place.

    For teaching: the zeros stay in dense tensors, so the model does exactly as much work as before — no speed-up
    and no smaller file. The returned ``note`` says so.

    Returns:
        ``{"amount", "sparsity" (zeros / weights over those layers), "zeros", "weights", "layers": {name:
        sparsity}, "note"}``.

    Raises:
        ValueError: ``amount`` outside [0, 1), or a model with none of ``layers``.
    """
    from torch.nn.utils import prune

    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise ValueError(f"amount must be a fraction of the weights in [0, 1); got {amount!r}")
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, tuple(layers)) and isinstance(getattr(m, "weight", None), nn.Parameter)]
    if not targets:
        raise ValueError(f"the model has no {' or '.join(t.__name__ for t in layers)} layer with weights to prune")
    prune.global_unstructured([(m, "weight") for _, m in targets], pruning_method=prune.L1Unstructured,
                              amount=float(amount))
    for _, m in targets:
        prune.remove(m, "weight")  # weight_orig * mask -> weight: a plain parameter again, zeros kept
    per_layer = {name: float((m.weight == 0).sum()) / m.weight.numel() for name, m in targets}
    zeros = sum(int((m.weight == 0).sum()) for _, m in targets)
    total = sum(m.weight.numel() for _, m in targets)
    return {"amount": float(amount), "sparsity": zeros / total, "zeros": zeros, "weights": total,
            "layers": per_layer, "note": NO_SPEEDUP}


# -- a run --------------------------------------------------------------------------------------------------------


@dataclass
class PruneRunResult:
    """:func:`prune_run`'s figures: the pruning's, and the fine-tuned run's."""

    path: Path  # the new run
    prune: PruneResult
    accuracy_before: float | None  # the run's test accuracy (its summary.json)
    accuracy_after: float | None  # the fine-tuned run's
    train_result: object = None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "accuracy_before": self.accuracy_before,
                "accuracy_after": self.accuracy_after} | self.prune.to_dict()


def prune_run(run_path, out, *, macs_fraction: float = 0.5, epochs: int = 3, lr: float | None = None,
              importance: str = "l2", iterative_steps: int = 1, examples: int = 256, overwrite: bool = False,
              progress: bool = True, **overrides) -> PruneRunResult:
    """Prune a trained run's model (:func:`prune_structured`) and fine-tune it into the run folder ``out``
    (:func:`convolab.compress.finetune.finetune`: the run's data and recipe).

    Args:
        run_path: the trained run (a folder or a loaded :class:`~convolab.runs.Run`).
        out: the new run's folder (refused if it exists, unless ``overwrite``).
        macs_fraction: the fraction of MACs to remove (0.5: half).
        epochs, lr: the fine-tuning's length and peak rate (``lr`` None: a tenth of the run's).
        importance, iterative_steps: as :func:`prune_structured`.
        examples: training images that trace the model (and rank the channels for ``taylor``).
        overrides: other training options of the fine-tuning (``batch_size``, ``seed`` ...).

    Returns:
        the new run's path, the pruning's figures and both runs' test accuracy.
    """
    from convolab.compress.finetune import finetune, finetune_config
    from convolab.runs.reader import Run, load_run
    from convolab.runs.recipe import load_data

    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples must be a positive number of training images; got {examples!r}")
    run = run_path if isinstance(run_path, Run) else load_run(run_path)
    if run.task != "classification":
        raise ValueError(f"{run.path}: a {run.task} run; pruning fine-tunes classification runs only")
    config = finetune_config(run, out, epochs=epochs, lr=lr, overwrite=overwrite, progress=progress, **overrides)
    data = load_data(run, config)  # loaded once: the examples come from it, then the fine-tuning trains on it
    x, y = _training_examples(data, run, examples)
    result = prune_structured(run.model, x.to(run.device), macs_fraction=macs_fraction, importance=importance,
                              iterative_steps=iterative_steps, targets=y.to(run.device))
    train = finetune(run, result.model, out, epochs=epochs, lr=lr, overwrite=overwrite, progress=progress,
                     data=data, **overrides)
    return PruneRunResult(path=Path(train.run_dir), prune=result, accuracy_before=run.summary.get("test_accuracy"),
                          accuracy_after=train.summary.get("test_accuracy"), train_result=train)


def _training_examples(data, run, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training images of ``data`` (at random, seeded), normalised as the run's model expects, and their
    labels."""
    split = data.train
    k = min(n, len(split))
    pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:k]
    images, labels = split.images[pick].float() / 255, split.labels[pick]  # (k, C, H, W) on the 0..1 scale
    shape = (1, -1) + (1,) * (images.ndim - 2)
    mean, std = torch.tensor(run.mean).view(shape), torch.tensor(run.std).view(shape)
    return (images - mean) / std, labels.long()
