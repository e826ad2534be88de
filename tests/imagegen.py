"""Random valid weight images built with numpy alone (no torch), for format and golden tests."""

import numpy as np

from weights.image import Activation, Image, Kind, Layer, encode_streams

__all__ = ["random_image", "random_layer"]


def random_layer(rng: np.random.Generator, kind: Kind, in_shape, out_c: int, *, bw: int = 8,
                 in_fl: int = 6, kernel=(3, 3), stride=1, padding=0, pool=0, pool_stride=0,
                 relu=True, density=0.3, index_bits=3, run_bits=2, max_code_len=16) -> Layer:
    """A layer with random codebook, sparsity, biases and fractional lengths."""
    if kind == Kind.FC:
        kernel, stride, padding, pool, pool_stride = (1, 1), 1, 0, 0, 0
        in_shape = (int(np.prod(in_shape)), 1, 1)
        out_shape = (out_c, 1, 1)
    else:
        oh = (in_shape[1] + 2 * padding - kernel[0]) // stride + 1
        ow = (in_shape[2] + 2 * padding - kernel[1]) // stride + 1
        out_shape = (out_c, oh, ow)
    fan_in = in_shape[0] * kernel[0] * kernel[1]
    k = int(rng.integers(1, (1 << index_bits) + 1))
    lo, hi = -(1 << (bw - 1)), (1 << (bw - 1)) - 1
    codebook = rng.integers(lo, hi + 1, size=k)
    idx = np.where(rng.random((out_c, fan_in)) < density, rng.integers(0, k, (out_c, fan_in)), -1)
    w_fl = int(rng.integers(bw - 4, bw + 2))
    acc_fl = in_fl + w_fl
    b_fl = int(rng.integers(acc_fl - 6, acc_fl + 1))
    bias_bits = int(rng.integers(2, 20))
    bias = rng.integers(-(1 << (bias_bits - 1)), 1 << (bias_bits - 1), size=out_c)
    table, streams = encode_streams(idx, k, run_bits, max_code_len)
    return Layer(kind=kind, activation=Activation.RELU if relu else Activation.NONE,
                 in_shape=tuple(in_shape), out_shape=out_shape, kernel=tuple(kernel),
                 stride=stride, padding=padding, pool=pool, pool_stride=pool_stride, w_fl=w_fl,
                 b_fl=b_fl, out_fl=int(rng.integers(acc_fl - bw - 4, acc_fl - 2)),
                 index_bits=index_bits, run_bits=run_bits, bias_bits=bias_bits,
                 codebook=codebook, table=table, bias=bias, streams=streams)


def random_image(seed: int, bw: int = 8) -> Image:
    """conv (padded, pooled) -> conv (strided) -> fc -> fc on a 2x9x9 input."""
    rng = np.random.default_rng(seed)
    input_fl = int(rng.integers(bw - 3, bw))
    shape = (2, 9, 9)
    layers = []
    in_fl = input_fl
    specs = [
        dict(kind=Kind.CONV, out_c=4, kernel=(3, 3), padding=1, pool=2, pool_stride=2),
        dict(kind=Kind.CONV, out_c=5, kernel=(2, 3), stride=2, relu=False),
        dict(kind=Kind.FC, out_c=7, run_bits=3),
        dict(kind=Kind.FC, out_c=3, relu=False, run_bits=0, density=0.8),
    ]
    for spec in specs:
        layer = random_layer(rng, in_shape=shape, bw=bw, in_fl=in_fl, **spec)
        layers.append(layer)
        shape, in_fl = layer.pooled_shape, layer.out_fl
    return Image(bw=bw, input_fl=input_fl, input_shape=(2, 9, 9), layers=tuple(layers))
