"""HuffmanDecoder against golden.decode.huffman_symbols, token by token, with random stalls,
in both its forms: a code a clock (the presets') and a bit a clock (``serial_decoder``)."""

import dataclasses
import glob
import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.decode import Alphabet, huffman_symbols
from hw.config import get_preset
from hw.huffman_decode import SERIAL_FIRST_BITS, DecodeError, HuffmanDecoder
from hw.layouts import SymbolEntry, TokenKind
from hw.symbol_split import table_items
from tests.imagegen import random_layer
from tests.streams import stream_get, stream_put
from weights.huffman import Table, code_lengths, encode
from weights.image import Kind, encode_streams, read_image_file

SMALL = get_preset("small")
SERIAL = dataclasses.replace(SMALL, serial_decoder=True)
STALL = 0.3
#: Both forms of the decoder, for ``pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)``.
FORMS = [SMALL, SERIAL]
FORM_IDS = ["parallel", "serial"]


def small_config(bw: int, serial: bool = False):
    """The small preset at data width ``bw`` (a wider accumulator for 16 bits), in the
    decoder's serial form with ``serial``."""
    return dataclasses.replace(SMALL, bw=bw, acc_width=max(SMALL.acc_width, 2 * bw + 10),
                               serial_decoder=serial)


# -- layers and their expected tokens (shared with test_hw_expand) -----------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One layer's decoding inputs: parameters, canonical table and channel streams."""

    fan_in: int
    k: int
    run_bits: int
    table: Table
    streams: tuple[bytes, ...]
    codebook: np.ndarray

    @property
    def alpha(self) -> Alphabet:
        return Alphabet(self.k, self.run_bits)

    @property
    def params(self) -> dict:
        return {"fan_in": self.fan_in, "codebook_size": self.k, "run_bits": self.run_bits,
                "max_len": self.table.max_len}

    def symbols(self) -> list[list[int]]:
        """Golden Huffman stage: each channel's symbols."""
        return [huffman_symbols(s, self.table, self.alpha, self.fan_in) for s in self.streams]

    def tokens(self) -> list[dict]:
        return tokens_of(self.symbols(), self.k, self.run_bits)

    def table_items(self) -> list[dict]:
        """The table as the decoder takes it (``SymbolSplit``'s output)."""
        return table_items(self.table.counts, self.table.symbols, self.k, self.run_bits)


def tokens_of(channels, k: int, run_bits: int) -> list[dict]:
    """The decoder's output for per-channel symbol lists: split symbols with first/last."""
    out = []
    for syms in channels:
        for j, s in enumerate(syms):
            out.append({**SymbolEntry.split(int(s), k, run_bits),
                        "first": int(j == 0), "last": int(j == len(syms) - 1)})
    return out


def case_from_layer(layer) -> Case:
    return Case(layer.fan_in, len(layer.codebook), layer.run_bits, layer.table,
                tuple(layer.streams), np.asarray(layer.codebook))


def imagegen_case(seed: int, *, bw=8, fan_in=40, out_c=4, index_bits=3, run_bits=2,
                  density=0.3, max_code_len=16) -> Case:
    """A random fully connected layer from tests/imagegen.py."""
    rng = np.random.default_rng(seed)
    return case_from_layer(random_layer(
        rng, Kind.FC, (fan_in, 1, 1), out_c, bw=bw, index_bits=index_bits, run_bits=run_bits,
        density=density, max_code_len=max_code_len))


def synthetic_case(seed: int, *, fan_in, out_c, k, run_bits, density, bw=8, max_len=16,
                   skew=False, last_pruned=False) -> Case:
    """A random layer. ``skew`` codes the whole alphabet with geometric frequencies in a
    random order, which forces codes up to ``max_len`` bits; ``last_pruned`` prunes every
    channel's last weight, so every channel ends with EOS."""
    rng = np.random.default_rng(seed)
    idx = np.where(rng.random((out_c, fan_in)) < density,
                   rng.integers(0, k, (out_c, fan_in)), -1)
    if last_pruned:
        idx[:, -1] = -1
    alpha = Alphabet(k, run_bits)
    chans = [alpha.encode_channel(row) for row in idx]
    if skew:
        freqs = np.zeros(alpha.size, dtype=np.int64)
        freqs[rng.permutation(alpha.size)] = 1 << np.arange(alpha.size)[::-1].clip(0, 60)
    else:
        freqs = np.bincount(np.concatenate([np.asarray(c, dtype=np.int64) for c in chans]),
                            minlength=alpha.size)
    table = Table.from_lengths(code_lengths(freqs, max_len))
    lo = -(1 << (bw - 1))
    codebook = rng.integers(lo, -lo, size=k)
    return Case(fan_in, k, run_bits, table, tuple(encode(c, table)[0] for c in chans),
                codebook)


def as_dict(const) -> dict:
    """A data.Const token as a dict of plain values (readable in assertion diffs)."""
    return {name: getattr(const, name) for name in ("kind", "run", "index", "first", "last")}


def expected_dicts(tokens) -> list[dict]:
    return [{**t, "kind": TokenKind(t["kind"])} for t in tokens]


# -- simulation -----------------------------------------------------------------------------

def simulate(cfg, params, items, data, n_tokens, *, seed=0, stall=STALL,
             cycles=None, vcd=None, base=None):
    """Run one layer through a HuffmanDecoder: (received tokens, final error). With
    ``base``, as on a resident image: the table is loaded with its symbols at ``base`` and
    no stream, then the layer starts again ``resident``, from the counts alone."""
    dut = HuffmanDecoder(cfg)
    rng = np.random.default_rng(seed) if stall else None
    got = []
    result = {}

    async def control(ctx):
        if base is not None:
            ctx.set(dut.params, {**params, "table_base": base, "resident": 0})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await stream_put(ctx, dut.table, items, rng=rng, stall=stall)
            await ctx.tick().repeat(cfg.max_code_len + 2)  # (the lengths past L)
            items_now = items[:params["max_len"]]
            ctx.set(dut.params, {**params, "table_base": base, "resident": 1})
        else:
            items_now = items
            ctx.set(dut.params, params)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        result["started"] = True
        await stream_put(ctx, dut.table, items_now, rng=rng, stall=stall)

    async def feed(ctx):
        while "started" not in result:
            await ctx.tick()
        await stream_put(ctx, dut.i, data, rng=rng, stall=stall)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, n_tokens, rng=rng, stall=stall,
                                    cycles=cycles))
        await ctx.tick().repeat(4)  # an error after the last token would show now
        result["error"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control, background=True)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(collect)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return [as_dict(t) for t in got], result["error"]


def check_case(case: Case, cfg=SMALL, *, seed=0, stall=STALL, vcd=None, base=None):
    expected = expected_dicts(case.tokens())
    got, error = simulate(cfg, case.params, case.table_items(), b"".join(case.streams),
                          len(expected), seed=seed, stall=stall, vcd=vcd, base=base)
    assert error == DecodeError.NONE
    for n, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"token {n}"


# -- correctness ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bw,index_bits,run_bits,density", [
    (8, 3, 2, 0.3),
    (16, 2, 0, 0.5),
    (8, 1, 1, 0.2),
    (16, 4, 3, 0.15),
])
@pytest.mark.parametrize("serial", [False, True], ids=FORM_IDS)
def test_imagegen_layers(seed, bw, index_bits, run_bits, density, serial, dump_vcd, tmp_path):
    case = imagegen_case(seed, bw=bw, index_bits=index_bits, run_bits=run_bits,
                         density=density)
    check_case(case, small_config(bw, serial), seed=seed,
               vcd=tmp_path / "huffman.vcd" if dump_vcd else None)


@pytest.mark.parametrize("seed,run_bits,k", [(0, 0, 16), (1, 1, 8), (2, 2, 5), (3, 3, 3)])
@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_long_codes(seed, run_bits, k, cfg):
    """Skewed frequencies over the whole alphabet: codes of every length up to 16 bits."""
    case = synthetic_case(seed, fan_in=24, out_c=3, k=k, run_bits=run_bits, density=0.4,
                          skew=True)
    assert case.table.max_len == 16
    check_case(case, cfg, seed=seed)


@pytest.mark.parametrize("max_len,k,run_bits", [(2, 1, 0), (5, 9, 1), (9, 9, 1)])
@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_length_limited(max_len, k, run_bits, cfg):
    case = synthetic_case(7, fan_in=20, out_c=3, k=k, run_bits=run_bits, density=0.4,
                          max_len=max_len, skew=True)
    assert case.table.max_len == max_len
    check_case(case, cfg, seed=max_len)


@pytest.mark.parametrize("density,run_bits", [(1.0, 0), (0.0, 0), (0.0, 3)])
@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_single_symbol_table(density, run_bits, cfg):
    """K = 1: only (run 0, index 0) when dense, only EOS when empty: a 1-bit code '0'."""
    case = synthetic_case(3, fan_in=13, out_c=5, k=1, run_bits=run_bits, density=density)
    assert case.table.counts == (1,)
    check_case(case, cfg, seed=5)


@pytest.mark.parametrize("which", ["imagegen", "long", "limited", "single", "empty"])
@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_resident_table(which, cfg):
    """A resident table: its symbols written at a base by an earlier load, the layer then
    decoded from the counts alone (decoding starts once they are in: the limits past L
    start at 2^l, except for the single 1-bit code, which waits for the recurrence)."""
    case = {
        "imagegen": lambda: imagegen_case(1, index_bits=3, run_bits=2, density=0.3),
        "long": lambda: synthetic_case(1, fan_in=24, out_c=3, k=8, run_bits=1, density=0.4,
                                       skew=True),
        "limited": lambda: synthetic_case(7, fan_in=20, out_c=3, k=9, run_bits=1,
                                          density=0.4, max_len=5, skew=True),
        "single": lambda: synthetic_case(3, fan_in=13, out_c=5, k=1, run_bits=0,
                                         density=1.0),
        "empty": lambda: synthetic_case(3, fan_in=13, out_c=5, k=1, run_bits=3, density=0.0),
    }[which]()
    base = SMALL.max_table_symbols - len(case.table.symbols) - 3
    check_case(case, cfg, seed=11, base=base)


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_resident_single_symbol_no_code(cfg):
    """A resident single-symbol table still refuses a '1' bit (its lengths past L = 1 are
    worked out before decoding starts)."""
    params = {"fan_in": 20, "codebook_size": 1, "run_bits": 0, "max_len": 1}
    error, cycles = watch_error(cfg, params, [1, 0], bytes([0x00, 0x10]), bound=60,
                                base=200)
    assert error == DecodeError.NO_CODE and cycles <= 15 + 16


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_full_index_and_run_width(cfg):
    """run_bits 8 (R = 255) with a fan-in above R + 1, so ZRUN fillers occur."""
    case = synthetic_case(4, fan_in=600, out_c=2, k=2, run_bits=8, density=0.01)
    assert any(TokenKind.ZRUN == t["kind"] for t in case.tokens())
    check_case(case, cfg, seed=4, stall=0.1)


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_run_matches_low_bits_of_remaining_fan_in(cfg):
    """The channel-end test compares a run with the low ``max_run_bits`` bits of the
    remaining fan-in and checks the high bits apart: a pair whose run equals those low
    bits while more than ``2^max_run_bits`` weights remain must not end the channel
    (fan-in 300: 299 left at the first symbol, 299 mod 256 = 43). Then runs of exactly
    the weights left (a pair of run 255, a ZRUN or EOS over the last 256)."""
    fan_in, k, run_bits = 300, 2, 8
    assert SMALL.max_run_bits == run_bits and fan_in - 1 >= 1 << run_bits
    idx = np.full((3, fan_in), -1)
    idx[:, 43] = [0, 1, 1]
    idx[0, fan_in - 1] = 1  # pair (255, 1) ends channel 0 with 255 left
    idx[2, 43 + 2] = 0  # channel 2: a run of 1, then 254 zeros to the end
    alpha = Alphabet(k, run_bits)
    chans = [alpha.encode_channel(row) for row in idx]
    freqs = np.bincount(np.concatenate([np.asarray(c, dtype=np.int64) for c in chans]),
                        minlength=alpha.size)
    table = Table.from_lengths(code_lengths(freqs, 16))
    case = Case(fan_in, k, run_bits, table, tuple(encode(c, table)[0] for c in chans),
                np.array([3, -5]))
    first = case.tokens()[0]
    assert first["kind"] == TokenKind.PAIR and first["run"] == 43 and not first["last"]
    check_case(case, cfg, seed=8, stall=0.2)
    check_case(case, cfg, seed=9, stall=0.0)


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_back_to_back_layers(cfg):
    """A second start loads a new table; nothing of the first layer leaks into it."""
    cases = [imagegen_case(11, run_bits=1),
             synthetic_case(12, fan_in=17, out_c=3, k=6, run_bits=3, density=0.5, skew=True)]
    dut = HuffmanDecoder(cfg)
    rng = np.random.default_rng(3)
    done = []

    async def bench(ctx):
        for n, case in enumerate(cases):
            while len(done) < n:
                await ctx.tick()
            ctx.set(dut.params, case.params)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await stream_put(ctx, dut.table, case.table_items(), rng=rng, stall=STALL)
            await stream_put(ctx, dut.i, b"".join(case.streams), rng=rng, stall=STALL)

    async def collect(ctx):
        for case in cases:
            expected = expected_dicts(case.tokens())
            received = await stream_get(ctx, dut.o, len(expected), rng=rng, stall=STALL)
            assert [as_dict(t) for t in received] == expected
            assert ctx.get(dut.error) == DecodeError.NONE
            done.append(case)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench, background=True)
    sim.add_testbench(collect)
    sim.run()


IMAGES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "weights", "images",
                                       "lenet300*.img")))


@pytest.mark.skipif(not IMAGES, reason="no weights/images/lenet300*.img yet")
@pytest.mark.parametrize("serial", [False, True], ids=FORM_IDS)
def test_real_image_layer(serial):
    """The smallest layer of the shipped LeNet-300-100 image (its last, fc3)."""
    image = read_image_file(IMAGES[0])
    layer = min(image.layers, key=lambda la: sum(map(len, la.streams)))
    cfg = small_config(image.bw, serial)
    cfg.check_layer(layer, image.bw)
    check_case(case_from_layer(layer), cfg, stall=0.1)


ALL_IMAGES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "weights",
                                           "images", "*.img")))


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_IMAGES, ids=os.path.basename)
def test_real_image_all_layers(path):
    """Every layer of every shipped image on the iCEBreaker build, unstalled: exact, a
    symbol a clock plus a clock per channel (and at most 2 % more: the input brings a byte
    a clock, and LeNet-5 fc1's codes average 7.6 bits, so runs of long codes drain the
    buffer and a code waits for its bits), and at least 0.95
    symbols per clock over the whole image (a layer of short channels, LeNet-5 conv1's 25
    weights each, is lower)."""
    image = read_image_file(path)
    cfg = get_preset("icebreaker")
    symbols = clocks = 0
    for layer in image.layers:
        cfg.check_layer(layer, image.bw)
        case = case_from_layer(layer)
        n = sum(map(len, case.symbols()))
        took = round(n / measure_throughput(case, cfg))
        base = n + len(case.streams) - 1
        print(f"{layer.kind.name} {layer.out_c}x{layer.fan_in}: {n} symbols, {took} clocks "
              f"({took - base} over symbols + channels - 1)")
        assert base <= took <= base + 0.02 * n
        symbols += n
        clocks += took
    assert symbols / clocks >= 0.95


# -- throughput -----------------------------------------------------------------------------

def measure_throughput(case: Case, cfg=SMALL) -> float:
    """Symbols per clock, unstalled, from the first token to the last (checked exact)."""
    cycles = []
    expected = expected_dicts(case.tokens())
    got, error = simulate(cfg, case.params, case.table_items(), b"".join(case.streams),
                          len(expected), stall=0.0, cycles=cycles)
    assert error == DecodeError.NONE and got == expected
    return len(expected) / (cycles[-1] - cycles[0] + 1)


def test_throughput_one_symbol_per_clock():
    """Unstalled, the decoder sustains >= 0.95 symbols per clock (bits per code <= 8)."""
    case = imagegen_case(21, fan_in=200, out_c=3, index_bits=3, run_bits=3, density=0.4)
    bits = 8 * sum(map(len, case.streams)) / sum(map(len, case.symbols()))
    assert bits < 8
    assert measure_throughput(case) >= 0.95


def unstalled_clocks(case: Case, cfg) -> int:
    """A form's clocks from a layer's first token to its last (both counted), unstalled:
    a clock per symbol but the first's (the parallel form), or for every code but the
    first a clock per bit after a first step of the table's shortest length (the serial
    form), and one per channel end but the last's (its
    ``cancel``: the code decoded behind a channel's last symbol is dropped, and the serial
    form takes no bit in that clock)."""
    symbols = [s for syms in case.symbols() for s in syms]
    if cfg.serial_decoder:
        # the first step takes the shortest length's bits (at most SERIAL_FIRST_BITS),
        # each later one a bit
        lengths = case.table.lengths()
        j = min(min(int(n) for n in lengths if n), SERIAL_FIRST_BITS)
        per_code = [int(lengths[s]) - j + 1 for s in symbols]
    else:
        per_code = [1] * len(symbols)
    return 1 + sum(per_code[1:]) + len(case.streams) - 1


# The shortest codes: 2, 3, 4 and 5 bits (the serial form's first step takes 2, 3, 4 and,
# capped at SERIAL_FIRST_BITS, 4 bits).
_THROUGHPUT_CASES = [
    (5, dict(fan_in=12, out_c=12, k=2, run_bits=2, density=0.25, last_pruned=True)),
    (6, dict(fan_in=30, out_c=5, k=4, run_bits=2, density=0.5)),
    (9, dict(fan_in=40, out_c=4, k=32, run_bits=1, density=1.0)),
    (8, dict(fan_in=60, out_c=3, k=64, run_bits=1, density=1.0)),
]
# (codes of up to 16 bits, the shortest of 1 bit: the serial form only, as a byte a clock of
# input cannot keep the parallel form at a code a clock on them)
_LONG_CODES = (7, dict(fan_in=24, out_c=3, k=8, run_bits=1, density=0.4, skew=True))
# A build whose longest code is 3 bits (the serial form's first step at most 3 bits wide).
_SHORT_BUILD = (10, dict(fan_in=20, out_c=4, k=2, run_bits=1, density=0.6, max_len=3))


@pytest.mark.parametrize("seed, kw, cfg", [
    *((seed, kw, cfg) for cfg in FORMS for seed, kw in _THROUGHPUT_CASES),
    (*_LONG_CODES, SERIAL),
    (*_SHORT_BUILD, dataclasses.replace(SERIAL, max_code_len=3)),
], ids=[*(f"{seed}-{form}" for form in FORM_IDS for seed, _ in _THROUGHPUT_CASES),
        "7-long-serial", "10-max3-serial"])
def test_throughput_exact(seed, kw, cfg):
    """Unstalled, exactly a symbol a clock (the parallel form) or a bit a clock (the serial
    form), plus one clock per channel end, whether the channel ends with EOS or not."""
    case = synthetic_case(seed, **kw)
    expected = expected_dicts(case.tokens())
    cycles = []
    got, error = simulate(cfg, case.params, case.table_items(), b"".join(case.streams),
                          len(expected), stall=0.0, cycles=cycles)
    assert error == DecodeError.NONE and got == expected
    assert cycles[-1] - cycles[0] + 1 == unstalled_clocks(case, cfg)


# -- errors ---------------------------------------------------------------------------------

def items_of(params, words) -> list[dict]:
    """Raw table words (counts, then symbols) as the decoder takes them."""
    n = params["max_len"]
    return table_items(words[:n], words[n:], params["codebook_size"], params["run_bits"])


def watch_error(cfg, params, table_words, data, *, bound: int, base=None):
    """Run until the decoder reports an error; return (error, cycles after the table load).
    ``table_words`` are raw (counts, then symbols), split here as ``SymbolSplit`` would.
    ``base``: as ``simulate``'s (the table loaded first, then resident)."""
    dut = HuffmanDecoder(cfg)
    result = {}
    items = items_of(params, table_words)

    async def control(ctx):
        if base is not None:
            ctx.set(dut.params, {**params, "table_base": base, "resident": 0})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await stream_put(ctx, dut.table, items)
            await ctx.tick().repeat(cfg.max_code_len + 2)
            ctx.set(dut.params, {**params, "table_base": base, "resident": 1})
            items_now = items[:params["max_len"]]
        else:
            ctx.set(dut.params, params)
            items_now = items
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        result["started"] = True
        await stream_put(ctx, dut.table, items_now)
        result["loaded"] = True

    async def feed(ctx):
        while "started" not in result:
            await ctx.tick()
        await stream_put(ctx, dut.i, data)

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while "loaded" not in result or cycle < bound:
            await ctx.tick()
            if "loaded" in result:
                cycle += 1
            if ctx.get(dut.error) != DecodeError.NONE:
                break
        result["error"] = ctx.get(dut.error)
        result["cycles"] = cycle
        assert not ctx.get(dut.o.valid)  # the decoder stopped

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control, background=True)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(watch)
    sim.run()
    return result["error"], result["cycles"]


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_error_no_code(cfg):
    """A single-symbol table codes only '0': a '1' bit is an error, not a hang."""
    params = {"fan_in": 20, "codebook_size": 1, "run_bits": 0, "max_len": 1}
    error, cycles = watch_error(cfg, params, [1, 0], bytes([0x00, 0x10]), bound=60)
    # the lengths 2..16 past L = 1 take 15 clocks after the table's last word
    assert error == DecodeError.NO_CODE and cycles <= 15 + 16


def past_fan_in_case(symbols, fan_in, run_bits):
    alpha = Alphabet(1, run_bits)
    table = Table.from_lengths(code_lengths(np.ones(alpha.size, dtype=np.int64), 16))
    params = {"fan_in": fan_in, "codebook_size": 1, "run_bits": run_bits,
              "max_len": table.max_len}
    return params, list(table.counts) + list(table.symbols), encode(symbols, table)[0]


@pytest.mark.parametrize("symbols,fan_in", [
    ([2, 1], 4),  # pair(run 2) at 0..2, then pair(run 1) lands on position 4 = N
    ([4, 4], 5),  # ZRUN covers 0..3, a second ZRUN passes N = 5
])
@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_error_past_fan_in(symbols, fan_in, cfg):
    params, words, data = past_fan_in_case(symbols, fan_in, run_bits=2)
    error, cycles = watch_error(cfg, params, words, data, bound=60)
    # the lengths past L take max_code_len - L clocks after the table's last word
    assert error == DecodeError.PAST_FAN_IN
    assert cycles <= SMALL.max_code_len - params["max_len"] + 8


@pytest.mark.parametrize("data,expected", [
    # ZRUN (0..3), ZRUN past N = 5, then '1': the memory stage finds the run past the
    # fan-in in the clock stage 1 finds no code, and NO_CODE is the one reported
    (bytes([0b0010_0000]), DecodeError.NO_CODE),
    # the same with a '0' third: the run past the fan-in alone
    (bytes([0b0000_0000]), DecodeError.PAST_FAN_IN),
], ids=["both", "past-fan-in-alone"])
@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_error_past_fan_in_and_no_code(data, expected, cfg):
    """Both errors in one clock: NO_CODE is reported (``DecodeError``'s order, kept since
    the error became one flag a cause); each flag alone gives its own error."""
    alpha = Alphabet(1, 2)  # R = 3: a ZRUN covers 4 weights
    params = {"fan_in": 5, "codebook_size": 1, "run_bits": 2, "max_len": 1}
    # a single-symbol table: the one 1-bit code '0' is a ZRUN, and '1' is no code
    error, cycles = watch_error(cfg, params, [1, alpha.zrun], data, bound=60)
    assert error == expected
    assert cycles <= SMALL.max_code_len - params["max_len"] + 8


@pytest.mark.parametrize("params", [
    {"fan_in": SMALL.max_fan_in + 1, "codebook_size": 1, "run_bits": 0, "max_len": 1},
    {"fan_in": 4, "codebook_size": 1, "run_bits": 0, "max_len": 0},
    {"fan_in": 4, "codebook_size": 0, "run_bits": 0, "max_len": 1},
])
@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_error_bad_params(params, cfg):
    error, _ = watch_error(cfg, params, [1, 0], b"\x00", bound=10)
    assert error == DecodeError.TABLE


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_error_table_too_big(cfg):
    cfg = dataclasses.replace(cfg, max_table_symbols=4)
    params = {"fan_in": 4, "codebook_size": 4, "run_bits": 0, "max_len": 3}
    error, _ = watch_error(cfg, params, [1, 1, 4, 0, 1, 2, 3, 4, 5], b"\x00", bound=10)
    assert error == DecodeError.TABLE


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_error_symbol_outside_alphabet(cfg):
    params = {"fan_in": 4, "codebook_size": 1, "run_bits": 0, "max_len": 1}
    error, _ = watch_error(cfg, params, [2, 0, 3], b"\x00", bound=10)  # A = 3
    assert error == DecodeError.TABLE


@pytest.mark.parametrize("cfg", FORMS, ids=FORM_IDS)
def test_restart_clears_error(cfg):
    """After an error, start and a good layer decode normally."""
    case = imagegen_case(5, fan_in=16, out_c=2)
    expected = expected_dicts(case.tokens())
    dut = HuffmanDecoder(cfg)
    got = []

    async def bench(ctx):
        ctx.set(dut.params, {**case.params, "fan_in": SMALL.max_fan_in + 1})
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick()
        assert ctx.get(dut.error) == DecodeError.TABLE
        ctx.set(dut.params, case.params)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert ctx.get(dut.error) == DecodeError.NONE
        await stream_put(ctx, dut.table, case.table_items())
        await stream_put(ctx, dut.i, b"".join(case.streams))

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, len(expected)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_testbench(collect)
    sim.run()
    assert [as_dict(t) for t in got] == expected


# -- the software face of the token layout --------------------------------------------------

@pytest.mark.parametrize("k,run_bits", [(1, 0), (3, 2), (7, 3), (256, 8)])
def test_split_matches_alphabet(k, run_bits):
    alpha = Alphabet(k, run_bits)
    for s in range(alpha.size):
        f = SymbolEntry.split(s, k, run_bits)
        if s == alpha.zrun:
            assert f["kind"] == TokenKind.ZRUN
        elif s == alpha.eos:
            assert f["kind"] == TokenKind.EOS
        else:
            assert f["kind"] == TokenKind.PAIR and alpha.pair(f["run"], f["index"]) == s
    with pytest.raises(ValueError, match="outside the alphabet"):
        SymbolEntry.split(alpha.size, k, run_bits)


def test_encode_streams_table_is_decodable():
    """encode_streams' table for the test layers is what the decoder loads."""
    rng = np.random.default_rng(0)
    idx = np.where(rng.random((2, 10)) < 0.5, rng.integers(0, 3, (2, 10)), -1)
    table, streams = encode_streams(idx, 3, 1)
    case = Case(10, 3, 1, table, streams, np.arange(3))
    check_case(case, stall=0.0)
