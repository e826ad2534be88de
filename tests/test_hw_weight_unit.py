"""WeightUnit (loader + stream fetch + decode lanes) against Layer.weights() for every layer,
dense and sparse."""

import dataclasses
import glob
import os

import numpy as np
import pytest
from amaranth.hdl import C, Elaboratable, Module, Mux, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator

from hw.config import get_preset
from hw.image_loader import LoadError, buffer_inputs, image_words, resident_fits
from hw.layer_plan import _reader_run, table_cycles, table_requests
from hw.weight_unit import TABLE_START, ItemReader, WeightUnit
from tests.imagegen import random_image
from tests.streams import stream_get, stream_put
from tests.test_hw_decode_path import check_sparse_channel, split_channels
from weights.image import read_image, write_image

SMALL = get_preset("small")
IMAGES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "weights", "images",
                                       "*.img")))


def config(bw: int, **changes):
    return dataclasses.replace(SMALL, bw=bw, acc_width=max(SMALL.acc_width, 2 * bw + 10),
                               **changes)


class _WithBuffer(Elaboratable):
    """A WeightUnit whose image buffer is outside it, as a board provides it: a memory with
    one address and a read enable that is low while writing."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.unit = WeightUnit(cfg, external_buffer=True)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit
        m.submodules.ram = ram = memory.Memory(
            shape=8 * self.cfg.image_word_bytes, depth=self.cfg.image_words, init=[])
        wr = ram.write_port(granularity=8)
        rd = ram.read_port()
        b = unit.buffer
        addr, wr_data, wr_en, rd_en = buffer_inputs(m, self.cfg, b.addr, b.wr_data, b.wr_en,
                                                    b.rd_en)
        m.d.comb += [wr.addr.eq(addr), wr.data.eq(wr_data), wr.en.eq(wr_en),
                     rd.addr.eq(addr), rd.en.eq(rd_en), b.rd_data.eq(rd.data)]
        return m


def run_unit(cfg, data: bytes, *, seed=0, stall=0.2, layers=None, external=False,
             sparse=False, hold=False, resident=False):
    """Load ``data`` and decode ``layers`` (default: all); check every lane's weights
    (sparse: every lane's entries, channel by channel). With ``hold``, as the sequencer
    drives the unit: each layer is first decoded and dropped after a random number of
    clocks (while its table loads, or while the unit holds it), then decoded again with
    its ``go`` a random number of clocks after the ``decode``. With ``resident``, as the
    sequencer's preparation: every layer's table and codebook loaded at its bases first
    (decoded, held, dropped), then ``layers`` decoded from the counts alone."""
    image = read_image(data)
    top = _WithBuffer(cfg) if external else WeightUnit(cfg)
    dut = top.unit if external else top
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
        assert ctx.get(dut.image_resident) == resident_fits(cfg, image)
        if resident:
            await prepare(ctx, dut, len(image.layers))
            ctx.set(dut.resident, 1)
        ctx.set(dut.sparse, sparse)
        hold_rng = np.random.default_rng(seed + 1000)
        for n in layers:
            ctx.set(dut.layer, n)
            if hold:
                ctx.set(dut.decode, 1)
                await ctx.tick()
                ctx.set(dut.decode, 0)
                await ctx.tick().repeat(int(hold_rng.integers(1, 200)))
                ctx.set(dut.drop, 1)
                await ctx.tick()
                ctx.set(dut.drop, 0)
                assert not ctx.get(dut.busy) and not any(ctx.get(o.valid) for o in dut.o)
                assert ctx.get(dut.port_free)
            late = int(hold_rng.integers(0, 200)) if hold else 0
            ctx.set(dut.decode, 1)
            ctx.set(dut.go, late == 0)
            await ctx.tick()
            ctx.set(dut.decode, 0)
            ctx.set(dut.go, 0)
            plan.append(n)
            if late:
                for _ in range(late):
                    assert not any(ctx.get(o.valid) for o in dut.o)
                    await ctx.tick()
                ctx.set(dut.go, 1)
                await ctx.tick()
                ctx.set(dut.go, 0)
            await ctx.tick()
            while ctx.get(dut.busy):
                assert not ctx.get(dut.error), f"layer {n}"
                await ctx.tick()
            assert not ctx.get(dut.error), f"layer {n}"
            while any((n, j) not in got for j in range(lanes)):
                await ctx.tick()
        plan.append(None)

    async def collect_layer(ctx, j):
        """Lane j's weights of the current layer: until the unit is idle and the lane's
        output empty (sparse, how many channels a lane gets depends on the stream
        sizes)."""
        out = []
        ticks = ctx.tick().sample(dut.o[j].valid, dut.o[j].payload, dut.busy).__aiter__()
        ready = rng is None or rng.random() >= stall
        ctx.set(dut.o[j].ready, ready)
        started = False
        while True:
            _, _, valid, payload, busy = await ticks.__anext__()
            if valid and ready:
                out.append(payload)
            started = started or busy
            if started and not busy and not valid:
                ctx.set(dut.o[j].ready, 0)
                await ticks.aclose()
                return out
            ready = rng is None or rng.random() >= stall
            ctx.set(dut.o[j].ready, ready)

    def lane(j):
        async def collect(ctx):
            k = 0
            while True:
                while len(plan) <= k:
                    await ctx.tick()
                n = plan[k]
                if n is None:
                    return
                got[(n, j)] = [await collect_layer(ctx, j)]
                k += 1
        return collect

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    for j in range(lanes):
        sim.add_testbench(lane(j))
    sim.run()
    for n in layers:
        layer = image.layers[n]
        expected = layer.weights()
        seen = []
        for j in range(lanes):
            (received,) = got[(n, j)]
            if sparse:
                seen.extend(check_sparse_lane(received, expected, f"layer {n} lane {j}"))
                continue
            assert len(received) % layer.fan_in == 0
            chans = [received[k].channel for k in range(0, len(received), layer.fan_in)]
            # dense: channel c on lane c mod lanes, in order (the tile buffer's wiring)
            assert chans == list(range(j, layer.out_c, lanes)), f"layer {n} lane {j}"
            seen.extend(chans)
            for c, k in zip(chans, range(0, len(received), layer.fan_in), strict=True):
                block = received[k:k + layer.fan_in]
                assert [w.channel for w in block] == [c] * layer.fan_in
                assert [w.weight for w in block] == expected[c].tolist(), f"layer {n} ch {c}"
                assert [w.k for w in block] == list(range(layer.fan_in))
                assert [w.first for w in block] == [1] + [0] * (layer.fan_in - 1)
                assert [w.last for w in block] == [0] * (layer.fan_in - 1) + [1]
        assert sorted(seen) == list(range(layer.out_c)), f"layer {n}: channels"


async def prepare(ctx, dut, n_layers):
    """The sequencer's preparation: each layer's table and codebook loaded (at its bases)
    and held, then dropped."""
    assert ctx.get(dut.image_resident), "the image's tables do not fit side by side"
    for n in range(n_layers):
        ctx.set(dut.layer, n)
        ctx.set(dut.decode, 1)
        await ctx.tick()
        ctx.set(dut.decode, 0)
        while not ctx.get(dut.held):
            assert not ctx.get(dut.error)
            await ctx.tick()
        ctx.set(dut.drop, 1)
        await ctx.tick()
        ctx.set(dut.drop, 0)


def check_sparse_lane(received, weights, what) -> list[int]:
    """A lane's sparse entries (``LaneWeight`` constants) against ``Layer.weights()``; the
    lane's channels, which must increase."""
    entries = [{"weight": w.weight, "k": w.k, "first": w.first, "last": w.last,
                "channel": w.channel} for w in received]
    chans = []
    for block in split_channels(entries):
        c = block[0]["channel"]
        assert [e["channel"] for e in block] == [c] * len(block), what
        check_sparse_channel(block, weights[c], f"{what} channel {c}")
        chans.append(c)
    assert chans == sorted(chans), f"{what}: channels out of order"
    return chans


@pytest.mark.parametrize("bw,seed", [(8, 0), (16, 1)])
def test_random_image(bw, seed):
    run_unit(config(bw), write_image(random_image(seed, bw)), seed=seed)


@pytest.mark.parametrize("bw,seed,lanes", [(8, 10, 2), (16, 11, 4), (8, 12, 1)])
def test_registered_image_address(bw, seed, lanes):
    """With the image buffer's address registered (``image_read_latency`` 2: every read a
    clock later), the same weights: dense, sparse, held and dropped, resident, on 4- and
    8-byte words, one lane and several, the buffer inside the unit and outside it."""
    cfg = config(bw, cols=4, decode_lanes=lanes, image_read_latency=2)
    data = write_image(random_image(seed, bw))
    run_unit(cfg, data, seed=seed)
    run_unit(cfg, data, seed=seed, sparse=True, external=True, hold=True)
    run_unit(cfg, data, seed=seed, resident=True, layers=[2, 0, 1])


@pytest.mark.parametrize("bw,seed", [(8, 5), (16, 6)])
def test_sparse_random_image(bw, seed):
    """Sparse mode on every layer (conv layers decode the same way)."""
    run_unit(config(bw), write_image(random_image(seed, bw)), seed=seed, sparse=True)


@pytest.mark.parametrize("seed", range(3))
def test_held_and_dropped_decodes(seed):
    """The sequencer's use: a decode dropped while its table loads or while it is held,
    then the layer decoded with a late ``go``; the weights are the same."""
    run_unit(config(8), write_image(random_image(seed + 20, 8)), seed=seed, external=True,
             sparse=bool(seed % 2), hold=True)


@pytest.mark.parametrize("sparse", [False, True])
def test_resident_tables(sparse):
    """A prepared image: every layer's symbols and codebook at its bases, then the layers
    decoded from their counts alone, in an order other than the preparation's; the
    weights are the same."""
    data = write_image(random_image(9, 8))
    run_unit(config(8), data, seed=9, sparse=sparse, resident=True, layers=[3, 0, 2, 1, 3])


def test_external_buffer():
    run_unit(config(8), write_image(random_image(4, 8)), seed=4, layers=[1, 3], external=True)


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


# -- the sequencer's feeder ------------------------------------------------------------------

class _ReaderBench(Elaboratable):
    """An ItemReader on a preloaded image buffer (the loader's read port: word address, the
    word a clock later)."""

    def __init__(self, cfg, image: bytes):
        self.cfg = cfg
        self.words = image_words(image, cfg.image_word_bytes)
        self.reader = ItemReader(cfg)
        # The address another reader (the sequencer) puts on the port in the clocks the
        # item reader does not ask for it.
        self.other = Signal(range(len(self.words)))

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = rdr = self.reader
        m.submodules.ram = ram = memory.Memory(
            shape=8 * self.cfg.image_word_bytes, depth=len(self.words), init=self.words)
        rd = ram.read_port()
        addr, *_ = buffer_inputs(m, self.cfg, Mux(rdr.rd_req, rdr.rd_addr, self.other),
                                 C(0, 1), C(0, 1), C(1, 1))
        m.d.comb += [rd.addr.eq(addr), rdr.rd_data.eq(rd.data)]
        return m


def read_runs(cfg, image, runs, *, seed=0, stall=0.3, requests=None):
    """Read ``runs`` (addr, count, wide) back to back, each started as soon as the reader
    is not busy; return the items (data, tag) received and the clocks each run was busy.
    In the clocks the reader does not ask for the port, another word is read (a random
    one). ``requests``: a list that gets, per run, the clocks (from its start) in which
    the reader asked for the port."""
    top = _ReaderBench(cfg, image)
    dut = top.reader
    rng = np.random.default_rng(seed) if stall else None
    other = np.random.default_rng(seed + 1)
    total = sum(count for _, count, _ in runs)
    got, busy = [], []

    async def thief(ctx):
        while True:
            ctx.set(top.other, int(other.integers(0, len(top.words))))
            await ctx.tick()

    async def control(ctx):
        for n, (addr, count, wide) in enumerate(runs):
            ctx.set(dut.addr, addr)
            ctx.set(dut.count, count)
            ctx.set(dut.wide, wide)
            ctx.set(dut.tag, n % 2)
            ctx.set(dut.start, 1)
            ctx.set(dut.flush, n == 0)
            asked = [0] if ctx.get(dut.rd_req) else []
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.flush, 0)
            clocks = 1
            while ctx.get(dut.busy):
                if ctx.get(dut.rd_req):
                    asked.append(clocks)
                await ctx.tick()
                clocks += 1
            busy.append(clocks)
            if requests is not None:
                requests.append(asked)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, total, rng=rng, stall=stall))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(control, background=True)
    sim.add_testbench(thief, background=True)
    sim.add_testbench(collect)
    sim.run()
    return [(int(g.data), int(g.tag)) for g in got], busy


def expected_items(image, runs):
    out = []
    for n, (addr, count, wide) in enumerate(runs):
        size = 2 if wide else 1
        out.extend((int.from_bytes(image[addr + size * k:addr + size * (k + 1)], "little"),
                    n % 2) for k in range(count))
    return out


@pytest.mark.parametrize("lanes,seed,latency", [(2, 0, 1), (4, 1, 1), (8, 2, 1), (2, 3, 2),
                                                (4, 4, 2), (8, 5, 2)])
def test_item_reader_alignments(lanes, seed, latency):
    """Runs of 1- and 2-byte items at every alignment within a word, back to back, with
    random stalls: every item exactly once, in order (``latency``: the image buffer's)."""
    cfg = config(8, cols=8, decode_lanes=lanes, image_bytes=1024,
                 image_read_latency=latency)
    wb = cfg.image_word_bytes
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, cfg.image_bytes, dtype=np.uint8).tobytes()
    runs = []
    for off in range(wb):
        for wide in (1, 0):
            count = int(rng.integers(1, 3 * wb))
            addr = int(rng.integers(0, 40)) * wb + off
            runs.append((addr, count, wide))
    got, _ = read_runs(cfg, image, runs, seed=seed)
    assert got == expected_items(image, runs)


@pytest.mark.parametrize("lanes,latency", [(2, 1), (4, 2), (2, 2)])
def test_item_reader_one_item_a_clock(lanes, latency):
    """Unstalled, a run of n items keeps the reader busy n + 1 + latency clocks (the start,
    ``latency`` to read the first word, one per item), but for 2-byte items on 4-byte
    words with the buffer's address registered (``lanes`` 2, ``latency`` 2), which wait a
    clock for every other word; the cycle model (``_reader_run``) has every clock."""
    cfg = config(8, cols=4, decode_lanes=lanes, image_read_latency=latency)
    image = bytes(range(256)) * 4
    runs = [(3, 40, 1), (1021, 1, 1), (6, 9, 0), (2, 30, 0), (1, 17, 1)]
    requests = []
    got, busy = read_runs(cfg, image, runs, stall=0.0, requests=requests)
    assert got == expected_items(image, runs)
    wb = cfg.image_word_bytes
    fast = [count + 1 + latency for _, count, _ in runs]
    if latency == 1 or wb >= 8:
        assert busy == fast
    else:
        assert all(b >= f for b, f in zip(busy, fast, strict=True)) and busy != fast
    # It asks for the port at the start, the next clock, and once a word after that: what
    # the cycle model counts (the sequencer's biases read in the other clocks).
    for (addr, count, wide), asked, clocks in zip(runs, requests, busy, strict=True):
        want, end = _reader_run(0, addr, count, bool(wide), wb, latency)
        assert end == clocks, (addr, count, wide)
        assert asked == want, (addr, count, wide)
    wb = cfg.image_word_bytes
    words = [len(range(a // wb, (a + c * (2 if w else 1) - 1) // wb + 1)) for a, c, w in runs]
    assert [len(r) for r in requests] == [w + 1 for w in words]


def load_cycles(cfg, data: bytes, *, sparse=True, resident=False) -> list[dict]:
    """Per layer, unstalled: clocks from the ``decode`` pulse to the path's start, from
    there to the fetch's start (the table and codebook load), and from the pulse to the
    first weight (or sparse entry) on any lane."""
    dut = WeightUnit(cfg)
    image = read_image(data)
    lanes = cfg.decode_lanes
    out = []

    async def bench(ctx):
        ctx.set(dut.load, 1)
        await ctx.tick()
        ctx.set(dut.load, 0)
        await stream_put(ctx, dut.i, [{"data": b, "last": int(n == len(data) - 1)}
                                      for n, b in enumerate(data)])
        while ctx.get(dut.load_busy):
            await ctx.tick()
        for j in range(lanes):
            ctx.set(dut.o[j].ready, 1)
        if resident:
            await prepare(ctx, dut, len(image.layers))
            ctx.set(dut.resident, 1)
        ctx.set(dut.sparse, sparse)
        for n in range(len(image.layers)):
            ctx.set(dut.layer, n)
            ctx.set(dut.decode, 1)
            ctx.set(dut.go, 1)
            await ctx.tick()
            ctx.set(dut.decode, 0)
            ctx.set(dut.go, 0)
            seen = {}
            clock = 1
            while ctx.get(dut.busy) or any(ctx.get(o.valid) for o in dut.o):
                for name, sig in (("start", dut.path.start), ("fetch", dut.fetch.start)):
                    if ctx.get(sig):
                        seen.setdefault(name, clock)
                if any(ctx.get(o.valid) for o in dut.o):
                    seen.setdefault("first", clock)
                await ctx.tick()
                clock += 1
            assert not ctx.get(dut.error)
            out.append({"start": seen["start"], "load": seen["fetch"] - seen["start"],
                        "first": seen["first"]})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


def load_formula(layer) -> int:
    """Clocks from the path's start to the fetch's start: L counts and n symbols, then K
    codebook entries, a word a clock, and a clock to read the first buffer word and one to
    see the reader finish, for each of the two."""
    return layer.table.max_len + len(layer.table.symbols) + len(layer.codebook) + 4


@pytest.mark.parametrize("bw,seed", [(8, 7), (16, 8)])
def test_table_and_codebook_load_time(bw, seed):
    """The table and codebook load takes exactly ``load_formula`` clocks, TABLE_START (11)
    clocks after the decode pulse (the descriptor words it needs;
    ``hw.layer_plan.table_cycles``); a resident layer's, its ``L`` counts and two."""
    data = write_image(random_image(seed, bw))
    image = read_image(data)
    got = load_cycles(config(bw), data)
    for layer, g in zip(image.layers, got, strict=True):
        assert g["start"] == TABLE_START == 11
        assert g["load"] == load_formula(layer)
        assert g["start"] + g["load"] == table_cycles(layer)
        assert g["first"] > g["start"] + g["load"]
    got = load_cycles(config(bw), data, resident=True)
    for layer, g in zip(image.layers, got, strict=True):
        assert g["start"] == TABLE_START
        assert g["load"] == layer.table.max_len + 2
        assert g["start"] + g["load"] == table_cycles(layer, resident=True)
        assert g["first"] > g["start"] + g["load"]


@pytest.mark.parametrize("lanes,latency", [(2, 1), (2, 2), (4, 2)])
def test_table_load_time_as_the_model_has_it(lanes, latency):
    """The table and codebook load ends where the cycle model's clock-by-clock reader
    (``table_requests``) says, with the image buffer's address registered or not, on 4-
    and 8-byte words; a resident layer's too."""
    cfg = config(8, cols=4, decode_lanes=lanes, image_read_latency=latency)
    data = write_image(random_image(13, 8))
    image = read_image(data)
    for resident in (False, True):
        got = load_cycles(cfg, data, resident=resident)
        for n, g in enumerate(got):
            assert g["start"] == TABLE_START
            assert g["start"] + g["load"] == table_requests(cfg, image, n,
                                                            resident=resident)[1], n


def test_item_reader_restart():
    """A start (with flush) in the middle of a run abandons it: a prefix of the first run,
    then the whole second run, nothing else (as after a layer that stopped on an error)."""
    cfg = config(8)
    image = bytes(range(256)) * 4
    dut_top = _ReaderBench(cfg, image)
    dut = dut_top.reader
    first, second = (5, 40, 1), (301, 7, 1)
    got = []

    async def control(ctx):
        for n, ((addr, count, wide), wait) in enumerate([(first, 6), (second, 0)]):
            ctx.set(dut.addr, addr)
            ctx.set(dut.count, count)
            ctx.set(dut.wide, wide)
            ctx.set(dut.tag, n)
            ctx.set(dut.start, 1)
            ctx.set(dut.flush, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.flush, 0)
            if wait:
                await ctx.tick().repeat(wait)

    async def collect(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if valid:
                got.append((int(payload.data), int(payload.tag)))
            if len(got) and got[-1][1] == 1 and not ctx.get(dut.busy) and not valid:
                break

    sim = Simulator(dut_top)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    sim.add_testbench(collect)
    sim.run()
    a, b = expected_items(image, [first]), expected_items(image, [first, second])[40:]
    assert got[-len(b):] == b
    assert 0 < len(got) - len(b) < len(a)
    assert got[:-len(b)] == a[:len(got) - len(b)]
