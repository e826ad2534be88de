"""The golden model against an independent float64 reference built on torch's own layers.

With dyadic inputs, float64 convolution is exact for these small layers, so the reference
must agree bit for bit, saturation and rounding ties included.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golden.model import GoldenModel, im2col
from tests.imagegen import random_image
from weights.image import Activation, Kind


def reference_forward(image, x_int):
    """docs/numerics.md evaluated with torch float64 ops on real values."""
    x = torch.from_numpy(x_int.astype(np.float64) * 2.0 ** -image.input_fl)
    outs = []
    lo, hi = -(2 ** (image.bw - 1)), 2 ** (image.bw - 1) - 1
    for layer in image.layers:
        w = torch.from_numpy(layer.weights().astype(np.float64) * 2.0 ** -layer.w_fl)
        b = torch.from_numpy(layer.bias.astype(np.float64) * 2.0 ** -layer.b_fl)
        if layer.kind == Kind.CONV:
            w = w.reshape(layer.out_c, layer.in_shape[0], *layer.kernel)
            y = F.conv2d(x, w, b, stride=layer.stride, padding=layer.padding)
        else:
            y = F.linear(x.reshape(x.shape[0], -1), w, b)
        y = torch.clamp(torch.floor(y * 2.0 ** layer.out_fl + 0.5), lo, hi)
        if layer.activation == Activation.RELU:
            y = F.relu(y)
        if layer.pool:
            y = F.max_pool2d(y, layer.pool, layer.pool_stride)
        outs.append(y.numpy().astype(np.int64))
        x = y * 2.0 ** -layer.out_fl
    return outs


@pytest.mark.parametrize("bw", [8, 16])
@pytest.mark.parametrize("seed", range(8))
def test_golden_matches_reference_bit_for_bit(seed, bw):
    image = random_image(seed, bw)
    rng = np.random.default_rng(seed)
    lo, hi = -(2 ** (bw - 1)), 2 ** (bw - 1)
    x = rng.integers(lo, hi, size=(6, *image.input_shape))
    x[0] = lo  # extremes
    x[1] = hi - 1
    got = GoldenModel(image).forward(x)
    want = reference_forward(image, x)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape, i
        assert np.array_equal(g, w), f"layer {i}"


def test_saturation_is_exercised():
    # The random images saturate at both ends somewhere, so the test above covers it.
    image = random_image(0, 8)
    x = np.random.default_rng(0).integers(-128, 128, size=(6, *image.input_shape))
    outs = GoldenModel(image).forward(x)
    values = np.concatenate([o.ravel() for o in outs])
    assert values.min() == -128 and values.max() == 127


def test_im2col_order_is_c_ky_kx():
    x = np.arange(2 * 3 * 3).reshape(1, 2, 3, 3)
    cols = im2col(x, (2, 2), 1, 0)
    assert cols.shape == (4, 8)
    assert cols[0].tolist() == [0, 1, 3, 4, 9, 10, 12, 13]
    padded = im2col(x, (3, 3), 2, 1)
    assert padded.shape == (4, 18)
    assert padded[0, :9].tolist() == [0, 0, 0, 0, 0, 1, 0, 3, 4]


def test_quantize_input_checks_shape():
    model = GoldenModel(random_image(0))
    with pytest.raises(ValueError, match="input shape"):
        model.quantize_input(np.zeros((1, 1, 9, 9), dtype=np.float32))
