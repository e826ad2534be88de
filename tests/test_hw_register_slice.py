"""RegisterSlice: every item through in order, at full rate when nothing stalls, with
random stalls on both sides, and only registers at its outputs."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.register_slice import RegisterSlice
from tests.streams import stream_get, stream_put


def run(items, *, stall, seed=0):
    dut = RegisterSlice(16)
    rng = np.random.default_rng(seed)
    got, cycles = [], []

    async def feed(ctx):
        await stream_put(ctx, dut.i, items, rng=rng if stall else None, stall=stall)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, len(items), rng=rng if stall else None,
                                    stall=stall, cycles=cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(collect)
    sim.run()
    return [int(v) for v in got], cycles


@pytest.mark.parametrize("seed", range(4))
def test_in_order_under_stalls(seed):
    items = [int(v) for v in np.random.default_rng(seed).integers(0, 1 << 16, 300)]
    got, _ = run(items, stall=0.4, seed=seed)
    assert got == items


def test_full_rate():
    items = list(range(100))
    got, cycles = run(items, stall=0.0)
    assert got == items
    assert cycles[-1] - cycles[0] == len(items) - 1


def test_outputs_are_registers():
    """``i.ready``, ``o.valid`` and ``o.payload`` do not depend combinationally on any
    input: a change of the inputs alone, between clock edges, moves none of them."""
    dut = RegisterSlice(8)

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 5)
        await ctx.tick()
        ctx.set(dut.o.ready, 0)
        await ctx.tick()
        await ctx.tick()  # the output holds 5, the skid register the next 5
        before = (ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.o.payload))
        for ready, valid, payload in ((1, 0, 9), (0, 1, 3), (1, 1, 7)):
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, payload)
            await ctx.delay(1e-8)
            assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid),
                    ctx.get(dut.o.payload)) == before

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_clear_drops_what_it_holds():
    """With the output stalled and both registers full, ``clear`` (with an item offered in
    the same clock) leaves the slice empty; the next item goes through alone."""
    dut = RegisterSlice(8)

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        for v in (1, 2, 3):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, v)
            await ctx.tick()
        assert not ctx.get(dut.i.ready) and ctx.get(dut.o.valid)  # 1 out, 2 in the skid
        ctx.set(dut.clear, 1)
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert not ctx.get(dut.o.valid) and ctx.get(dut.i.ready)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 9)
        ctx.set(dut.clear, 1)  # taken in the clear's clock: dropped too
        await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.i.payload, 7)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload)) == (1, 7)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
