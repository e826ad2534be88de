"""DecodePath against golden.decode.decode_channel for every channel of a layer."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.decode import decode_channel
from hw.decode_path import DecodePath
from tests.streams import stream_get, stream_put
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


def lane_inputs(case, lanes):
    """Lane j's bytes (streams j, j+lanes, ...) and expected weights with first/last."""
    data, weights = [], []
    for j in range(lanes):
        chans = range(j, len(case.streams), lanes)
        data.append(b"".join(case.streams[o] for o in chans))
        expected = []
        for o in chans:
            w = decode_channel(case.streams[o], case.table, case.alpha, case.fan_in,
                               case.codebook)
            expected.extend({"weight": int(v), "first": int(k == 0),
                             "last": int(k == case.fan_in - 1)} for k, v in enumerate(w))
        weights.append(expected)
    return data, weights


def run_path(cfg, case, *, seed=0, stall=STALL, cycles=None):
    dut = DecodePath(cfg)
    lanes = cfg.decode_lanes
    rng = np.random.default_rng(seed) if stall else None
    data, expected = lane_inputs(case, lanes)
    got = [None] * lanes
    result = {}

    async def control(ctx):
        ctx.set(dut.params, case.params)
        ctx.set(dut.channels, len(case.streams))
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
    for j in range(lanes):
        received = [{"weight": w.weight, "first": w.first, "last": w.last} for w in got[j]]
        assert received == expected[j], f"lane {j}"


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


def test_throughput_one_weight_per_clock_per_lane():
    case = imagegen_case(9, fan_in=40, out_c=4, run_bits=2, density=0.3)
    cycles = []
    run_path(SMALL, case, stall=0.0, cycles=cycles)
    weights = 40 * 4
    assert max(cycles) - min(cycles) + 1 <= weights // SMALL.decode_lanes + 2
