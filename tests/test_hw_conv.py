# amaranth: UnusedElaboratable=no
"""The convolution path (TileBuffer -> ConvFeed -> PEArray -> ConvDrain) against
golden.model.conv_accumulate, item by item, with random stalls on the weight lanes and the
output."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Module, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from golden.fixedpoint import int_range
from golden.model import conv_accumulate
from hw.config import get_preset
from hw.conv_drain import ConvDrain
from hw.conv_feed import ConvFeed, coord_width
from hw.layouts import PostItem
from hw.pe_array import PEArray
from hw.tile_buffer import TileBuffer
from hw.weight_unit import LaneWeight
from tests.streams import stream_get, stream_put


def conv_params(cfg, in_shape, out_c, kernel, stride, padding, pool):
    """The ConvParams and DrainParams the sequencer derives from a layer entry
    (hw.layer_plan.layer_params on a real layer)."""
    c, h, w = in_shape
    kh, kw = kernel
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    p = pool or 1
    ph, pw = oh // p, ow // p
    feed = {
        "in_h": h, "in_w": w, "kh": kh, "kw": kw, "stride": stride, "padding": padding,
        "fan_in": c * kh * kw, "pool": p, "pooled_w": pw, "pooled_hw": ph * pw,
        "tiles": -(-out_c // cfg.cols), "p1_stride": (p - 1) * stride,
        "line_step": stride * w - (p - 1) * stride, "win_step": stride - (p - 1) * stride * w,
        "p_s_in_w": p * stride * w,
        "pad_off": padding * (w + 1), "ky_step": w - kw + 1,
        "ci_step": h * w - (kh - 1) * w - kw + 1,
    }
    # (offsets modulo the bank's depth, the coordinate step modulo 2^coord_width)
    off = (1 << cfg.act_addr_width) - 1
    for name in ("line_step", "win_step", "p_s_in_w", "pad_off", "ky_step", "ci_step"):
        feed[name] &= off
    feed["p1_stride"] &= (1 << coord_width(cfg)) - 1
    drain = {"out_c": out_c, "pool_area": p * p, "pooled_hw": ph * pw}
    return feed, drain, (oh, ow, ph, pw)


class ConvHarness(wiring.Component):
    """The conv blocks wired as the accelerator wires them, with the input map in a
    memory (one read port per array row)."""

    def __init__(self, cfg, x_flat):
        self._cfg = cfg
        self._x = [int(v) for v in x_flat]
        self.feed = ConvFeed(cfg)
        self.drain = ConvDrain(cfg)
        self.tiles = TileBuffer(cfg)
        super().__init__({
            "w": In(stream.Signature(LaneWeight(cfg))).array(cfg.decode_lanes),
            "o": Out(stream.Signature(PostItem(cfg))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.feed = feed = self.feed
        m.submodules.drain = drain = self.drain
        m.submodules.tiles = tiles = self.tiles
        m.submodules.array = array = PEArray(cfg)
        m.submodules.act = act = memory.Memory(shape=signed(cfg.bw), depth=cfg.act_depth,
                                               init=self._x)
        for r in range(cfg.rows):
            rd = act.read_port()
            m.d.comb += [rd.addr.eq(feed.x_addr[r]), rd.en.eq(feed.x_en),
                         feed.x_data[r].eq(rd.data)]
        for j in range(cfg.decode_lanes):
            wiring.connect(m, wiring.flipped(self.w[j]), tiles.i[j])
        m.d.comb += [
            tiles.rd_addr.eq(feed.tile_addr), tiles.rd_en.eq(feed.tile_en),
            feed.tile_data.eq(tiles.rd_data), feed.tile_head_ready.eq(tiles.head_ready),
            tiles.release.eq(feed.tile_release),
        ]
        wiring.connect(m, feed.i, array.i)
        wiring.connect(m, feed.w, array.w)
        wiring.connect(m, array.o, drain.i)
        wiring.connect(m, drain.o, wiring.flipped(self.o))
        return m


def lane_payloads(cfg, w):
    """Dense weights dealt to lanes: channel ``o`` to lane ``o mod lanes``."""
    lanes = [[] for _ in range(cfg.decode_lanes)]
    n = w.shape[1]
    for o, row in enumerate(w):
        for k, v in enumerate(row):
            lanes[o % cfg.decode_lanes].append(
                {"weight": int(v), "k": k, "first": int(k == 0), "last": int(k == n - 1),
                 "channel": o})
    return lanes


def expected_items(cfg, acc, pool):
    """The items in the order the drain emits them: tile by tile, window by window, the
    maximum accumulator of each window and channel, as (channel, addr, acc); with
    ``drain_width`` 2, pairs of windows (2k, 2k + 1; a tile's last alone when the count is
    odd), as (channel, addr, acc, two, acc1 or None)."""
    out_c, oh, ow = acc.shape
    p = pool or 1
    ph, pw = oh // p, ow // p
    n = ph * pw

    def peak(ch, w):
        py, px = divmod(w, pw)
        return int(acc[ch, py * p:(py + 1) * p, px * p:(px + 1) * p].max())

    items = []
    for t in range(0, out_c, cfg.cols):
        w = 0
        while w < n:
            two = cfg.drain_width == 2 and w + 1 < n
            for ch in range(t, min(t + cfg.cols, out_c)):
                if cfg.drain_width == 1:
                    items.append((ch, ch * n + w, peak(ch, w)))
                else:
                    items.append((ch, ch * n + w, peak(ch, w), int(two),
                                  peak(ch, w + 1) if two else None))
            w += 1 + two
    return items


def item_tuple(cfg, i):
    if cfg.pool_after_post:
        return (int(i.channel), int(i.addr), int(i.acc), int(i.opens), int(i.closes),
                int(i.live))
    if cfg.drain_width == 1:
        return (int(i.channel), int(i.addr), int(i.acc))
    return (int(i.channel), int(i.addr), int(i.acc), int(i.two),
            int(i.acc1) if i.two else None)


def raw_items(cfg, out_c, out_hw, pool) -> int:
    """How many items the channel-by-channel drain (``pool_after_post``) emits: every
    position of the whole windows, ``cols`` items each (the dead columns too), per tile."""
    p = pool or 1
    positions = (out_hw[0] // p) * (out_hw[1] // p) * p * p
    return -(-out_c // cfg.cols) * positions * cfg.cols


def pool_items(cfg, raw):
    """The channel-by-channel drain's items pooled as ``PostProcess`` pools them (each
    channel's running maximum from an item that opens its window, out when it closes the
    window of a live channel), as (channel, addr, acc). Checks their shape: each vector is
    ``cols`` items, channel after channel, with one window's flags, live columns first."""
    assert len(raw) % cfg.cols == 0
    out = []
    running = {}
    for v in range(0, len(raw), cfg.cols):
        vec = raw[v:v + cfg.cols]
        assert [it[0] for it in vec] == list(range(vec[0][0], vec[0][0] + cfg.cols))
        assert len({it[3:5] for it in vec}) == 1
        lives = [it[5] for it in vec]
        assert lives == sorted(lives, reverse=True)
        for ch, addr, acc, opens, closes, live in vec:
            running[ch] = acc if opens else max(running[ch], acc)
            if closes and live:
                out.append((ch, addr, running[ch]))
    return out


def run_conv(cfg, x, w, kernel, stride, padding, pool, *, seed=0, stall=0.3,
             scramble_feed=False):
    """Simulate one conv layer; returns (items, cycles). ``scramble_feed``: the feed's
    ``params`` are random bits from the clock after ``start`` on (a feed of several rows
    registers them at ``start``)."""
    feed_p, drain_p, _ = conv_params(cfg, x.shape, w.shape[0], kernel, stride, padding, pool)
    dut = ConvHarness(cfg, x.reshape(-1))
    rng = np.random.default_rng(seed) if stall else None
    lanes = lane_payloads(cfg, w)
    got = []
    out_hw = conv_out(x, kernel, stride, padding)
    n_items = (raw_items(cfg, w.shape[0], out_hw, pool) if cfg.pool_after_post
               else len(expected_items(cfg, np.zeros((w.shape[0], *out_hw)), pool)))
    cycles = []

    async def control(ctx):
        ctx.set(dut.feed.params, feed_p)
        ctx.set(dut.drain.params, drain_p)
        ctx.set(dut.tiles.out_c, w.shape[0])
        ctx.set(dut.feed.start, 1)
        ctx.set(dut.drain.start, 1)
        ctx.set(dut.tiles.start, 1)
        await ctx.tick()
        ctx.set(dut.feed.start, 0)
        ctx.set(dut.drain.start, 0)
        ctx.set(dut.tiles.start, 0)
        if scramble_feed:
            params = dut.feed.params.as_value()
            ctx.set(params, int(np.random.default_rng(seed + 1).integers(
                0, 2, len(params)) @ (1 << np.arange(len(params), dtype=object))))

    def feeder(j):
        async def bench(ctx):
            await ctx.tick()
            await stream_put(ctx, dut.w[j], lanes[j], rng=rng, stall=stall, timeout=100_000)
        return bench

    async def collect(ctx):
        await ctx.tick()
        n = 0
        async for _ in ctx.tick():
            n += 1
            if ctx.get(dut.drain.done):
                break
            # (a drain whose ``done`` never rises fails here instead of running forever)
            assert n < 200_000, "the drain never signalled done"
        cycles.append(n)

    async def sink(ctx):
        await ctx.tick()
        items = await stream_get(ctx, dut.o, n_items, rng=rng, stall=stall / 3,
                                 timeout=100_000)
        got.extend(item_tuple(cfg, i) for i in items)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    for j in range(cfg.decode_lanes):
        sim.add_testbench(feeder(j), background=True)
    sim.add_testbench(sink)
    sim.add_testbench(collect)
    sim.run()
    if cfg.pool_after_post:
        got = pool_items(cfg, got)
    return got, cycles[0]


def conv_out(x, kernel, stride, padding):
    _, h, w = x.shape
    return ((h + 2 * padding - kernel[0]) // stride + 1,
            (w + 2 * padding - kernel[1]) // stride + 1)


def make_cfg(rows, cols, lanes, bw=8, drain_width=1):
    small = get_preset("small")
    return dataclasses.replace(small, rows=rows, cols=cols, decode_lanes=lanes, bw=bw,
                               acc_width=max(small.acc_width, 2 * bw + 10), act_depth=1024,
                               drain_width=drain_width)


CASES = [
    # (rows, cols, lanes), in_shape, out_c, kernel, stride, padding, pool
    ((2, 2, 2), (2, 6, 6), 3, (3, 3), 1, 0, 2),
    ((2, 2, 1), (1, 7, 5), 2, (3, 2), 2, 1, 0),
    ((4, 4, 2), (3, 5, 5), 5, (3, 3), 1, 1, 2),
    ((2, 3, 3), (2, 6, 7), 7, (2, 2), 1, 0, 3),
    ((3, 2, 2), (1, 4, 4), 2, (1, 1), 1, 0, 0),
    ((2, 2, 2), (4, 3, 3), 3, (3, 3), 1, 0, 0),  # one output position: a partial group
    ((3, 2, 2), (1, 7, 7), 3, (2, 2), 1, 0, 2),  # 3x3 windows: an odd count a channel
    # drain-bound (fan-in 1, four items a window): the next tile's first window reaches the
    # emitter in the clock the last tile's last item leaves, and the tiles' live channels
    # differ (4, then 1)
    ((2, 4, 1), (1, 3, 3), 5, (1, 1), 1, 0, 0),
    ((1, 4, 1), (2, 6, 6), 6, (3, 3), 1, 0, 2),  # one row: the drain has no burst FIFO
    ((1, 3, 1), (1, 5, 5), 4, (2, 2), 1, 1, 0),  # one row, no pooling, a partial tile
    # one row, a fan-in (2) below the columns (5): the array waits for the drain, which
    # folds a channel a clock; 3x3 pooling, a partial tile
    ((1, 5, 1), (2, 6, 6), 7, (1, 1), 1, 0, 3),
    # one row (the walker's position is the group's): stride 2, padding 1 (offsets below
    # the map's first word, modulo the bank), 2x2 pooling that drops the last row and column
    ((1, 3, 1), (2, 9, 8), 5, (3, 2), 2, 1, 2),
    # four tiles, the last partial (2, 2, 2, 1 channels): a release brings in tile head + 2,
    # whose count the tile buffer steps with each release (the first such tile to be
    # partial is the fourth)
    ((2, 2, 2), (1, 4, 4), 7, (1, 1), 1, 0, 0),
]


def check_case(cfg, case, rng_seed, sim_seed):
    """A CASES layer with random data and 70 %-dense weights, against the golden model."""
    _, in_shape, out_c, kernel, stride, padding, pool = case
    rng = np.random.default_rng(rng_seed)
    lo, hi = int_range(cfg.bw)
    x = rng.integers(lo, hi + 1, size=in_shape)
    n = in_shape[0] * kernel[0] * kernel[1]
    w = rng.integers(lo, hi + 1, size=(out_c, n)) * (rng.random((out_c, n)) < 0.7)
    acc = conv_accumulate(x[None], w, kernel, stride, padding, cfg.bw)[0]
    got, _ = run_conv(cfg, x, w, kernel, stride, padding, pool, seed=sim_seed)
    assert got == expected_items(cfg, acc, pool)


@pytest.mark.parametrize("drain_width", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_conv_path_matches_golden(case, drain_width):
    (rows, cols, lanes), _, out_c, *_ = case
    cfg = make_cfg(rows, cols, lanes, drain_width=drain_width)
    check_case(cfg, case, rows * 100 + cols * 10 + out_c, 1)


@pytest.mark.parametrize("drain_width", [1, 2])
@pytest.mark.parametrize("case", [c for c in CASES if c[0][0] == 1],
                         ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_conv_path_one_row_broadcast(case, drain_width):
    """The icebreaker's dataflow: one row broadcast to its columns (the array's one-entry
    output queue) and the one-row feed and drain (channel by channel; with drain_width 2,
    the general drain reading the one entry)."""
    (rows, cols, lanes), _, out_c, *_ = case
    cfg = dataclasses.replace(make_cfg(rows, cols, lanes, drain_width=drain_width),
                              row_broadcast=True)
    check_case(cfg, case, cols * 10 + out_c, 2)


@pytest.mark.parametrize("case", [c for c in CASES if c[0][0] > 1][:3],
                         ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_conv_feed_uses_the_params_of_start(case):
    """With several rows the feed takes its parameters at ``start`` (they are registers):
    random bits on them from the next clock on change nothing."""
    (rows, cols, lanes), in_shape, out_c, kernel, stride, padding, pool = case
    cfg = make_cfg(rows, cols, lanes)
    rng = np.random.default_rng(17)
    lo, hi = int_range(cfg.bw)
    x = rng.integers(lo, hi + 1, size=in_shape)
    w = rng.integers(lo, hi + 1, size=(out_c, in_shape[0] * kernel[0] * kernel[1]))
    acc = conv_accumulate(x[None], w, kernel, stride, padding, cfg.bw)[0]
    got, _ = run_conv(cfg, x, w, kernel, stride, padding, pool, seed=4, scramble_feed=True)
    assert got == expected_items(cfg, acc, pool)


def test_conv_path_extremes_bw16():
    cfg = make_cfg(2, 2, 2, bw=16)
    lo, hi = int_range(16)
    x = np.full((2, 4, 4), lo)
    w = np.full((3, 2 * 9), lo)
    w[1] = hi
    acc = conv_accumulate(x[None], w, (3, 3), 1, 1, 16)[0]
    got, _ = run_conv(cfg, x, w, (3, 3), 1, 1, 2, seed=3)
    assert got == expected_items(cfg, acc, 2)


def test_conv_path_keeps_the_array_busy():
    """Without stalls, a layer with N >= rows takes about tiles x groups x N clocks."""
    cfg = make_cfg(2, 2, 2)
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(2, 8, 8))
    w = rng.integers(-128, 128, size=(4, 18))
    got, cycles = run_conv(cfg, x, w, (3, 3), 1, 0, 0, stall=0)
    acc = conv_accumulate(x[None], w, (3, 3), 1, 0, 8)[0]
    assert got == expected_items(cfg, acc, 0)
    ideal = 2 * (36 // 2) * 18  # tiles x groups x N (no pooling: 36 positions)
    assert cycles < ideal * 1.1, (cycles, ideal)


def test_two_item_drain_speeds_up_a_drain_bound_layer():
    """4x8 PEs, 2x2 pooling and a fan-in of 4: a group's 4 positions x 8 channels make
    8 items for 4 steps, so one item a clock holds the array to half its rate; with two a
    clock (``drain_width`` 2) the steps bound it again."""
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, size=(4, 8, 8))
    w = rng.integers(-128, 128, size=(8, 4))
    acc = conv_accumulate(x[None], w, (1, 1), 1, 0, 8)[0]
    cycles = {}
    for dw in (1, 2):
        cfg = make_cfg(4, 8, 2, drain_width=dw)
        got, cycles[dw] = run_conv(cfg, x, w, (1, 1), 1, 0, 2, stall=0)
        assert got == expected_items(cfg, acc, 2)
    groups = 64 // 4
    assert cycles[1] >= groups * 8, cycles  # drain-bound: 8 items a group
    assert cycles[2] <= cycles[1] - groups * 2, cycles  # at least 2 of the 4 extra clocks


@pytest.mark.parametrize("cols", [3, 8, 10, 13])
def test_tile_and_column_every_channel(cols):
    """The tile buffer's division by a constant column count, for every 11-bit channel."""
    from amaranth.hdl import Signal

    from hw.tile_buffer import tile_and_column

    m = Module()
    ch = Signal(11)
    t, c = tile_and_column(ch, cols)
    t_s, c_s = Signal(11), Signal(8)
    m.d.comb += [t_s.eq(t), c_s.eq(c)]
    got = []

    async def bench(ctx):
        for x in range(1 << 11):
            ctx.set(ch, x)
            got.append((ctx.get(t_s), ctx.get(c_s)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [divmod(x, cols) for x in range(1 << 11)]
