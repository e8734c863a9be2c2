"""The four compression methods end to end, as ``convolab compress`` runs them: make the new run, then measure it
beside its baselines (:mod:`convolab.compress.result`) and, with ``control``, beside its honest control -- float32
fine-tuned for the same steps (QAT, pruning) or the student trained alone for the same steps (distillation).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from convolab.compress.measure import Row
from convolab.compress.ptq import ptq_run
from convolab.compress.result import check_destinations, compiled_variant, measure_run
from convolab.runs.layout import WEIGHTS
from convolab.runs.reader import Run, load_run
from convolab.runs.recipe import load_data, run_config

__all__ = ["ptq", "qat", "distill", "prune", "DEFAULT_EPOCHS"]

DEFAULT_EPOCHS = {"qat": 1, "prune": 3}  # fine-tuning epochs; a student trains as long as its teacher did


def ptq(run_path, out, **kwargs) -> list[Row]:
    """Post-training int8 (:func:`convolab.compress.ptq.ptq_run`)."""
    return ptq_run(run_path, out, **kwargs)


def _measure(run: Run, out: Path, extra: list[tuple[str, Run, str]], *, method: dict, main: str, ort: bool,
             test_limit: int | None, repeats: int, say: Callable[[str], None]) -> list[Row]:
    """The run's baselines and the model of each ``(name, run, note)`` of ``extra`` compiled, measured and recorded
    in ``out``."""
    def compiled(example, _onnx_fp32) -> list:
        return [compiled_variant(name, other.model.float().cpu(), example, other.path / WEIGHTS, note)
                for name, other, note in extra]
    return measure_run(run, out, load_data(run, run_config(run)), compiled, method=method, main=main, ort=ort,
                       test_limit=test_limit, repeats=repeats, say=say)


def _train_args(seed, progress, overwrite) -> dict:
    return {"overwrite": overwrite, "progress": progress, **({"seed": seed} if seed is not None else {})}


def qat(run_path, out, *, keep_float=None, epochs=None, lr=None, seed=None, control=False, progress=True,
        overwrite=False, test_limit=None, repeats=5, say=print) -> list[Row]:
    """Quantization-aware fine-tuning into ``out`` (:func:`convolab.compress.qat.qat`), measured against the float32
    run and, with ``control``, the float32 model fine-tuned for the same steps (``out``-control)."""
    from convolab.compress.qat import qat as train_qat
    from convolab.compress.qat import qat_control

    run = load_run(run_path)
    check_destinations(run.path, out, control=control, overwrite=overwrite)
    epochs = epochs or DEFAULT_EPOCHS["qat"]
    say(f"quantization-aware fine-tuning of {run.path} for {epochs} epoch(s)")
    res = train_qat(run, out, epochs=epochs, lr=lr, keep_float=keep_float, **_train_args(seed, progress, overwrite))
    extra = [("int8 qat", load_run(res.run_dir), "QAT, PT2E, x86 inductor (oneDNN int8)")]
    if control:
        say("the control: float32 fine-tuned for the same steps")
        ctrl = qat_control(run, f"{out}-control", epochs=epochs, lr=lr, **_train_args(seed, progress, overwrite))
        extra.append(("fp32 fine-tuned (control)", load_run(ctrl.run_dir), "same recipe and steps, no quantization"))
    method = {"method": "qat", "from": str(run.path), "epochs": epochs, "lr": lr,
              "control": f"{out}-control" if control else None}
    return _measure(run, Path(res.run_dir), extra, method=method, main="int8 qat", ort=True, test_limit=test_limit,
                    repeats=repeats, say=say)


def distill(teacher_path, out, *, student: str, temperature=4.0, alpha=0.9, epochs=None, lr=None, seed=None,
            control=False, progress=True, overwrite=False, test_limit=None, repeats=5, say=print) -> list[Row]:
    """Distil the run at ``teacher_path`` into ``student`` (:func:`convolab.compress.distill.distill`), measured
    against the teacher and, with ``control``, the student trained alone for the same steps (``out``-control)."""
    from convolab.compress.distill import distill as train_distill
    from convolab.compress.distill import distill_control

    teacher = load_run(teacher_path)
    check_destinations(teacher.path, out, control=control, overwrite=overwrite)
    epochs = epochs or run_config(teacher).epochs
    seed = run_config(teacher).seed if seed is None else seed
    extra_args = {"lr": lr} if lr is not None else {}
    say(f"distilling {teacher.path} into {student} for {epochs} epoch(s) (T={temperature}, alpha={alpha})")
    res = train_distill(teacher, student, out, temperature=temperature, alpha=alpha, epochs=epochs, seed=seed,
                        overwrite=overwrite, progress=progress, **extra_args)
    extra = [(f"{student} distilled", load_run(res.run_dir), f"T={temperature}, alpha={alpha}")]
    if control:
        say(f"the control: {student} trained alone for the same steps")
        ctrl = distill_control(teacher, student, f"{out}-control", epochs=epochs, seed=seed, overwrite=overwrite,
                               progress=progress, **extra_args)
        extra.append((f"{student} alone (control)", load_run(ctrl.run_dir), "same recipe and steps, labels only"))
    method = {"method": "distill", "from": str(teacher.path), "student": student, "temperature": temperature,
              "alpha": alpha, "epochs": epochs, "control": f"{out}-control" if control else None}
    return _measure(teacher, Path(res.run_dir), extra, method=method, main=f"{student} distilled", ort=True,
                    test_limit=test_limit, repeats=repeats, say=say)


def prune(run_path, out, *, macs_fraction=0.5, importance="l2", epochs=None, lr=None, seed=None, control=False,
          progress=True, overwrite=False, test_limit=None, repeats=5, say=print) -> list[Row]:
    """Structured pruning and fine-tuning into ``out`` (:func:`convolab.compress.prune.prune_run`), measured against
    the run and, with ``control``, the unpruned model fine-tuned for the same steps (``out``-control)."""
    import copy

    from convolab.compress.finetune import finetune
    from convolab.compress.prune import prune_run

    run = load_run(run_path)
    check_destinations(run.path, out, control=control, overwrite=overwrite)
    epochs = epochs or DEFAULT_EPOCHS["prune"]
    say(f"pruning {macs_fraction:.0%} of the MACs of {run.path}, then {epochs} epoch(s) of fine-tuning")
    res = prune_run(run, out, macs_fraction=macs_fraction, importance=importance, epochs=epochs, lr=lr,
                    **_train_args(seed, progress, overwrite))
    p = res.prune
    say(f"MACs {p.macs_before:,} -> {p.macs_after:,} ({1 - p.macs_after / p.macs_before:.1%} removed), parameters "
        f"{p.params_before:,} -> {p.params_after:,}")
    extra = [("pruned fp32 compiled", load_run(res.path), f"{1 - p.macs_after / p.macs_before:.0%} of MACs removed")]
    if control:
        say("the control: the unpruned model fine-tuned for the same steps")
        ctrl = finetune(run, copy.deepcopy(run.model), f"{out}-control", epochs=epochs, lr=lr,
                        **_train_args(seed, progress, overwrite))
        extra.append(("fp32 fine-tuned (control)", load_run(ctrl.run_dir), "same recipe and steps, unpruned"))
    method = {"method": "prune", "from": str(run.path), "macs_fraction": macs_fraction, "importance": importance,
              "epochs": epochs, "macs_before": p.macs_before, "macs_after": p.macs_after,
              "params_before": p.params_before, "params_after": p.params_after,
              "control": f"{out}-control" if control else None}
    return _measure(run, Path(res.path), extra, method=method, main="pruned fp32 compiled", ort=True,
                    test_limit=test_limit, repeats=repeats, say=say)
