"""Longest channels first: the compressor's last step, a permutation of hidden channels.

The accelerator's stream fetch deals a layer's output channels to its decode lanes in the
order the image stores them, each to the lane with the fewest stream bytes so far
(``hw.stream_fetch``); a lane decodes a channel whole. Dealt in the trained order, a long
channel that comes late leaves the other lanes idle at the layer's end. Stored longest
first, the same greedy deal is Graham's LPT rule, whose busiest lane is within 4/3 of the
best possible (Graham 1969). Measured with ``espalier bench decode`` on ten lanes, the
shipped images went from 0.898 to 0.927 symbols per clock per lane (LeNet-300-100) and
from 0.909 to 0.914 (LeNet-5); on two lanes 0.962 / 0.965 → 0.966 / 0.966
(docs/results.md).

Reordering a hidden layer's output channels changes nothing the network computes if the
next layer's inputs are reordered the same way: the channel's weights, bias and (per-layer)
fixed-point formats move together, and the next layer sums the same products in a
different column order (integer sums: the same bits). The last layer's channels are the
network's outputs and keep their order. The next layer's streams are re-encoded, since
their zero runs follow the new column order, and so is every layer's Huffman table (the
symbol counts change with the runs). The shipped images got 1.9 % and 3.0 % smaller: the
next layer's columns start with the longest channels' inputs, which tend to have the most
non-zero weights, so its zero runs are shorter at the front and end in one ``EOS``.

``order_channels`` is integer work on an ``Image`` (no training, no floats), so applying it
to an image gives the same bytes as compressing with it on.
"""

import dataclasses

import numpy as np

from golden.decode import huffman_symbols
from weights.huffman import MAX_CODE_LENGTH
from weights.image import Image, Layer

__all__ = ["channel_order", "order_channels"]


def channel_order(layer: Layer) -> np.ndarray:
    """The layer's channels longest first: by decreasing stream bytes (the measure the fetch
    deals by), then decreasing Huffman symbols (a lane's clocks), then increasing channel
    number (so the order is unique)."""
    symbols = np.array([len(huffman_symbols(s, layer.table, layer.alphabet, layer.fan_in))
                        for s in layer.streams], dtype=np.int64)
    sizes = np.array([len(s) for s in layer.streams], dtype=np.int64)
    return np.lexsort((np.arange(len(sizes)), -symbols, -sizes))


def _permute_inputs(layer: Layer, perm: np.ndarray, max_code_len: int) -> Layer:
    """``layer`` with its input channels reordered as ``perm`` (each a block of columns),
    re-encoded: its zero runs, and so its symbols and Huffman table, change."""
    blocks = len(perm)
    idx = layer.indices().reshape(layer.out_c, blocks, -1)[:, perm, :]
    return layer.with_indices(idx.reshape(layer.out_c, -1), max_code_len=max_code_len)


def order_channels(image: Image, max_code_len: int = MAX_CODE_LENGTH) -> Image:
    """``image`` with every hidden layer's output channels stored longest first.

    Layer by layer from the first: the layer's columns follow the previous layer's new
    channel order, it is re-encoded, and then its own channels are sorted by
    ``channel_order`` (the last layer's are not). A layer's inputs are the previous layer's
    pooled output flattened as ``(c, y, x)``, so input channel ``c`` owns a contiguous block
    of ``fan_in / in_c`` columns in a convolution's ``(c, ky, kx)`` order and in a fully
    connected layer's. Idempotent: an ordered image is returned unchanged.
    """
    layers = list(image.layers)
    perm = None  # the previous layer's new channel order: new channel k was channel perm[k]
    for i, layer in enumerate(layers):
        if perm is not None:
            if layer.fan_in % len(perm):
                raise ValueError(f"layer {i + 1}: fan-in {layer.fan_in} is not a whole number "
                                 f"of blocks for the previous layer's {len(perm)} channels")
            layer = _permute_inputs(layer, perm, max_code_len)
        perm = None
        if i + 1 < len(layers):
            order = channel_order(layer)
            if not np.array_equal(order, np.arange(len(order))):
                # Moving whole channels keeps the layer's symbols, so its table and streams
                # stay; only their order and the biases' change.
                perm = order
                layer = dataclasses.replace(
                    layer, streams=tuple(layer.streams[k] for k in order),
                    bias=np.asarray(layer.bias)[order], _cache={})
        layers[i] = layer
    return dataclasses.replace(image, layers=tuple(layers))
