"""DecodePath against golden.decode.decode_channel for every channel of a layer (dense mode)
and against the layer's weights, non-zero by non-zero (sparse mode)."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.decode import decode_channel
from hw.decode_path import DecodePath
from tests.imagegen import random_image
from tests.streams import stream_get, stream_put
from tests.test_hw_expand import sparse_reference
from tests.test_hw_huffman import (
    IMAGES,
    SMALL,
    STALL,
    case_from_layer,
    imagegen_case,
    small_config,
    synthetic_case,
)
from weights.image import read_image_file


def lane_inputs(case, lanes, *, sparse=False):
    """Lane j's bytes (streams j, j+lanes, ...) and expected entries (dense: every weight
    with k, first and last; sparse: ``sparse_reference``)."""
    data, weights = [], []
    for j in range(lanes):
        chans = range(j, len(case.streams), lanes)
        data.append(b"".join(case.streams[o] for o in chans))
        if sparse:
            weights.append(sparse_reference([case.symbols()[o] for o in chans], case.alpha,
                                            case.fan_in, case.codebook))
            continue
        expected = []
        for o in chans:
            w = decode_channel(case.streams[o], case.table, case.alpha, case.fan_in,
                               case.codebook)
            expected.extend({"weight": int(v), "k": k, "first": int(k == 0),
                             "last": int(k == case.fan_in - 1)} for k, v in enumerate(w))
        weights.append(expected)
    return data, weights


def split_channels(entries) -> list[list]:
    """A lane's entries cut into channels at each ``last``."""
    chans, cur = [], []
    for e in entries:
        cur.append(e)
        if e["last"]:
            chans.append(cur)
            cur = []
    assert not cur, "entries after the last channel's end"
    return chans


def check_sparse_channel(entries, weights, what=""):
    """One channel's sparse entries against its dense weights (``Layer.weights()`` row):
    every non-zero weight at its position, positions increasing, ``first`` on the first
    entry only, ``last`` on the last only, and the last at ``k = N - 1``. (Zero entries are
    allowed: a codebook entry 0, or the end marker.)"""
    n = len(weights)
    ks = [e["k"] for e in entries]
    assert entries, f"{what}: no entries"
    assert ks == sorted(set(ks)) and ks[-1] == n - 1, f"{what}: positions {ks}"
    dense = np.zeros(n, dtype=np.int64)
    dense[ks] = [e["weight"] for e in entries]
    assert dense.tolist() == list(weights), f"{what}: weights"
    assert [e["first"] for e in entries] == [1] + [0] * (len(entries) - 1), what
    assert [e["last"] for e in entries] == [0] * (len(entries) - 1) + [1], what


def run_path(cfg, case, *, seed=0, stall=STALL, cycles=None, sparse=False):
    """Decode ``case`` with lanes dealt channels in turn; check every lane's entries;
    return them (lists of dicts)."""
    dut = DecodePath(cfg)
    lanes = cfg.decode_lanes
    rng = np.random.default_rng(seed) if stall else None
    data, expected = lane_inputs(case, lanes, sparse=sparse)
    got = [None] * lanes
    result = {}

    async def control(ctx):
        ctx.set(dut.params, case.params)
        ctx.set(dut.channels, len(case.streams))
        ctx.set(dut.sparse, sparse)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert not ctx.get(dut.done)
        await stream_put(ctx, dut.codebook, [int(c) for c in case.codebook], rng=rng,
                         stall=stall)

    async def table(ctx):
        await ctx.tick()
        await stream_put(ctx, dut.table, list(case.table.counts) + list(case.table.symbols),
                         rng=rng, stall=stall)

    def feeder(j):
        async def feed(ctx):
            await stream_put(ctx, dut.i[j], data[j], rng=rng, stall=stall)
        return feed

    def collector(j):
        async def collect(ctx):
            lane_cycles = [] if cycles is not None else None
            got[j] = await stream_get(ctx, dut.o[j], len(expected[j]), rng=rng, stall=stall,
                                      cycles=lane_cycles)
            if cycles is not None:
                cycles.extend(lane_cycles)
        return collect

    async def finish(ctx):
        await ctx.tick()
        while not ctx.get(dut.done):
            assert not ctx.get(dut.error)
            await ctx.tick()
        await ctx.tick()  # the collectors see the last transfer's edge too
        assert all(g is not None for g in got), "done before every lane's last weight"
        result["error"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control, background=True)
    sim.add_testbench(table, background=True)
    for j in range(lanes):
        sim.add_testbench(feeder(j), background=True)
        sim.add_testbench(collector(j))
    sim.add_testbench(finish)
    sim.run()
    assert not result["error"]
    lanes_got = []
    for j in range(lanes):
        received = [{"weight": w.weight, "k": w.k, "first": w.first, "last": w.last}
                    for w in got[j]]
        assert received == expected[j], f"lane {j}"
        lanes_got.append(received)
    return lanes_got


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bw,run_bits,out_c", [(8, 2, 5), (16, 0, 4), (8, 3, 1)])
def test_two_lanes(seed, bw, run_bits, out_c):
    case = imagegen_case(seed, bw=bw, fan_in=20, out_c=out_c, run_bits=run_bits)
    run_path(small_config(bw), case, seed=seed)


def test_three_lanes_long_codes():
    cfg = dataclasses.replace(SMALL, cols=4, decode_lanes=3)
    case = synthetic_case(6, fan_in=15, out_c=7, k=5, run_bits=2, density=0.4, skew=True)
    assert case.table.max_len == 16
    run_path(cfg, case, seed=6)


def test_one_lane_single_symbol():
    cfg = dataclasses.replace(SMALL, decode_lanes=1)
    case = synthetic_case(2, fan_in=9, out_c=3, k=1, run_bits=0, density=1.0)
    run_path(cfg, case, seed=2)


@pytest.mark.skipif(not IMAGES, reason="no weights/images/lenet300*.img yet")
def test_real_image_layer():
    image = read_image_file(IMAGES[0])
    layer = min(image.layers, key=lambda la: la.fan_in * la.out_c)
    run_path(small_config(image.bw), case_from_layer(layer), stall=0.1)


@pytest.mark.parametrize("seed,layer", [(0, 2), (1, 3), (2, 1)])
def test_sparse_random_image_layer(seed, layer):
    """Sparse mode on a layer of a random image: every lane's entries, channel by channel,
    against ``Layer.weights()``."""
    image = random_image(seed)
    la = image.layers[layer]
    lanes = SMALL.decode_lanes
    got = run_path(SMALL, case_from_layer(la), seed=seed, sparse=True)
    weights = la.weights()
    for j in range(lanes):
        chans = split_channels(got[j])
        assert len(chans) == len(range(j, la.out_c, lanes))
        for c, entries in zip(range(j, la.out_c, lanes), chans, strict=True):
            check_sparse_channel(entries, weights[c], f"lane {j} channel {c}")


def test_throughput_one_weight_per_clock_per_lane():
    case = imagegen_case(9, fan_in=40, out_c=4, run_bits=2, density=0.3)
    cycles = []
    run_path(SMALL, case, stall=0.0, cycles=cycles)
    weights = 40 * 4
    assert max(cycles) - min(cycles) + 1 <= weights // SMALL.decode_lanes + 2



def test_symbol_outside_alphabet():
    """The split flags a symbol outside the alphabet and the decoders refuse it."""
    dut = DecodePath(SMALL)
    result = {}

    async def bench(ctx):
        ctx.set(dut.params, {"fan_in": 4, "codebook_size": 1, "run_bits": 0, "max_len": 1})
        ctx.set(dut.channels, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert not ctx.get(dut.error)
        await stream_put(ctx, dut.table, [2, 0, 3])  # A = 3
        await ctx.tick().repeat(8)
        result["error"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert result["error"]
