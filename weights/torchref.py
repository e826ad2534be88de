"""A float PyTorch model built from a weight image's decoded weights.

The reference for tolerance tests (golden fixed point against float on the same decoded
weights) and for the golden model's throughput benchmark. torch.
"""

import numpy as np
import torch
from torch import nn

from weights.image import Activation, Image, Kind

__all__ = ["float_model"]


def float_model(image: Image) -> nn.Sequential:
    """``nn.Sequential`` with weights ``w * 2^-w_fl`` and biases ``b * 2^-b_fl`` (float32)."""
    mods = []
    for layer in image.layers:
        w = torch.from_numpy((layer.weights() * 2.0 ** -layer.w_fl).astype(np.float32))
        b = torch.from_numpy((layer.bias * 2.0 ** -layer.b_fl).astype(np.float32))
        if layer.kind == Kind.CONV:
            m = nn.Conv2d(layer.in_shape[0], layer.out_c, layer.kernel, layer.stride,
                          layer.padding)
            w = w.reshape(m.weight.shape)
        else:
            mods.append(nn.Flatten())  # a no-op on (N, F)
            m = nn.Linear(layer.in_shape[0], layer.out_c)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(b)
        mods.append(m)
        if layer.activation == Activation.RELU:
            mods.append(nn.ReLU())
        if layer.pool:
            mods.append(nn.MaxPool2d(layer.pool, layer.pool_stride))
    return nn.Sequential(*mods).eval()
