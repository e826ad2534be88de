"""SymbolSplit against its software face ``table_items`` (``SymbolEntry.split``), with random
stalls, on every divider depth."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.decode import Alphabet
from hw.config import get_preset
from hw.layouts import SymbolEntry, TokenKind
from hw.symbol_split import SymbolSplit, table_items
from tests.streams import stream_get, stream_put

SMALL = get_preset("small")


def as_dict(item) -> dict:
    e = item.entry
    return {"count": item.count, "bad": item.bad,
            "entry": {"kind": e.kind, "run": e.run, "index": e.index}}


def expected(counts, symbols, k, run_bits) -> list[dict]:
    full = {"count": 0, "bad": 0, "entry": {"kind": TokenKind.PAIR, "run": 0, "index": 0}}
    out = []
    for item in table_items(counts, symbols, k, run_bits):
        entry = {**full["entry"], **item.get("entry", {})}
        out.append({**full, **item, "entry": entry})
    return out


def run_split(cfg, tables, *, steps=2, seed=0, stall=0.3, cycles=None, dut=None):
    """Split ``tables`` (params, counts, symbols), each after its own ``start``; return the
    items received per table."""
    dut = dut or SymbolSplit(cfg, steps=steps)
    rng = np.random.default_rng(seed) if stall else None
    got = []
    turn = []

    async def feed(ctx):
        for n, (params, counts, symbols) in enumerate(tables):
            while len(turn) < n:
                await ctx.tick()
            ctx.set(dut.params, params)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await stream_put(ctx, dut.i, list(counts) + list(symbols), rng=rng, stall=stall)

    async def collect(ctx):
        for _, counts, symbols in tables:
            items = await stream_get(ctx, dut.o, len(counts) + len(symbols), rng=rng,
                                     stall=stall, cycles=cycles)
            got.append([as_dict(i) for i in items])
            turn.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(collect)
    sim.run()
    return got


def random_table(rng, k, run_bits, max_len=16, n=40, bad=0.1):
    """Random counts and symbols drawn over the alphabet (and past it, with ``bad``)."""
    alpha = Alphabet(k, run_bits)
    counts = rng.integers(0, 1 << 16, rng.integers(1, max_len + 1)).tolist()
    symbols = rng.integers(0, alpha.size, n).tolist()
    symbols += [alpha.zrun, alpha.eos, alpha.zrun - 1, 0]
    symbols += [int(s) for s in rng.integers(alpha.size, 1 << 16, n) if rng.random() < bad]
    rng.shuffle(symbols)
    params = {"fan_in": 1, "codebook_size": k, "run_bits": run_bits, "max_len": len(counts)}
    return params, counts, symbols


@pytest.mark.parametrize("max_run_bits,steps", [(8, 2), (8, 3), (8, 8), (3, 1), (0, 2)])
def test_random_tables(max_run_bits, steps):
    """Back-to-back tables of random K and run_bits: every item as ``table_items``."""
    cfg = dataclasses.replace(SMALL, max_run_bits=max_run_bits)
    rng = np.random.default_rng(max_run_bits * 10 + steps)
    tables = []
    for k, rb in [(1, 0), (256, 0), (3, max_run_bits), (255, max_run_bits),
                  (int(rng.integers(1, 257)), int(rng.integers(0, max_run_bits + 1)))]:
        tables.append(random_table(rng, k, rb))
    got = run_split(cfg, tables, steps=steps, seed=steps)
    for (params, counts, symbols), items in zip(tables, got, strict=True):
        assert items == expected(counts, symbols, params["codebook_size"],
                                 params["run_bits"]), params


def test_every_symbol_of_an_alphabet():
    """K = 7, run_bits 3: the whole alphabet and the first symbols past it."""
    alpha = Alphabet(7, 3)
    symbols = list(range(alpha.size + 3))
    params = {"fan_in": 1, "codebook_size": 7, "run_bits": 3, "max_len": 2}
    (items,) = run_split(SMALL, [(params, [5, 9], symbols)], stall=0.2)
    assert items == expected([5, 9], symbols, 7, 3)
    assert [i["bad"] for i in items[2:]] == [0] * alpha.size + [1] * 3
    assert items[2 + 17]["entry"] == {**SymbolEntry.split(17, 7, 3), "kind": TokenKind.PAIR}


def test_one_word_a_clock():
    """Unstalled: an item a clock, the first ``stages`` clocks after its word."""
    dut = SymbolSplit(SMALL)
    assert dut.stages == 4
    cycles = []
    params = {"fan_in": 1, "codebook_size": 16, "run_bits": 6, "max_len": 3}
    symbols = list(range(0, 1024, 7))
    run_split(SMALL, [(params, [1, 2, 3], symbols)], stall=0.0, cycles=cycles, dut=dut)
    assert cycles == list(range(cycles[0], cycles[0] + 3 + len(symbols)))
    # the first word enters the clock after start (stream_get counts from start's clock)
    assert cycles[0] == 1 + dut.stages


def test_refuses_zero_steps():
    with pytest.raises(ValueError, match="at least one quotient bit"):
        SymbolSplit(SMALL, steps=0)
