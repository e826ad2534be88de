# amaranth: UnusedElaboratable=no
"""The image buffer: portable memory in simulation, SPRAM blocks on the iCE40UP5K."""

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from hw.config import get_preset
from hw.image_buffer import ImageBuffer


def _instances(frag, name, found=None):
    found = [] if found is None else found
    for sub, *_ in frag.subfragments:
        if getattr(sub, "type", None) == name:
            found.append(sub)
        _instances(sub, name, found)
    return found


def test_spram_on_the_up5k():
    cfg = get_preset("icebreaker")  # 64 KB in 32-bit words: two SPRAMs side by side
    frag = Fragment.get(ImageBuffer(cfg), ICEBreakerPlatform())
    assert len(_instances(frag, "SB_SPRAM256KA")) == 2


def test_no_spram_elsewhere():
    cfg = get_preset("ulx3s-85f")
    frag = Fragment.get(ImageBuffer(cfg), ULX3S_85F_Platform())
    assert _instances(frag, "SB_SPRAM256KA") == []


@pytest.mark.parametrize("preset", ["small", "icebreaker"])
def test_portable_buffer_reads_back_with_byte_enables(preset):
    cfg = get_preset(preset)
    dut = ImageBuffer(cfg)
    wb = cfg.image_word_bytes
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(64, wb))

    async def bench(ctx):
        bus = dut.bus
        for a, word in enumerate(data):
            for b, byte in enumerate(word):  # a byte at a time, as the loader writes
                ctx.set(bus.addr, a)
                ctx.set(bus.wr_data, int(byte) << (8 * b))
                ctx.set(bus.wr_en, 1 << b)
                await ctx.tick()
        ctx.set(bus.wr_en, 0)
        for a, word in enumerate(data):
            ctx.set(bus.addr, a)
            ctx.set(bus.rd_en, 1)
            await ctx.tick()
            ctx.set(bus.rd_en, 0)
            ctx.set(bus.addr, (a + 7) % 64)
            await ctx.tick()  # held while rd_en is low
            assert ctx.get(bus.rd_data) == int.from_bytes(bytes(int(v) for v in word),
                                                          "little")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
