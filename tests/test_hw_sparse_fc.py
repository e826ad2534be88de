"""SparseFC against golden.fixedpoint.accumulate: random sparse channels with stalls on every
stream, and the whole chain WeightUnit (sparse mode) -> SparseFC on random fc images."""

import dataclasses
import glob
import os

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from golden.decode import huffman_symbols
from golden.fixedpoint import accumulate
from hw.config import get_preset
from hw.image_loader import LoadError
from hw.sparse_fc import SparseFC
from hw.weight_unit import WeightUnit
from tests.imagegen import random_image, random_layer
from tests.streams import stream_get, stream_put
from weights.image import Image, Kind, read_image_file, write_image

SMALL = get_preset("small")
CONFIGS = {
    "small": SMALL,
    "1lane": dataclasses.replace(SMALL, decode_lanes=1),
    "4lanes": dataclasses.replace(SMALL, cols=4, decode_lanes=4),
    "bw16": dataclasses.replace(SMALL, bw=16, acc_width=42),
}
STALL = 0.3
IMAGES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "weights", "images",
                                       "*.img")))


class _Top(Elaboratable):
    """A SparseFC (and optionally a WeightUnit feeding it) with ``x`` in a memory behind
    the read ports, one read port per lane."""

    def __init__(self, cfg, x, *, unit=False):
        self.cfg = cfg
        self.x = [int(v) for v in x]
        self.fc = SparseFC(cfg)
        self.unit = WeightUnit(cfg) if unit else None

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.fc = fc = self.fc
        depth = 1 << max(1, (len(self.x) - 1).bit_length())
        m.submodules.x = mem = memory.Memory(shape=fc.x_data[0].shape(), depth=depth,
                                             init=self.x)
        for j in range(cfg.decode_lanes):
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(fc.x_addr[j]), rd.en.eq(fc.x_en[j]),
                         fc.x_data[j].eq(rd.data)]
        if self.unit is not None:
            m.submodules.unit = unit = self.unit
            for j in range(cfg.decode_lanes):
                wiring.connect(m, unit.o[j], fc.i[j])
        return m


def extremes(bw):
    return -(1 << (bw - 1)), (1 << (bw - 1)) - 1


def random_x(rng, fan_in, bw):
    lo, hi = extremes(bw)
    x = rng.integers(lo, hi + 1, size=fan_in)
    x[rng.integers(0, fan_in, size=max(1, fan_in // 4))] = lo
    x[rng.integers(0, fan_in, size=max(1, fan_in // 4))] = hi
    return x


def random_layer_entries(rng, fan_in, out_c, bw, density):
    """Random sparse channels: (dense weights (out_c, fan_in), per-channel entries).

    Weights come from a codebook with 0 and both extremes, so some entries are weight 0
    (a codebook entry 0); a channel whose last weight is not kept ends with the end marker
    (weight 0 at N - 1). Channel 0 is all zero (only the end marker) and channel 1 dense,
    when there are that many.
    """
    lo, hi = extremes(bw)
    codebook = np.concatenate([[0, lo, hi], rng.integers(lo, hi + 1, size=3)])
    kept = rng.random((out_c, fan_in)) < density
    if out_c > 1:
        kept[0] = False
        kept[1] = True
    values = codebook[rng.integers(0, len(codebook), size=(out_c, fan_in))]
    w = np.where(kept, values, 0)
    channels = []
    for c in range(out_c):
        ks = [int(k) for k in np.flatnonzero(kept[c])]
        entries = [(k, int(w[c, k])) for k in ks]
        if not kept[c, -1]:
            entries.append((fan_in - 1, 0))
        channels.append([{"weight": v, "k": k, "first": int(n == 0),
                          "last": int(n == len(entries) - 1), "channel": c}
                         for n, (k, v) in enumerate(entries)])
    return w, channels


def deal(rng, channels, lanes):
    """Each channel to a random lane, a lane's channels in increasing order."""
    per_lane = [[] for _ in range(lanes)]
    for ch in channels:
        per_lane[int(rng.integers(0, lanes))].extend(ch)
    return per_lane


def run_fc(cfg, x, per_lane, out_c, *, seed=0, stall=STALL, cycles=None):
    """Feed each lane's entries; return {channel: item} and check ``idle`` at the end."""
    top = _Top(cfg, x)
    dut = top.fc
    rng = np.random.default_rng(seed) if stall else None
    got = []

    async def control(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)

    def feeder(j):
        async def feed(ctx):
            await ctx.tick()
            await stream_put(ctx, dut.i[j], per_lane[j], rng=rng, stall=stall)
        return feed

    async def collect(ctx):
        await ctx.tick()
        got.extend(await stream_get(ctx, dut.o, out_c, rng=rng, stall=stall, cycles=cycles))
        await ctx.tick()
        assert ctx.get(dut.idle)
        await ctx.tick().repeat(8)
        assert not ctx.get(dut.o.valid), "more items than channels"

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    for j in range(cfg.decode_lanes):
        sim.add_testbench(feeder(j), background=True)
    sim.add_testbench(collect)
    sim.run()
    items = {}
    for item in got:
        assert item.channel not in items, f"channel {item.channel} twice"
        assert item.addr == item.channel
        items[item.channel] = item.acc
    return items


def check(cfg, w, x, items):
    expected = accumulate(x[None, :], w, cfg.bw)[0]
    assert sorted(items) == list(range(len(w)))
    assert [items[c] for c in range(len(w))] == expected.tolist()


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_channels(name, seed):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(seed)
    fan_in, out_c = 37, 9
    x = random_x(rng, fan_in, cfg.bw)
    w, channels = random_layer_entries(rng, fan_in, out_c, cfg.bw, density=0.3)
    items = run_fc(cfg, x, deal(rng, channels, cfg.decode_lanes), out_c, seed=seed)
    check(cfg, w, x, items)


@pytest.mark.parametrize("name", ["small", "1lane"])
def test_fan_in_one(name):
    """N = 1: a weight at 0 (with last) or the end marker alone."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(3)
    x = np.array([extremes(cfg.bw)[0]])
    w, channels = random_layer_entries(rng, 1, 6, cfg.bw, density=0.5)
    items = run_fc(cfg, x, deal(rng, channels, cfg.decode_lanes), 6, seed=3)
    check(cfg, w, x, items)


def test_tiny_channels_back_pressure():
    """Channels of one entry on four lanes: more finished channels than o can carry, so
    the holding registers fill and the lanes stall; o stalls too."""
    cfg = CONFIGS["4lanes"]
    rng = np.random.default_rng(5)
    x = random_x(rng, 5, cfg.bw)
    w = np.zeros((40, 5), dtype=np.int64)
    w[:, 4] = rng.integers(-128, 128, size=40)
    channels = [[{"weight": int(w[c, 4]), "k": 4, "first": 1, "last": 1, "channel": c}]
                for c in range(40)]
    per_lane = [sum(channels[j::4], []) for j in range(4)]
    items = run_fc(cfg, x, per_lane, 40, seed=5, stall=0.5)
    check(cfg, w, x, items)


def test_lane_ready_does_not_look_at_o_ready():
    """``i[j].ready`` comes from the lane's own registers (the timing reason is in
    ``SparseFC``): channels of one entry on four lanes, so that holding registers fill and
    lanes stall, with ``o.ready`` random; in every clock each lane's ``ready`` is the same
    with ``o.ready`` low and high."""
    cfg = CONFIGS["4lanes"]
    rng = np.random.default_rng(9)
    top = _Top(cfg, rng.integers(-128, 128, size=5))
    dut = top.fc
    lanes = cfg.decode_lanes
    todo = [[{"weight": 1 + c, "k": 4, "first": 1, "last": 1, "channel": c}
             for c in range(j, 40, lanes)] for j in range(lanes)]
    seen = {"stalled": 0, "items": 0}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(200):
            for j in range(lanes):
                ctx.set(dut.i[j].valid, bool(todo[j]))
                if todo[j]:
                    ctx.set(dut.i[j].payload, todo[j][0])
            ready = []
            for o_ready in (0, 1):
                ctx.set(dut.o.ready, o_ready)
                ready.append([ctx.get(dut.i[j].ready) for j in range(lanes)])
            assert ready[0] == ready[1]
            o_ready = int(rng.random() < 0.3)
            ctx.set(dut.o.ready, o_ready)
            seen["items"] += o_ready & ctx.get(dut.o.valid)
            for j in range(lanes):
                if todo[j] and ready[1][j]:
                    todo[j].pop(0)
                seen["stalled"] += bool(todo[j]) and not ready[1][j]
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["stalled"] > 0 and seen["items"] == 40  # the stalls were exercised


def test_extreme_sums():
    """Fan-in 1024 (the preset's maximum) with -2^(bw-1) everywhere: the largest sum, which
    needs every bit of acc_width 26; and a channel of alternating extremes."""
    cfg = SMALL
    lo, hi = extremes(cfg.bw)
    n = cfg.max_fan_in
    x = np.full(n, lo)
    w = np.array([np.full(n, lo), np.where(np.arange(n) % 2, lo, hi)])
    channels = [[{"weight": int(w[c, k]), "k": k, "first": int(k == 0),
                  "last": int(k == n - 1), "channel": c} for k in range(n)] for c in range(2)]
    assert accumulate(x[None, :], w[:1], cfg.bw)[0, 0] == 1 << (cfg.acc_width - 2)
    items = run_fc(cfg, x, channels, 2, stall=0.0)
    check(cfg, w, x, items)


def test_one_entry_per_clock_per_lane():
    """Unstalled, each lane takes an entry a clock: the layer's last item leaves a few
    clocks after the busiest lane's last entry."""
    cfg = SMALL
    rng = np.random.default_rng(7)
    fan_in, out_c = 64, 8
    x = random_x(rng, fan_in, cfg.bw)
    w, channels = random_layer_entries(rng, fan_in, out_c, cfg.bw, density=0.4)
    per_lane = [sum(channels[j::2], []) for j in range(2)]
    cycles = []
    items = run_fc(cfg, x, per_lane, out_c, stall=0.0, cycles=cycles)
    check(cfg, w, x, items)
    # entries are fed from the clock after start; collect() counts from that clock too
    assert cycles[-1] + 1 <= max(len(p) for p in per_lane) + 6


# -- the whole chain: WeightUnit (sparse) -> SparseFC ---------------------------------------

def fc_image(seed, *, fan_in=48, out_c=6, density=0.25, run_bits=2):
    """A one-layer fully connected image from tests/imagegen.py."""
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, Kind.FC, (fan_in, 1, 1), out_c, density=density,
                         run_bits=run_bits)
    return Image(bw=8, input_fl=6, input_shape=(fan_in, 1, 1), layers=(layer,))


def run_chain(cfg, data: bytes, layers, x, *, seed=0, stall=0.2):
    """Load the image ``data`` through the loader, then decode each of ``layers`` sparse into
    SparseFC (layer ``n`` reads ``x[:fan_in]``); per layer, return ({channel: acc}, the
    lanes' channels, clocks from the first lane entry to the last item)."""
    top = _Top(cfg, x, unit=True)
    unit, fc = top.unit, top.fc
    lanes = cfg.decode_lanes
    rng = np.random.default_rng(seed) if stall else None
    results = []

    async def run_layer(ctx, n):
        items = {}
        lane_channels = [set() for _ in range(lanes)]
        span = {}
        ctx.set(unit.layer, n)
        ctx.set(unit.decode, 1)
        ctx.set(unit.go, 1)
        ctx.set(fc.start, 1)
        await ctx.tick()
        ctx.set(unit.decode, 0)
        ctx.set(unit.go, 0)
        ctx.set(fc.start, 0)
        cycle = 0
        busy_seen = False
        ticks = ctx.tick().sample(
            unit.busy, unit.error, fc.idle, fc.o.valid, fc.o.ready, fc.o.payload,
            *[s for j in range(lanes) for s in (unit.o[j].valid, unit.o[j].ready,
                                                unit.o[j].payload)]).__aiter__()
        ready = rng is None or rng.random() >= stall
        ctx.set(fc.o.ready, ready)
        while True:
            _, _, busy, error, idle, o_valid, o_ready, o_payload, *lane = \
                await ticks.__anext__()
            assert not error
            busy_seen = busy_seen or busy
            for j in range(lanes):
                valid, lready, payload = lane[3 * j:3 * j + 3]
                if valid:
                    span.setdefault("first", cycle)
                if valid and lready:
                    lane_channels[j].add(payload.channel)
            if o_valid and o_ready:
                assert o_payload.channel not in items
                items[o_payload.channel] = o_payload.acc
                span["last"] = cycle
            if busy_seen and not busy and idle:
                await ticks.aclose()
                ctx.set(fc.o.ready, 0)
                results.append((items, lane_channels, span["last"] - span["first"] + 1))
                return
            cycle += 1
            assert cycle < 100_000
            ready = rng is None or rng.random() >= stall
            ctx.set(fc.o.ready, ready)

    async def control(ctx):
        ctx.set(unit.load, 1)
        await ctx.tick()
        ctx.set(unit.load, 0)
        await stream_put(ctx, unit.i, [{"data": b, "last": int(k == len(data) - 1)}
                                       for k, b in enumerate(data)])
        while ctx.get(unit.load_busy):
            await ctx.tick()
        assert ctx.get(unit.status) == LoadError.NONE
        ctx.set(unit.sparse, 1)
        for n in layers:
            await run_layer(ctx, n)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    sim.run()
    return results


def lane_symbols(layer, lane_channels) -> list[int]:
    """Each lane's Huffman symbols (its channels' symbols)."""
    symbols = [len(huffman_symbols(s, layer.table, layer.alphabet, layer.fan_in))
               for s in layer.streams]
    assert sorted(c for chans in lane_channels for c in chans) == list(range(layer.out_c))
    return [sum(symbols[c] for c in chans) for chans in lane_channels]


def chain_figures(cfg, layer, lane_channels, cycles) -> str:
    per_lane = lane_symbols(layer, lane_channels)
    mean = sum(per_lane) / cfg.decode_lanes
    return (f"{cycles} clocks, lanes' symbols {per_lane}, cycles/(symbols/lanes) "
            f"{cycles / mean:.3f}, cycles - busiest lane {cycles - max(per_lane)}, dense "
            f"{layer.fan_in * layer.out_c // cfg.decode_lanes}")


@pytest.mark.parametrize("seed", [0, 1])
def test_chain_random_image(seed):
    """Both fc layers of a random image (tests/imagegen.py), one load, stalls on o."""
    cfg = SMALL
    image = random_image(seed)
    x = random_x(np.random.default_rng(seed + 10), 16, cfg.bw)
    results = run_chain(cfg, write_image(image), [2, 3], x, seed=seed)
    for n, (items, _, _) in zip([2, 3], results, strict=True):
        la = image.layers[n]
        check(cfg, la.weights(), x[:la.fan_in], items)


def test_chain_cycles():
    """Unstalled, the layer takes about as many clocks as its busiest lane's symbols."""
    cfg = SMALL
    image = fc_image(4)
    la = image.layers[0]
    x = random_x(np.random.default_rng(4), la.fan_in, cfg.bw)
    ((items, lane_channels, cycles),) = run_chain(cfg, write_image(image), [0], x, stall=0.0)
    check(cfg, la.weights(), x, items)
    print(chain_figures(cfg, la, lane_channels, cycles))
    assert cycles <= max(lane_symbols(la, lane_channels)) + 16


@pytest.mark.slow
@pytest.mark.skipif(not IMAGES, reason="no weights/images/*.img")
@pytest.mark.parametrize("path", IMAGES, ids=os.path.basename)
def test_chain_shipped_image(path):
    """Every fc layer of a shipped image, unstalled, with the cycle figures."""
    cfg = SMALL
    image = read_image_file(path)
    fcs = [n for n, la in enumerate(image.layers) if la.kind == Kind.FC]
    x = random_x(np.random.default_rng(9), max(image.layers[n].fan_in for n in fcs), cfg.bw)
    with open(path, "rb") as f:
        results = run_chain(cfg, f.read(), fcs, x, stall=0.0)
    for n, (items, lane_channels, cycles) in zip(fcs, results, strict=True):
        la = image.layers[n]
        check(cfg, la.weights(), x[:la.fan_in], items)
        print(f"{os.path.basename(path)} layer {n}: "
              f"{chain_figures(cfg, la, lane_channels, cycles)}")
        assert cycles <= max(lane_symbols(la, lane_channels)) + 4 * la.out_c + 16
