"""StreamFetch alone against a reference: every lane's bytes and channel numbers, the
load-balancing deal, random back-pressure on every lane, and the rate at which it keeps
eight lanes fed on short channels."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Const, Elaboratable, Module, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator

from hw.config import get_preset
from hw.image_loader import buffer_inputs, image_words
from hw.stream_fetch import StreamFetch

SMALL = get_preset("small")


def config(lanes: int, **changes):
    return dataclasses.replace(SMALL, cols=max(SMALL.cols, lanes), decode_lanes=lanes,
                               **changes)


def make_image(rng, image_bytes: int, layers) -> tuple[bytes, list]:
    """An image buffer of random bytes holding, for each list of stream sizes in
    ``layers``, the sizes (u16, little-endian) at a random byte address (any alignment,
    so sizes straddle words) and the streams right after them.

    Returns the image and, per layer, ``(sizes_addr, streams_addr, sizes)``."""
    image = bytearray(rng.integers(0, 256, image_bytes, dtype=np.uint8).tobytes())
    out, a = [], 0
    for sizes in layers:
        sizes = [int(s) for s in sizes]
        a += int(rng.integers(0, 40))
        for k, s in enumerate(sizes):
            image[a + 2 * k:a + 2 * k + 2] = s.to_bytes(2, "little")
        out.append((a, a + 2 * len(sizes), sizes))
        a += 2 * len(sizes) + sum(sizes)
    assert a <= image_bytes
    return bytes(image), out


def streams_of(image: bytes, streams_addr: int, sizes) -> list[bytes]:
    """Channel ``c``'s stream, the reference (docs/weight-image.md, "Stream sizes and
    streams": each stream starts where the one before it ended)."""
    out, a = [], streams_addr
    for s in sizes:
        out.append(image[a:a + s])
        a += s
    return out


class _Bench(Elaboratable):
    """A StreamFetch on a preloaded image buffer (word address; the word a clock later),
    and ``now``, a clock counter that every testbench samples."""

    def __init__(self, cfg, image: bytes):
        self.cfg = cfg
        self.words = image_words(image, cfg.image_word_bytes)
        self.fetch = StreamFetch(cfg)
        self.now = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fetch = fetch = self.fetch
        m.submodules.ram = ram = memory.Memory(
            shape=8 * self.cfg.image_word_bytes, depth=self.cfg.image_words, init=self.words)
        rd = ram.read_port()
        # (the buffer's address as its RAM takes it: registered with a latency of 2)
        addr, *_ = buffer_inputs(m, self.cfg, fetch.rd_addr, Const(0, 1), Const(0, 1),
                                 Const(1, 1))
        m.d.comb += [rd.addr.eq(addr), fetch.rd_data.eq(rd.data)]
        m.d.sync += self.now.eq(self.now + 1)
        return m


def run_fetch(cfg, image: bytes, layers, *, seed=0, stall=0.0, ch_stall=None,
              timeout=20_000, dense=False) -> list[dict]:
    """Run ``layers`` (a list of ``(sizes_addr, streams_addr, sizes)``) one after the other
    through a StreamFetch on ``image``, each started once the one before is ``idle`` and
    its channel numbers taken; ``dense`` (a bool, or one per layer) is the fetch's
    ``dense`` input. Lane ``j``'s consumer takes a byte from ``o[j]`` with
    probability ``1 - stall`` a clock and, once it has every byte of the channel ``ch[j]``
    names, takes the number with probability ``1 - ch_stall`` (default ``stall``) a clock,
    as a decode lane does after the channel's last weight.

    Returns, per layer, a dict: ``lanes`` (per lane, ``(channel, bytes)`` in the order
    received), ``deals`` (per channel dealt, in order: the clock, the lane, every lane's
    bytes left and room then, and the same in the clock before with the lane dealt to
    then, from ``StreamFetch.probe``), ``pops`` (per lane, the clock of each byte taken),
    ``taken`` (per lane, the clock each channel number was
    taken), ``start`` (the clock of the ``start`` pulse), ``clocks``
    (from ``start`` until ``idle``) and ``starved``
    (per lane, the clocks between its first and its last byte in which its consumer was
    ready and ``o[j]`` not valid). Clocks are ``_Bench.now``."""
    top = _Bench(cfg, image)
    dut, now = top.fetch, top.now
    probe = dut.probe
    lanes = cfg.decode_lanes
    rng = np.random.default_rng(seed)
    ch_stall = stall if ch_stall is None else ch_stall
    results = []
    plan = []  # per layer: its sizes, for the consumers; None at the end
    done = {}

    denses = [dense] * len(layers) if isinstance(dense, bool) else list(dense)

    async def control(ctx):
        for n, (sizes_addr, streams_addr, sizes) in enumerate(layers):
            ctx.set(dut.dense, denses[n])
            ctx.set(dut.out_c, len(sizes))
            ctx.set(dut.sizes_addr, sizes_addr)
            ctx.set(dut.streams_addr, streams_addr)
            ctx.set(dut.streams_bytes, int(sum(sizes)))
            ctx.set(dut.start, 1)
            _, _, t0 = await ctx.tick().sample(now)
            ctx.set(dut.start, 0)
            plan.append(sizes)
            deals = []
            # (one lane has no deal: its probe is None, and nothing is dealt)
            probes = ((probe.deal, probe.lane, probe.room, *probe.pend) if probe
                      else (Const(0), Const(0), Const(0)))
            ticks = ctx.tick().sample(now, dut.idle, *probes).__aiter__()
            before = None  # the clock before's bytes left, room and the lane dealt to
            while True:
                _, _, t, idle, deal, lane, room, *pend = await ticks.__anext__()
                room = [(room >> j) & 1 for j in range(lanes)]
                if deal:
                    deals.append((t, lane, pend, room, before))
                before = (pend, room, lane if deal else None)
                if idle:
                    break
                assert t - t0 < timeout, f"layer {n}: not idle after {timeout} clocks"
            await ticks.aclose()
            waited = 0  # (a lane that stops short of its bytes leaves its consumer waiting)
            while any((n, j) not in done for j in range(lanes)):
                await ctx.tick()
                waited += 1
                assert waited < timeout, f"layer {n}: consumers not done {timeout} clocks on"
            results.append({"deals": deals, "clocks": t - t0, "start": t0})
        plan.append(None)

    def consumer(j):
        async def run(ctx):
            o, ch = dut.o[j], dut.ch[j]
            n = 0
            while True:
                while len(plan) <= n:
                    await ctx.tick()
                sizes = plan[n]
                if sizes is None:
                    return
                chans, data, pops, hungry, taken = [], bytearray(), [], [], []
                need = 0  # bytes of the channels whose numbers were taken
                ready = ch_ready = False
                ticks = ctx.tick().sample(now, o.valid, o.payload, ch.valid, ch.payload,
                                          dut.idle).__aiter__()
                while True:
                    _, _, t, valid, byte, c_valid, c, idle = await ticks.__anext__()
                    if valid and ready:
                        data.append(byte)
                        pops.append(t)
                    elif ready:
                        hungry.append(t)
                    if c_valid and ch_ready:
                        chans.append(c)
                        taken.append(t)
                        need += sizes[c]
                    if idle and not ctx.get(ch.valid):
                        break
                    c_valid, c = ctx.get(ch.valid), ctx.get(ch.payload)
                    ch_ready = (c_valid and len(data) >= need + sizes[c]
                                and rng.random() >= ch_stall)
                    ready = rng.random() >= stall
                    ctx.set(o.ready, ready)
                    ctx.set(ch.ready, ch_ready)
                ctx.set(o.ready, 0)
                ctx.set(ch.ready, 0)
                await ticks.aclose()
                assert len(data) == need, f"lane {j}: {len(data)} bytes, channels of {need}"
                got, a = [], 0
                for c in chans:
                    got.append((c, bytes(data[a:a + sizes[c]])))
                    a += sizes[c]
                starved = sum(pops[0] <= h <= pops[-1] for h in hungry) if pops else 0
                done[(n, j)] = (got, pops, starved, taken)
                n += 1
        return run

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    for j in range(lanes):
        sim.add_testbench(consumer(j))
    sim.run()
    for n, r in enumerate(results):
        r["lanes"] = [done[(n, j)][0] for j in range(lanes)]
        r["pops"] = [done[(n, j)][1] for j in range(lanes)]
        r["starved"] = [done[(n, j)][2] for j in range(lanes)]
        r["taken"] = [done[(n, j)][3] for j in range(lanes)]
    return results


def check_layer(cfg, image: bytes, layer, r, *, dense=False) -> None:
    """One layer's run against the reference and the deal's contract (``dense``: the
    fetch's input was set)."""
    sizes_addr, streams_addr, sizes = layer
    lanes = cfg.decode_lanes
    ref = streams_of(image, streams_addr, sizes)
    if lanes == 1:
        # One lane: every channel, in order, its bytes; there is no deal.
        assert [c for c, _ in r["lanes"][0]] == list(range(len(sizes))), "channel numbers"
        for c, got in r["lanes"][0]:
            assert got == ref[c], f"channel {c}'s bytes"
        assert r["deals"] == []
        return
    deals = r["deals"]
    assert len(deals) == len(sizes), "one deal per channel"
    for j in range(lanes):
        # Channel k is the k-th dealt; a lane gets the channels dealt to it, in order.
        dealt = [k for k, d in enumerate(deals) if d[1] == j]
        assert [c for c, _ in r["lanes"][j]] == dealt, f"lane {j}: channel numbers"
        for c, got in r["lanes"][j]:
            assert got == ref[c], f"lane {j}: channel {c}'s bytes"
    if dense:
        # Dense: channel c to lane c mod n, whatever the sizes; a lane with room may have
        # any bytes left (its channels are dealt ahead).
        for k, (t, lane, pend, room, _) in enumerate(deals):
            assert lane == k % lanes, f"channel {k} dealt to lane {lane}"
            assert room[lane], f"clock {t}: dealt to lane {lane} without room"
            left = [sum(sizes[i] for i, d in enumerate(deals) if d[1] == j and d[0] < t)
                    - sum(p < t for p in r["pops"][j]) for j in range(lanes)]
            assert pend == left, f"clock {t}: bytes left"
        return
    # The deal: to the lane with the fewest bytes left (dealt and not yet taken from
    # o[j], counted here from the deals and the consumers' transfers) among the lanes
    # with room, the lowest such lane on a tie; a lane has no room with 2W bytes left.
    # With several lanes the choice is made in the clock before the deal, from that
    # clock's bytes left and room, without the lane dealt to in that clock.
    for t, lane, pend, room, before in deals:
        left = [sum(sizes[k] for k, d in enumerate(deals) if d[1] == j and d[0] < t)
                - sum(p < t for p in r["pops"][j]) for j in range(lanes)]
        assert pend == left, f"clock {t}: bytes left"
        assert all(left[j] < 2 * cfg.image_word_bytes for j in range(lanes) if room[j])
        assert room[lane], f"clock {t}: dealt to lane {lane} without room"
        if lanes > 1:
            assert before is not None, f"clock {t}: a deal in the clock after start"
            left, room, excluded = before
            room = [room[j] and j != excluded for j in range(lanes)]
        fewest = min(left[j] for j in range(lanes) if room[j])
        assert lane == min(j for j in range(lanes) if room[j] and left[j] == fewest), \
            f"clock {t}: dealt to lane {lane}, bytes left {left}, room {room}"


def random_sizes(rng, n, *, short=False):
    """``n`` stream sizes: many of one byte (a channel of zeros: its EOS alone), the
    rest short or up to a few words."""
    top = 12 if short else 70
    sizes = rng.integers(1, top, n)
    sizes[rng.random(n) < 0.25] = 1
    return sizes


@pytest.mark.parametrize("lanes,seed,latency", [(1, 0, 1), (2, 1, 1), (8, 2, 1), (4, 3, 1),
                                                (1, 4, 2), (2, 5, 2), (5, 6, 2)])
def test_random_layers(lanes, seed, latency):
    """Layers of random sizes back to back (one of a single channel, one of many short
    channels), random stalls on every lane's bytes and channel numbers; ``latency``: the
    image buffer's (2: its address registered)."""
    cfg = config(lanes, image_bytes=8192, image_read_latency=latency)
    rng = np.random.default_rng(seed)
    shapes = [random_sizes(rng, 3 * lanes + 5), [int(rng.integers(1, 40))],
              random_sizes(rng, 6 * lanes + 3, short=True), random_sizes(rng, lanes)]
    image, layers = make_image(rng, cfg.image_bytes, shapes)
    results = run_fetch(cfg, image, layers, seed=seed, stall=0.3)
    for layer, r in zip(layers, results, strict=True):
        check_layer(cfg, image, layer, r)


@pytest.mark.parametrize(("lanes", "latency"), [(2, 1), (5, 1), (5, 2)])
def test_streams_of_no_bytes(lanes, latency):
    """Channels whose streams have no bytes among the others (the loader refuses such an
    image, but the fetch's contract does not need it to): each is dealt, its channel
    number given, no byte delivered for it, and the lane goes on to its next job."""
    cfg = config(lanes, image_bytes=8192, image_read_latency=latency)
    rng = np.random.default_rng(9)
    sizes = np.array([3, 0, 5, 0, 0, 7, 0, 40, 0, 1, 0, 0, 0, 2] * 3)
    image, layers = make_image(rng, cfg.image_bytes, [sizes])
    (r,) = run_fetch(cfg, image, layers, seed=9, stall=0.3)
    check_layer(cfg, image, layers[0], r)


def test_stalled_channel_numbers():
    """Consumers that take channel numbers long after the channels' bytes (as a decode
    lane whose expander is behind): a lane's sixteen channel numbers fill up and hold
    the deal back; no channel is lost or mixed."""
    cfg = config(2, image_bytes=4096)
    rng = np.random.default_rng(7)
    image, layers = make_image(rng, cfg.image_bytes, [[1] * 30 + [3] * 30])
    (r,) = run_fetch(cfg, image, layers, seed=7, stall=0.1, ch_stall=0.95)
    check_layer(cfg, image, layers[0], r)
    waiting = max(sum(d[1] == j and d[0] <= t for d in r["deals"])
                  - sum(k < t for k in r["taken"][j])
                  for j in range(2) for t, *_ in r["deals"])
    assert waiting == 16


def test_sizes_at_every_alignment():
    """The size list at each byte offset within a word, so that every size position
    (and a size straddling two words) occurs."""
    cfg = config(8, image_bytes=8192)
    wb = cfg.image_word_bytes
    rng = np.random.default_rng(11)
    shapes = [random_sizes(rng, 2 * wb + 1, short=True) for _ in range(wb)]
    image, layers = make_image(rng, cfg.image_bytes, shapes)
    # make_image leaves random gaps: move each size list to offset k within its word
    layers2, a, data = [], 0, bytearray(image)
    for k, (_, _, sizes) in enumerate(layers):
        a = (a + wb - 1) // wb * wb + k
        for i, s in enumerate(sizes):
            data[a + 2 * i:a + 2 * i + 2] = s.to_bytes(2, "little")
        layers2.append((a, a + 2 * len(sizes), sizes))
        a += 2 * len(sizes) + sum(sizes)
    image = bytes(data)
    results = run_fetch(cfg, image, layers2, seed=11, stall=0.2)
    for layer, r in zip(layers2, results, strict=True):
        check_layer(cfg, image, layer, r)


@pytest.mark.parametrize("latency", [1, 2])
def test_deals_a_channel_a_clock(latency):
    """With room on every lane, the scheduler deals a channel every clock: the ECP5
    preset's lanes, one-byte channels; the first deal comes 4 clocks after ``start`` (a
    clock to ask for the first word of sizes, one to read it, one to receive it), 5 when
    the image buffer registers the address again (``image_read_latency`` 2)."""
    cfg = dataclasses.replace(get_preset("ulx3s-85f"), image_read_latency=latency)
    rng = np.random.default_rng(3)
    image, layers = make_image(rng, 4096, [[1] * 48])
    image += bytes(cfg.image_bytes - len(image))
    (r,) = run_fetch(cfg, image, layers, seed=3)
    clocks = [d[0] - r["start"] for d in r["deals"]]
    assert clocks == list(range(3 + latency, 3 + latency + 48))
    check_layer(cfg, image, layers[0], r)


@pytest.mark.parametrize("latency", [1, 2])
def test_first_bytes(latency):
    """The ECP5 preset's lanes (5), channels longer than the 2W bytes that leave a lane
    room: the first ``lanes`` go one a lane, and lane j's first byte is on o[j] 8 + j clocks
    after start; 10 + j with an ``image_read_latency`` of 2 (the sizes' word and each
    lane's first word a clock later)."""
    cfg = dataclasses.replace(get_preset("ulx3s-85f"), image_read_latency=latency)
    lanes = cfg.decode_lanes
    rng = np.random.default_rng(4)
    image, _ = make_image(rng, 4096, [])
    data = bytearray(image + bytes(cfg.image_bytes - len(image)))
    sizes, a = [40] * 12, 64
    for i, s in enumerate(sizes):
        data[a + 2 * i:a + 2 * i + 2] = s.to_bytes(2, "little")
    layer = (a, a + 2 * len(sizes), sizes)
    (r,) = run_fetch(cfg, bytes(data), [layer])
    assert [d[1] for d in r["deals"][:lanes]] == list(range(lanes))
    first = 8 + 2 * (latency - 1)
    assert [p[0] - r["start"] for p in r["pops"]] == [first + j for j in range(lanes)]
    check_layer(cfg, bytes(data), layer, r)


@pytest.mark.parametrize(("preset", "starved", "slower", "latency"),
                         [("small", 0.03, 0.08, 1), ("ulx3s-85f", 0.03, 0.13, 1),
                          ("ulx3s-85f", 0.03, 0.13, 2)])
def test_keeps_lanes_fed_on_short_channels(preset, starved, slower, latency):
    """Short channels (1 to 24 bytes, about 10 symbols: LeNet-5 conv1 has 9) on every lane
    of a preset, each consumer taking a byte with probability 3/4 a clock (a decoder on
    codes of about 6 bits): lanes wait for bytes in at most ``starved`` of the clocks of
    their work, and the layer takes at most ``slower`` more clocks than the bytes need.
    The fetch that read each size a byte at a time (three clocks a channel) starved 8
    lanes here. ``ulx3s-85f`` reads 16-byte words for 5 lanes (3.2 bytes a lane a clock):
    its lanes starve 0.3 % of the time and the layer takes 341 clocks for 312 of bytes
    (0.4 % and 344 before the read address was registered, session 12).
    With 10 lanes on the same 16-byte words (1.6 bytes a lane, sessions 5 and 6) this worst
    case starved them 7.0 % of the time; 1.5 bytes a lane also cost the shipped images
    0.005 symbols a clock a lane (docs/results.md), hence at least 2 bytes a lane now.
    ``latency`` 2: the image buffer registers the address again, a word three clocks
    after its grant."""
    cfg = dataclasses.replace(get_preset(preset), image_read_latency=latency)
    lanes = cfg.decode_lanes
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 25, 20 * lanes)
    image, layers = make_image(rng, 8192, [sizes])
    image += bytes(cfg.image_bytes - len(image))
    (r,) = run_fetch(cfg, image, layers, seed=5, stall=0.25)
    check_layer(cfg, image, layers[0], r)
    work = [p[-1] - p[0] + 1 for p in r["pops"]]
    assert sum(r["starved"]) <= starved * sum(work), (r["starved"], work)
    need = sum(int(s) for s in sizes) / (0.75 * lanes)
    assert r["clocks"] <= (1 + slower) * need + 30, (r["clocks"], need)


@pytest.mark.parametrize(("offset", "latency"), [(0, 1), (1, 1), (3, 1), (1, 2), (3, 2)])
def test_one_lane_a_byte_a_clock(offset, latency):
    """One lane (the ``icebreaker`` preset): the layer's streams read straight through,
    from any byte of a word: the first byte 2 + ``latency`` clocks after ``start``, then a
    byte every clock to the last, with a consumer that is always ready."""
    cfg = dataclasses.replace(get_preset("icebreaker"), image_read_latency=latency)
    assert cfg.decode_lanes == 1
    rng = np.random.default_rng(6 + offset)
    sizes = [int(s) for s in random_sizes(rng, 40)]
    image, layers = make_image(rng, 8192, [sizes])
    sizes_addr, _, _ = layers[0]
    # move the streams to byte ``offset`` of a word (the sizes are not read)
    streams_addr = (sizes_addr + 2 * len(sizes) + 7) // 8 * 8 + offset
    data = bytearray(image + bytes(cfg.image_bytes - len(image)))
    data[streams_addr:streams_addr + sum(sizes)] = rng.integers(
        0, 256, sum(sizes), dtype=np.uint8).tobytes()
    layer = (sizes_addr, streams_addr, sizes)
    (r,) = run_fetch(cfg, bytes(data), [layer])
    check_layer(cfg, bytes(data), layer, r)
    pops = r["pops"][0]
    assert pops[0] - r["start"] == 2 + latency
    assert pops == list(range(pops[0], pops[0] + int(sum(sizes)))), "a byte every clock"
    assert r["starved"] == [0]


@pytest.mark.parametrize("lanes,seed", [(2, 21), (5, 22)])
def test_dense_deal_in_turn(lanes, seed):
    """Dense layers between load-dealt ones (the mode changes at each start): channel
    ``c`` goes to lane ``c mod n`` whatever the sizes (long channels among short ones,
    which the load deal would give to other lanes), random stalls; channels are dealt
    ahead of the lanes' bytes (a lane is dealt to with more than ``2W`` bytes left)."""
    cfg = config(lanes, image_bytes=8192)
    rng = np.random.default_rng(seed)
    shapes = [random_sizes(rng, 4 * lanes + 3), random_sizes(rng, 3 * lanes + 1),
              random_sizes(rng, 2 * lanes, short=True), [int(rng.integers(1, 40))]]
    shapes[0][::3] = 90
    dense = [True, False, True, True]
    image, layers = make_image(rng, cfg.image_bytes, shapes)
    results = run_fetch(cfg, image, layers, seed=seed, stall=0.3, dense=dense)
    for layer, r, d in zip(layers, results, dense, strict=True):
        check_layer(cfg, image, layer, r, dense=d)
    wb = cfg.image_word_bytes
    assert any(pend[lane] >= 2 * wb for _, lane, pend, _, _ in results[0]["deals"])
