# amaranth: UnusedElaboratable=no
"""The image buffer: portable memory in simulation, SPRAM blocks on the iCE40UP5K (simulated
through ``SpramModel``)."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module
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


@pytest.mark.parametrize(("preset", "image_bytes", "latency"), [("icebreaker", None, 1),
                                                                 ("icebreaker", 128 * 1024, 1),
                                                                 ("small", 128 * 1024, 1),
                                                                 ("icebreaker", 128 * 1024, 2),
                                                                 ("small", None, 2)])
def test_spram_arrangement_matches_the_portable_buffer(preset, image_bytes, latency):
    """The iCE40 glue (SPRAM blocks side by side, rows for deeper buffers, byte enables as
    nibble masks, chip selects, the row of the last read) with ``SpramModel`` for each
    block, against the portable memory and a Python model, clock by clock, on a random mix
    of byte writes, reads and idle clocks over the whole address range (128 KB of 4-byte
    words: two rows of SPRAMs). With an ``image_read_latency`` of 2 every operation, write
    or read, takes effect a clock later."""
    cfg = dataclasses.replace(get_preset(preset), image_read_latency=latency)
    if image_bytes:
        cfg = dataclasses.replace(cfg, image_bytes=image_bytes)
    spram, plain = ImageBuffer(cfg, spram_model=True), ImageBuffer(cfg)
    wb, words = cfg.image_word_bytes, cfg.image_words
    rng = np.random.default_rng(1)
    # Addresses from a small set spread over the whole buffer (both rows), so that reads
    # find written words.
    pool = rng.choice(words, size=24, replace=False)
    ops = [(rng.choice(["w", "w", "r", "-"]), int(rng.choice(pool)),
            int(rng.integers(1, 1 << wb)), int(rng.integers(0, 1 << (8 * wb))))
           for _ in range(600)]
    top = Module()
    top.submodules.spram, top.submodules.plain = spram, plain
    ref = {}

    async def bench(ctx):
        out = 0  # the word the last read fetched (0 before any read)
        reads = 0
        for n, (op, addr, en, data) in enumerate(ops):
            for dut in (spram, plain):
                ctx.set(dut.bus.addr, addr)
                ctx.set(dut.bus.wr_data, data)
                ctx.set(dut.bus.wr_en, en if op == "w" else 0)
                ctx.set(dut.bus.rd_en, op == "r")
            await ctx.tick()
            if n < latency - 1:
                continue
            # (the operation whose effect is visible after this clock)
            op, addr, en, data = ops[n - (latency - 1)]
            if op == "w":
                word = ref.get(addr, 0)
                for b in range(wb):
                    if en >> b & 1:
                        mask = 0xFF << (8 * b)
                        word = (word & ~mask) | (data & mask)
                ref[addr] = word
            elif op == "r":
                out, reads = ref.get(addr, 0), reads + 1
            if reads:
                assert ctx.get(spram.bus.rd_data) == out, (op, addr)
                assert ctx.get(plain.bus.rd_data) == out, (op, addr)
        assert reads > 100

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()

