"""AcceleratorConfig: validation, derived widths, presets against their devices."""

import dataclasses
import glob
import os

import numpy as np
import pytest

from hw.config import DEFAULT, PRESETS, AcceleratorConfig, get_preset, with_settings
from tests.imagegen import random_layer
from weights.huffman import MAX_CODE_LENGTH
from weights.image import Kind, read_image_file

IMAGES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "weights", "images",
                                       "*.img")))


def test_keyword_only_and_frozen():
    fields = {f.name: getattr(DEFAULT, f.name) for f in dataclasses.fields(DEFAULT)}
    with pytest.raises(TypeError):
        AcceleratorConfig(*fields.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.rows = 3
    assert AcceleratorConfig(**fields) == DEFAULT


@pytest.mark.parametrize("change,message", [
    (dict(rows=0), "rows must be a whole number of at least 1"),
    (dict(cols=2.5), "cols must be a whole number"),
    (dict(bw=12), "bw must be one of"),
    (dict(acc_width=25), "needs at least 26 bits"),
    (dict(bw=16), "needs at least 42 bits"),
    (dict(max_index_bits=9), "max_index_bits must be 1..8"),
    (dict(max_run_bits=-1), "max_run_bits must be 0..8"),
    (dict(max_code_len=17), "max_code_len must be 1..16"),
    (dict(max_code_len=0), "max_code_len must be 1..16"),
    (dict(image_bytes=40_000), "image_bytes must be a power of two"),
    (dict(tile_depth=100), "tile_depth must be a power of two"),
    (dict(max_table_symbols=0), "max_table_symbols must be a whole number"),
    (dict(decode_lanes=5), "use at most 4"),
    (dict(row_broadcast=1), "row_broadcast must be True or False"),
    (dict(fc_on_array="yes"), "fc_on_array must be True or False"),
    (dict(serial_decoder=0), "serial_decoder must be True or False"),
    (dict(image_read_latency=3), "image_read_latency must be 1 or 2"),
    (dict(image_read_latency=True), "image_read_latency must be 1 or 2"),
])
def test_validation(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(DEFAULT, **change)


def test_with_settings():
    """``FIELD=VALUE`` settings (the benchmarks' ``--set``) replace fields; bad ones are a
    ValueError saying why."""
    cfg = with_settings(get_preset("small"), ["serial_decoder=true", "cols=3", "rows=1"])
    assert (cfg.serial_decoder, cfg.cols, cfg.rows) == (True, 3, 1)
    assert with_settings(DEFAULT, []) == DEFAULT
    for bad, says in (("nope=1", "FIELD one of"), ("cols", "FIELD one of"),
                      ("cols=x", "integer, true or false"), ("acc_width=3", "at least")):
        with pytest.raises(ValueError, match=says):
            with_settings(DEFAULT, [bad])


def test_derived_widths():
    c = dataclasses.replace(DEFAULT, max_fan_in=800, max_table_symbols=1024, max_code_len=16,
                            image_bytes=65536, tile_depth=512)
    assert c.fan_in_width == 10  # 0..800
    assert c.table_addr_width == 10
    assert c.code_len_width == 5  # 0..16
    assert c.image_addr_width == 16
    assert c.tile_addr_width == 9
    assert c.min_acc_width == 2 * 8 + 10
    assert c.max_codebook_size == 256
    assert c.max_alphabet == 1 << 16  # (R+1)·K + 2 capped at the u16 symbols
    assert dataclasses.replace(c, max_run_bits=4, max_index_bits=6).max_alphabet == 16 * 64 + 2


def test_min_acc_width_is_tight():
    """The extreme sum (every product (-2^(bw-1))^2) just fits min_acc_width bits."""
    for bw in (8, 16):
        for fan_in in (1, 2, 3, 800, 1024, 4096):
            c = dataclasses.replace(DEFAULT, bw=bw, max_fan_in=fan_in, acc_width=64)
            extreme = fan_in * (1 << (bw - 1)) ** 2
            assert extreme <= (1 << (c.min_acc_width - 1)) - 1
            assert -extreme >= -(1 << (c.min_acc_width - 1))


def test_presets():
    assert set(PRESETS) == {"small", "icebreaker", "ulx3s-85f"}
    for name, preset in PRESETS.items():
        assert get_preset(name) is preset
        assert preset.max_code_len == MAX_CODE_LENGTH
    with pytest.raises(ValueError, match="unknown accelerator preset 'ice'; known presets: "
                                         "small, icebreaker, ulx3s-85f"):
        get_preset("ice")


def test_small_is_small():
    c = get_preset("small")
    assert (c.rows, c.cols) == (2, 2) and c.decode_lanes == 2


def test_icebreaker_fits_up5k():
    c = get_preset("icebreaker")
    assert c.rows * c.cols <= 8  # SB_MAC16
    assert 45 * 1024 <= c.image_bytes <= 128 * 1024  # LeNet-5 in the SPRAM (128 KB)
    # EBR (4 kbit each, 30): symbol memory + codebook + a tile column per array column.
    entry_bits = 2 + c.max_run_bits + c.max_index_bits
    ebr = (c.decode_lanes * (-(-c.max_table_symbols * entry_bits // 4096)
                             + -(-c.max_codebook_size * c.bw // 4096))
           + c.cols * -(-c.tile_depth * c.bw // 4096))
    assert ebr <= 30


def test_ulx3s_fits_ecp5_85f():
    c = get_preset("ulx3s-85f")
    assert c.rows * c.cols <= 156  # MULT18X18D
    blocks = -(-c.image_bytes * 8 // 16384) + c.cols * -(-c.tile_depth * c.bw // 16384)
    assert blocks <= 208  # DP16KD (16 kbit of data each)


def test_check_layer():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, Kind.FC, (40, 1, 1), 3, index_bits=3, run_bits=2)
    small = get_preset("small")
    small.check_layer(layer, 8)
    with pytest.raises(ValueError, match="data width is 16 bits, the build's 8"):
        small.check_layer(layer, 16)
    with pytest.raises(ValueError, match="fan-in 40 exceeds the build's 32"):
        dataclasses.replace(small, max_fan_in=32, acc_width=32).check_layer(layer, 8)
    with pytest.raises(ValueError, match="run_bits 2 exceeds the build's 1"):
        dataclasses.replace(small, max_run_bits=1).check_layer(layer, 8)
    with pytest.raises(ValueError, match="Huffman code exceeds the build's 1"):
        dataclasses.replace(small, max_code_len=1).check_layer(layer, 8)
    with pytest.raises(ValueError, match="symbols exceeds the build's 1"):
        dataclasses.replace(small, max_table_symbols=1).check_layer(layer, 8)


@pytest.mark.skipif(not IMAGES, reason="no weights/images/*.img yet")
@pytest.mark.parametrize("preset", ["icebreaker", "ulx3s-85f"])
def test_shipped_images_fit(preset):
    c = get_preset(preset)
    for path in IMAGES:
        assert os.path.getsize(path) <= c.image_bytes, path
        image = read_image_file(path)
        for layer in image.layers:
            c.check_layer(layer, image.bw)


def test_image_words():
    # The smallest power of two of at least 2 bytes a lane and 4, at most 16: 2, 1 and 5
    # lanes.
    assert [get_preset(p).image_word_bytes for p in ("small", "icebreaker", "ulx3s-85f")] == [
        4, 4, 16]
    assert [dataclasses.replace(DEFAULT, decode_lanes=n, cols=16).image_word_bytes
            for n in (1, 2, 3, 4, 5, 8, 9, 16)] == [4, 4, 8, 8, 16, 16, 16, 16]
    assert get_preset("ulx3s-85f").image_words * 16 == get_preset("ulx3s-85f").image_bytes
    with pytest.raises(ValueError, match="drain_width must be 1 or 2"):
        dataclasses.replace(DEFAULT, drain_width=3)
    with pytest.raises(ValueError, match="max_layers must be a power of two"):
        dataclasses.replace(DEFAULT, max_layers=12)


def test_check_image():
    from tests.imagegen import random_image

    image = random_image(0)
    small = get_preset("small")
    small.check_image(image, 500)
    with pytest.raises(ValueError, match="exceeds the build's image buffer"):
        small.check_image(image, small.image_bytes + 1)
    with pytest.raises(ValueError, match="layers exceed the build's 2"):
        dataclasses.replace(small, max_layers=2).check_image(image, 500)
    with pytest.raises(ValueError, match="layer 0: .*fan-in 18 exceeds"):
        dataclasses.replace(small, max_fan_in=17, acc_width=32).check_image(image, 500)
