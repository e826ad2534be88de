"""Weight image: round trips, the golden decode steps, and refusal of every kind of bad image."""

import struct
import zlib

import numpy as np
import pytest

from golden.decode import Alphabet, StreamError, codebook_lookup, expand_runs, huffman_symbols
from tests.imagegen import random_image
from weights.huffman import Table, code_lengths, encode
from weights.image import ImageError, read_image, read_image_file, write_image


def recrc(data: bytes) -> bytes:
    """Replace the trailing CRC so that only the structural checks can object."""
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return recrc(bytes(b))


@pytest.mark.parametrize("bw", [8, 16])
@pytest.mark.parametrize("seed", range(6))
def test_round_trip_identical_integers(seed, bw):
    image = random_image(seed, bw)
    data = write_image(image)
    back = read_image(data)
    assert write_image(back) == data
    assert (back.bw, back.input_fl, back.input_shape) == (image.bw, image.input_fl,
                                                          image.input_shape)
    for a, b in zip(image.layers, back.layers, strict=True):
        assert np.array_equal(a.weights(), b.weights())
        assert np.array_equal(a.bias, b.bias)
        assert np.array_equal(a.codebook, b.codebook)
        assert a.table == b.table
        for f in ("kind", "activation", "in_shape", "out_shape", "kernel", "stride", "padding",
                  "pool", "pool_stride", "w_fl", "b_fl", "out_fl", "index_bits", "run_bits",
                  "bias_bits"):
            assert getattr(a, f) == getattr(b, f), f


@pytest.mark.parametrize("seed", range(4))
def test_indices_and_reencoding(seed):
    """``Layer.indices`` are what the weights look up (-1: a pruned weight, 0); encoding them
    again with the layer's own ``run_bits`` gives its bytes back, and with another width
    the same weights under other streams."""
    image = random_image(seed, 8)
    for layer in image.layers:
        idx = layer.indices()
        assert idx.shape == (layer.out_c, layer.fan_in) and idx.min() >= -1
        assert np.array_equal(np.where(idx < 0, 0, np.asarray(layer.codebook)[idx]),
                              layer.weights())
        again = layer.with_indices(idx, max_code_len=layer.table.max_len)
        assert again.table == layer.table and again.streams == layer.streams
        other = layer.with_indices(idx, run_bits=(layer.run_bits + 3) % 9)
        assert other.run_bits == (layer.run_bits + 3) % 9
        assert np.array_equal(other.weights(), layer.weights())


def test_decode_steps_match_the_writer():
    rng = np.random.default_rng(3)
    for run_bits in (0, 1, 3):
        alpha = Alphabet(5, run_bits)
        fan_in = 40
        idx = np.where(rng.random(fan_in) < 0.2, rng.integers(0, 5, fan_in), -1)
        idx[rng.integers(0, fan_in)] = 2
        symbols = alpha.encode_channel(idx)
        assert np.array_equal(expand_runs(symbols, alpha, fan_in), idx)
        table = Table.from_lengths(code_lengths(np.bincount(symbols, minlength=alpha.size)))
        stream, _ = encode(symbols, table)
        assert huffman_symbols(stream, table, alpha, fan_in) == symbols
        codebook = np.array([-7, 0, 3, 100, -128])
        want = np.where(idx >= 0, codebook[np.maximum(idx, 0)], 0)
        assert np.array_equal(codebook_lookup(idx, codebook), want)


def test_zero_runs_fillers_and_eos():
    alpha = Alphabet(4, 1)  # R = 1: runs of 0 or 1, ZRUN = 2 zeros, symbols 8 and 9
    idx = np.array([-1, -1, -1, -1, -1, 3, 2, -1, -1, -1])
    # gap 5 -> two ZRUNs (4 zeros) then (run 1, index 3); (0, 2); trailing zeros -> EOS
    assert alpha.encode_channel(idx) == [8, 8, 1 * 4 + 3, 2, 9]
    assert alpha.encode_channel(np.array([1, -1, -1])) == [1, 9]
    assert alpha.encode_channel(np.array([-1, -1, 0])) == [8, 0]
    assert alpha.encode_channel(np.full(3, -1)) == [9]
    with pytest.raises(StreamError, match="past the fan-in"):
        expand_runs([4 + 1], alpha, 1)
    with pytest.raises(StreamError, match="passes the channel's end"):
        expand_runs([8, 8], alpha, 3)
    with pytest.raises(StreamError, match="cover"):
        expand_runs([0], alpha, 3)
    with pytest.raises(StreamError, match="follow"):
        expand_runs([9, 0], alpha, 3)


def test_stream_framing_errors():
    alpha = Alphabet(2, 0)  # symbols: 0, 1 (weights), 2 ZRUN, 3 EOS
    table = Table.from_lengths([2, 2, 2, 2])
    good, _ = encode([0, 3], table)  # 4 bits, padded
    assert huffman_symbols(good, table, alpha, 5) == [0, 3]
    with pytest.raises(StreamError, match="padding"):
        huffman_symbols(bytes([good[0] | 1]), table, alpha, 5)
    with pytest.raises(StreamError, match="bytes but"):
        huffman_symbols(good + b"\0", table, alpha, 5)
    with pytest.raises(StreamError, match="ended"):
        huffman_symbols(encode([0, 0], table)[0], table, alpha, 5)


# ---------------------------------------------------------------------------------------
# Bad images, each refused with ImageError and a message saying where.

GOOD = write_image(random_image(1))
N_LAYERS = GOOD[6]
TABLE = 20
SECTIONS = TABLE + 32 * N_LAYERS


def test_good_image_reads():
    read_image(GOOD)


@pytest.mark.parametrize("data, message", [
    (b"", "truncated"),
    (GOOD[:23], "truncated"),
    (b"ESPX" + GOOD[4:], "bad magic"),
    (GOOD[:4] + b"\x02" + GOOD[5:], "version 2"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"\0", "trailing"),
    (GOOD[:-1] + bytes([GOOD[-1] ^ 0x10]), "CRC"),
])
def test_refused_before_structure(data, message):
    with pytest.raises(ImageError, match=message):
        read_image(data)


def entry(i):
    return TABLE + 32 * i


@pytest.mark.parametrize("offset, fmt, value, message", [
    (5, "<B", 12, "bit width 12"),
    (6, "<B", 0, "no layers"),
    (6, "<B", 200, "runs past the end"),
    (14, "<H", 1, "reserved"),
    (8, "<H", 3, "does not chain"),             # input channels
    (entry(0), "<B", 7, "unknown kind 7"),
    (entry(0) + 1, "<B", 2, "unknown activation"),
    (entry(0) + 16, "<H", 99, "should be"),   # conv output height
    (entry(1) + 8, "<H", 5, "does not chain"),  # layer 1 input channels
    (entry(2) + 8, "<H", 21, "does not chain"),  # fc in_features (flatten)
    (entry(2) + 2, "<B", 2, "cannot pool"),
    (entry(0) + 2, "<B", 10, "does not fit"),  # pool window larger than the map
    (entry(0) + 23, "<B", 0, "index_bits"),
    (entry(0) + 24, "<H", 0, "codebook size"),
    (entry(0) + 26, "<B", 9, "run_bits"),
    (entry(0) + 27, "<B", 33, "bias_bits"),
    (entry(0) + 21, "<b", 100, "bias fl"),
    (entry(0) + 28, "<I", 10**6, "sections add up"),  # a length pointing past the end
])
def test_refused_structure(offset, fmt, value, message):
    with pytest.raises(ImageError, match=message):
        read_image(patch(GOOD, offset, fmt, value))


def test_refused_sections():
    image = random_image(1)
    layer = image.layers[0]
    cb = len(layer.codebook) * image.bw // 8
    hoff = SECTIONS + cb  # layer 0's Huffman table
    max_len = GOOD[hoff]
    counts = struct.unpack_from(f"<{max_len}H", GOOD, hoff + 1)
    # One more code of the longest length: over-subscribed.
    bad = patch(GOOD, hoff + 1 + 2 * (max_len - 1), "<H", counts[-1] + 1)
    with pytest.raises(ImageError, match="layer 0 section"):
        read_image(bad)
    del layer
    # One code fewer of the longest length: incomplete.
    with pytest.raises(ImageError, match="layer 0 section: Huffman table: the code is incomplete"):
        read_image(patch(GOOD, hoff + 1 + 2 * (max_len - 1), "<H", counts[-1] - 1))
    # A symbol outside the alphabet.
    sym_off = hoff + 1 + 2 * max_len
    with pytest.raises(ImageError, match="outside the alphabet"):
        read_image(patch(GOOD, sym_off, "<H", 60000))
    # A stream byte changed (with a valid CRC): the stream no longer decodes exactly.
    sizes_end = len(GOOD) - 4 - sum(len(s) for s in image.layers[-1].streams)
    errors = 0
    for pos in range(SECTIONS, sizes_end):
        try:
            read_image(patch(GOOD, pos, "<B", GOOD[pos] ^ 0xFF))
        except ImageError:
            errors += 1
    assert errors > 0.5 * (sizes_end - SECTIONS)


def test_truncation_at_every_offset_and_every_bit_flip():
    for n in range(len(GOOD)):
        with pytest.raises(ImageError):
            read_image(GOOD[:n])
    for bit in range(len(GOOD) * 8):
        data = bytearray(GOOD)
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ImageError):
            read_image(bytes(data))


def test_read_image_file_names_the_file(tmp_path):
    with pytest.raises(ImageError, match="missing.img"):
        read_image_file(tmp_path / "missing.img")
    p = tmp_path / "bad.img"
    p.write_bytes(GOOD[:-3])
    with pytest.raises(ImageError, match="bad.img: truncated"):
        read_image_file(p)
