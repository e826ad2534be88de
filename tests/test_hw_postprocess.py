"""PostProcess against golden.model.postprocess: arithmetic item by item, then whole pooled
feature maps (items as the conv drain gives them: each window's largest accumulator) into
an output bank, with random stalls on the item stream."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, signed
from amaranth.lib import memory
from amaranth.sim import Simulator

from golden.fixedpoint import int_range
from golden.model import postprocess
from hw.config import PRESETS
from hw.postprocess import PostProcess
from tests.streams import stream_put

SMALL = PRESETS["small"]
# bw 16 at the tightest legal accumulator width (min_acc_width).
WIDE = dataclasses.replace(SMALL, bw=16, acc_width=2 * 16 + (SMALL.max_fan_in - 1).bit_length())
# drain_width 2: items carry a second accumulator for the next word (same channel).
# One row (pool_after_post, the icebreaker's form): post-processing pools, items carry the
# flags of their pooling window.
CONFIGS = {"bw8": SMALL, "bw16": WIDE,
           "bw8pairs": dataclasses.replace(SMALL, drain_width=2),
           "bw16pairs": dataclasses.replace(WIDE, drain_width=2),
           "bw8row": dataclasses.replace(SMALL, rows=1),
           "bw16row": dataclasses.replace(WIDE, rows=1)}
STALL = 0.3
LATENCY = 5  # clocks from an item's acceptance to its write


class _WithBank(Elaboratable):
    """A PostProcess writing into an output bank (a Memory with a write port)."""

    def __init__(self, cfg, init):
        self.cfg = cfg
        self.post = PostProcess(cfg)
        self.bank = memory.MemoryData(shape=signed(cfg.bw), depth=cfg.act_depth, init=init)

    def elaborate(self, platform):
        m = Module()
        m.submodules.post = post = self.post
        m.submodules.mem = mem = memory.Memory(data=self.bank)
        wr = mem.write_port()
        m.d.comb += [wr.addr.eq(post.wr_addr), wr.data.eq(post.wr_data),
                     wr.en.eq(post.wr_en)]
        if self.cfg.drain_width == 2:
            wr1 = mem.write_port()
            m.d.comb += [wr1.addr.eq(post.wr_addr + 1), wr1.data.eq(post.wr_data1),
                         wr1.en.eq(post.wr_two)]
        return m


def pack(cfg, items):
    """With ``drain_width`` 2, each item and the next one go as one pair item when they
    share the channel and the next goes to the following word."""
    if cfg.drain_width == 1:
        return items
    out, n = [], 0
    while n < len(items):
        a = dict(items[n], two=0, acc1=0)
        if (n + 1 < len(items) and items[n + 1]["channel"] == a["channel"]
                and items[n + 1]["addr"] == a["addr"] + 1):
            a.update(two=1, acc1=items[n + 1]["acc"])
            n += 1
        out.append(a)
        n += 1
    return out


def run(cfg, biases, params, items, *, seed=0, stall=STALL, init=None, timing=None):
    """Write ``biases``, set ``params`` and stream ``items``; the bank's words afterwards.

    ``init`` fills the bank beforehand (default: random words, so a write that should not
    happen shows). With ``timing`` (a
    dict), records in ``idle_after`` how many clocks after the last transfer ``idle`` rose.
    """
    rng = np.random.default_rng(seed)
    if init is None:
        lo, hi = int_range(cfg.bw)
        init = [int(v) for v in rng.integers(lo, hi + 1, cfg.act_depth)]
    if cfg.pool_after_post:
        # (an item without pooling flags is its own window, written)
        items = [{"opens": 1, "closes": 1, "live": 1, **item} for item in items]
    top = _WithBank(cfg, init)
    dut = top.post
    got = {}

    async def bench(ctx):
        for ch, b in enumerate(biases):
            ctx.set(dut.bias_wr_addr, ch)
            ctx.set(dut.bias_wr_data, int(b))
            ctx.set(dut.bias_wr_en, 1)
            await ctx.tick()
        ctx.set(dut.bias_wr_en, 0)
        ctx.set(dut.params, params)
        assert ctx.get(dut.idle) and ctx.get(dut.i.ready)
        await stream_put(ctx, dut.i, items, rng=rng if stall else None, stall=stall)
        clock = 0
        while not ctx.get(dut.idle):
            assert ctx.get(dut.i.ready)
            await ctx.tick()
            clock += 1
            assert clock <= LATENCY
        if timing is not None:
            timing["idle_after"] = clock
        got["bank"] = [ctx.get(top.bank[n]) for n in range(cfg.act_depth)]

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got["bank"], init


def layer_params(bias_shift, out_shift, use_relu):
    """PostParams and the golden fractional lengths they stand for (acc_fl = 0)."""
    params = {"bias_shift": bias_shift, "out_shift": out_shift, "relu": int(use_relu)}
    fls = {"acc_fl": 0, "b_fl": -bias_shift, "out_fl": -out_shift}
    return params, fls


def random_biases(rng, cfg, n, bias_shift):
    """``n`` raw biases that still fit ``acc_width`` bits once aligned (the precondition),
    the extremes included."""
    if bias_shift >= cfg.acc_width:
        return np.zeros(n, dtype=np.int64)
    lo, hi = int_range(cfg.acc_width - bias_shift)
    b = rng.integers(lo, hi + 1, n)
    b[: min(n, 2)] = [lo, hi][: min(n, 2)]
    return b


# -- arithmetic: one item per word, no pooling ------------------------------------------------

def check_items(cfg, acc, channels, biases, bias_shift, out_shift, use_relu, *, seed=0,
                stall=STALL):
    """Item n (acc[n], bias channels[n]) goes to word n; compare with golden postprocess."""
    params, fls = layer_params(bias_shift, out_shift, use_relu)
    if not np.any(biases):
        fls["b_fl"] = 0  # the golden model cannot shift even a 0 by more than 62
    acc = np.asarray(acc, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    biases = np.asarray(biases, dtype=np.int64)
    items = [{"acc": int(a), "channel": int(c), "addr": n}
             for n, (a, c) in enumerate(zip(acc, channels, strict=True))]
    bank, init = run(cfg, biases, params, pack(cfg, items), seed=seed, stall=stall)
    want = postprocess(acc[None, :], biases[channels], bw=cfg.bw, use_relu=use_relu, **fls)[0]
    assert bank[: len(acc)] == [int(v) for v in want]
    assert bank[len(acc):] == init[len(acc):]
    return want


def random_case(cfg, seed, bias_shift, out_shift, use_relu, n=40):
    rng = np.random.default_rng(seed)
    lo, hi = int_range(cfg.acc_width)
    acc = rng.integers(lo, hi + 1, n)
    # Small accumulators too, where rounding and not saturation decides.
    acc[n // 2:] >>= rng.integers(0, cfg.acc_width, n - n // 2)
    acc[:4] = [lo, hi, lo, hi]  # the extremes, with the most negative and positive biases
    biases = random_biases(rng, cfg, 6, bias_shift)
    channels = rng.integers(0, len(biases), n)
    channels[:4] = [0, 1, 1, 0]
    channels[7::4] = channels[6::4]  # pairs of one channel, for drain_width 2
    check_items(cfg, acc, channels, biases, bias_shift, out_shift, use_relu, seed=seed)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("bias_shift,out_shift,use_relu", [
    (0, 0, False),
    (3, 7, True),
    (5, 12, False),
    (0, 1, False),
    (2, -3, False),  # left shift: saturates unless small
    (1, -1, True),
])
def test_random_arithmetic(name, bias_shift, out_shift, use_relu):
    cfg = CONFIGS[name]
    random_case(cfg, 10 + bias_shift + out_shift, bias_shift, out_shift, use_relu)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("out_shift", [-45, -17, -9, 30, 500, 511])
def test_large_shifts(name, out_shift):
    """Right shifts beyond the sum's width (0 everywhere) and left shifts past ``bw`` (every
    nonzero value saturates). The golden model computes left shifts up to about 62 - bw."""
    cfg = CONFIGS[name]
    bias_shift = 4 if cfg.bw == 8 else 9
    random_case(cfg, 3, bias_shift, out_shift, False, n=24)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("past", [-1, 0, 6, 485])
def test_bias_shift_at_width(name, past):
    """``bias_shift = acc_width - 1`` leaves room for a bias of -1 only; from ``acc_width``
    on the precondition makes every bias 0 (511: PostParams' largest ``bias_shift``)."""
    cfg = CONFIGS[name]
    random_case(cfg, 4, min(cfg.acc_width + past, 511), 2, False, n=12)


@pytest.mark.parametrize("out_shift", [-512, -300, -63, -16])
def test_left_shift_beyond_golden(out_shift):
    """Left shifts the golden model cannot compute in int64: 0 stays 0, anything else
    saturates to its sign's end of the range."""
    cfg = SMALL
    lo, hi = int_range(cfg.bw)
    acc_lo, acc_hi = int_range(cfg.acc_width)
    acc = [0, 1, -1, 5, -7, acc_hi, acc_lo, 0]
    items = [{"acc": a, "channel": 0, "addr": n}
             for n, a in enumerate(acc)]
    params, _ = layer_params(0, out_shift, False)
    bank, _ = run(cfg, [0], params, items, stall=0.0)
    assert bank[: len(acc)] == [0, hi, lo, hi, lo, hi, lo, 0]


def test_known_answers():
    """Round half up (2.5 -> 3, -2.5 -> -2, -2.6 -> -3), bias alignment, saturation at both
    ends of bw 8, ReLU after rounding."""
    cfg = SMALL
    # out_shift 1: halves. Bias channel 0 = 0, channel 1 = 3 << 2 = 12.
    acc = [5, -5, 3, -3, -1, 1, 0, 7 - 12, 254, 255, 256, -256, -257, -258, -255, -253]
    chan = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    want = check_items(cfg, acc, chan, [0, 3], 2, 1, False, stall=0.0)
    assert list(want) == [3, -2, 2, -1, 0, 1, 0, 4, 127, 127, 127, -128, -128, -128, -127,
                          -126]
    # Shift 2: -2.5*4 = -10 -> -2, -10.4 -> -11/4 = -2.75 -> -3; ReLU zeros negatives only.
    acc = [-10, -11, 10, 9, -2, 2, -1]
    want = check_items(cfg, acc, [0] * len(acc), [0], 0, 2, True, stall=0.0)
    assert list(want) == [0, 0, 3, 2, 0, 1, 0]
    acc = [-10, -11, 10, 9, -2, 2, -1]
    want = check_items(cfg, acc, [0] * len(acc), [0], 0, 2, False, stall=0.0)
    assert list(want) == [-2, -3, 3, 2, 0, 1, 0]


def test_throughput_and_idle():
    """One item per clock without stalls; ``idle`` rises ``LATENCY + 1`` clocks after the
    last item's acceptance, and ``i.ready`` never drops."""
    cfg = SMALL
    rng = np.random.default_rng(7)
    n = 30
    acc = rng.integers(-1000, 1000, n)
    params, _ = layer_params(0, 2, False)
    items = [{"acc": int(a), "channel": 0, "addr": k}
             for k, a in enumerate(acc)]
    timing = {}
    bank, _ = run(cfg, [0], params, items, stall=0.0, timing=timing)
    assert timing["idle_after"] == LATENCY
    want = postprocess(acc[None, :], np.zeros(1, dtype=np.int64), acc_fl=0, b_fl=0, out_fl=-2,
                       bw=cfg.bw, use_relu=False)[0]
    assert bank[:n] == [int(v) for v in want]


# -- pooling: whole maps in the conv path's order ----------------------------------------------

def conv_items(acc, p, cols, drain_width=1, *, pool_after_post=False):
    """Items for the (C, H, W) map ``acc`` as the conv drain emits them, pooled ``p x p``
    with stride ``p``: tiles of ``cols`` channels, windows in raster order within a tile
    (with ``drain_width`` 2, pairs of them), each window's largest accumulator (partial
    windows at the bottom and right dropped). With ``pool_after_post``, not pooled: every
    position of a window in raster order, ``cols`` items each (the tile's dead columns
    too), with the window's flags."""
    c_n, h, w = acc.shape
    ph, pw = h // p, w // p
    n = ph * pw
    if pool_after_post:
        items = []
        for t in range(0, c_n, cols):
            for k in range(n):
                py, px = divmod(k, pw)
                for pos in range(p * p):
                    y, x = py * p + pos // p, px * p + pos % p
                    for ch in range(t, t + cols):
                        live = ch < c_n
                        items.append({"acc": int(acc[ch, y, x]) if live else 0,
                                      "channel": ch, "addr": ch * n + k,
                                      "opens": int(pos == 0), "closes": int(pos == p * p - 1),
                                      "live": int(live)})
        return items

    def peak(ch, k):
        py, px = divmod(k, pw)
        return int(acc[ch, py * p:(py + 1) * p, px * p:(px + 1) * p].max())

    items = []
    for t in range(0, c_n, cols):
        k = 0
        while k < n:
            two = drain_width == 2 and k + 1 < n
            for ch in range(t, min(t + cols, c_n)):
                item = {"acc": peak(ch, k), "channel": ch, "addr": ch * n + k}
                if drain_width == 2:
                    item.update(two=int(two), acc1=peak(ch, k + 1) if two else 0)
                items.append(item)
            k += 1 + two
    return items


def check_map(cfg, shape, p, *, seed, bias_shift=2, out_shift=6, use_relu=True, stall=STALL,
              spread=None):
    rng = np.random.default_rng(seed)
    # Outputs around the whole bw range, most of them inside it: accumulators within
    # ±2^(bw - 2) outputs, aligned biases within ±2^(bw - 3) (wider ones saturated nearly
    # every output, and a pooling test of saturated outputs shows little).
    spread = spread or 1 << (cfg.bw + out_shift - 2)
    acc = rng.integers(-spread, spread, shape)
    reach = max(cfg.bw + out_shift - 3 - bias_shift, 0)
    biases = rng.integers(-(1 << reach), 1 << reach, shape[0])
    params, fls = layer_params(bias_shift, out_shift, use_relu)
    items = conv_items(acc, p, cfg.cols, cfg.drain_width,
                       pool_after_post=cfg.pool_after_post)
    bank, init = run(cfg, biases, params, items, seed=seed, stall=stall)
    want = postprocess(acc[None], biases, bw=cfg.bw, use_relu=use_relu,
                       pool=p if p > 1 else 0, pool_stride=p if p > 1 else 0, **fls)[0]
    size = want.size
    assert bank[:size] == [int(v) for v in want.ravel()]
    assert bank[size:] == init[size:]
    lo, hi = int_range(cfg.bw)
    assert np.mean((want > lo) & (want < hi)) > 0.5  # (mostly unsaturated)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("shape,p", [
    ((3, 5, 4), 1),
    ((3, 6, 6), 2),
    ((3, 7, 5), 2),  # partial windows dropped at the bottom and the right
    ((2, 6, 9), 3),
    ((3, 8, 7), 3),
])
def test_pooling(name, shape, p):
    check_map(CONFIGS[name], shape, p, seed=sum(shape) + p)


@pytest.mark.parametrize("rows", [2, 1])
@pytest.mark.parametrize("cols", [1, 2, 3])
def test_pooling_no_stalls(cols, rows):
    """Back to back, across tiles (with one row, pooled here: a last tile of dead columns
    with cols 2 and 3)."""
    cfg = dataclasses.replace(SMALL, rows=rows, cols=cols, decode_lanes=1)
    check_map(cfg, (3, 5, 6), 2, seed=cols, stall=0.0)


@pytest.mark.parametrize("bw", [8, 16])
@pytest.mark.parametrize("shape,p,cols", [((4, 6, 6), 2, 3), ((2, 9, 7), 3, 2),
                                          ((3, 4, 4), 2, 1)])
@pytest.mark.parametrize("use_relu", [False, True])
def test_pooling_in_post(bw, shape, p, cols, use_relu):
    """With one row (``pool_after_post``) the maxima are kept here, a channel's ``cols``
    items apart: outputs spread inside the ``bw``-bit range, so that a window's maximum is
    rarely its last position's, with and without ReLU, across tiles whose last has dead
    columns."""
    cfg = dataclasses.replace(SMALL if bw == 8 else WIDE, rows=1, cols=cols, decode_lanes=1)
    rng = np.random.default_rng(sum(shape) + p + cols + bw)
    out_shift = 3
    acc = rng.integers(-(1 << (bw + out_shift - 1)), 1 << (bw + out_shift - 1), shape)
    biases = rng.integers(-(1 << bw), 1 << bw, shape[0])
    params, fls = layer_params(0, out_shift, use_relu)
    items = conv_items(acc, p, cfg.cols, pool_after_post=True)
    bank, init = run(cfg, biases, params, items, seed=bw + p)
    want = postprocess(acc[None], biases, bw=cfg.bw, use_relu=use_relu, pool=p,
                       pool_stride=p, **fls)[0]
    assert bank[:want.size] == [int(v) for v in want.ravel()]
    assert bank[want.size:] == init[want.size:]
    # (the data decides: most windows' maxima are not at their last position)
    last = postprocess(acc[None, :, p - 1::p, p - 1::p], biases, bw=cfg.bw,
                       use_relu=use_relu, **fls)[0][:, :want.shape[1], :want.shape[2]]
    assert np.mean(last != want) > 0.3


def test_idle_ignores_dead_columns():
    """With ``pool_after_post`` a last tile's dead columns write nothing, and ``idle`` does
    not wait for them: 4 channels on 3 columns end with 2 dead items, so ``idle`` rises 2
    clocks sooner after the last transfer than ``LATENCY``; the outputs are all written."""
    cfg = dataclasses.replace(SMALL, rows=1, cols=3, decode_lanes=1)
    rng = np.random.default_rng(3)
    acc = rng.integers(-500, 500, (4, 4, 4))
    params, fls = layer_params(0, 2, False)
    timing = {}
    bank, init = run(cfg, [0] * 4, params, conv_items(acc, 2, 3, pool_after_post=True),
                     stall=0.0, timing=timing)
    want = postprocess(acc[None], np.zeros(4, dtype=np.int64), bw=cfg.bw, use_relu=False,
                       pool=2, pool_stride=2, **fls)[0]
    assert bank[:want.size] == [int(v) for v in want.ravel()]
    assert timing["idle_after"] == LATENCY - 2


def test_pooling_without_relu():
    """Negative maxima survive when ReLU is off."""
    check_map(SMALL, (2, 6, 6), 2, seed=5, use_relu=False, bias_shift=0, out_shift=3)


def test_fc():
    """A fully connected layer: one item per channel at ``addr = channel``, any order."""
    cfg = SMALL
    rng = np.random.default_rng(9)
    n = 20
    biases = random_biases(rng, cfg, n, 3) >> 8
    acc = rng.integers(-(1 << 14), 1 << 14, n)
    order = rng.permutation(n)
    items = [{"acc": int(acc[ch]), "channel": int(ch), "addr": int(ch)}
             for ch in order]
    params, fls = layer_params(3, 7, True)
    bank, init = run(cfg, biases, params, items, seed=9)
    want = postprocess(acc[None], biases, bw=cfg.bw, use_relu=True, **fls)[0]
    assert bank[:n] == [int(v) for v in want]
    assert bank[n:] == init[n:]
