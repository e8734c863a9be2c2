"""Export a CNN as plain C99: one ``NAME.c`` (weights as ``static const`` arrays, loops, libc only) and one
``NAME.h``, in float32 or int8.

The model goes through :func:`convolab.glass.interop.from_torch` and
:func:`convolab.glass.quant_net.fold_network` (BatchNorm folded into the convolutions, ReLUs fused), so
the C runs the same flat graph as the glass engine; its int8 version does exactly the integer
arithmetic of :class:`convolab.glass.quant_net.Int8Network` (uint8 activations, int8 per-channel
weights, int32 accumulators, gemmlowp requantization) and matches its logits bit for bit.

**The C interface** (``NAME.h``)::

    int NAME_predict(const unsigned char *image, double *logits);   /* returns the class index */
    extern const char *const NAME_class_names[NAME_NUM_CLASSES];

``image`` is the raw uint8 image, ``C*H*W`` bytes in (C, H, W) order at the training size (the
*raw image format* of :func:`write_raw_image`). It is normalised as in training,
``x = (p / 255 - mean[c]) / std[c]`` (float32: ``p * (1 / (255 std)) + (-mean / std)``; int8: a
256-entry table per channel holding ``clamp(rint(x / s) + z, 0, 255)`` with ``x`` in float64).
Logits are doubles (the float32 network's values, or the int8 network's dequantized ones). The
activations live in static buffers: one call at a time (not thread-safe).

**The program.** The same ``.c`` compiled with ``-DCONVOLAB_MAIN`` (what :func:`compile_c` does) has a
``main``: ``./NAME [--logits] FILE...`` prints ``FILE<TAB>index<TAB>class`` per file (and
``<TAB>l0 l1 ...`` with ``--logits``, ``%.17g`` so the doubles read back exactly); a file of the
wrong size is reported on stderr and the exit status is 1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convolab.atomic import atomic_path, write_bytes, write_text
from convolab.glass.quant_net import Int8Network, Node, fold_network, quantize_network

__all__ = ["CExport", "export_c", "compile_c", "run_c", "write_raw_image", "normalise"]

DTYPES = ("float32", "int8")


@dataclass
class CExport:
    """What :func:`export_c` wrote."""

    out_dir: Path
    c_file: Path
    h_file: Path
    name: str
    dtype: str
    input_size: tuple[int, int, int]       # (C, H, W) of the raw images
    classes: list[str]
    nodes: list[Node]                      # the folded graph the C runs
    network: Int8Network | None = None     # the glass int8 network the C reproduces (dtype "int8")


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, C, H, W) -> float64 ``(p / 255 - mean[c]) / std[c]``, the values the int8 export quantizes."""
    images = np.asarray(images)
    m = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
    return (images.astype(np.float64) / 255.0 - m) / s


def write_raw_image(array: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write one image in the raw format the C program reads: uint8 (C, H, W) -- or (H, W) for one channel --
    as ``C*H*W`` bytes, channel by channel, rows top to bottom. Atomic; refuses to replace a file unless asked."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise ValueError(f"write_raw_image takes a uint8 (C, H, W) or (H, W) array; got {a.dtype} of shape {a.shape}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass overwrite=True to replace it")
    write_bytes(path, np.ascontiguousarray(a).tobytes())
    return path


# -- C text helpers ------------------------------------------------------------------------------

def _c_string(s: str) -> str:
    out = []
    for b in s.encode("utf-8"):
        ch = chr(b)
        out.append(ch if 32 <= b < 127 and ch not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _float_literal(v: float) -> str:
    s = f"{v:.9g}"                                   # 9 significant digits: round-trips a float32
    if not any(ch in s for ch in ".e"):
        s += ".0"
    return s + "f"


def _array(ctype: str, name: str, values: np.ndarray, fmt=str) -> str:
    flat = np.asarray(values).reshape(-1).tolist()
    lines = [", ".join(fmt(v) for v in flat[i:i + 12]) for i in range(0, len(flat), 12)]
    return f"static const {ctype} {name}[{len(flat)}] = {{\n  " + ",\n  ".join(lines) + "\n};\n"


def _double_literal(v: float) -> str:
    s = repr(float(v))                               # shortest repr: reads back to the same double
    return s if any(ch in s for ch in ".e") else s + ".0"


# -- kernels (the generated file's fixed part) ------------------------------------------------------

_COMMON = r"""
static int conv_range_lo(int off, int S) { return off < 0 ? (-off + S - 1) / S : 0; }
static int conv_range_hi(int off, int S, int W, int WO) {
    int hi = W - 1 - off < 0 ? -1 : (W - 1 - off) / S;   /* last ow with ow*S + off < W */
    return hi > WO - 1 ? WO - 1 : hi;
}
"""

_FLOAT_KERNELS = r"""
/* y[o] = b[o] + sum_{c,kh,kw} w[o,c,kh,kw] x[g*cg + c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW] (zero padding) */
static void conv2d(const float *x, int C, int H, int W, const float *w, const float *b, int O, int G,
                   int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int HO, int WO, int relu,
                   float *y) {
    int cg = C / G, og = O / G;
    for (int o = 0; o < O; o++) {
        float *yo = y + (long)o * HO * WO;
        for (int i = 0; i < HO * WO; i++) yo[i] = b[o];
        int g = o / og;
        for (int c = 0; c < cg; c++) {
            const float *xc = x + (long)(g * cg + c) * H * W;
            for (int kh = 0; kh < KH; kh++) {
                for (int kw = 0; kw < KW; kw++) {
                    float wv = w[((o * cg + c) * KH + kh) * KW + kw];
                    int off = kw * DW - PW, lo = conv_range_lo(off, SW), hi = conv_range_hi(off, SW, W, WO);
                    for (int oh = 0; oh < HO; oh++) {
                        int ih = oh * SH - PH + kh * DH;
                        if (ih < 0 || ih >= H) continue;
                        const float *xr = xc + (long)ih * W + off;
                        float *yr = yo + (long)oh * WO;
                        for (int ow = lo; ow <= hi; ow++) yr[ow] += wv * xr[ow * SW];
                    }
                }
            }
        }
        if (relu) for (int i = 0; i < HO * WO; i++) yo[i] = yo[i] > 0.0f ? yo[i] : 0.0f;
    }
}

static void linear(const float *x, int K, const float *w, const float *b, int O, int relu, float *y) {
    for (int o = 0; o < O; o++) {
        const float *wo = w + (long)o * K;
        float acc = b[o];
        for (int k = 0; k < K; k++) acc += wo[k] * x[k];
        y[o] = relu && acc < 0.0f ? 0.0f : acc;
    }
}

static void maxpool(const float *x, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                    int HO, int WO, float *y) {
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < HO; oh++)
            for (int ow = 0; ow < WO; ow++) {
                int seen = 0; float best = 0.0f;
                for (int kh = 0; kh < KH; kh++) {
                    int ih = oh * SH - PH + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < KW; kw++) {
                        int iw = ow * SW - PW + kw;
                        if (iw < 0 || iw >= W) continue;
                        float v = x[((long)c * H + ih) * W + iw];
                        if (!seen || v > best) { best = v; seen = 1; }
                    }
                }
                y[((long)c * HO + oh) * WO + ow] = best;
            }
}

static void avgpool(const float *x, int C, int H, int W, int KH, int KW, int SH, int SW, int HO, int WO,
                    float *y) {
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < HO; oh++)
            for (int ow = 0; ow < WO; ow++) {
                float s = 0.0f;
                for (int kh = 0; kh < KH; kh++)
                    for (int kw = 0; kw < KW; kw++) s += x[((long)c * H + oh * SH + kh) * W + ow * SW + kw];
                y[((long)c * HO + oh) * WO + ow] = s / (float)(KH * KW);
            }
}

static void relu_(const float *x, long n, float *y) { for (long i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f; }

static void add_relu(const float *a, const float *b, long n, int relu, float *y) {
    for (long i = 0; i < n; i++) { float v = a[i] + b[i]; y[i] = relu && v < 0.0f ? 0.0f : v; }
}

/* the CIFAR ResNets' option-A shortcut: subsample by S, append zero channels */
static void zeropad(const float *x, int C, int H, int W, int S, int O, int HO, int WO, float *y) {
    for (int o = 0; o < O; o++)
        for (int oh = 0; oh < HO; oh++)
            for (int ow = 0; ow < WO; ow++)
                y[((long)o * HO + oh) * WO + ow] = o < C ? x[((long)o * H + oh * S) * W + ow * S] : 0.0f;
}
"""

_INT8_KERNELS = r"""
/* gemmlowp's MultiplyByQuantizedMultiplier: RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(
   acc * 2^left, M0), right), as convolab.glass.quant.multiply_by_quantized_multiplier (int64 throughout) */
static int64_t requant(int64_t acc, int64_t m0, int shift) {
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t a = acc * ((int64_t)1 << left);
    int64_t ab = a * m0;
    int64_t t = ab + (ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30));
    int64_t high = t / ((int64_t)1 << 31);              /* C99 division truncates toward zero */
    int64_t mask = ((int64_t)1 << right) - 1;
    int64_t rem = high & mask, threshold = (mask >> 1) + (high < 0);
    return (high >> right) + (rem > threshold);         /* >> of a negative: arithmetic on gcc/clang */
}

static uint8_t clamp_u8(int64_t v, int lo) { return (uint8_t)(v < lo ? lo : v > 255 ? 255 : v); }

static int16_t xs[XS_SIZE];      /* q_x - z_x of the layer being computed */
static int32_t accbuf[ACC_SIZE]; /* int32 accumulators of one convolution */

static void conv2d_q(const uint8_t *x, int zx, int C, int H, int W, const int8_t *w, const int32_t *b,
                     const int32_t *m0, const int8_t *shift, int zy, int lo, int O, int G, int KH, int KW,
                     int SH, int SW, int PH, int PW, int DH, int DW, int HO, int WO, uint8_t *y) {
    int cg = C / G, og = O / G;
    for (long i = 0; i < (long)C * H * W; i++) xs[i] = (int16_t)(x[i] - zx);
    for (int o = 0; o < O; o++) {
        int32_t *ao = accbuf;
        for (int i = 0; i < HO * WO; i++) ao[i] = b[o];
        int g = o / og;
        for (int c = 0; c < cg; c++) {
            const int16_t *xc = xs + (long)(g * cg + c) * H * W;
            for (int kh = 0; kh < KH; kh++) {
                for (int kw = 0; kw < KW; kw++) {
                    int32_t wv = w[((o * cg + c) * KH + kh) * KW + kw];
                    int off = kw * DW - PW, lo_ = conv_range_lo(off, SW), hi = conv_range_hi(off, SW, W, WO);
                    for (int oh = 0; oh < HO; oh++) {
                        int ih = oh * SH - PH + kh * DH;
                        if (ih < 0 || ih >= H) continue;
                        const int16_t *xr = xc + (long)ih * W + off;
                        int32_t *ar = ao + (long)oh * WO;
                        for (int ow = lo_; ow <= hi; ow++) ar[ow] += wv * xr[ow * SW];
                    }
                }
            }
        }
        uint8_t *yo = y + (long)o * HO * WO;
        for (int i = 0; i < HO * WO; i++) yo[i] = clamp_u8(zy + requant(ao[i], m0[o], shift[o]), lo);
    }
}

static void linear_acc(const uint8_t *x, int zx, int K, const int8_t *w, const int32_t *b, int O, int32_t *acc) {
    for (int k = 0; k < K; k++) xs[k] = (int16_t)(x[k] - zx);
    for (int o = 0; o < O; o++) {
        const int8_t *wo = w + (long)o * K;
        int32_t a = b[o];
        for (int k = 0; k < K; k++) a += (int32_t)wo[k] * xs[k];
        acc[o] = a;
    }
}

static void linear_q(const uint8_t *x, int zx, int K, const int8_t *w, const int32_t *b, const int32_t *m0,
                     const int8_t *shift, int zy, int lo, int O, uint8_t *y) {
    linear_acc(x, zx, K, w, b, O, accbuf);
    for (int o = 0; o < O; o++) y[o] = clamp_u8(zy + requant(accbuf[o], m0[o], shift[o]), lo);
}

static void maxpool(const uint8_t *x, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                    int HO, int WO, uint8_t *y) {
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < HO; oh++)
            for (int ow = 0; ow < WO; ow++) {
                int best = -1;
                for (int kh = 0; kh < KH; kh++) {
                    int ih = oh * SH - PH + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < KW; kw++) {
                        int iw = ow * SW - PW + kw;
                        if (iw < 0 || iw >= W) continue;
                        int v = x[((long)c * H + ih) * W + iw];
                        if (v > best) best = v;
                    }
                }
                y[((long)c * HO + oh) * WO + ow] = (uint8_t)best;
            }
}

/* the mean of n codes rounded half up: floor((2 sum + n) / (2 n)) */
static void avgpool(const uint8_t *x, int C, int H, int W, int KH, int KW, int SH, int SW, int HO, int WO,
                    uint8_t *y) {
    long n = (long)KH * KW;
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < HO; oh++)
            for (int ow = 0; ow < WO; ow++) {
                long s = 0;
                for (int kh = 0; kh < KH; kh++)
                    for (int kw = 0; kw < KW; kw++) s += x[((long)c * H + oh * SH + kh) * W + ow * SW + kw];
                y[((long)c * HO + oh) * WO + ow] = (uint8_t)((2 * s + n) / (2 * n));
            }
}

static void relu_(const uint8_t *x, long n, int z, uint8_t *y) {
    for (long i = 0; i < n; i++) y[i] = x[i] > z ? x[i] : (uint8_t)z;
}
"""

_MAIN = r"""
#ifdef CONVOLAB_MAIN
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    static unsigned char image[{P}_INPUT_SIZE + 1];
    double logits[{P}_NUM_CLASSES];
    int show_logits = 0, files = 0, status = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--logits") == 0) show_logits = 1; else files++;
    }
    if (files == 0) {
        fprintf(stderr, "usage: %s [--logits] IMAGE.raw...\n(each file: %d raw uint8 bytes, (C, H, W) = "
                "(%d, %d, %d))\n", argv[0], {P}_INPUT_SIZE, {P}_INPUT_CHANNELS, {P}_INPUT_HEIGHT, {P}_INPUT_WIDTH);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--logits") == 0) continue;
        FILE *f = fopen(argv[i], "rb");
        if (!f) { fprintf(stderr, "%s: cannot open\n", argv[i]); status = 1; continue; }
        size_t n = fread(image, 1, sizeof image, f);
        fclose(f);
        if (n != {P}_INPUT_SIZE) {
            fprintf(stderr, "%s: expected %d bytes (uint8 C*H*W), got %s%lu\n", argv[i], {P}_INPUT_SIZE,
                    n > {P}_INPUT_SIZE ? "more than " : "", (unsigned long)(n > {P}_INPUT_SIZE ? {P}_INPUT_SIZE : n));
            status = 1;
            continue;
        }
        int k = {name}_predict(image, logits);
        printf("%s\t%d\t%s", argv[i], k, {name}_class_names[k]);
        if (show_logits)
            for (int j = 0; j < {P}_NUM_CLASSES; j++) printf("%c%.17g", j ? ' ' : '\t', logits[j]);
        printf("\n");
    }
    return status;
}
#endif
"""


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], 1, 1) if len(shape) == 1 else shape


def _conv_geometry(layer) -> list[int]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer._pad, layer.dilation
    return [layer.out_channels, layer.groups, kh, kw, sh, sw, ph, pw, dh, dw]


def _float_body(nodes: list[Node], shapes: list[tuple[int, ...]]) -> tuple[str, str]:
    """(weights and buffers, statements of the predict function) for the float32 network."""
    decls, code = [], []
    for t, shape in enumerate(shapes):
        decls.append(f"static float t{t}[{_size(shape)}];   /* {shape} */\n")
    for i, node in enumerate(nodes):
        out, a = i + 1, node.inputs[0]
        c, h, w = _chw(shapes[a])
        code.append(f"    /* {node.name}: {node.kind}{' + relu' if node.relu else ''} -> {node.shape} */")
        if node.kind in ("conv", "linear"):
            decls.append(_array("float", f"w{out}", node.layer.params["weight"].astype(np.float32), _float_literal))
            decls.append(_array("float", f"b{out}", node.layer.params["bias"].astype(np.float32), _float_literal))
        if node.kind == "conv":
            ho, wo = node.shape[1:]
            geo = ", ".join(map(str, _conv_geometry(node.layer)))
            code.append(f"    conv2d(t{a}, {c}, {h}, {w}, w{out}, b{out}, {geo}, {ho}, {wo}, {int(node.relu)}, "
                        f"t{out});")
        elif node.kind == "linear":
            code.append(f"    linear(t{a}, {_size(shapes[a])}, w{out}, b{out}, {node.shape[0]}, {int(node.relu)}, "
                        f"t{out});")
        elif node.kind == "maxpool":
            m = node.layer
            code.append(f"    maxpool(t{a}, {c}, {h}, {w}, {m.kernel_size[0]}, {m.kernel_size[1]}, {m.stride[0]}, "
                        f"{m.stride[1]}, {m.padding[0]}, {m.padding[1]}, {node.shape[1]}, {node.shape[2]}, t{out});")
        elif node.kind == "avgpool":
            (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
            code.append(f"    avgpool(t{a}, {c}, {h}, {w}, {kh}, {kw}, {sh}, {sw}, {node.shape[1]}, {node.shape[2]}, "
                        f"t{out});")
        elif node.kind == "relu":
            code.append(f"    relu_(t{a}, {_size(node.shape)}, t{out});")
        elif node.kind == "add":
            code.append(f"    add_relu(t{a}, t{node.inputs[1]}, {_size(node.shape)}, {int(node.relu)}, t{out});")
        elif node.kind == "zeropad":
            code.append(f"    zeropad(t{a}, {c}, {h}, {w}, {node.layer.stride}, {node.shape[0]}, {node.shape[1]}, "
                        f"{node.shape[2]}, t{out});")
    code.append(f"    for (int k = 0; k < {_size(shapes[-1])}; k++) logits[k] = t{len(nodes)}[k];")
    return "".join(decls), "\n".join(code)


def _int8_body(net: Int8Network, shapes: list[tuple[int, ...]]) -> tuple[str, str, int, int]:
    """(weights and buffers, statements, int16 scratch size, int32 scratch size) for the int8 network."""
    decls, code = [], []
    last = len(net.steps)
    for t, shape in enumerate(shapes):
        ctype = "int32_t" if t == last and net.returns_accumulator else "uint8_t"
        decls.append(f"static {ctype} t{t}[{_size(shape)}];   /* {shape} */\n")
    zp = [net.input_zero_point] + [s.zero_point for s in net.steps]
    xs_size, acc_size = 1, 1
    for i, step in enumerate(net.steps):
        node, out, a = step.node, i + 1, step.node.inputs[0]
        c, h, w = _chw(shapes[a])
        code.append(f"    /* {node.name}: {node.kind}{' + relu' if node.relu else ''} -> {node.shape} */")
        if node.kind in ("conv", "linear"):
            ql = step.qlayer
            xs_size = max(xs_size, _size(shapes[a]))
            decls.append(_array("int8_t", f"w{out}", ql.weight_q))
            decls.append(_array("int32_t", f"b{out}", ql.bias_q))
            decls.append(_array("int32_t", f"m{out}", ql.multiplier))
            decls.append(_array("int8_t", f"s{out}", ql.shift))
        if node.kind == "conv":
            ho, wo = node.shape[1:]
            acc_size = max(acc_size, ho * wo)
            geo = ", ".join(map(str, _conv_geometry(node.layer)))
            code.append(f"    conv2d_q(t{a}, {zp[a]}, {c}, {h}, {w}, w{out}, b{out}, m{out}, s{out}, "
                        f"{step.zero_point}, {step.lo}, {geo}, {ho}, {wo}, t{out});")
        elif node.kind == "linear" and out == last:
            code.append(f"    linear_acc(t{a}, {zp[a]}, {_size(shapes[a])}, w{out}, b{out}, {node.shape[0]}, t{out});")
        elif node.kind == "linear":
            acc_size = max(acc_size, node.shape[0])
            code.append(f"    linear_q(t{a}, {zp[a]}, {_size(shapes[a])}, w{out}, b{out}, m{out}, s{out}, "
                        f"{step.zero_point}, {step.lo}, {node.shape[0]}, t{out});")
        elif node.kind == "maxpool":
            m = node.layer
            code.append(f"    maxpool(t{a}, {c}, {h}, {w}, {m.kernel_size[0]}, {m.kernel_size[1]}, {m.stride[0]}, "
                        f"{m.stride[1]}, {m.padding[0]}, {m.padding[1]}, {node.shape[1]}, {node.shape[2]}, t{out});")
        elif node.kind == "avgpool":
            (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
            code.append(f"    avgpool(t{a}, {c}, {h}, {w}, {kh}, {kw}, {sh}, {sw}, {node.shape[1]}, {node.shape[2]}, "
                        f"t{out});")
        elif node.kind == "relu":
            code.append(f"    relu_(t{a}, {_size(node.shape)}, {zp[a]}, t{out});")
    k = _size(shapes[-1])
    scale = np.broadcast_to(np.asarray(net.output_scale, dtype=np.float64), (k,))
    decls.append(_array("double", "out_scale", scale, _double_literal))
    code.append(f"    for (int k = 0; k < {k}; k++) logits[k] = out_scale[k] * ((double)t{last}[k] - "
                f"{net.output_zero_point});")
    return "".join(decls), "\n".join(code), xs_size, acc_size


def export_c(model, out_dir: str | os.PathLike, *, name: str = "model", input_size: Sequence[int] | None = None,
             mean: Sequence[float], std: Sequence[float], classes: Sequence[str] | None = None,
             dtype: str = "float32", calibration: np.ndarray | None = None, overwrite: bool = False) -> CExport:
    """Write ``out_dir/NAME.c`` and ``out_dir/NAME.h`` computing ``model``'s logits from a raw uint8 image.

    Args:
        model: a torch model :func:`convolab.glass.interop.from_torch` converts, sequential or with ResNet basic
            blocks (int8: sequential only). Evaluation-mode statistics are used.
        out_dir: the folder to write; refused when it exists and is not empty, unless ``overwrite``.
        name: a C identifier, the files' stem and the prefix of the C names.
        input_size: (C, H, W) of the images (default: the model's ``in_chans`` and ``input_size``).
        mean, std: per-channel normalisation (0..1 scale), as the training data.
        classes: class names (default ``"0"``, ``"1"``, ...).
        dtype: ``"float32"`` or ``"int8"``.
        calibration: int8 only, required: images to calibrate the activation ranges on, uint8 (N, C, H, W)
            (normalised with ``mean``/``std``) or floats already normalised.
        overwrite: replace the files of an existing export.

    Raises:
        ValueError: an unsupported layer (named), bad arguments, or an existing non-empty ``out_dir``.
    """
    from convolab.glass.interop import from_torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or ""):
        raise ValueError(f"name must be a C identifier (letters, digits, _; not starting with a digit); got {name!r}")
    if input_size is None:
        if not hasattr(model, "in_chans") or not hasattr(model, "input_size"):
            raise ValueError("pass input_size=(C, H, W): the model does not record in_chans and input_size")
        input_size = (model.in_chans, *model.input_size)
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive sizes; got {input_size!r}")
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != input_size[0] or len(std) != input_size[0] or min(std) <= 0:
        raise ValueError(f"mean and std need one value per channel ({input_size[0]}), std > 0; got {mean}, {std}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not overwrite)):
        raise ValueError(f"{out_dir} exists and is not an empty folder; choose a new one or pass overwrite=True")

    glass = from_torch(model)
    glass.eval()
    purpose = "the C export" if dtype == "float32" else "the int8 C export"
    network = None
    if dtype == "int8":
        if calibration is None:
            raise ValueError("dtype='int8' needs calibration images (uint8 or normalised float (N, C, H, W))")
        cal = np.asarray(calibration)
        if cal.ndim != 4 or tuple(cal.shape[1:]) != input_size:
            raise ValueError(f"calibration must have shape (N, {', '.join(map(str, input_size))}); got {cal.shape}")
        cal = normalise(cal, mean, std) if cal.dtype == np.uint8 else cal.astype(np.float64)
        fold_network(glass, input_size, purpose)             # the error names the export, not the glass network
        network = quantize_network(glass, cal, input_size)
        nodes = network.nodes
    else:
        nodes = fold_network(glass, input_size, purpose)
    shapes = [input_size] + [n.shape for n in nodes]
    k = _size(shapes[-1])
    classes = [str(i) for i in range(k)] if classes is None else [str(c) for c in classes]
    if len(classes) != k:
        raise ValueError(f"the model gives {k} outputs but {len(classes)} class names were passed")

    p = name.upper()
    c, h, w = input_size
    header = (f"/* {name}.h: generated by convolab.compress.c_export ({dtype}). See {name}.c. */\n"
              f"#ifndef {p}_H\n#define {p}_H\n\n"
              f"#define {p}_INPUT_CHANNELS {c}\n#define {p}_INPUT_HEIGHT {h}\n#define {p}_INPUT_WIDTH {w}\n"
              f"#define {p}_INPUT_SIZE {c * h * w}   /* bytes of one raw image: uint8 (C, H, W) */\n"
              f"#define {p}_NUM_CLASSES {k}\n\n"
              f"extern const char *const {name}_class_names[{p}_NUM_CLASSES];\n\n"
              "/* Classify one raw image (C*H*W uint8 bytes, (C, H, W) order, the training size): writes the\n"
              "   logits, returns the index of the largest (the first on ties). Not thread-safe (static buffers). */\n"
              f"int {name}_predict(const unsigned char *image, double *logits);\n\n#endif\n")

    scale = [np.float32(1.0 / (255.0 * s)) for s in std]
    shift = [np.float32(-m / s) for m, s in zip(mean, std)]
    if dtype == "float32":
        decls, body = _float_body(nodes, shapes)
        kernels = _COMMON + _FLOAT_KERNELS
        prologue = (_array("float", "in_scale", np.array(scale), _float_literal)
                    + _array("float", "in_shift", np.array(shift), _float_literal))
        load = (f"    for (int c = 0; c < {c}; c++)\n        for (int i = 0; i < {h * w}; i++)\n"
                f"            t0[c * {h * w} + i] = (float)image[c * {h * w} + i] * in_scale[c] + in_shift[c];")
    else:
        decls, body, xs_size, acc_size = _int8_body(network, shapes)
        kernels = _COMMON + _INT8_KERNELS.replace("XS_SIZE", str(xs_size)).replace("ACC_SIZE", str(acc_size))
        levels = normalise(np.arange(256, dtype=np.uint8).reshape(1, 1, 1, 256).repeat(c, axis=1), mean, std)
        lut = network.quantize_input(levels).reshape(c, 256)       # the codes of every pixel value, per channel
        prologue = _array("uint8_t", "in_lut", lut)
        load = (f"    for (int c = 0; c < {c}; c++)\n        for (int i = 0; i < {h * w}; i++)\n"
                f"            t0[c * {h * w} + i] = in_lut[c * 256 + image[c * {h * w} + i]];")
    class_list = ", ".join(_c_string(s) for s in classes)
    source = (f"/* {name}.c: generated by convolab.compress.c_export -- {dtype} network, input uint8 (C, H, W) = "
              f"{input_size}, normalised with mean {mean}, std {std}.\n"
              f"   C99, libc only. Compile: cc -std=c99 -O2 -DCONVOLAB_MAIN {name}.c -o {name}\n"
              f"   Layers: {', '.join(n.name + ('(' + n.kind + ')') for n in nodes)} */\n"
              f"#include <stdint.h>\n#include \"{name}.h\"\n\n"
              f"const char *const {name}_class_names[{p}_NUM_CLASSES] = {{{class_list}}};\n\n"
              + kernels + "\n" + prologue + decls
              + f"\nint {name}_predict(const unsigned char *image, double *logits) {{\n{load}\n{body}\n"
              f"    int best = 0;\n    for (int k = 1; k < {k}; k++) if (logits[k] > logits[best]) best = k;\n"
              "    return best;\n}\n"
              + _MAIN.replace("{P}", p).replace("{name}", name))
    out_dir.mkdir(parents=True, exist_ok=True)
    c_file, h_file = out_dir / f"{name}.c", out_dir / f"{name}.h"
    write_text(h_file, header)
    write_text(c_file, source)
    return CExport(out_dir, c_file, h_file, name, dtype, input_size, classes, nodes, network)


def compile_c(out_dir: str | os.PathLike, cc: str = "cc", opt: str = "-O2") -> Path:
    """Compile the export in ``out_dir`` (its one ``.c``) with ``-DCONVOLAB_MAIN``; return the executable
    ``out_dir/NAME``. ``opt``: compiler flags, split on spaces (``"-O3 -march=native"``).

    Raises:
        ValueError: no compiler ``cc`` on the PATH, no single ``.c`` in ``out_dir``, or the compiler failed
            (its first error line).
    """
    out_dir = Path(out_dir)
    sources = sorted(out_dir.glob("*.c")) if out_dir.is_dir() else []
    if len(sources) != 1:
        raise ValueError(f"{out_dir}: expected one .c file written by export_c; found {len(sources)}")
    compiler = shutil.which(cc)
    if compiler is None:
        raise ValueError(f"no C compiler {cc!r} on the PATH; install gcc or clang, or pass cc= the compiler to use")
    exe = out_dir / sources[0].stem
    with atomic_path(exe) as tmp:
        cmd = [compiler, "-std=c99", *opt.split(), "-DCONVOLAB_MAIN", "-o", str(tmp), str(sources[0]), "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [ln for ln in done.stderr.splitlines() if "error" in ln] or done.stderr.splitlines() or ["?"]
            raise ValueError(f"{cc} failed to compile {sources[0]}: {errors[0]}")
    os.chmod(exe, os.stat(exe).st_mode | 0o111)
    return exe


def run_c(exe: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """Run a compiled export on uint8 images (N, C, H, W) -- one process, one raw file each, ``--logits`` --
    and return the logits (N, K) as float64 (exactly the printed doubles)."""
    exe = Path(exe)
    if not exe.is_file():
        raise FileNotFoundError(f"{exe}: no such executable (compile_c makes it)")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"run_c takes uint8 images (N, C, H, W); got {images.dtype} of shape {images.shape}")
    with tempfile.TemporaryDirectory(prefix="convolab-c-") as tmp:
        names = [f"{i:07d}.raw" for i in range(len(images))]
        for n, im in zip(names, images):
            (Path(tmp) / n).write_bytes(np.ascontiguousarray(im).tobytes())
        done = subprocess.run([str(exe.resolve()), "--logits", *names], cwd=tmp, capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"{exe} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[:1]}")
    rows = [line.split("\t")[3].split() for line in done.stdout.splitlines()]
    if len(rows) != len(images):
        raise ValueError(f"{exe} printed {len(rows)} results for {len(images)} images")
    return np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
