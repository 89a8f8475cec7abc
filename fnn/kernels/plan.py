"""The plan: which form of each kernel ``implementation="auto"`` runs.

This is the one place where the platform, the shapes and measured thresholds
choose a kernel's form; every rule names the machine its numbers come from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# --------------------------------------------------------------------------- #
# Convolution
# --------------------------------------------------------------------------- #

CONV_IMPLEMENTATIONS = ("auto", "xla", "im2col")  # what a convolution layer accepts
CONV_FORMS = {"y": ("xla", "taps", "matmul"), "dw": ("xla", "matmul", "blocks"), "dx": ("xla", "col2im")}

# "auto" on a CPU, from side-by-side timings on a 2-core Xeon VM (XLA CPU of
# JAX 0.10, float32, batch 64, 8x8 to 28x28 inputs; each form relative to the
# XLA convolution computing the same piece):
# - y: the tap sum took 0.05-0.3x for C = 1 and 0.1-0.7x for C = 2-4 when the
#   kernel has at most 800 weights (LeNet's first layer, 5x5x1x6 on 28x28:
#   0.1x); its cost grows with kh*kw*C*F and it lost (1-6x) beyond. The im2col
#   matrix product (0.3-20x) never beat both.
# - dw: XLA beat im2col's cols^T @ dy in every shape measured (1-13x). A
#   stride-1 dw on C <= 4 channels and at least 20000 output pixels ran as
#   column blocks (fnn.kernels.conv._blocked_dw) in 0.45-1.0x (LeNet's first
#   layer, 5x5x1x6 on 64x28x28: 0.5-0.65x); on fewer pixels XLA won (1-2.7x at 14x14).
# - dx at stride 1: col2im took 0.2-0.8x for C <= 8 and F <= 16 while its
#   matrix dy @ w^T (N*OH*OW x kh*kw*C) stays within 4M entries (LeNet's second
#   layer, valid 5x5x6x16 on 14x14: 0.5x); 1-7x with 16 channels or a larger
#   matrix, 0.9-1.6x for F = 32 with "same" padding, and about 1x (0.7-2.5x)
#   at stride 2.
# In LeNet's jitted training step (W2) the two choices together took the
# manual step from 0.8x to 0.45-0.5x the plain-JAX step. Only 2-D convolutions
# with dilation 1 and one group were measured: every other one runs XLA's.
TAPS_MAX_CHANNELS = 4
TAPS_MAX_WEIGHTS = 800  # kh * kw * C * F
COL2IM_MAX_CHANNELS = 8
COL2IM_MAX_FEATURES = 16
COL2IM_MAX_ENTRIES = 4 * 2**20  # N*OH*OW * kh*kw*C
BLOCKS_MAX_CHANNELS = 4
BLOCKS_MIN_PIXELS = 20_000  # N*OH*OW
BLOCK_MIN_COLUMNS = 24  # block * F: the width of dy's side of the product
BLOCK_MAX_WIDTH = 4  # output columns per block


def lowering_plan(
    implementation: str,
    platform: str,
    w_shape: Sequence[int],
    strides: Sequence[int],
    out_pixels: int,
    *,
    in_hw: Sequence[int | None] | None = None,
    out_hw: Sequence[int | None] | None = None,
    dilation: Sequence[int] | None = None,
    groups: int = 1,
) -> tuple[str, str, str]:
    """How the JAX backend computes ``(y, dw, dx)`` of one convolution with
    kernel ``w_shape = (*k, C/G, F)`` and ``out_pixels = N*prod(out)`` outputs,
    from an input of spatial sizes ``in_hw`` to ``out_hw`` (when given).

    Returns ``"xla"``, ``"taps"`` or ``"matmul"`` for ``y``; ``"xla"``,
    ``"matmul"`` or ``"blocks"`` for ``dw``; ``"xla"`` or ``"col2im"`` for ``dx``.

    * ``"xla"``: XLA convolutions for all three.
    * ``"im2col"``: the im2col matrix for all three; ``y`` as a tap sum when
      ``C <= 4`` and the kernel has at most 800 weights (2-D, dilation 1, one
      group), else one matrix product per group.
    * ``"auto"``: ``"xla"`` on any platform but ``"cpu"``, and for any convolution
      but a 2-D one with dilation 1 and one group; for those on a CPU, the tap
      sum for ``y`` under the same condition; column blocks for ``dw`` at stride 1
      when ``C <= 4`` and there are at least 20000 output pixels, else XLA's;
      and col2im for ``dx`` at stride 1 when ``C <= 8``, ``F <= 16`` and
      ``dy @ w^T`` has at most 4M entries (the timings behind these numbers are
      in this module's source). Whatever these say, a kernel with more taps
      than the image it slides over has pixels (``kh*kw > H*W`` for ``y``,
      ``> OH*OW`` for ``dx``, which slides it over ``dy``) runs as im2col:
      XLA swaps such a convolution's operands, and its CPU backend runs the
      swapped one as a naive loop (3x3 on 2x2 images, 64 channels: 2.4 ms
      against 0.4 ms for im2col).
    * one form's name (``"taps"``, ``"matmul"``, ``"blocks"``, ``"col2im"``):
      that form for the pieces it computes (where it applies), XLA's for the others.
    """
    *window, c, f = w_shape
    rank = len(window)
    plain = rank == 2 and groups == 1 and all(d == 1 for d in (dilation or ()))
    taps = plain and c <= TAPS_MAX_CHANNELS and math.prod(window) * c * f <= TAPS_MAX_WEIGHTS
    if implementation in ("taps", "matmul", "blocks", "col2im"):
        stride_1 = all(s == 1 for s in strides)
        if (implementation == "taps" and not plain) or (implementation == "blocks" and not (plain and stride_1)):
            raise ValueError(
                f"the {implementation!r} form computes 2-D stride-1 convolutions without dilation or groups only"
            )
        pieces = ("y", "dw", "dx")
        return tuple(implementation if implementation in CONV_FORMS[p] else "xla" for p in pieces)  # type: ignore
    if implementation == "im2col":
        return ("taps" if taps else "matmul", "matmul", "col2im")
    if implementation != "auto" and implementation != "xla":
        choices = ", ".join(map(repr, CONV_IMPLEMENTATIONS))
        raise ValueError(f"implementation must be one of {choices} or a form; got {implementation!r}")
    if implementation == "xla" or platform != "cpu" or not plain:
        return ("xla", "xla", "xla")
    stride_1 = all(s == 1 for s in strides)
    col2im = (
        stride_1
        and c <= COL2IM_MAX_CHANNELS
        and f <= COL2IM_MAX_FEATURES
        and out_pixels * math.prod(window) * c <= COL2IM_MAX_ENTRIES
    )
    blocks = stride_1 and c <= BLOCKS_MAX_CHANNELS and out_pixels >= BLOCKS_MIN_PIXELS
    def larger(sizes: Sequence[int | None] | None) -> bool:
        return sizes is not None and None not in sizes and math.prod(window) > math.prod(sizes)  # type: ignore
    y = "taps" if taps else "matmul" if larger(in_hw) else "xla"
    col2im = col2im or larger(out_hw)
    return (y, "blocks" if blocks else "xla", "col2im" if col2im else "xla")


# --------------------------------------------------------------------------- #
# Pooling
# --------------------------------------------------------------------------- #

POOL_FORWARD_FORMS = ("xla", "tiles", "patches")
POOL_BACKWARD_FORMS = ("xla", "tiles", "patches")


def pool_plan(implementation: str, *, is_numpy: bool, tiled: bool, backward: bool, reducer: str = "sum") -> str:
    """The form of a pooling kernel: ``"xla"`` (``lax.reduce_window``; for a sum
    window's backward its transpose, a ``reduce_window`` of ``dy`` with base
    dilation), ``"tiles"`` (a free reshape when the windows tile the input,
    stride == window) or ``"patches"`` (every window gathered, any stride).

    ``"auto"``: NumPy arrays take tiles when the windows tile the input, else
    patches. JAX arrays take XLA's ``reduce_window`` forward (so that
    ``jax.grad`` of it keeps XLA's tie rule), and for the backward tiles or
    patches as NumPy does: when the windows tile the image both backward rules
    are a mask or a broadcast on a free reshape, with no scatter, which beat
    XLA's generic select-and-scatter derivative on the CPU (LeNet's 2x2 pools,
    2-core Xeon VM, XLA CPU of JAX 0.10, float32, batch 64: 0.15-0.2x its time).
    A max window's backward has no ``"xla"`` form (XLA's is a derivative).
    NumPy arrays asked for ``"xla"`` take their ``"auto"`` form.
    """
    if implementation == "auto" or (is_numpy and implementation == "xla"):
        if not is_numpy and not backward:
            return "xla"
        return "tiles" if tiled else "patches"
    forms = POOL_BACKWARD_FORMS if backward else POOL_FORWARD_FORMS
    if reducer == "max" and backward:
        forms = forms[1:]
    if implementation not in forms:
        raise ValueError(f"implementation must be 'auto' or one of {forms} for these arrays; got {implementation!r}")
    if implementation == "tiles" and not tiled:
        raise ValueError("the 'tiles' form needs windows that tile the input (stride == window)")
    return implementation


# --------------------------------------------------------------------------- #
# Optimizers
# --------------------------------------------------------------------------- #


def optimizer_form(kernel: str, *, numpy_ready: bool) -> str:
    """The form of an optimizer kernel (:mod:`fnn.kernels.optim`) that ``"auto"`` runs.

    ``"numpy"`` whenever the arrays allow it (``numpy_ready``: plain NumPy
    arrays of one floating dtype per leaf), for every kernel and every size;
    ``"xla"`` otherwise (JAX arrays and tracers, where XLA fuses the plain form
    into one loop; mixed dtypes on NumPy).

    Measured on the 2-core x86 CPU of the benchmark machine (NumPy 2, one
    ``adam_update`` with the learning rate folded in, then ``add_updates``,
    float32): W1's MLP (784-512-512-10) 1.6 ms numpy against 4.8 ms xla,
    W2's LeNet 0.23 against 0.28 ms, the tiny W3 MLP (2-16-16-1) 76 against
    85 us (Python overhead dominates both there). No size was found where the
    plain form wins on NumPy.
    """
    del kernel  # the same rule for adam_update, scale_updates and add_updates
    return "numpy" if numpy_ready else "xla"


# --------------------------------------------------------------------------- #
# Elementwise maps, gathers and scatters: NumPy's own forms
# --------------------------------------------------------------------------- #

#: Each kernel with an in-place or vectorised NumPy form, and why ``"auto"``
#: takes it on NumPy arrays (measured on the 2-core Xeon VM of the benchmarks,
#: NumPy 2, float32 unless said). On JAX arrays every one runs its plain
#: ``"xla"`` form, which XLA fuses with its neighbours.
NUMPY_FORMS = {
    "affine": "the bias added in place into the product just made: no second (batch, features) array "
    "(the NumPy MLP step's forward)",
    "relu_select": "the bits of the kept values masked instead of numpy.where: about 10x faster on a mixed "
    "mask (a mispredicted branch per element), the same bits",
    "scatter_add_rows": "one numpy.bincount over (row, feature) cells: 1.4-3x faster than numpy.add.at, "
    "the same float64 sums",
    "erf": "math.erf per element (NumPy has no erf): exact to float64 rounding, about 0.09 s per million "
    "entries; the xla form on NumPy arrays round-trips through JAX",
}


def numpy_or_xla(kernel: str, implementation: str, *, numpy_ready: bool, needs: str) -> str:
    """The form ``implementation`` stands for in one call of a kernel of :data:`NUMPY_FORMS`:
    ``"numpy"`` or ``"xla"``. ``"auto"`` takes the NumPy form whenever the arrays
    allow it (``numpy_ready``); a forced ``"numpy"`` on other arrays is refused,
    saying what it ``needs``."""
    if implementation not in ("auto", "xla", "numpy"):
        raise ValueError(f"{kernel}: implementation must be one of ('auto', 'xla', 'numpy'); got {implementation!r}")
    if implementation == "numpy" and not numpy_ready:
        raise TypeError(f"{kernel}(implementation='numpy') needs {needs}; use 'auto' or 'xla'")
    if implementation == "auto":
        return "numpy" if numpy_ready else "xla"
    return implementation


# --------------------------------------------------------------------------- #
# Weight gradients
# --------------------------------------------------------------------------- #

# "transposed" (x.T made first) against "xla" (x.T @ dy folded into one
# product over the rows), each timed alone in a jitted loop on a 2-core Xeon
# VM (XLA CPU of JAX 0.10, float32), rows 128-4096 x inputs 16-512 x outputs
# 10-512: with at least 128 inputs and 10 outputs (a classifier's last
# layer) the transposed form took 0.22-0.54x; with more outputs it took
# 0.55-1.12x alone, but inside whole training steps the wins did not carry
# over: 1.0x on the LSTM step (W4 of benchmarks/, its w_h 3200 x 128 -> 512)
# and 1.33-1.44x on the transformer block (W6, its projections 4096 x 128 or
# 512 -> 128 or more), where the made transpose is one more pass over a large
# activation. With 16-32 inputs it won or lost by up to 1.5x either way. The
# MLP step (W1, 784-512-512-10 at batch 128) took 0.955x with the rule below.
TRANSPOSED_MIN_INPUTS = 128
TRANSPOSED_MAX_OUTPUTS = 16


def weight_gradient_form(rows: int, inputs: int, outputs: int, platform: str) -> str:
    """The form of :func:`fnn.kernels.weight_grad.weight_gradient` that ``"auto"`` runs
    for ``x (rows, inputs)`` and ``dy (rows, outputs)`` on JAX arrays: ``"transposed"``
    on a CPU with at least 128 inputs and at most 16 outputs (``rows`` is not used by
    the rule: no threshold on it held up inside whole steps); ``"xla"`` otherwise,
    and on every other platform."""
    narrow = inputs >= TRANSPOSED_MIN_INPUTS and outputs <= TRANSPOSED_MAX_OUTPUTS
    return "transposed" if platform == "cpu" and narrow else "xla"


# --------------------------------------------------------------------------- #
# Attention
# --------------------------------------------------------------------------- #

ATTENTION_BLOCK_SIZE = 128  # keys per block of the blocked form
ATTENTION_BLOCKED_FROM = 512  # "auto" takes the blocked form from this many keys on


def attention_form(tk: int, platform: str) -> str:
    """The form of :mod:`fnn.kernels.attention` that ``"auto"`` runs for ``tk`` keys.

    ``"blocked"`` (loops over blocks of :data:`ATTENTION_BLOCK_SIZE` keys) on a
    CPU or NumPy from :data:`ATTENTION_BLOCKED_FROM` keys on, else ``"xla"``
    (the whole score matrix). Measured on the 2-core Xeon VM, JAX 0.10 CPU,
    float32, N=1, H=4, K=V=32, the jitted forward + backward: at T=256 the
    plain form was faster (1.7 against 2.4 ms) and barely larger; from T=512
    the blocked one was as fast or faster (8.7-13 against 29 ms) with
    temporaries about ``block / T`` of the plain form's; 128-key blocks gave
    0.35x / 0.07x autodiff's temp memory at T=512 / 2048 (256: 0.66x / 0.13x,
    512: 0.75x / 0.26x) at equal speed. NumPy: blocked 14 / 23 / 136 ms
    against plain 18 / 65 / 188 ms at T = 256 / 512 / 1024. GPUs and TPUs
    were not measured: there the plain form runs (its backward still
    recomputes the probabilities)."""
    return "blocked" if platform in ("cpu", "numpy") and tk >= ATTENTION_BLOCKED_FROM else "xla"
