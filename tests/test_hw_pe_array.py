# amaranth: UnusedElaboratable=no
"""PEArray against golden.fixedpoint.accumulate, with random stalls on all three streams."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.fixedpoint import accumulate, int_range
from hw.config import get_preset
from hw.pe_array import PEArray
from hw.skew import Skew
from tests.streams import stream_get, stream_put

STALL = 0.3


def array_config(rows, cols, bw, max_fan_in=64, broadcast=False):
    """A ``rows`` x ``cols`` build whose accumulator is exactly as wide as ``max_fan_in``
    needs, so the extreme-value tests sit at the edge of the accumulator's range;
    ``broadcast`` is its ``row_broadcast``."""
    small = get_preset("small")
    fan_in_bits = (max_fan_in - 1).bit_length()
    return dataclasses.replace(small, rows=rows, cols=cols, bw=bw, decode_lanes=1,
                               max_fan_in=max_fan_in, acc_width=2 * bw + fan_in_bits,
                               row_broadcast=broadcast)


def input_vectors(cfg, x, w):
    """The streams for a batch: groups of ``rows`` positions, each a reduction over N."""
    m_total, n = x.shape
    acts, weights = [], []
    for g in range(0, m_total, cfg.rows):
        live = min(cfg.rows, m_total - g)
        for k in range(n):
            col = [int(x[g + r, k]) if r < live else 0 for r in range(cfg.rows)]
            acts.append({"x": col, "mask": (1 << live) - 1, "first": int(k == 0),
                         "last": int(k == n - 1)})
            weights.append({"w": [int(v) for v in w[:, k]]})
    return acts, weights


def simulate(cfg, x, w, **kwargs):
    """Run a batch through a PEArray; returns the (M, cols) accumulators it emitted."""
    acts, weights = input_vectors(cfg, x, w)
    return run(cfg, acts, weights, x.shape[0], **kwargs)


def run(cfg, acts, weights, n_out, *, seed=0, stall=STALL, out_stall=None, in_cycles=None,
        out_cycles=None):
    """Send the payloads ``acts`` and ``weights``; returns the (n_out, cols) accumulators.
    ``stall`` is each stream's stall probability per clock (``out_stall`` the output's, if
    given)."""
    dut = PEArray(cfg)
    out_stall = stall if out_stall is None else out_stall
    rng = np.random.default_rng(seed) if stall or out_stall else None
    got = []

    async def feed_x(ctx):
        await stream_put(ctx, dut.i, acts, rng=rng, stall=stall)

    async def feed_w(ctx):
        await stream_put(ctx, dut.w, weights, rng=rng, stall=stall)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, n_out, rng=rng, stall=out_stall,
                                    cycles=out_cycles))
        # Nothing more may come out.
        for _ in range(cfg.rows + cfg.cols + 4):
            await ctx.tick()
            assert not ctx.get(dut.o.valid)

    async def check_output_rules(ctx):
        """lib.stream: once valid, o stays valid with the same payload until it transfers."""
        held = None
        async for _, _, valid, ready, payload in ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload):
            if held is not None:
                assert valid and payload.as_value().value == held, "o changed while stalled"
            held = payload.as_value().value if valid and not ready else None

    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(dut.i.valid, dut.i.ready):
            if valid and ready:
                in_cycles.append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed_x, background=True)
    sim.add_testbench(feed_w, background=True)
    sim.add_testbench(check_output_rules, background=True)
    if in_cycles is not None:
        sim.add_testbench(monitor, background=True)
    sim.add_testbench(collect)
    sim.run()
    return np.array([[int(v) for v in o.acc] for o in got], dtype=np.int64).reshape(
        len(got), cfg.cols)


def random_case(cfg, m, n, rng, *, extremes=0.2):
    """Random ``bw``-bit x (m, n) and w (cols, n), a fraction of them at the range's ends."""
    lo, hi = int_range(cfg.bw)
    x = rng.integers(lo, hi + 1, size=(m, n))
    w = rng.integers(lo, hi + 1, size=(cfg.cols, n))
    for a in (x, w):
        pick = rng.random(a.shape) < extremes
        a[pick] = rng.choice([lo, hi], size=int(pick.sum()))
    return x, w


def check(cfg, x, w, **kwargs):
    got = simulate(cfg, x, w, **kwargs)
    np.testing.assert_array_equal(got, accumulate(x, w, cfg.bw))


# (rows, cols, row_broadcast): the systolic dataflow, and rows broadcast to their columns
# (the icebreaker preset's 1x8), square and not.
SHAPES = [(2, 2, False), (4, 4, False), (2, 3, False), (1, 4, True), (3, 2, True)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bw", [8, 16])
@pytest.mark.parametrize("rows,cols,broadcast", SHAPES)
def test_random(rows, cols, broadcast, bw, seed):
    """M not a multiple of rows; N shorter than, equal to and longer than the array."""
    cfg = array_config(rows, cols, bw, broadcast=broadcast)
    rng = np.random.default_rng(100 * seed + 10 * rows + cols + bw)
    for n in sorted({1, max(rows - 1, 1), rows, 2 * rows + 3}):
        m = 2 * rows + 1 + int(rng.integers(0, rows))
        x, w = random_case(cfg, m, n, rng)
        check(cfg, x, w, seed=seed + n)


@pytest.mark.parametrize("bw", [8, 16])
@pytest.mark.parametrize("rows,cols,broadcast", SHAPES)
def test_extremes(rows, cols, broadcast, bw):
    """-2^(bw-1) everywhere at the largest fan-in: the largest sum, which needs every bit of
    the tightest legal accumulator; then the most negative one."""
    cfg = array_config(rows, cols, bw, max_fan_in=32, broadcast=broadcast)
    lo, hi = int_range(bw)
    n = cfg.max_fan_in
    x = np.full((rows + 1, n), lo)
    w = np.full((cols, n), lo)
    w[-1] = hi  # the last column's sums are the most negative
    expected = accumulate(x, w, bw)
    assert expected.max() == n << (2 * bw - 2)
    assert expected.max() == (1 << (cfg.acc_width - 2))
    check(cfg, x, w, seed=3)


@pytest.mark.parametrize("broadcast", [False, True])
def test_back_to_back_reductions_of_one(broadcast):
    """N = 1 everywhere: every vector is first and last; the array must space the groups."""
    cfg = array_config(4, 2, 8, broadcast=broadcast)
    rng = np.random.default_rng(7)
    x, w = random_case(cfg, 11, 1, rng)
    check(cfg, x, w, stall=0.0)
    check(cfg, x, w, seed=7, stall=0.5)


@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("rows,cols,n", [(2, 3, 6), (1, 5, 1), (1, 5, 2)])
def test_heavy_output_stall(rows, cols, n, broadcast):
    """The output is rarely ready: the array must stop, not drop or corrupt results (one
    row with row_broadcast: a one-entry output queue, results a clock or two apart)."""
    cfg = array_config(rows, cols, 8, broadcast=broadcast)
    rng = np.random.default_rng(9)
    x, w = random_case(cfg, 5 + 3 * (rows == 1), n, rng)
    check(cfg, x, w, seed=9, stall=0.0, out_stall=0.8)
    check(cfg, x, w, seed=10, stall=0.2, out_stall=0.8)


@pytest.mark.parametrize("rows,cols,broadcast", SHAPES)
def test_utilisation_and_cycle_count(rows, cols, broadcast):
    """No stalls, N >= rows: one input vector per clock, and the documented latency."""
    cfg = array_config(rows, cols, 8, broadcast=broadcast)
    span = 1 if broadcast else cols  # cfg.row_clocks, spelled out
    rng = np.random.default_rng(11)
    groups, n = 3, rows + 2
    x, w = random_case(cfg, groups * rows, n, rng)
    in_cycles, out_cycles = [], []
    got = simulate(cfg, x, w, stall=0.0, in_cycles=in_cycles, out_cycles=out_cycles)
    np.testing.assert_array_equal(got, accumulate(x, w, cfg.bw))
    # Every vector was accepted in consecutive clocks, from the first clock on.
    assert in_cycles == list(range(groups * n))
    # Group g's row r leaves cols + 3 + r clocks after its `last` was accepted (1 + 3 + r
    # with row_broadcast).
    expected = [(g + 1) * n - 1 + span + 3 + r for g in range(groups) for r in range(rows)]
    assert out_cycles == expected
    # docs/pe-array.md: cycles = G·N + rows + cols + 2, first input to last output inclusive.
    assert out_cycles[-1] + 1 == groups * n + rows + span + 2
    assert cfg.row_clocks == span


@pytest.mark.parametrize("broadcast", [False, True])
def test_short_reductions_throughput(broadcast):
    """N < rows: a `last` is accepted once every `rows` clocks (docs/pe-array.md)."""
    cfg = array_config(4, 2, 8, broadcast=broadcast)
    rng = np.random.default_rng(12)
    groups, n = 3, 2
    x, w = random_case(cfg, groups * 4, n, rng)
    in_cycles, out_cycles = [], []
    got = simulate(cfg, x, w, stall=0.0, in_cycles=in_cycles, out_cycles=out_cycles)
    np.testing.assert_array_equal(got, accumulate(x, w, cfg.bw))
    # last of group g at n - 1 + g * max(n, rows); the other vectors as early as possible.
    lasts = [in_cycles[g * n + n - 1] for g in range(groups)]
    assert lasts == [n - 1 + g * 4 for g in range(groups)]
    starts = [0] + [c + 1 for c in lasts[:-1]]
    assert in_cycles == [c for g in range(groups)
                         for c in [*range(starts[g], starts[g] + n - 1), lasts[g]]]
    span = 1 if broadcast else cfg.cols
    assert out_cycles == [lasts[g] + span + 3 + r for g in range(groups) for r in range(4)]


@pytest.mark.parametrize("broadcast", [False, True])
def test_sparse_mask(broadcast):
    """Rows whose mask bit is clear neither accumulate nor emit, wherever they are."""
    cfg = array_config(4, 3, 8, broadcast=broadcast)
    rng = np.random.default_rng(13)
    n, masks = 5, [0b1010, 0b0001, 0b0000, 0b1111, 0b0110]
    lo, hi = int_range(cfg.bw)
    x = rng.integers(lo, hi + 1, size=(len(masks), cfg.rows, n))
    w = rng.integers(lo, hi + 1, size=(cfg.cols, n))
    acts, weights, expected = [], [], []
    for g, mask in enumerate(masks):
        for k in range(n):
            acts.append({"x": [int(v) for v in x[g, :, k]], "mask": mask,
                         "first": int(k == 0), "last": int(k == n - 1)})
            weights.append({"w": [int(v) for v in w[:, k]]})
        live = [r for r in range(cfg.rows) if mask >> r & 1]
        expected.extend(accumulate(x[g, live], w, cfg.bw))
    got = run(cfg, acts, weights, len(expected), seed=13)
    np.testing.assert_array_equal(got, np.array(expected).reshape(-1, cfg.cols))


@pytest.mark.parametrize("reverse", [False, True])
def test_skew_delays(reverse):
    n = 4
    dut = Skew(8, n, reverse=reverse)
    seen = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for t in range(2 * n):
            for j in range(n):
                ctx.set(dut.i[j], 16 * t + j)
            seen.append([ctx.get(dut.o[j]) for j in range(n)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for j in range(n):
        d = dut.delay(j)
        assert d == (n - 1 - j if reverse else j)
        for t in range(d, 2 * n):
            assert seen[t][j] == 16 * (t - d) + j


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_long_random_ulx3s(seed):
    """The ULX3S preset's 8x8 array on a longer batch (N = 300, M = 43)."""
    cfg = get_preset("ulx3s-85f")
    rng = np.random.default_rng(seed)
    x, w = random_case(cfg, 43, 300, rng)
    check(cfg, x, w, seed=seed, stall=0.2)


def test_rejects_bad_skew():
    with pytest.raises(ValueError, match="at least one lane"):
        Skew(8, 0)
