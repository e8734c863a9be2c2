"""How close convolab.glass is to PyTorch: the largest relative errors over random configurations.

For each layer kind, ``--configs`` random configurations (batch, channels, size, kernel, stride,
padding, dilation, groups, ...) run forward and backward in glass and in torch with the same
weights, input and upstream gradient, in float64 and float32; the error of a tensor is
``max |glass - torch| / max |torch|`` and the table shows the worst over outputs, input gradients
and every parameter gradient (BatchNorm's running statistics included). The last rows do the same
for whole models converted with ``from_torch`` (on batches whose ReLU inputs keep away from 0 by
1e-5 of their spread, see ``model_input``). The tests assert <= 1e-6 (float64) and <= 1e-4
(float32); this script measures how far below that the engine stays.

Usage: python benchmarks/glass_parity.py [--configs 50] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from convolab import glass
from convolab.models import create_model

DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


def layer_error(make, shape, rng, dtype) -> float:
    """Worst relative error of one glass/torch layer pair on one random input."""
    nd, td = DTYPES[dtype]
    g, t = make()
    t = t.to(td)
    g.to(nd)
    g.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    x = rng.standard_normal(shape).astype(nd)
    xt = torch.tensor(x, requires_grad=True)
    out_t = t(xt)
    out = g.forward(x)
    d = rng.standard_normal(out.shape).astype(nd)
    out_t.backward(torch.tensor(d))
    dx = g.backward(d)
    errors = [rel(out, out_t.detach().numpy()), rel(dx, xt.grad.numpy())]
    grads = dict(t.named_parameters())
    errors += [rel(gr, grads[k].grad.numpy()) for k, _, gr in g.named_parameters()]
    errors += [rel(v, t.state_dict()[k].numpy()) for k, v in g.state_dict().items()
               if k not in grads and v.dtype.kind == "f"]
    return max(errors)


def conv_case(rng):
    groups = int(rng.choice([1, 1, 2, 3]))
    k = tuple(int(v) for v in rng.integers(1, 5, 2))
    d = tuple(int(v) for v in rng.integers(1, 3, 2))
    p = tuple(int(v) for v in rng.integers(0, 3, 2))
    cfg = dict(in_channels=groups * int(rng.integers(1, 5)), out_channels=groups * int(rng.integers(1, 5)),
               kernel_size=k, stride=tuple(int(v) for v in rng.integers(1, 4, 2)), padding=p, dilation=d,
               groups=groups, bias=bool(rng.integers(0, 2)))
    size = [int(rng.integers(max(1, dd * (kk - 1) + 1 - 2 * pp), 16)) for kk, dd, pp in zip(k, d, p)]
    torch.manual_seed(int(rng.integers(1 << 30)))
    return (lambda: (glass.Conv2d(**cfg), torch.nn.Conv2d(**cfg))), (int(rng.integers(1, 9)), cfg["in_channels"], *size)


def pool_case(rng, kind):
    k = tuple(int(v) for v in rng.integers(1, 5, 2))
    cfg = dict(kernel_size=k, stride=tuple(int(v) for v in rng.integers(1, 4, 2)),
               padding=tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k), ceil_mode=bool(rng.integers(0, 2)))
    if kind == "max":
        cls = (glass.MaxPool2d, torch.nn.MaxPool2d)
    else:
        cfg["count_include_pad"] = bool(rng.integers(0, 2))
        cls = (glass.AvgPool2d, torch.nn.AvgPool2d)
    size = [int(rng.integers(kk, 16)) for kk in k]  # every window reaches into the image
    return (lambda: (cls[0](**cfg), cls[1](**cfg))), (int(rng.integers(1, 9)), int(rng.integers(1, 6)), *size)


def bn_case(rng):
    c = int(rng.integers(1, 8))
    training = bool(rng.integers(0, 2))
    momentum = None if rng.integers(0, 4) == 0 else float(rng.uniform(0.05, 0.5))

    def make():
        t = torch.nn.BatchNorm2d(c, momentum=momentum).train(training)
        with torch.no_grad():
            t.weight.uniform_(0.5, 1.5), t.bias.normal_(), t.running_mean.normal_(), t.running_var.uniform_(0.5, 2)
        return glass.BatchNorm2d(c, momentum=momentum).train(training), t
    return make, (int(rng.integers(3, 9)), c, int(rng.integers(1, 9)), int(rng.integers(1, 9)))


def simple_case(rng, pair):
    return (lambda: pair), (int(rng.integers(1, 9)), int(rng.integers(1, 6)), int(rng.integers(1, 9)),
                            int(rng.integers(1, 9)))


def linear_case(rng):
    i, o = int(rng.integers(1, 300)), int(rng.integers(1, 64))
    torch.manual_seed(int(rng.integers(1 << 30)))
    return (lambda: (glass.Linear(i, o), torch.nn.Linear(i, o))), (int(rng.integers(1, 65)), i)


CASES = {
    "Conv2d": conv_case,
    "MaxPool2d": lambda r: pool_case(r, "max"),
    "AvgPool2d": lambda r: pool_case(r, "avg"),
    "BatchNorm2d": bn_case,
    "Linear": linear_case,
    "ReLU": lambda r: simple_case(r, (glass.ReLU(), torch.nn.ReLU())),
    "SiLU": lambda r: simple_case(r, (glass.SiLU(), torch.nn.SiLU())),
    "LogSoftmax": lambda r: simple_case(r, (glass.LogSoftmax(1), torch.nn.LogSoftmax(1))),
}

MODELS = [("tutorial_cnn", dict(num_classes=10, in_chans=1, input_size=28)),
          ("lenet5", dict(num_classes=10, in_chans=1, input_size=28)),
          ("mnist_cnn", dict(num_classes=10, in_chans=1, input_size=28, drop_rate=0.0, feature_drop_rate=0.0)),
          ("resnet20", dict(num_classes=10, in_chans=3, input_size=8)),
          ("resnet20", dict(num_classes=10, in_chans=3, input_size=8, shortcut="B"))]


def kink_margin(model: torch.nn.Module, x: np.ndarray) -> float:
    """Smallest |input| of any ReLU relative to that input's standard deviation (float64 forward)."""
    margins = []
    hooks = [m.register_forward_pre_hook(lambda _m, a: margins.append(float(a[0].abs().min() / a[0].std())))
             for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    with torch.no_grad():
        model.double()(torch.tensor(x))
    for h in hooks:
        h.remove()
    return min(margins, default=float("inf"))


def model_input(name, kwargs, seed) -> np.ndarray:
    """A batch of 4 whose ReLU inputs all lie >= 1e-5 standard deviations from 0.

    float32 rounding moves activations by 1e-7 to 1e-6 of their scale (more in deeper layers); one that
    close to a ReLU's kink can fall on different sides in two correct implementations, and its gradient
    then differs wholesale. Large batches have too many ReLU inputs for any to keep that far away (a
    16-image 16x16 ResNet-20 batch has 8e5), hence 4 images, and ResNet-20 at 8x8.
    """
    torch.manual_seed(seed)
    model = create_model(name, **kwargs)
    shape = (4, kwargs["in_chans"], kwargs["input_size"], kwargs["input_size"])
    for attempt in range(50):
        x = np.random.default_rng([seed, attempt]).standard_normal(shape)
        if kink_margin(model, x) > 1e-5:
            return x
    raise RuntimeError(f"{name}: no batch 1e-5 away from every ReLU kink")


def model_error(name, kwargs, dtype, seed) -> float:
    nd, td = DTYPES[dtype]
    x = model_input(name, kwargs, seed).astype(nd)
    torch.manual_seed(seed)
    model = create_model(name, **kwargs).to(td)
    g = glass.from_torch(model)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, kwargs["num_classes"], 4)
    xt = torch.tensor(x, requires_grad=True)
    logits = model(xt)
    F.cross_entropy(logits, torch.tensor(y)).backward()
    crit = glass.CrossEntropyLoss()
    out = g.forward(x)
    crit.forward(out, y)
    dx = g.backward(crit.backward())
    grads = dict(model.named_parameters())
    return max([rel(out, logits.detach().numpy()), rel(dx, xt.grad.numpy())]
               + [rel(gr, grads[k].grad.numpy()) for k, _, gr in g.named_parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'layer':<36} {'float64':>10} {'float32':>10}   (worst relative error over {args.configs} configs)")
    for name, case in CASES.items():
        worst = {}
        for dtype in DTYPES:
            rng = np.random.default_rng(args.seed)  # the same configurations for both dtypes
            worst[dtype] = max(layer_error(*case(rng), rng, dtype) for _ in range(args.configs))
        print(f"{name:<36} {worst['float64']:>10.1e} {worst['float32']:>10.1e}")
    for name, kwargs in MODELS:
        worst = {dtype: max(model_error(name, kwargs, dtype, s) for s in range(3)) for dtype in DTYPES}
        label = f"{name}{'-B' if kwargs.get('shortcut') == 'B' else ''} {kwargs['input_size']}px, train mode, 3 seeds"
        print(f"{label:<36} {worst['float64']:>10.1e} {worst['float32']:>10.1e}")


if __name__ == "__main__":
    main()
