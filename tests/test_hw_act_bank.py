# amaranth: UnusedElaboratable=no
"""An activation bank: SPRAM on the iCE40UP5K with one read port, block RAM otherwise."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from golden.fixedpoint import int_range
from hw.act_bank import ActivationBank
from hw.config import get_preset
from tests.test_hw_image_buffer import _instances


def test_spram_with_one_read_port_on_the_up5k():
    cfg = get_preset("icebreaker")  # one row, one lane: one read port
    assert max(cfg.rows, cfg.decode_lanes) == 1
    frag = Fragment.get(ActivationBank(cfg, 1), ICEBreakerPlatform())
    assert len(_instances(frag, "SB_SPRAM256KA")) == 1


@pytest.mark.parametrize("platform, n_read", [(ICEBreakerPlatform, 2),
                                              (ULX3S_85F_Platform, 1)])
def test_block_ram_otherwise(platform, n_read):
    """Two read ports need two copies (the SPRAM has one port); ECP5 has no SPRAM."""
    frag = Fragment.get(ActivationBank(get_preset("icebreaker"), n_read), platform())
    assert _instances(frag, "SB_SPRAM256KA") == []


def test_too_deep_for_one_spram():
    cfg = dataclasses.replace(get_preset("icebreaker"), act_depth=65536)
    frag = Fragment.get(ActivationBank(cfg, 1), ICEBreakerPlatform())
    assert _instances(frag, "SB_SPRAM256KA") == []


@pytest.mark.parametrize("n_read", [1, 3, 6])  # 6: two memories (4 + 2 ports)
def test_portable_bank_reads_back(n_read):
    """Each port reads what was written, a clock later, and holds it while ``en`` is low."""
    cfg = dataclasses.replace(get_preset("small"), act_depth=256)
    dut = ActivationBank(cfg, n_read)
    rng = np.random.default_rng(n_read)
    lo, hi = int_range(cfg.bw)
    data = [int(v) for v in rng.integers(lo, hi + 1, 64)]

    async def bench(ctx):
        for a, v in enumerate(data):
            ctx.set(dut.wr_addr, a)
            ctx.set(dut.wr_data, v)
            ctx.set(dut.wr_en, 1)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        for a in range(len(data)):
            for r in range(n_read):
                ctx.set(dut.rd[r].addr, (a + r) % len(data))
                ctx.set(dut.rd[r].en, 1)
            await ctx.tick()
            for r in range(n_read):
                ctx.set(dut.rd[r].en, 0)
                ctx.set(dut.rd[r].addr, (a + 5) % len(data))
            await ctx.tick()  # held while en is low
            for r in range(n_read):
                assert ctx.get(dut.rd[r].data) == data[(a + r) % len(data)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("n_read", [1, 2, 5])
def test_split_bank_writes_pairs(n_read):
    """``drain_width`` 2: single words and pairs at even and odd addresses (the bank's
    last word included) land where a plain memory would put them; reads hold while ``en``
    is low."""
    cfg = dataclasses.replace(get_preset("small"), act_depth=64, drain_width=2)
    dut = ActivationBank(cfg, n_read)
    rng = np.random.default_rng(7 + n_read)
    lo, hi = int_range(cfg.bw)
    want = [0] * cfg.act_depth
    writes = []
    for _ in range(120):
        a = int(rng.integers(0, cfg.act_depth))
        two = int(a + 1 < cfg.act_depth and rng.random() < 0.6)
        d0, d1 = (int(v) for v in rng.integers(lo, hi + 1, 2))
        writes.append((a, two, d0, d1))
        want[a] = d0
        if two:
            want[a + 1] = d1

    async def bench(ctx):
        for a, two, d0, d1 in writes:
            ctx.set(dut.wr_addr, a)
            ctx.set(dut.wr_data, d0)
            ctx.set(dut.wr_data1, d1)
            ctx.set(dut.wr_two, two)
            ctx.set(dut.wr_en, 1)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        await ctx.tick()  # (the split bank's write lands a clock after wr_en)
        for a in range(cfg.act_depth):
            for r in range(n_read):
                ctx.set(dut.rd[r].addr, (a + 3 * r) % cfg.act_depth)
                ctx.set(dut.rd[r].en, 1)
            await ctx.tick()
            for r in range(n_read):
                ctx.set(dut.rd[r].en, 0)
                ctx.set(dut.rd[r].addr, (a + 1) % cfg.act_depth)
            await ctx.tick()
            for r in range(n_read):
                assert ctx.get(dut.rd[r].data) == want[(a + 3 * r) % cfg.act_depth]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
