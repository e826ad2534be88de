"""Fixed-point primitives: one named function per step of docs/numerics.md.

Every function works on numpy integer arrays (int64) and states its rounding and
saturation exactly. The hardware cites these names where it implements them.

Ref: Qiu et al., FPGA 2016, section 5 (dynamic-precision data quantization).
"""

import numpy as np

__all__ = [
    "BIT_WIDTHS",
    "accumulate",
    "acc_is_exact_in_float64",
    "align_bias",
    "argmax",
    "flatten",
    "int_range",
    "maxpool",
    "quantize",
    "relu",
    "requantize",
    "round_shift",
    "saturate",
]

#: Data bit widths a build may use (weights and activations share it).
BIT_WIDTHS = (8, 16)


def int_range(bits: int) -> tuple[int, int]:
    """The range ``(lo, hi)`` of a two's-complement integer of ``bits`` bits."""
    if bits < 1:
        raise ValueError(f"a bit width must be at least 1, not {bits}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturate(x: np.ndarray, bits: int) -> np.ndarray:
    """Clamp to the ``bits``-bit two's-complement range (no wrap-around)."""
    lo, hi = int_range(bits)
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def round_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """Multiply by ``2^-shift`` and round to an integer, ties towards +infinity.

    ``shift > 0``: ``(x + 2^(shift-1)) >> shift`` with an arithmetic (flooring) shift, i.e.
    round half up (2.5 -> 3, -2.5 -> -2). ``shift == 0``: ``x``. ``shift < 0``: ``x << -shift``
    (exact). No saturation; raises OverflowError if an int64 could not hold the result.
    """
    x = np.asarray(x, dtype=np.int64)
    if shift > 0:
        if shift > 62:
            # Every int64 rounds to 0 or -0: (x + 2^(s-1)) >> s for |x| < 2^63 <= 2^(s-1).
            return np.zeros_like(x)
        bound = (1 << 62) - (1 << (shift - 1))
        if x.size and int(np.max(x)) > bound:
            raise OverflowError("round_shift: the rounding addend overflows int64")
        return (x + (1 << (shift - 1))) >> shift
    if shift == 0:
        return x.copy()
    left = -shift
    if x.size:
        peak = max(abs(int(np.min(x))), abs(int(np.max(x))))
        if left > 62 or (peak << left) >= (1 << 62):
            raise OverflowError(f"round_shift: shifting left by {left} overflows int64")
    return x << left


def requantize(acc: np.ndarray, acc_fl: int, out_fl: int, bits: int) -> np.ndarray:
    """Accumulator (fractional length ``acc_fl``) to a ``bits``-bit output at ``out_fl``.

    ``round_shift(acc, acc_fl - out_fl)`` (round half up, or an exact left shift when
    ``out_fl > acc_fl``), then ``saturate`` to ``bits``. Rounding happens before saturation.
    """
    shift = acc_fl - out_fl
    if shift < 0 and np.asarray(acc).size:
        # A left shift of something that saturates anyway must not overflow int64 first.
        lo, hi = int_range(bits)
        acc = np.clip(np.asarray(acc, dtype=np.int64), lo - 1, hi + 1)
    return saturate(round_shift(acc, shift), bits)


def quantize(x: np.ndarray, fl: int, bits: int) -> np.ndarray:
    """Real numbers to ``bits``-bit integers at fractional length ``fl``.

    ``saturate(floor(x * 2^fl + 1/2))``: round half up, then saturate. Evaluated in float64,
    where the scaling by a power of two and the addition of 1/2 are exact for float32 input.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("quantize: the input holds NaN or infinity")
    lo, hi = int_range(bits)
    scaled = np.floor(np.ldexp(x, fl) + 0.5)
    return np.clip(scaled, lo, hi).astype(np.int64)


def align_bias(bias: np.ndarray, b_fl: int, acc_fl: int) -> np.ndarray:
    """Bias at fractional length ``b_fl`` to the accumulator's ``acc_fl``: ``b << (acc_fl-b_fl)``.

    Exact; ``b_fl > acc_fl`` is refused (docs/numerics.md requires ``b_fl <= acc_fl``).
    """
    if b_fl > acc_fl:
        raise ValueError(f"align_bias: bias fl {b_fl} exceeds the accumulator's fl {acc_fl}")
    return round_shift(bias, b_fl - acc_fl)


def acc_is_exact_in_float64(fan_in: int, bits: int) -> bool:
    """True when every partial sum of ``fan_in`` products of ``bits``-bit integers is below 2^53.

    ``|w*x| <= 2^(2*bits-2)``, so every partial sum is at most ``fan_in * 2^(2*bits-2)``; float64
    holds all integers below 2^53 exactly and adds them exactly (docs/numerics.md).
    """
    return fan_in * (1 << (2 * bits - 2)) < (1 << 53)


def accumulate(x: np.ndarray, w: np.ndarray, bits: int) -> np.ndarray:
    """Exact integer ``x @ w.T``: ``x`` (M, N), ``w`` (O, N) -> (M, O) int64.

    Uses float64 BLAS when ``acc_is_exact_in_float64`` proves it exact, int64 otherwise.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if acc_is_exact_in_float64(x.shape[-1], bits):
        return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    return x.astype(np.int64) @ w.T.astype(np.int64)


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``."""
    return np.maximum(x, 0)


def maxpool(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Max over ``size x size`` windows with ``stride`` of NCHW ``x``; partial windows dropped."""
    n, c, h, w = x.shape
    oh = (h - size) // stride + 1
    ow = (w - size) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"maxpool: a {size}x{size} window does not fit a {h}x{w} map")
    out = None
    for dy in range(size):
        for dx in range(size):
            win = x[:, :, dy : dy + stride * (oh - 1) + 1 : stride,
                    dx : dx + stride * (ow - 1) + 1 : stride]
            out = win.copy() if out is None else np.maximum(out, win)
    return out


def flatten(x: np.ndarray) -> np.ndarray:
    """NCHW (or N, F) to (N, C*H*W) in ``(c, y, x)`` row-major order."""
    return x.reshape(x.shape[0], -1)


def argmax(y: np.ndarray) -> np.ndarray:
    """Index of the largest value along the last axis, the lowest index winning a tie."""
    return np.argmax(y, axis=-1)
