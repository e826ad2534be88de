"""weights.order: hidden channels stored longest first, with the same network function."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from golden.decode import huffman_symbols
from golden.model import GoldenModel
from tests.imagegen import random_image
from tests.test_compress import synthetic_data, trained_small_net
from weights.compress import CompressConfig, LayerPlan, compress
from weights.image import read_image, read_image_file, write_image
from weights.order import channel_order, order_channels

IMAGES = sorted((Path(__file__).resolve().parent.parent / "weights" / "images").glob("*.img"))


def _columns(y: np.ndarray) -> list[bytes]:
    """A layer output's channels, as a sorted list (the multiset of channel outputs)."""
    return sorted(np.ascontiguousarray(np.moveaxis(y, 1, 0)[c]).tobytes()
                  for c in range(y.shape[1]))


def _is_longest_first(layer) -> bool:
    return np.array_equal(channel_order(layer), np.arange(layer.out_c))


@pytest.fixture(scope="module")
def compressed():
    """A small conv -> conv -> fc -> fc network from the project's compressor, with and
    without the ordering step (calibrated formats: its outputs do not saturate)."""
    x, y = synthetic_data()
    config = CompressConfig(plans=(LayerPlan(keep=0.7, weight_bits=3, run_bits=1),
                                   LayerPlan(keep=0.4, weight_bits=3, run_bits=2),
                                   LayerPlan(keep=0.4, weight_bits=3, run_bits=2),
                                   LayerPlan(keep=0.8, weight_bits=2, run_bits=0)),
                            retrain_epochs=0, calib_size=128)
    plain = compress(trained_small_net(x, y), (x, y), (x, y),
                     dataclasses.replace(config, longest_first=False))[0]
    ordered = compress(trained_small_net(x, y), (x, y), (x, y), config)[1]
    return x, plain, ordered


def test_same_network_with_hidden_channels_longest_first(compressed):
    x, plain, _ = compressed
    ordered = order_channels(plain)
    golden = GoldenModel(plain)
    xq = golden.quantize_input(x)
    before, after = golden.forward(xq), GoldenModel(ordered).forward(xq)
    assert len(np.unique(before[-1], axis=0)) > 20  # the outputs say something
    assert np.array_equal(before[-1], after[-1])
    moved = 0
    for i, (layer, new) in enumerate(zip(plain.layers, ordered.layers, strict=True)):
        if i + 1 < len(plain.layers):
            assert _is_longest_first(new)
            moved += not np.array_equal(channel_order(layer), np.arange(layer.out_c))
            # A hidden layer's outputs are its old ones, reordered; its biases likewise.
            assert _columns(after[i]) == _columns(before[i])
            assert sorted(np.asarray(new.bias).tolist()) == sorted(np.asarray(layer.bias).tolist())
        # Everything but the weights' order and their code is the layer's own.
        keep = ("kind", "in_shape", "out_shape", "w_fl", "b_fl", "out_fl", "index_bits",
                "run_bits", "bias_bits")
        assert all(getattr(new, k) == getattr(layer, k) for k in keep)
        assert np.array_equal(new.codebook, layer.codebook)
    assert moved  # the case exercises a real permutation
    # The last layer's channels are the outputs: they keep their order.
    assert np.array_equal(np.asarray(ordered.layers[-1].bias), np.asarray(plain.layers[-1].bias))


def test_the_compressor_orders_its_images(compressed):
    _, plain, ordered = compressed
    assert ordered == write_image(order_channels(plain))
    assert ordered != write_image(plain)


def test_hidden_rows_moved_without_the_next_layers_columns_change_the_outputs(compressed):
    # The equality above can fail: reordering a hidden layer alone is another network.
    x, plain, _ = compressed
    first = plain.layers[0]
    layers = (dataclasses.replace(first, streams=first.streams[::-1],
                                  bias=np.asarray(first.bias)[::-1], _cache={}),
              *plain.layers[1:])
    broken = dataclasses.replace(plain, layers=layers)
    golden = GoldenModel(plain)
    xq = golden.quantize_input(x)
    assert not np.array_equal(golden.forward(xq)[-1], GoldenModel(broken).forward(xq)[-1])


@pytest.mark.parametrize("seed", range(4))
def test_idempotent_and_written_bytes_read_back(seed):
    ordered = order_channels(random_image(seed))
    data = write_image(ordered)
    assert write_image(order_channels(read_image(data))) == data


def test_channel_order_is_bytes_then_symbols_then_index():
    layer = random_image(5).layers[2]
    symbols = [len(huffman_symbols(s, layer.table, layer.alphabet, layer.fan_in))
               for s in layer.streams]
    keys = [(-len(layer.streams[c]), -symbols[c], int(c)) for c in channel_order(layer)]
    assert keys == sorted(keys)
    assert sorted(k[2] for k in keys) == list(range(layer.out_c))


@pytest.mark.skipif(not IMAGES, reason="no shipped images")
@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.stem)
def test_shipped_images_are_stored_longest_first(path):
    data = path.read_bytes()
    assert write_image(order_channels(read_image_file(path))) == data
