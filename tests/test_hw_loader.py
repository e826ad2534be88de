"""ImageLoader against weights.image.read_image: good images load into the memories exactly,
every class of bad image gets its error code within a bounded number of cycles."""

import dataclasses
import glob
import os
import struct

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.config import get_preset
from hw.image_loader import (
    DESC_WORDS,
    DescWord,
    ImageLoader,
    LoadError,
    descriptor_words,
    image_words,
    resident_fits,
)
from tests.imagegen import random_image
from tests.test_image import patch, recrc
from weights.image import read_image, write_image

SMALL = get_preset("small")
STALL = 0.3
IMAGES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "weights", "images",
                                       "*.img")))


def config(bw: int = 8, **changes):
    """The small preset at data width ``bw``, with a small image buffer unless changed."""
    changes.setdefault("image_bytes", 1024)
    return dataclasses.replace(SMALL, bw=bw, acc_width=max(SMALL.acc_width, 2 * bw + 10),
                               **changes)


def payloads(data: bytes, *, last=True):
    return [{"data": b, "last": int(last and n == len(data) - 1)} for n, b in enumerate(data)]


def load(dut, images, *, seed=0, stall=STALL, budget=None):
    """Load each ``(data, last, abort_after)`` in turn on one loader, with random stalls on
    the byte stream; ``last`` marks the last byte sent; ``abort_after`` sends only that many
    bytes, then pulses ``abort``. Return per load ``(status, loaded, cycles, image words,
    descriptor words, resident)``; fail if a load takes more than ``budget`` cycles."""
    rng = np.random.default_rng(seed) if stall else None
    wb = dut.image_word_bytes
    results = []

    async def bench(ctx):
        for data, last, abort_after in images:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            assert not ctx.get(dut.loaded)
            sent = data if abort_after is None else data[:abort_after]
            cycles = 0
            limit = budget or 40 * len(data) + 2000
            pending = payloads(sent, last=last) if abort_after is None else payloads(
                sent, last=False)
            n = 0
            valid = False
            while True:
                # Inline byte feeding with random stalls (the loader may stop taking bytes).
                if not valid and n < len(pending) and (rng is None or rng.random() >= stall):
                    valid = True
                ctx.set(dut.i.valid, valid)
                if valid:
                    ctx.set(dut.i.payload, pending[n])
                if abort_after is not None and n == len(pending) and cycles > 0:
                    ctx.set(dut.abort, 1)
                _, _, ready, busy = await ctx.tick().sample(dut.i.ready, dut.busy)
                ctx.set(dut.abort, 0)
                if valid and ready:
                    n += 1
                    valid = False
                cycles += 1
                if not busy:
                    break
                assert cycles < limit, f"the loader hangs ({cycles} cycles)"
            ctx.set(dut.i.valid, 0)
            n_words = min(dut.image_data.depth, -(-len(data) // wb))
            words = [ctx.get(dut.image_data[j]) for j in range(n_words)]
            desc = [ctx.get(dut.desc_data_mem[j])
                    for j in range(min(dut.desc_data_mem.depth, 8 * DESC_WORDS))]
            results.append((ctx.get(dut.status), ctx.get(dut.loaded), cycles, words, desc,
                            ctx.get(dut.resident)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def check_good(cfg, data, result):
    status, loaded, cycles, words, desc, resident = result
    assert status == LoadError.NONE
    assert loaded
    assert words == image_words(data, cfg.image_word_bytes)
    image = read_image(data)
    assert resident == resident_fits(cfg, image)
    for i, expected in enumerate(descriptor_words(image, cfg)):
        assert desc[i * DESC_WORDS:(i + 1) * DESC_WORDS] == expected, f"layer {i}"
    # The codebooks, tables and streams are where the descriptors say.
    raw = bytes(data)
    for layer, d in zip(image.layers, descriptor_words(image), strict=True):
        k = len(layer.codebook)
        cb = raw[d[DescWord.CODEBOOK_ADDR]:d[DescWord.CODEBOOK_ADDR] + k * image.bw // 8]
        assert np.array_equal(np.frombuffer(cb, "<i1" if image.bw == 8 else "<i2"),
                              layer.codebook)
        t = d[DescWord.TABLE_ADDR]
        words16 = struct.unpack_from(f"<{layer.table.max_len + len(layer.table.symbols)}H",
                                     raw, t)
        assert words16 == layer.table.counts + layer.table.symbols
        s = d[DescWord.STREAMS_ADDR]
        assert raw[s:s + d[DescWord.STREAMS_BYTES]] == b"".join(layer.streams)


@pytest.mark.parametrize("bw", [8, 16])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("latency", [1, 2])
def test_good_image(bw, seed, latency):
    """(``latency``: the image buffer's ``image_read_latency``: 2 registers its inputs, so
    every byte the parse reads back arrives a clock later)"""
    cfg = config(bw, image_read_latency=latency)
    data = write_image(random_image(seed, bw))
    (result,) = load(ImageLoader(cfg), [(data, True, None)], seed=seed)
    check_good(cfg, data, result)


@pytest.mark.parametrize("changes,fits", [
    ({}, True),
    ({"max_table_symbols": 32}, False),  # 45 symbols, at most 20 a layer
    ({"max_index_bits": 3}, False),  # 17 codebook entries, at most 8 a layer
    ({"max_channels": 18}, False),  # 19 channels, at most 7 a layer
    ({"max_channels": 19}, True),
    ({"resident_tables": False}, False),  # (the bases are not summed: 0)
])
def test_resident(changes, fits):
    """``resident``: every layer's symbols, codebook entries and channels fit side by side
    (``resident_fits``), the bases the descriptors give (``check_good``)."""
    cfg = config(8, **changes)
    data = write_image(random_image(0, 8))
    assert resident_fits(cfg, read_image(data)) == fits
    (result,) = load(ImageLoader(cfg), [(data, True, None)], seed=5)
    check_good(cfg, data, result)
    assert result[-1] == fits


def _bad_images(data: bytes) -> list:
    """(name, image bytes, last marker, abort after, expected error)."""
    image = read_image(data)
    n = len(image.layers)
    sec0 = 20 + 32 * n  # layer 0's section
    t0 = sec0 + len(image.layers[0].codebook)  # its Huffman table's L byte (bw 8)
    counts0 = image.layers[0].table.counts
    over = patch(data, t0 + 1, "<H", counts0[0] + 1)  # one more 1-bit code
    incomplete = patch(data, t0 + 1 + 2 * (len(counts0) - 1), "<H", counts0[-1] - 1)
    n_sym = len(image.layers[0].table.symbols)
    sym0 = t0 + 1 + 2 * len(counts0)
    big_symbol = patch(data, sym0 + 2 * (n_sym - 1), "<H", 0xFFFF)
    return [
        ("magic", patch(data, 0, "4s", b"ESPX"), True, None, LoadError.MAGIC),
        ("version", patch(data, 4, "B", 2), True, None, LoadError.VERSION),
        ("crc", data[:-1] + bytes([data[-1] ^ 1]), True, None, LoadError.CRC),
        ("flipped", data[:100] + bytes([data[100] ^ 4]) + data[101:], True, None,
         LoadError.CRC),
        ("truncated", data, True, len(data) // 2, LoadError.TRUNCATED),
        ("short", recrc(data[:-10]), True, None, LoadError.TRUNCATED),
        ("trailing", data, False, None, LoadError.LENGTH),
        ("tiny size", patch(data, 16, "<I", 20), True, None, LoadError.LENGTH),
        ("bw", patch(data, 5, "B", 12), True, None, LoadError.HEADER),
        ("kind", patch(data, 20, "B", 3), True, None, LoadError.ENTRY),
        ("section sizes", patch(data, 20 + 28, "<I",
                                struct.unpack_from("<I", data, 48)[0] + 1), True, None,
         LoadError.SECTIONS),
        ("over-subscribed", over, True, None, LoadError.TABLE),
        ("incomplete", incomplete, True, None, LoadError.TABLE),
        ("symbol range", big_symbol, True, None, LoadError.TABLE),
    ]


@pytest.mark.parametrize("latency", [1, 2])
def test_bad_images_then_good(latency):
    cfg = config(8, image_read_latency=latency)
    data = write_image(random_image(3, 8))
    cases = _bad_images(data)
    for name, bad, *_ in cases:
        if name in ("truncated", "trailing"):
            continue
        with pytest.raises(ValueError):
            read_image(bad)
    dut = ImageLoader(cfg)
    loads = [(bad, last, abort, None) for _, bad, last, abort, _ in cases] + [(data, True, None)]
    results = load(dut, [x[:3] for x in loads], seed=4)
    # load() fails any load that takes more than 40 clocks a byte (+2000): none hangs.
    for (name, *_, expected), (status, loaded, *_) in zip(cases, results, strict=False):
        assert status == expected, name
        assert not loaded, name
    check_good(cfg, data, results[-1])


@pytest.mark.parametrize("change,expected", [
    (dict(image_bytes=256), LoadError.CAP_IMAGE),
    (dict(max_layers=2), LoadError.CAP_LAYERS),
    (dict(max_fan_in=23), LoadError.CAP_FAN_IN),
    (dict(max_index_bits=2), LoadError.CAP_CODEBOOK),
    (dict(max_run_bits=2), LoadError.CAP_RUN_BITS),
    (dict(max_code_len=3), LoadError.CAP_CODE_LEN),
    (dict(max_table_symbols=16), LoadError.CAP_TABLE),
    (dict(bw=16), LoadError.CAP_BW),
    # Both in layer 0's entry: run_bits is reported, as the loader always has.
    (dict(max_index_bits=2, max_run_bits=1), LoadError.CAP_RUN_BITS),
])
def test_capacity(change, expected):
    """The image is valid but exceeds the build: check_image and the loader both refuse.
    (Image 5's layers: fan-in up to 24, K up to 8, run_bits up to 3, codes up to 6 bits,
    tables up to 22 symbols; 4 layers; 8 bits; layer 0: K 7, run_bits 2.)"""
    cfg = dataclasses.replace(SMALL, **{"acc_width": 48, "image_bytes": 1024, **change})
    data = write_image(random_image(5, 8))
    with pytest.raises(ValueError):
        cfg.check_image(read_image(data), len(data))
    (result,) = load(ImageLoader(cfg), [(data, True, None)], seed=1, stall=0.1)
    assert result[0] == expected
    assert not result[1]


@pytest.mark.parametrize("in_c,kernel,expected", [
    (0x8000, (128, 4), LoadError.CAP_FAN_IN),  # 2^24: 0 from a multiplier that wraps
    (0xFFFF, (0, 255), LoadError.NONE),  # 0, although in_c · kernel_w saturates
])
def test_fan_in_saturates(in_c, kernel, expected):
    """The fan-in in_c · kernel_h · kernel_w (layer 0 here) comes from a narrow multiplier
    that saturates: a product above max_fan_in is refused however large, and a zero factor
    still gives 0 (the hardware does not check the geometry, so that image loads)."""
    cfg = config(8)
    data = write_image(random_image(3, 8))
    bad = patch(patch(data, 20 + 8, "<H", in_c), 20 + 4, "<H", kernel[0] | kernel[1] << 8)
    (result,) = load(ImageLoader(cfg), [(bad, True, None)], seed=2)
    assert result[0] == expected
    if expected == LoadError.NONE:
        words = descriptor_words(read_image(data))
        words[0][DescWord.FAN_IN] = 0
        assert result[4][:len(words) * DESC_WORDS] == [w for layer in words for w in layer]


def test_alphabet_bounds():
    """A symbol must be below the alphabet A = 2^run_bits · K + 2: A - 1 loads (the
    hardware does not decode the streams), A does not; an entry whose alphabet exceeds
    65,536 (K 256, run_bits 8) is refused, one just below (K 255) is not for that reason."""
    cfg = config(8)
    data = write_image(random_image(5, 8))
    image = read_image(data)
    layer, d = image.layers[1], descriptor_words(image)[1]
    alphabet = (len(layer.codebook) << layer.run_bits) + 2
    last = d[DescWord.SYMBOLS_ADDR] + 2 * (d[DescWord.N_SYMBOLS] - 1)
    entry = 20 + 32 * 1

    def bits(k):  # index_bits 8, K k, run_bits 8
        return patch(patch(data, entry + 23, "<H", 8 | (k & 0xFF) << 8), entry + 25, "<H",
                     k >> 8 | 8 << 8)

    images = [patch(data, last, "<H", alphabet - 1), patch(data, last, "<H", alphabet),
              bits(256), bits(255)]
    results = load(ImageLoader(cfg), [(x, True, None) for x in images], seed=3)
    assert [r[0] for r in results[:3]] == [LoadError.NONE, LoadError.TABLE, LoadError.ENTRY]
    assert results[3][0] not in (LoadError.NONE, LoadError.ENTRY)


@pytest.mark.slow
@pytest.mark.skipif(not IMAGES, reason="no weights/images/*.img")
@pytest.mark.parametrize("path", IMAGES, ids=os.path.basename)
def test_shipped_image(path):
    with open(path, "rb") as f:
        data = f.read()
    cfg = get_preset("small")
    (result,) = load(ImageLoader(cfg), [(data, True, None)], stall=0.0)
    check_good(cfg, data, result)


def test_fuzz_structure():
    """Random byte changes with a recomputed CRC: the loader always finishes in bounded
    time, never refuses an image the reader accepts, and accepts a changed image only if
    the change is one it does not check (geometry, fractional lengths, bias values, stream
    contents)."""
    cfg = config(8)
    data = write_image(random_image(6, 8))
    rng = np.random.default_rng(7)
    images = []
    for _ in range(12):
        b = bytearray(data)
        at = int(rng.integers(5, len(data) - 4))
        b[at] = int(rng.integers(0, 256))
        images.append((recrc(bytes(b)), True, None))
    results = load(ImageLoader(cfg), images, seed=8, stall=0.0)
    for (image, _, _), (status, loaded, *_) in zip(images, results, strict=True):
        try:
            read_image(image)
            accepted = True
        except ValueError:
            accepted = False
        if accepted:
            assert status == LoadError.NONE and loaded
        else:
            assert loaded == (status == LoadError.NONE)


def test_above_is_greater_than_a_constant():
    """``_above(value, n)`` (the loader's ``value > n`` in plain logic) against Python's
    ``>``, for every value of a 6-bit signal and every ``n`` from 0 to past its range."""
    from amaranth.hdl import Module, Signal

    from hw.image_loader import _above

    value = Signal(6)
    limits = list(range(0, 70))
    outs = [Signal(name=f"above_{n}") for n in limits]
    m = Module()
    m.d.comb += [o.eq(_above(value, n)) for o, n in zip(outs, limits, strict=True)]

    async def bench(ctx):
        for v in range(64):
            ctx.set(value, v)
            got = [ctx.get(o) for o in outs]
            assert got == [int(v > n) for n in limits], v

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
