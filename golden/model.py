"""Whole-network golden model: an image's layers run on integer inputs, every layer exposed.

numpy only, integers only after ``quantize_input``. The order of the steps in
``layer_forward`` is docs/numerics.md, "Steps of one layer".
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from golden.fixedpoint import (
    accumulate,
    align_bias,
    argmax,
    flatten,
    maxpool,
    quantize,
    relu,
    requantize,
)
from weights.image import Activation, Image, Kind, Layer

__all__ = ["GoldenModel", "conv_accumulate", "im2col", "layer_forward", "postprocess"]


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: int, padding: int) -> np.ndarray:
    """NCHW ``x`` to rows of convolution windows: (N*OH*OW, C*kh*kw), ``(c, ky, kx)`` order."""
    kh, kw = kernel
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, oh, ow = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def conv_accumulate(x: np.ndarray, w: np.ndarray, kernel: tuple[int, int], stride: int,
                    padding: int, bw: int) -> np.ndarray:
    """Exact convolution accumulators: NCHW ``x``, ``w`` (O, C*kh*kw) -> (N, O, OH, OW) int64."""
    n = x.shape[0]
    cols = im2col(x, kernel, stride, padding)
    oh = (x.shape[2] + 2 * padding - kernel[0]) // stride + 1
    ow = (x.shape[3] + 2 * padding - kernel[1]) // stride + 1
    return accumulate(cols, w, bw).reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


def postprocess(acc: np.ndarray, bias: np.ndarray, *, acc_fl: int, b_fl: int, out_fl: int,
                bw: int, use_relu: bool, pool: int = 0, pool_stride: int = 0) -> np.ndarray:
    """Steps 2-6 of docs/numerics.md on accumulators (N, O[, H, W]).

    Bias alignment and addition, requantize (round half up, saturate), ReLU, max-pool.
    """
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    y = requantize(acc + align_bias(bias, b_fl, acc_fl).reshape(shape), acc_fl, out_fl, bw)
    if use_relu:
        y = relu(y)
    if pool:
        y = maxpool(y, pool, pool_stride)
    return y


def layer_forward(layer: Layer, x: np.ndarray, in_fl: int, bw: int) -> np.ndarray:
    """One layer on integer input ``x`` (NCHW, or (N, F) for fc) at fractional length ``in_fl``."""
    if layer.kind == Kind.CONV:
        acc = conv_accumulate(x, layer.weights(), layer.kernel, layer.stride, layer.padding, bw)
    else:
        acc = accumulate(flatten(x), layer.weights(), bw)
    return postprocess(acc, layer.bias, acc_fl=in_fl + layer.w_fl, b_fl=layer.b_fl,
                       out_fl=layer.out_fl, bw=bw,
                       use_relu=layer.activation == Activation.RELU, pool=layer.pool,
                       pool_stride=layer.pool_stride)


class GoldenModel:
    """The bit-exact model of the accelerator running one weight image."""

    def __init__(self, image: Image):
        self.image = image
        for layer in image.layers:
            layer.weights()  # decode once, up front

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Real inputs (N, C, H, W) to ``bw``-bit integers at the image's ``input_fl``."""
        x = np.asarray(x)
        if x.ndim == 2 and x.shape[1] == np.prod(self.image.input_shape):
            x = x.reshape(len(x), *self.image.input_shape)  # (N, F) for an fc-first network
        if x.shape[1:] != self.image.input_shape:
            raise ValueError(f"input shape {x.shape[1:]} is not the image's "
                             f"{self.image.input_shape}")
        return quantize(x, self.image.input_fl, self.image.bw)

    def forward(self, x_int: np.ndarray) -> list[np.ndarray]:
        """Every layer's integer output for integer inputs ``x_int`` (N, C, H, W)."""
        outs = []
        in_fl = self.image.input_fl
        x = np.asarray(x_int, dtype=np.int64)
        for layer in self.image.layers:
            x = layer_forward(layer, x, in_fl, self.image.bw)
            in_fl = layer.out_fl
            outs.append(x)
        return outs

    def logits(self, x: np.ndarray, batch: int = 500) -> np.ndarray:
        """The last layer's integers for real inputs ``x``, computed in batches."""
        parts = []
        for i in range(0, len(x), batch):
            parts.append(self.forward(self.quantize_input(x[i : i + batch]))[-1])
        return np.concatenate(parts)

    def predict(self, x: np.ndarray, batch: int = 500) -> np.ndarray:
        """Predicted classes: ``argmax`` of the last layer (lowest index wins a tie)."""
        return argmax(self.logits(x, batch))
