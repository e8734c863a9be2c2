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
Logits are doubles (the float32 network's values, or the int8 network's dequantized ones), in torch's
order. The activations live in static buffers, stored channels last (H, W, C) -- the kernels' comment
says why: one call at a time (not thread-safe).

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
from string import Template

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


# -- kernels ---------------------------------------------------------------------------------------
# Activations are stored channels last, (H, W, C): the inner loops of a convolution then run over the output
# channels (a fixed count, contiguous), which the compiler vectorizes. Flattening for a linear layer follows
# torch's (C, H, W) order: the export permutes that layer's weight columns instead of the data. Every conv and
# linear node gets its own function with its sizes as compile-time constants and its tensors as the static
# arrays they are (nothing to assume about aliasing). Linear weights are stored transposed, (K, O), so the
# inner loop runs over outputs, not a reduction. Each float output still sums its terms in a fixed order.

_FLOAT_KERNELS = r"""
static void maxpool(const float *x, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                    int HO, int WO, float *y) {
    for (int oh = 0; oh < HO; oh++)
        for (int ow = 0; ow < WO; ow++) {
            float *yp = y + ((long)oh * WO + ow) * C;
            int first = 1;
            for (int kh = 0; kh < KH; kh++) {
                int ih = oh * SH - PH + kh;
                if (ih < 0 || ih >= H) continue;
                for (int kw = 0; kw < KW; kw++) {
                    int iw = ow * SW - PW + kw;
                    if (iw < 0 || iw >= W) continue;
                    const float *xp = x + ((long)ih * W + iw) * C;
                    for (int c = 0; c < C; c++) yp[c] = first || xp[c] > yp[c] ? xp[c] : yp[c];
                    first = 0;
                }
            }
        }
}

static void avgpool(const float *x, int C, int H, int W, int KH, int KW, int SH, int SW, int HO, int WO,
                    float *y) {
    for (int oh = 0; oh < HO; oh++)
        for (int ow = 0; ow < WO; ow++) {
            float *yp = y + ((long)oh * WO + ow) * C;
            for (int c = 0; c < C; c++) yp[c] = 0.0f;
            for (int kh = 0; kh < KH; kh++)
                for (int kw = 0; kw < KW; kw++) {
                    const float *xp = x + ((long)(oh * SH + kh) * W + ow * SW + kw) * C;
                    for (int c = 0; c < C; c++) yp[c] += xp[c];
                }
            for (int c = 0; c < C; c++) yp[c] /= (float)(KH * KW);
        }
    (void)H;
}

static void relu_(const float *x, long n, float *y) { for (long i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f; }

static void add_relu(const float *a, const float *b, long n, int relu, float *y) {
    for (long i = 0; i < n; i++) { float v = a[i] + b[i]; y[i] = relu && v < 0.0f ? 0.0f : v; }
}

/* the CIFAR ResNets' option-A shortcut: subsample by S, append zero channels */
static void zeropad(const float *x, int C, int H, int W, int S, int O, int HO, int WO, float *y) {
    for (int oh = 0; oh < HO; oh++)
        for (int ow = 0; ow < WO; ow++)
            for (int o = 0; o < O; o++)
                y[((long)oh * WO + ow) * O + o] = o < C ? x[((long)oh * S * W + ow * S) * C + o] : 0.0f;
    (void)H;
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

static void maxpool(const uint8_t *x, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                    int HO, int WO, uint8_t *y) {
    for (int oh = 0; oh < HO; oh++)
        for (int ow = 0; ow < WO; ow++) {
            uint8_t *yp = y + ((long)oh * WO + ow) * C;
            for (int c = 0; c < C; c++) yp[c] = 0;
            for (int kh = 0; kh < KH; kh++) {
                int ih = oh * SH - PH + kh;
                if (ih < 0 || ih >= H) continue;
                for (int kw = 0; kw < KW; kw++) {
                    int iw = ow * SW - PW + kw;
                    if (iw < 0 || iw >= W) continue;
                    const uint8_t *xp = x + ((long)ih * W + iw) * C;
                    for (int c = 0; c < C; c++) yp[c] = xp[c] > yp[c] ? xp[c] : yp[c];
                }
            }
        }
}

/* the mean of n codes rounded half up: floor((2 sum + n) / (2 n)) */
static void avgpool(const uint8_t *x, int C, int H, int W, int KH, int KW, int SH, int SW, int HO, int WO,
                    uint8_t *y) {
    long n = (long)KH * KW;
    for (int oh = 0; oh < HO; oh++)
        for (int ow = 0; ow < WO; ow++)
            for (int c = 0; c < C; c++) {
                long s = 0;
                for (int kh = 0; kh < KH; kh++)
                    for (int kw = 0; kw < KW; kw++) s += x[((long)(oh * SH + kh) * W + ow * SW + kw) * C + c];
                y[((long)oh * WO + ow) * C + c] = (uint8_t)((2 * s + n) / (2 * n));
            }
    (void)H;
}

static void relu_(const uint8_t *x, long n, int z, uint8_t *y) {
    for (long i = 0; i < n; i++) y[i] = x[i] > z ? x[i] : (uint8_t)z;
}

/* residual add: both inputs to a common fixed-point scale (2^20 headroom), summed, requantized */
static void add_q(const uint8_t *a, int za, const uint8_t *b, int zb, long n, int64_t ma, int sa, int64_t mb, int sb,
                  int64_t mo, int so, int zy, int lo, uint8_t *y) {
    for (long i = 0; i < n; i++) {
        int64_t qa = requant(((int64_t)a[i] - za) * ((int64_t)1 << 20), ma, sa);
        int64_t qb = requant(((int64_t)b[i] - zb) * ((int64_t)1 << 20), mb, sb);
        y[i] = clamp_u8(zy + requant(qa + qb, mo, so), lo);
    }
}

/* the option-A shortcut: subsample by S, append channels holding the code z of 0 */
static void zeropad(const uint8_t *x, int C, int H, int W, int S, int O, int HO, int WO, int z, uint8_t *y) {
    for (int oh = 0; oh < HO; oh++)
        for (int ow = 0; ow < WO; ow++)
            for (int o = 0; o < O; o++)
                y[((long)oh * WO + ow) * O + o] = o < C ? x[((long)oh * S * W + ow * S) * C + o] : (uint8_t)z;
    (void)H;
}
"""

_CONV = Template(r"""
/* ${name}: ${what} */
static void node_${n}(void) {
    enum { C = ${C}, H = ${H}, W = ${W}, O = ${O}, KH = ${KH}, KW = ${KW}, SH = ${SH}, SW = ${SW}, PH = ${PH},
           PW = ${PW}, DH = ${DH}, DW = ${DW}, HO = ${HO}, WO = ${WO}, G = ${G}, CG = C / G, OG = O / G };
    for (int oh = 0; oh < HO; oh++)
        for (int ow = 0; ow < WO; ow++) {
            ${acc_t} acc[O];
            for (int o = 0; o < O; o++) acc[o] = b${n}[o];
            for (int kh = 0; kh < KH; kh++) {
                const int ih = oh * SH - PH + kh * DH;
                if (ih < 0 || ih >= H) continue;
                for (int kw = 0; kw < KW; kw++) {
                    const int iw = ow * SW - PW + kw * DW;
                    if (iw < 0 || iw >= W) continue;
                    const ${in_t} *xp = t${a} + ((long)ih * W + iw) * C;
                    const ${w_t} *wp = w${n} + (long)(kh * KW + kw) * CG * O;     /* w[kh][kw][c][o] */
                    for (int g = 0; g < G; g++)
                        for (int c = 0; c < CG; c++) {
                            const ${acc_t} xv = ${xv};
                            const ${w_t} *wc = wp + (long)c * O + g * OG;
                            for (int o = 0; o < OG; o++) acc[g * OG + o] += wc[o] * xv;
                        }
                }
            }
            ${out_t} *yp = t${n} + ((long)oh * WO + ow) * O;
            for (int o = 0; o < O; o++) yp[o] = ${store};
        }
}
""")

_CONV_FIELDS = {  # what differs between the float32 and the int8 convolution
    "float32": dict(what="y[o] = b[o] + sum_{kh,kw,c} w[o,c,kh,kw] x[oh*SH - PH + kh*DH, ow*SW - PW + kw*DW, g*CG + c]",
                    acc_t="float", in_t="float", w_t="float", out_t="float", xv="xp[g * CG + c]",
                    store="${relu} && acc[o] < 0.0f ? 0.0f : acc[o]"),
    "int8": dict(what="acc[o] = q_b[o] + sum q_w[o,c,kh,kw] (q_x - ZX)[...]; q_y = clamp(ZY + requant(acc), LO, 255)",
                 acc_t="int32_t", in_t="uint8_t", w_t="int8_t", out_t="uint8_t", xv="(int32_t)xp[g * CG + c] - ${ZX}",
                 store="clamp_u8(${ZY} + requant(acc[o], m${n}[o], s${n}[o]), ${LO})"),
}


def _conv_function(dtype: str, fields: dict) -> str:
    """The C function of one convolution node (its sizes and zero points as constants)."""
    return Template(_CONV.safe_substitute(_CONV_FIELDS[dtype])).substitute(fields)


_FLOAT_LINEAR = Template(r"""
/* ${name}: y[o] = b[o] + sum_k w[k, o] x[k] */
static void node_${n}(void) {
    enum { K = ${K}, O = ${O} };
    for (int o = 0; o < O; o++) t${n}[o] = b${n}[o];
    for (int k = 0; k < K; k++) {
        const float xv = t${a}[k];
        const float *wk = w${n} + (long)k * O;
        for (int o = 0; o < O; o++) t${n}[o] += wk[o] * xv;
    }
    if (${relu}) for (int o = 0; o < O; o++) t${n}[o] = t${n}[o] > 0.0f ? t${n}[o] : 0.0f;
}
""")

_INT8_LINEAR = Template(r"""
/* ${name}: acc[o] = q_b[o] + sum_k q_w[k, o] (q_x[k] - ZX)${what} */
static void node_${n}(void) {
    enum { K = ${K}, O = ${O}, ZX = ${ZX}, ZY = ${ZY}, LO = ${LO} };
    int32_t acc[O];
    for (int o = 0; o < O; o++) acc[o] = b${n}[o];
    for (int k = 0; k < K; k++) {
        const int32_t xv = (int32_t)t${a}[k] - ZX;
        const int8_t *wk = w${n} + (long)k * O;
        for (int o = 0; o < O; o++) acc[o] += wk[o] * xv;
    }
${store}}
""")

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


def _used_kernels(kernels: str, code: str) -> str:
    """The kernel functions that ``code`` calls, directly or through each other (no unused-function warnings)."""
    chunks = [c for c in kernels.strip("\n").split("\n\n") if c.strip()]
    names = [re.search(r"static \w+ (\w+)\(", c).group(1) for c in chunks]
    keep: set[int] = set()
    while True:
        text = code + "".join(chunks[i] for i in keep)
        more = {i for i, n in enumerate(names) if i not in keep and re.search(rf"\b{n}\(", text)}
        if not more:
            return "\n" + "\n\n".join(c for i, c in enumerate(chunks) if i in keep) + "\n"
        keep |= more


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], 1, 1) if len(shape) == 1 else shape


def _conv_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """(O, C/G, KH, KW) -> (KH, KW, C/G, O): the layout the channels-last kernel reads."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 1, 0))


def _linear_weight(w: np.ndarray, in_shape: tuple[int, ...]) -> np.ndarray:
    """(O, K) with K in torch's (C, H, W) flattening order -> (K, O) with K in the (H, W, C) order of the data."""
    w = np.asarray(w)
    if len(in_shape) == 3:
        c, h, wd = in_shape
        w = w.reshape(len(w), c, h, wd).transpose(0, 2, 3, 1).reshape(len(w), -1)
    return np.ascontiguousarray(w.T)


def _conv_subs(node: Node, out: int, a: int, in_shape: tuple[int, ...]) -> dict:
    """The template fields of a conv node: its name, tensors and geometry."""
    m = node.layer
    c, h, w = in_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m._pad, m.dilation
    return dict(name=node.name, n=out, a=a, C=c, H=h, W=w, O=m.out_channels, G=m.groups, KH=kh, KW=kw, SH=sh, SW=sw,
                PH=ph, PW=pw, DH=dh, DW=dw, HO=node.shape[1], WO=node.shape[2], relu=int(node.relu))


def _pool_call(node: Node, out: int, a: int, in_shape: tuple[int, ...]) -> str:
    """The call of a max / average pool kernel (the same for both dtypes)."""
    c, h, w = in_shape
    if node.kind == "maxpool":
        m = node.layer
        return (f"    maxpool(t{a}, {c}, {h}, {w}, {m.kernel_size[0]}, {m.kernel_size[1]}, {m.stride[0]}, "
                f"{m.stride[1]}, {m.padding[0]}, {m.padding[1]}, {node.shape[1]}, {node.shape[2]}, t{out});")
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    return f"    avgpool(t{a}, {c}, {h}, {w}, {kh}, {kw}, {sh}, {sw}, {node.shape[1]}, {node.shape[2]}, t{out});"


def _logit_index(shape: tuple[int, ...]) -> str:
    """The C expression of the channels-last position of logit ``k`` (torch's (C, H, W) order)."""
    c, h, w = _chw(shape)
    return "k" if h * w == 1 else f"(k % {h * w}) * {c} + k / {h * w}"


def _float_body(nodes: list[Node], shapes: list[tuple[int, ...]]) -> tuple[str, str]:
    """(buffers, weights and node functions; statements of the predict function) for the float32 network."""
    decls, funcs, code = [], [], []
    for t, shape in enumerate(shapes):
        decls.append(f"static float t{t}[{_size(shape)}];   /* {shape}, stored (H, W, C) */\n")
    for i, node in enumerate(nodes):
        out, a = i + 1, node.inputs[0]
        c, h, w = _chw(shapes[a])
        code.append(f"    /* {node.name}: {node.kind}{' + relu' if node.relu else ''} -> {node.shape} */")
        if node.kind in ("conv", "linear"):
            weight = node.layer.params["weight"]
            weight = (_conv_weight(weight, node.layer.groups) if node.kind == "conv"
                      else _linear_weight(weight, shapes[a]))
            decls.append(_array("float", f"w{out}", weight.astype(np.float32), _float_literal))
            decls.append(_array("float", f"b{out}", node.layer.params["bias"].astype(np.float32), _float_literal))
            if node.kind == "conv":
                funcs.append(_conv_function("float32", _conv_subs(node, out, a, (c, h, w))))
            else:
                funcs.append(_FLOAT_LINEAR.substitute(name=node.name, n=out, a=a, K=_size(shapes[a]),
                                                      O=node.shape[0], relu=int(node.relu)))
            code.append(f"    node_{out}();")
        elif node.kind in ("maxpool", "avgpool"):
            code.append(_pool_call(node, out, a, (c, h, w)))
        elif node.kind == "relu":
            code.append(f"    relu_(t{a}, {_size(node.shape)}, t{out});")
        elif node.kind == "add":
            code.append(f"    add_relu(t{a}, t{node.inputs[1]}, {_size(node.shape)}, {int(node.relu)}, t{out});")
        elif node.kind == "zeropad":
            code.append(f"    zeropad(t{a}, {c}, {h}, {w}, {node.layer.stride}, {node.shape[0]}, {node.shape[1]}, "
                        f"{node.shape[2]}, t{out});")
    k = _size(shapes[-1])
    code.append(f"    for (int k = 0; k < {k}; k++) logits[k] = t{len(nodes)}[{_logit_index(shapes[-1])}];")
    return "".join(decls + funcs), "\n".join(code)


def _int8_body(net: Int8Network, shapes: list[tuple[int, ...]]) -> tuple[str, str]:
    """(buffers, weights and node functions; statements of the predict function) for the int8 network."""
    decls, funcs, code = [], [], []
    last = len(net.steps)
    for t, shape in enumerate(shapes):
        ctype = "int32_t" if t == last and net.returns_accumulator else "uint8_t"
        decls.append(f"static {ctype} t{t}[{_size(shape)}];   /* {shape}, stored (H, W, C) */\n")
    zp = [net.input_zero_point] + [s.zero_point for s in net.steps]
    for i, step in enumerate(net.steps):
        node, out, a = step.node, i + 1, step.node.inputs[0]
        c, h, w = _chw(shapes[a])
        code.append(f"    /* {node.name}: {node.kind}{' + relu' if node.relu else ''} -> {node.shape} */")
        if node.kind in ("conv", "linear"):
            ql = step.qlayer
            weight = (_conv_weight(ql.weight_q, node.layer.groups) if node.kind == "conv"
                      else _linear_weight(ql.weight_q, shapes[a]))
            decls.append(_array("int8_t", f"w{out}", weight))
            decls.append(_array("int32_t", f"b{out}", ql.bias_q))
            if out != last or node.kind == "conv":              # the final linear layer is not requantized
                decls.append(_array("int32_t", f"m{out}", ql.multiplier))
                decls.append(_array("int8_t", f"s{out}", ql.shift))
            q = dict(ZX=zp[a], ZY=step.zero_point, LO=step.lo)
            if node.kind == "conv":
                funcs.append(_conv_function("int8", dict(_conv_subs(node, out, a, (c, h, w)), **q)))
            else:
                store = (f"    for (int o = 0; o < O; o++) t{out}[o] = acc[o];\n" if out == last else
                         f"    for (int o = 0; o < O; o++) t{out}[o] = clamp_u8(ZY + requant(acc[o], m{out}[o], "
                         f"s{out}[o]), LO);\n")
                funcs.append(_INT8_LINEAR.substitute(
                    name=node.name, n=out, a=a, K=_size(shapes[a]), O=node.shape[0], store=store,
                    what=" (the logits' accumulators)" if out == last else "; q_y = clamp(ZY + requant(acc), LO, 255)",
                    **q))
            code.append(f"    node_{out}();")
        elif node.kind in ("maxpool", "avgpool"):
            code.append(_pool_call(node, out, a, (c, h, w)))
        elif node.kind == "relu":
            code.append(f"    relu_(t{a}, {_size(node.shape)}, {zp[a]}, t{out});")
        elif node.kind == "zeropad":
            code.append(f"    zeropad(t{a}, {c}, {h}, {w}, {node.layer.stride}, {node.shape[0]}, {node.shape[1]}, "
                        f"{node.shape[2]}, {zp[a]}, t{out});")
        elif node.kind == "add":
            b = node.inputs[1]
            (ma, sa), (mb, sb), (mo, so) = step.add
            code.append(f"    add_q(t{a}, {zp[a]}, t{b}, {zp[b]}, {_size(node.shape)}, {ma}, {sa}, {mb}, {sb}, {mo}, "
                        f"{so}, {step.zero_point}, {step.lo}, t{out});")
    k = _size(shapes[-1])
    scale = np.broadcast_to(np.asarray(net.output_scale, dtype=np.float64), (k,))
    decls.append(_array("double", "out_scale", scale, _double_literal))
    code.append(f"    for (int k = 0; k < {k}; k++) logits[k] = out_scale[k] * "
                f"((double)t{last}[{_logit_index(shapes[-1])}] - {net.output_zero_point});")
    return "".join(decls + funcs), "\n".join(code)


def export_c(model, out_dir: str | os.PathLike, *, name: str = "model", input_size: Sequence[int] | None = None,
             mean: Sequence[float], std: Sequence[float], classes: Sequence[str] | None = None,
             dtype: str = "float32", calibration: np.ndarray | None = None, overwrite: bool = False) -> CExport:
    """Write ``out_dir/NAME.c`` and ``out_dir/NAME.h`` computing ``model``'s logits from a raw uint8 image.

    Args:
        model: a torch model :func:`convolab.glass.interop.from_torch` converts, sequential or with ResNet basic
            blocks (both dtypes). Evaluation-mode statistics are used.
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
        kernels = _FLOAT_KERNELS
        prologue = (_array("float", "in_scale", np.array(scale), _float_literal)
                    + _array("float", "in_shift", np.array(shift), _float_literal))
        load = (f"    for (int c = 0; c < {c}; c++)\n        for (int i = 0; i < {h * w}; i++)\n"
                f"            t0[i * {c} + c] = (float)image[c * {h * w} + i] * in_scale[c] + in_shift[c];")
    else:
        decls, body = _int8_body(network, shapes)
        kernels = _INT8_KERNELS
        levels = normalise(np.arange(256, dtype=np.uint8).reshape(1, 1, 1, 256).repeat(c, axis=1), mean, std)
        lut = network.quantize_input(levels).reshape(c, 256)       # the codes of every pixel value, per channel
        prologue = _array("uint8_t", "in_lut", lut)
        load = (f"    for (int c = 0; c < {c}; c++)\n        for (int i = 0; i < {h * w}; i++)\n"
                f"            t0[i * {c} + c] = in_lut[c * 256 + image[c * {h * w} + i]];")
    class_list = ", ".join(_c_string(s) for s in classes)
    source = (f"/* {name}.c: generated by convolab.compress.c_export -- {dtype} network, input uint8 (C, H, W) = "
              f"{input_size}, normalised with mean {mean}, std {std}.\n"
              f"   C99, libc only. Compile: cc -std=c99 -O2 -DCONVOLAB_MAIN {name}.c -o {name}\n"
              f"   Layers: {', '.join(n.name + ('(' + n.kind + ')') for n in nodes)} */\n"
              f"#include <stdint.h>\n#include \"{name}.h\"\n\n"
              f"const char *const {name}_class_names[{p}_NUM_CLASSES] = {{{class_list}}};\n\n"
              + _used_kernels(kernels, decls + body) + "\n" + prologue + decls
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
