"""Known-answer vectors for every fixed-point primitive of docs/numerics.md."""

import numpy as np
import pytest

from golden.fixedpoint import (
    acc_is_exact_in_float64,
    accumulate,
    align_bias,
    argmax,
    flatten,
    int_range,
    maxpool,
    quantize,
    relu,
    requantize,
    round_shift,
    saturate,
)


def test_int_range():
    assert int_range(8) == (-128, 127)
    assert int_range(16) == (-32768, 32767)
    assert int_range(1) == (-1, 0)
    with pytest.raises(ValueError):
        int_range(0)


def test_saturate_both_ends():
    x = np.array([-129, -128, -1, 0, 127, 128, 10**12, -(10**12)])
    assert saturate(x, 8).tolist() == [-128, -128, -1, 0, 127, 127, 127, -128]
    assert saturate([40000, -40000], 16).tolist() == [32767, -32768]


@pytest.mark.parametrize("x, shift, expect", [
    # Ties go towards +infinity (round half up): 2.5 -> 3, -2.5 -> -2, 1.5 -> 2, -1.5 -> -1.
    ([5, -5, 3, -3], 1, [3, -2, 2, -1]),
    # Quarter steps: 0.25 -> 0, 0.75 -> 1, -0.25 -> 0, -0.75 -> -1, 0.5 -> 1, -0.5 -> 0.
    ([1, 3, -1, -3, 2, -2], 2, [0, 1, 0, -1, 1, 0]),
    ([7, -7, 8, -8, 9, -9], 4, [0, 0, 1, 0, 1, -1]),
    ([12345, -12345], 0, [12345, -12345]),
    ([3, -3], -2, [12, -12]),
])
def test_round_shift(x, shift, expect):
    assert round_shift(np.array(x), shift).tolist() == expect


def test_round_shift_large_shift_and_overflow():
    assert round_shift(np.array([2**40, -(2**40)]), 70).tolist() == [0, 0]
    with pytest.raises(OverflowError):
        round_shift(np.array([2**61]), -3)


def test_round_shift_matches_exact_rational_rounding():
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**40), 2**40, size=2000)
    for shift in range(1, 20):
        got = round_shift(x, shift)
        # floor(x / 2^s + 1/2) in exact integer arithmetic
        want = [(2 * int(v) + (1 << shift)) // (1 << (shift + 1)) for v in x]
        assert got.tolist() == want


@pytest.mark.parametrize("acc, acc_fl, out_fl, bits, expect", [
    # acc_fl 4 -> out_fl 1: divide by 8, round half up, saturate to int8.
    ([4, 12, -4, -12, 1020, 1024, -1028, -1036], 4, 1, 8, [1, 2, 0, -1, 127, 127, -128, -128]),
    # Saturation decided after rounding: 1019/8 = 127.375 -> 127; 1021/8 = 127.625 -> 128 -> 127.
    ([1019, 1021, -1027, -1028], 4, 1, 8, [127, 127, -128, -128]),
    # A fractional length that asks for a left shift: out_fl > acc_fl.
    ([3, -3, 40, -40, 2**50], 2, 4, 8, [12, -12, 127, -128, 127]),
    ([100000, -100000, 5], 3, 3, 16, [32767, -32768, 5]),
])
def test_requantize(acc, acc_fl, out_fl, bits, expect):
    assert requantize(np.array(acc), acc_fl, out_fl, bits).tolist() == expect


@pytest.mark.parametrize("x, fl, bits, expect", [
    ([0.0, 0.5, 1.0, -1.0, 0.99], 7, 8, [0, 64, 127, -128, 127]),
    # Ties: 0.5/128 -> x*2^7 = 0.5 -> 1 ; -0.5/128 -> -0.5 -> 0 (half up).
    ([0.5 / 128, -0.5 / 128, 1.5 / 128, -1.5 / 128], 7, 8, [1, 0, 2, -1]),
    ([3.0, -3.0, 300.0], -1, 8, [2, -1, 127]),
    ([1.0, -2.0], 14, 16, [16384, -32768]),
])
def test_quantize(x, fl, bits, expect):
    assert quantize(np.array(x, dtype=np.float32), fl, bits).tolist() == expect


def test_quantize_mnist_pixels():
    p = np.arange(256, dtype=np.uint8)
    x = p.astype(np.float32) / np.float32(255)
    q = quantize(x, 7, 8)
    assert q[0] == 0 and q[255] == 127 and q[128] == 64  # 128/255*128 = 64.25
    assert np.all(np.diff(q) >= 0)
    with pytest.raises(ValueError):
        quantize(np.array([np.nan]), 3, 8)


def test_align_bias():
    assert align_bias(np.array([3, -3]), 2, 5).tolist() == [24, -24]
    assert align_bias(np.array([3]), 5, 5).tolist() == [3]
    with pytest.raises(ValueError):
        align_bias(np.array([1]), 6, 5)


def test_float64_bound():
    assert acc_is_exact_in_float64(2**38, 8)
    assert not acc_is_exact_in_float64(2**39, 8)
    assert acc_is_exact_in_float64(2**23 - 1, 16)
    assert not acc_is_exact_in_float64(2**23, 16)


def test_accumulate_exact_both_paths():
    rng = np.random.default_rng(0)
    x = rng.integers(-32768, 32768, size=(3, 50))
    w = rng.integers(-32768, 32768, size=(4, 50))
    want = x.astype(object) @ w.T.astype(object)
    assert accumulate(x, w, 16).tolist() == want.tolist()
    # Extreme values: every product is -2^15 * -2^15 = 2^30.
    x = np.full((1, 1000), -32768)
    assert accumulate(x, x, 16).tolist() == [[1000 * 2**30]]


def test_relu_maxpool_flatten_argmax():
    assert relu(np.array([-3, 0, 4])).tolist() == [0, 0, 4]
    x = np.arange(2 * 5 * 5).reshape(1, 2, 5, 5) * np.array([1, -1]).reshape(1, 2, 1, 1)
    y = maxpool(x, 2, 2)  # the last row and column are dropped
    assert y.shape == (1, 2, 2, 2)
    assert y[0, 0].tolist() == [[6, 8], [16, 18]]
    assert y[0, 1].tolist() == [[-25, -27], [-35, -37]]
    assert maxpool(x, 3, 1).shape == (1, 2, 3, 3)
    assert maxpool(x, 3, 1)[0, 0, 0, 0] == 12
    with pytest.raises(ValueError):
        maxpool(x, 6, 1)
    assert flatten(np.arange(8).reshape(1, 2, 2, 2)).tolist() == [list(range(8))]
    assert argmax(np.array([[1, 5, 5, 2], [-3, -3, -4, -9]])).tolist() == [1, 0]
