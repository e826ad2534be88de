"""WeightUnit (loader + stream fetch + decode lanes) against Layer.weights() for every layer."""

import dataclasses
import glob
import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.config import get_preset
from hw.image_loader import LoadError
from hw.weight_unit import WeightUnit
from tests.imagegen import random_image
from tests.streams import stream_get, stream_put
from weights.image import read_image, write_image

SMALL = get_preset("small")
IMAGES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "weights", "images",
                                       "*.img")))


def config(bw: int, **changes):
    return dataclasses.replace(SMALL, bw=bw, acc_width=max(SMALL.acc_width, 2 * bw + 10),
                               **changes)


def run_unit(cfg, data: bytes, *, seed=0, stall=0.2, layers=None):
    """Load ``data`` and decode ``layers`` (default: all); check every lane's weights."""
    image = read_image(data)
    dut = WeightUnit(cfg)
    lanes = cfg.decode_lanes
    rng = np.random.default_rng(seed) if stall else None
    layers = range(len(image.layers)) if layers is None else layers
    got = {}

    # One testbench per lane collects its weights; `plan` tells them which layer is next.
    plan = []

    async def control(ctx):
        ctx.set(dut.load, 1)
        await ctx.tick()
        ctx.set(dut.load, 0)
        await stream_put(ctx, dut.i, [{"data": b, "last": int(n == len(data) - 1)}
                                      for n, b in enumerate(data)], rng=rng, stall=stall)
        while ctx.get(dut.load_busy):
            await ctx.tick()
        assert ctx.get(dut.status) == LoadError.NONE
        assert ctx.get(dut.loaded)
        for n in layers:
            ctx.set(dut.layer, n)
            ctx.set(dut.decode, 1)
            await ctx.tick()
            ctx.set(dut.decode, 0)
            plan.append(n)
            await ctx.tick()
            while ctx.get(dut.busy):
                assert not ctx.get(dut.error), f"layer {n}"
                await ctx.tick()
            assert not ctx.get(dut.error), f"layer {n}"
            while any(len(got.get((n, j), ())) < 1 for j in range(lanes)):
                await ctx.tick()
        plan.append(None)

    def lane(j):
        async def collect(ctx):
            k = 0
            while True:
                while len(plan) <= k:
                    await ctx.tick()
                n = plan[k]
                if n is None:
                    return
                layer = image.layers[n]
                count = len(range(j, layer.out_c, lanes)) * layer.fan_in
                got[(n, j)] = [await stream_get(ctx, dut.o[j], count, rng=rng, stall=stall,
                                                timeout=20_000)]
                k += 1
        return collect

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    for j in range(lanes):
        sim.add_testbench(lane(j))
    sim.run()
    for n in layers:
        expected = image.layers[n].weights()
        for j in range(lanes):
            (received,) = got[(n, j)]
            chans = list(range(j, image.layers[n].out_c, lanes))
            want = expected[chans].reshape(-1)
            assert [w.weight for w in received] == want.tolist(), f"layer {n} lane {j}"
            fan_in = image.layers[n].fan_in
            assert [w.first for w in received] == [int(k % fan_in == 0)
                                                   for k in range(len(want))]
            assert [w.last for w in received] == [int(k % fan_in == fan_in - 1)
                                                  for k in range(len(want))]


@pytest.mark.parametrize("bw,seed", [(8, 0), (16, 1)])
def test_random_image(bw, seed):
    run_unit(config(bw), write_image(random_image(seed, bw)), seed=seed)


def test_one_lane_and_four_lanes():
    data = write_image(random_image(2, 8))
    run_unit(config(8, decode_lanes=1), data, seed=2, layers=[1, 2])
    run_unit(config(8, cols=4, decode_lanes=4), data, seed=3, layers=[0, 3])


@pytest.mark.slow
@pytest.mark.skipif(not IMAGES, reason="no weights/images/*.img")
@pytest.mark.parametrize("path", IMAGES, ids=os.path.basename)
def test_shipped_image(path):
    with open(path, "rb") as f:
        data = f.read()
    run_unit(SMALL, data, stall=0.0)
