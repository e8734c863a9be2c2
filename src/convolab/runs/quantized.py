"""How an int8 model quantized through torchao's PT2E flow is stored in a run and rebuilt (build kind ``int8-pt2e``).

PT2E quantization is a graph transformation: the model is exported (``torch.export``, dynamic batch), observers are
inserted (``prepare_pt2e``, or ``prepare_qat_pt2e`` for quantization-aware training), calibrated or trained, and
``convert_pt2e`` replaces them with quantize/dequantize pairs and int8 weights, which inductor lowers to int8 oneDNN
kernels. The graph itself is not a file format, so the run stores what makes it:

- config.json's ``build``: ``{"kind": "int8-pt2e", "base": {"name", "kwargs"}, "input_shape": [C, H, W],
  "rewrites": [...], "keep_float": [...], "qat": bool}`` -- the registry model the graph was exported from and its
  input, the exact rewrites applied to it first (:mod:`convolab.models.rewrite`), the layers left in float32, and
  which flow prepared it;
- ``model.safetensors``: every quantized weight as int8 (the file is about 4x smaller than float32), the other
  tensors as they are, and each observer's scale and zero point under ``quant.<observer>.scale``/``.zero_point``.

Rebuilding rewrites and exports a fresh base model the same way, prepares it with the same quantizer (the same
graph, so the same observer names), loads the weights (int8 ones dequantized: ``q * scale`` quantizes back to ``q``
exactly), fixes every observer to its stored scale and zero point, and converts. The result equals the saved model
bit for bit (a test checks it). Needs torchao; imported only when such a run is loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from convolab.runs.build import fit_problem, register_builder

__all__ = ["KIND", "make_quantizer", "export_graph", "prepare", "stored_tensors", "rebuild", "convert"]

KIND = "int8-pt2e"
_Q = "quant."  # prefix of the observers' stored scales and zero points


def _quiet_torchao() -> None:
    """Import torchao with torch's pytree logger held at errors: the import logs a deprecation note for its own enum
    (a torch/torchao version detail a user can do nothing about)."""
    import logging

    log = logging.getLogger("torch.utils._pytree")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e  # noqa: F401
    finally:
        log.setLevel(level)


def make_quantizer(keep_float: list[str] | tuple[str, ...] = (), qat: bool = False):
    """torchao's x86 inductor quantizer: int8 activations (per tensor, asymmetric) and weights (per channel,
    symmetric) for every supported layer, except the modules named in ``keep_float``."""
    _quiet_torchao()
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    q = xiq.X86InductorQuantizer()
    q.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=qat))
    for name in keep_float:
        q.set_module_name_qconfig(name, None)
    return q


def export_graph(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` exported for quantization with a dynamic batch dimension (the graph runs at any batch size; compile
    it per shape: inductor's int8 lowering needs static shapes for some layers).

    Raises:
        ValueError: the model cannot be exported (one line naming the cause).
    """
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        graph = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    except Exception as e:  # torch.export raises many types; the first line names the op or the guard
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ValueError(f"{type(model).__name__} cannot be exported for int8 quantization: {first[:300]}") from None
    _split_reused_modules(graph)
    return graph


# Stateless one-op modules a forward may call more than once (torchvision's BasicBlock calls its ReLU twice).
_ONE_OP_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.GELU, nn.Sigmoid,
                   nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_ONE_OP_NAMES = {f"{c.__module__}.{c.__qualname__}" for c in _ONE_OP_MODULES}


def _split_reused_modules(graph: torch.fx.GraphModule) -> None:
    """Give each call of a reused stateless module its own source partition.

    The quantizer matches fusion patterns (conv -> add -> relu) on partitions keyed by the module a node came from;
    a ReLU module called twice (after the first convolution and after the residual add) makes one partition with two
    outputs, which torchao's x86 quantizer refuses ("Input partition has more than one output node"). The nodes are
    the same; only their ``nn_module_stack`` record gets a per-call name (``layer1.0.relu#1``)."""
    seen: dict[str, int] = {}
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack") if node.op == "call_function" else None
        if not stack:
            continue
        key, (fqn, cls) = list(stack.items())[-1]
        name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"  # (export records a string)
        if name not in _ONE_OP_NAMES:
            continue
        calls = seen.get(fqn, 0)
        seen[fqn] = calls + 1
        if calls:
            stack = dict(stack)  # (the dict may be shared between nodes)
            stack[key] = (f"{fqn}#{calls}", cls)
            node.meta["nn_module_stack"] = stack


def prepare(model: nn.Module, example: torch.Tensor, keep_float=(), qat: bool = False) -> torch.fx.GraphModule:
    """``model`` exported and prepared (observers inserted; fake quantizers when ``qat``)."""
    _quiet_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    with warnings.catch_warnings():  # torchao notes every layer it leaves unannotated (a float first conv's pool)
        warnings.simplefilter("ignore", UserWarning)
        if qat:
            return prepare_qat_pt2e(export_graph(model.train(), example), make_quantizer(keep_float, qat=True))
        return prepare_pt2e(export_graph(model.eval(), example), make_quantizer(keep_float))


def _observers(prepared: torch.fx.GraphModule) -> dict[str, nn.Module]:
    """Observer (or fake-quantize) modules of a prepared graph, by name."""
    from torchao.quantization.pt2e import ObserverOrFakeQuantize

    return {n: m for n, m in prepared.named_children() if isinstance(m, ObserverOrFakeQuantize)}


def _weight_observers(prepared: torch.fx.GraphModule) -> dict[str, str]:
    """Parameter name -> the observer its weight goes through (a ``get_attr`` feeding an observer module)."""
    out, obs = {}, _observers(prepared)
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.target in obs:
            src = node.args[0]
            if getattr(src, "op", None) == "get_attr":
                out[str(src.target)] = str(node.target)
    return out


def _qparams(observer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    scale, zp = observer.calculate_qparams()
    return torch.as_tensor(scale, dtype=torch.float32).reshape(-1), torch.as_tensor(zp, dtype=torch.int32).reshape(-1)


def stored_tensors(prepared: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """What ``model.safetensors`` holds for a calibrated (or trained) prepared graph: quantized weights as int8,
    the other parameters and buffers (not the observers' own) as they are, every observer's scale and zero point."""
    obs = _observers(prepared)
    weight_obs = _weight_observers(prepared)
    out: dict[str, torch.Tensor] = {}
    for name, observer in obs.items():
        scale, zp = _qparams(observer)
        out[f"{_Q}{name}.scale"], out[f"{_Q}{name}.zero_point"] = scale, zp
    for name, t in [*prepared.named_parameters(), *prepared.named_buffers()]:
        if name.split(".")[0] in obs:
            continue
        t = t.detach().cpu()
        if name in weight_obs:
            observer = obs[weight_obs[name]]
            scale, zp = out[f"{_Q}{weight_obs[name]}.scale"], out[f"{_Q}{weight_obs[name]}.zero_point"]
            shape = [-1] + [1] * (t.dim() - 1) if scale.numel() > 1 else [1] * t.dim()
            q = torch.round(t * (1.0 / scale.reshape(shape))) + zp.reshape(shape)  # as quantize_per_channel does
            t = q.clamp(observer.quant_min, observer.quant_max).to(torch.int8)
        out[name] = t.contiguous()
    return out


def rebuild(prepared: torch.fx.GraphModule, tensors: dict[str, torch.Tensor], what: str) -> torch.fx.GraphModule:
    """Load ``tensors`` (as :func:`stored_tensors` wrote them) into a freshly prepared graph of the same model: the
    weights (int8 ones dequantized), and each observer fixed to its stored scale and zero point.

    Raises:
        ValueError: a tensor is missing, unexpected or of another shape (the file does not fit the graph).
    """
    obs = _observers(prepared)
    weight_obs = _weight_observers(prepared)
    own = {n: t for n, t in [*prepared.named_parameters(), *prepared.named_buffers()] if n.split(".")[0] not in obs}
    shapes: dict[str, list[int] | None] = {n: list(t.shape) for n, t in own.items()}
    for n, observer in obs.items():  # one scale and zero point per tensor, or per channel of the weight observed
        weight = next((own[p] for p, o in weight_obs.items() if o == n), None)
        per_channel = getattr(observer, "qscheme", None) in _PER_CHANNEL and weight is not None
        size = [weight.shape[getattr(observer, "ch_axis", 0)] if per_channel else 1]
        shapes[f"{_Q}{n}.scale"] = shapes[f"{_Q}{n}.zero_point"] = size
    problem = fit_problem(shapes, {k: list(v.shape) for k, v in tensors.items()}, "the prepared graph")
    if problem:
        raise ValueError(f"{what}: the int8 weights do not fit the model ({problem})")
    for name, observer in obs.items():
        scale, zp = tensors[f"{_Q}{name}.scale"].float(), tensors[f"{_Q}{name}.zero_point"].to(torch.int32)
        observer.calculate_qparams = (lambda s=scale, z=zp, o=observer:  # noqa: E731 -- a fixed observer
                                      (s, z) if getattr(o, "qscheme", None) in _PER_CHANNEL else (s[0], z[0]))
    with torch.no_grad():
        for name, t in own.items():
            value = tensors[name]
            if name in weight_obs:
                if value.dtype != torch.int8:
                    raise ValueError(f"{what}: {name} is {value.dtype}; expected the int8 weights")
                scale = tensors[f"{_Q}{weight_obs[name]}.scale"]
                zp = tensors[f"{_Q}{weight_obs[name]}.zero_point"]
                shape = [-1] + [1] * (value.dim() - 1) if scale.numel() > 1 else [1] * value.dim()
                value = (value.float() - zp.reshape(shape).float()) * scale.reshape(shape)
            t.copy_(value.to(t.dtype))
    return prepared


_PER_CHANNEL = (torch.per_channel_symmetric, torch.per_channel_affine)


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The int8 graph of a calibrated (or trained) prepared graph, in eval mode."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    allow_exported_model_train_eval(converted)  # .eval()/.train() (which every tool calls) switch dropout and norms
    return converted


def _builder(build: dict, weights: Path, what: str, field: str | None) -> nn.Module:
    """The ``int8-pt2e`` builder: the base registry model exported, prepared, loaded and converted."""
    from safetensors.torch import load_file

    from convolab.models import create_model
    from convolab.runs.schema import probe_model

    base = build.get("base")
    if not isinstance(base, dict) or not isinstance(base.get("name"), str) or not isinstance(base.get("kwargs"), dict):
        raise ValueError(f"{what}: field '{field}.base' must be {{\"name\": ..., \"kwargs\": {{...}}}}, the registry "
                         "model the int8 graph was made from")
    keep = build.get("keep_float", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise ValueError(f"{what}: field '{field}.keep_float' must be a list of module names")
    probe_model(base["name"], base["kwargs"], what, fields=f"'{field}.base'")  # absurd sizes refused before allocating
    shape = build.get("input_shape")
    if not (isinstance(shape, list) and len(shape) in (3, 4) and all(isinstance(n, int) and 0 < n <= 4096
                                                                      for n in shape)):
        raise ValueError(f"{what}: field '{field}.input_shape' must be the model's input [C, H, W]; got {shape!r}")
    rewrites = build.get("rewrites", [])  # (runs written before the rewrites existed have none)
    if not isinstance(rewrites, list) or not all(isinstance(r, str) for r in rewrites):
        raise ValueError(f"{what}: field '{field}.rewrites' must be a list of rewrite names")
    model = create_model(base["name"], **base["kwargs"]).eval()
    example = torch.zeros(2, *shape)
    if rewrites:
        from convolab.models.rewrite import inference_rewrites

        try:
            inference_rewrites(model, example, only=rewrites)
        except ValueError as e:
            raise ValueError(f"{what}: field '{field}.rewrites': {e}") from None
    prepared = prepare(model, example, keep, qat=bool(build.get("qat", False)))
    rebuild(prepared, load_file(str(weights)), str(weights))
    converted = convert(prepared)
    converted.convolab_cfg = {"name": base["name"], **base["kwargs"]}
    return converted


register_builder(KIND, _builder)


def refuse_graph(run, verb: str) -> None:
    """One line instead of a traceback when ``verb`` (a tool that hooks or walks the model's layers) is given an int8
    graph: its layers are graph nodes, not modules; the float run it came from has them."""
    if (getattr(run, "build", None) or {}).get("kind") == KIND:
        origin = ((getattr(run, "config", None) or {}).get("compress") or {}).get("from")
        raise ValueError(f"{run.path}: an int8 graph (made by convolab compress); `convolab {verb}` needs the layers "
                         "as modules, which the graph does not keep; use the float run it came from"
                         + (f" ({origin})" if origin else ""))
