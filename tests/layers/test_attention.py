"""CBAM and the non-local block (torch) against the papers' equations written out with plain float64 tensor
operations, outputs and gradients, over 30 random configurations each."""

from __future__ import annotations

import pytest
import torch

from convolab.layers import CBAM, ChannelAttention, NonLocalBlock, SpatialAttention

SEEDS = range(30)


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item()


def _randomize(module: torch.nn.Module, g: torch.Generator) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    return module


def _cbam_by_hand(x, w0, b0, w1, b1, wc):
    """Woo et al. 2018, Eqs. 1-3: F' = Mc(F) F, F'' = Ms(F') F'.

    Mc(F) = sigmoid(W1 relu(W0 F_avg + b0) + b1 + W1 relu(W0 F_max + b0) + b1), F_avg/F_max over (H, W);
    Ms(F) = sigmoid(f^{k x k}([mean_c F; max_c F])), f a zero-padded cross-correlation without bias.
    """
    n, c, h, w = x.shape
    f_avg, f_max = x.mean(dim=(2, 3)), x.reshape(n, c, h * w).max(dim=2).values          # (N, C)

    def mlp(d):
        return torch.relu(d @ w0.T + b0) @ w1.T + b1

    f1 = torch.sigmoid(mlp(f_avg) + mlp(f_max))[:, :, None, None] * x
    s = torch.stack([f1.mean(dim=1), f1.max(dim=1).values], dim=1)                     # (N, 2, H, W)
    k = wc.shape[-1]
    sp = torch.zeros(n, 2, h + k - 1, w + k - 1, dtype=x.dtype)
    sp[:, :, k // 2:k // 2 + h, k // 2:k // 2 + w] = s
    conv = sum(wc[0, ch, i, j] * sp[:, ch, i:i + h, j:j + w] for ch in range(2) for i in range(k) for j in range(k))
    return torch.sigmoid(conv)[:, None] * f1


def _non_local_by_hand(x, wt, bt, wp, bp, wg, bg, wz, bz, sub_sample):
    """Wang et al. 2018, Eqs. 1 and 6 with the embedded Gaussian f and the residual z = W_z y + x.

    y_i = (1 / C(x)) sum_j exp(theta(x_i)^T phi(x_j)) g(x_j),  C(x) = sum_j exp(theta(x_i)^T phi(x_j)).
    """
    n, c, h, w = x.shape

    def conv1x1(weight, bias, t):                                     # (O, C, 1, 1), (N, C, H, W) -> (N, O, H, W)
        return torch.einsum("oc,nchw->nohw", weight[:, :, 0, 0], t) + bias[None, :, None, None]

    theta, phi, g = conv1x1(wt, bt, x), conv1x1(wp, bp, x), conv1x1(wg, bg, x)
    if sub_sample:                                                    # 2x2 max pool, stride 2, floor
        h2, w2 = h // 2, w // 2
        phi, g = (t[:, :, :2 * h2, :2 * w2].reshape(n, -1, h2, 2, w2, 2).amax(dim=(3, 5)) for t in (phi, g))
    theta, phi, g = (t.reshape(n, t.shape[1], -1) for t in (theta, phi, g))   # (N, C_i, positions)
    f = torch.exp(torch.einsum("nci,ncj->nij", theta, phi))          # f(x_i, x_j)
    y = torch.einsum("nij,ncj->nci", f, g) / f.sum(dim=2)[:, None, :]
    return conv1x1(wz, bz, y.reshape(n, -1, h, w)) + x


def _compare(module, by_hand, params, x):
    """Outputs and the gradients of sum(out * r) (input and every parameter) of the module and the reference."""
    xm, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    out, want = module(xm), by_hand(xr, *ref_params)
    r = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    (out * r).sum().backward()
    (want * r).sum().backward()
    errors = {"out": _rel(out, want), "dx": _rel(xm.grad, xr.grad)}
    errors.update({f"param{i}": _rel(p.grad, q.grad) for i, (p, q) in enumerate(zip(params, ref_params))
                   if q.grad.abs().max() > 1e-12 * xr.grad.abs().max()})   # phi's bias: zero gradient (see the block)
    return errors


@pytest.mark.parametrize("seed", SEEDS)
def test_cbam_is_the_papers_equations(seed):
    g = torch.Generator().manual_seed(seed)
    c, r, k = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 17), (1, 9), (1, 5)))
    k = 2 * k - 1                                                      # 1, 3, 5, 7
    block = _randomize(CBAM(c, r, k).double(), g)
    n, h, w = (int(torch.randint(1, 7, (1,), generator=g)) for _ in range(3))
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g) * 2
    ch, sp = block.channel, block.spatial
    params = [ch.fc1.weight, ch.fc1.bias, ch.fc2.weight, ch.fc2.bias, sp.conv.weight]
    errors = _compare(block, lambda x, w0, b0, w1, b1, wc: _cbam_by_hand(x, w0[:, :, 0, 0], b0, w1[:, :, 0, 0], b1, wc),
                      params, x)
    assert ch.fc1.out_channels == max(1, c // r)
    assert max(errors.values()) < 1e-12, ((c, r, k), x.shape, errors)


@pytest.mark.parametrize("seed", SEEDS)
def test_non_local_is_the_papers_equations(seed):
    g = torch.Generator().manual_seed(seed)
    c, ci = (int(torch.randint(1, hi, (1,), generator=g)) for hi in (9, 7))
    sub = bool(seed % 2)
    block = _randomize(NonLocalBlock(c, ci, sub_sample=sub).double(), g)
    n, h, w = (int(torch.randint(2 if sub else 1, 7, (1,), generator=g)) for _ in range(3))
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g)
    params = [p for name in ("theta", "phi", "g", "w_z") for p in getattr(block, name).parameters()]
    errors = _compare(block, lambda x, *p: _non_local_by_hand(x, *p, sub), params, x)
    assert max(errors.values()) < 1e-12, ((c, ci, sub), x.shape, errors)


def test_cbam_is_channel_then_spatial():
    torch.manual_seed(0)
    block = CBAM(6, 2, 3).double()
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(block(x), block.spatial(block.channel(x)), rtol=0, atol=0)
    assert _rel(block(x), block.channel(block.spatial(x))) > 1e-6  # the other order is another function


def test_non_local_defaults():
    x = torch.randn(2, 6, 4, 5)
    block = NonLocalBlock(6)
    assert block.inter_channels == 3 and block.pool is None
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)           # zero-initialised W_z: the identity
    assert NonLocalBlock(1).inter_channels == 1
    sub = NonLocalBlock(6, sub_sample=True, zero_init=False)
    assert sub(x).shape == x.shape and sub.pool is not None


def test_every_parameter_gets_a_gradient():
    x = torch.randn(2, 8, 6, 6)
    for block in (CBAM(8, 4), ChannelAttention(8), SpatialAttention(), NonLocalBlock(8, zero_init=False)):
        block(x).square().sum().backward()
        for name, p in block.named_parameters():
            assert p.grad is not None and (name == "phi.bias" or p.grad.abs().sum() > 0), (type(block), name)
