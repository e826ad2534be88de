# amaranth: UnusedElaboratable=no
"""StreamBroadcast: every sink gets every payload once, in order, whatever the stalls."""

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from hw.broadcast import StreamBroadcast
from tests.streams import stream_get, stream_put


def run(n, payloads, *, seed, stall, cycles=None):
    dut = StreamBroadcast(unsigned(8), n)
    got = [None] * n

    async def source(ctx):
        await stream_put(ctx, dut.i, payloads, rng=np.random.default_rng(seed), stall=stall)

    def sink(j):
        async def bench(ctx):
            # Each sink stalls on its own random sequence, so they fall out of step.
            got[j] = await stream_get(ctx, dut.o[j], len(payloads),
                                      rng=np.random.default_rng([seed, j]), stall=stall,
                                      cycles=cycles if j == 0 else None)
        return bench

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    for j in range(n):
        sim.add_testbench(sink(j))
    sim.run()
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 3])
def test_every_sink_gets_everything(n, seed):
    payloads = list(np.random.default_rng(seed).integers(0, 256, 60))
    assert run(n, payloads, seed=seed, stall=0.4) == [payloads] * n


def test_full_rate_without_stalls():
    cycles = []
    payloads = list(range(20))
    assert run(4, payloads, seed=0, stall=0.0, cycles=cycles) == [payloads] * 4
    assert cycles == list(range(20))


def test_needs_a_sink():
    with pytest.raises(ValueError, match="at least one sink"):
        StreamBroadcast(unsigned(8), 0)
