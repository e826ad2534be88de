"""RunExpander against golden codebook_lookup(expand_runs(symbols)), weight by weight (dense
mode) and entry by entry (sparse mode)."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.decode import Alphabet, codebook_lookup, expand_runs
from hw.layouts import TokenKind
from hw.run_expand import ExpandError, RunExpander
from tests.streams import stream_get, stream_put
from tests.test_hw_huffman import (
    IMAGES,
    SMALL,
    STALL,
    case_from_layer,
    imagegen_case,
    small_config,
    synthetic_case,
    tokens_of,
)
from weights.image import read_image_file


def expected_weights(case) -> list[dict]:
    """Golden expansion and codebook stages, channel after channel, with k and first/last."""
    return dense_reference(case.symbols(), case.alpha, case.fan_in, case.codebook)


def dense_reference(channels, alpha, fan_in, codebook) -> list[dict]:
    out = []
    for syms in channels:
        w = codebook_lookup(expand_runs(syms, alpha, fan_in), codebook)
        out.extend({"weight": int(v), "k": j, "first": int(j == 0), "last": int(j == fan_in - 1)}
                   for j, v in enumerate(w))
    return out


def sparse_reference(channels, alpha, fan_in, codebook) -> list[dict]:
    """The sparse entries: a (position, weight) for every position a pair writes (codebook
    entries 0 included), then a weight-0 end marker at N-1 if the channel's last weight is
    not a pair's."""
    out = []
    for syms in channels:
        idx = expand_runs(syms, alpha, fan_in)
        w = codebook_lookup(idx, codebook)
        entries = [(int(k), int(w[k])) for k in np.flatnonzero(idx >= 0)]
        if idx[fan_in - 1] < 0:
            entries.append((fan_in - 1, 0))
        out.extend({"weight": v, "k": k, "first": int(n == 0), "last": int(n == len(entries) - 1)}
                   for n, (k, v) in enumerate(entries))
    return out


def simulate(cfg, params, codebook, tokens, n_out, *, seed=0, stall=STALL, cycles=None,
             settle=4, sparse=False):
    """Run tokens through a RunExpander: (received weights as dicts, final error)."""
    dut = RunExpander(cfg)
    rng = np.random.default_rng(seed) if stall else None
    got = []
    result = {}

    async def control(ctx):
        ctx.set(dut.params, params)
        ctx.set(dut.sparse, sparse)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await stream_put(ctx, dut.codebook, [int(c) for c in codebook], rng=rng, stall=stall)

    async def feed(ctx):
        await stream_put(ctx, dut.i, tokens, rng=rng, stall=stall)

    async def collect(ctx):
        got.extend(await stream_get(ctx, dut.o, n_out, rng=rng, stall=stall, cycles=cycles,
                                    timeout=200 if n_out == 0 else 10_000))
        await ctx.tick().repeat(settle)
        result["error"] = ctx.get(dut.error)
        result["valid"] = ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control, background=True)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(collect)
    sim.run()
    weights = [{"weight": w.weight, "k": w.k, "first": w.first, "last": w.last} for w in got]
    return weights, result


def check_case(case, cfg=SMALL, *, seed=0, stall=STALL, sparse=False):
    reference = sparse_reference if sparse else dense_reference
    expected = reference(case.symbols(), case.alpha, case.fan_in, case.codebook)
    got, result = simulate(cfg, case.params, case.codebook, case.tokens(), len(expected),
                           seed=seed, stall=stall, sparse=sparse)
    assert result["error"] == ExpandError.NONE
    for n, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"weight {n}"


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bw,index_bits,run_bits,density", [
    (8, 3, 2, 0.3),
    (16, 2, 0, 0.5),
    (8, 1, 1, 0.2),
    (16, 4, 3, 0.15),
])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_imagegen_layers(seed, bw, index_bits, run_bits, density, sparse):
    case = imagegen_case(seed, bw=bw, fan_in=24, out_c=3, index_bits=index_bits,
                         run_bits=run_bits, density=density)
    check_case(case, small_config(bw), seed=seed, sparse=sparse)


@pytest.mark.parametrize("density,run_bits", [(1.0, 0), (0.0, 0), (0.0, 2), (0.5, 1)])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_codebook_of_one(density, run_bits, sparse):
    """K = 1: dense channels, empty ones (EOS alone), and a mix."""
    case = synthetic_case(3, fan_in=11, out_c=4, k=1, run_bits=run_bits, density=density,
                          bw=16)
    check_case(case, small_config(16), seed=1, sparse=sparse)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_long_zero_runs(sparse):
    """run_bits 8: ZRUN fillers of 256 zeros and runs up to 255."""
    case = synthetic_case(4, fan_in=600, out_c=2, k=2, run_bits=8, density=0.01)
    assert any(t["kind"] == TokenKind.ZRUN for t in case.tokens())
    check_case(case, seed=2, stall=0.1, sparse=sparse)


def test_full_codebook():
    """256 entries (max_index_bits 8) at bw 16, every index used."""
    case = synthetic_case(5, fan_in=300, out_c=1, k=256, run_bits=0, density=1.0, bw=16)
    check_case(case, small_config(16), stall=0.1)


@pytest.mark.skipif(not IMAGES, reason="no weights/images/lenet300*.img yet")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_real_image_layer(sparse):
    image = read_image_file(IMAGES[0])
    layer = min(image.layers, key=lambda la: la.fan_in * la.out_c)
    check_case(case_from_layer(layer), small_config(image.bw), stall=0.1, sparse=sparse)


def test_throughput_one_weight_per_clock():
    case = imagegen_case(8, fan_in=40, out_c=4, run_bits=2, density=0.5)
    expected = expected_weights(case)
    cycles = []
    got, result = simulate(SMALL, case.params, case.codebook, case.tokens(), len(expected),
                           stall=0.0, cycles=cycles)
    assert got == expected
    assert cycles[-1] - cycles[0] + 1 == len(expected)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_layers_back_to_back_resident(sparse):
    """Layers one after another on one expander, every parameter changing at each start:
    two codebooks loaded at their bases, then both layers again from the resident
    codebooks, with each layer's first token offered in the clock after its ``start``
    (the token intake takes its parameters at ``start``: a copy a clock later fails here)
    and the outputs taken without a stall."""
    a = imagegen_case(11, fan_in=24, out_c=3, index_bits=3, run_bits=2, density=0.4)
    b = imagegen_case(12, fan_in=37, out_c=2, index_bits=2, run_bits=1, density=0.3)
    assert (a.fan_in, a.k, a.run_bits) != (b.fan_in, b.k, b.run_bits)
    reference = sparse_reference if sparse else dense_reference
    runs = [(a, 0, False), (b, a.k, False), (a, 0, True), (b, a.k, True), (a, 0, True)]
    dut = RunExpander(SMALL)
    got = [[] for _ in runs]

    async def control(ctx):
        ctx.set(dut.sparse, sparse)
        for n, (case, base, resident) in enumerate(runs):
            expected = reference(case.symbols(), case.alpha, case.fan_in, case.codebook)
            ctx.set(dut.params, {**case.params, "codebook_base": base,
                                 "resident": int(resident)})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            if not resident:
                await stream_put(ctx, dut.codebook, [int(c) for c in case.codebook])
            ctx.set(dut.o.ready, 1)
            tokens = case.tokens()
            sent = taken = 0
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, tokens[0])
            ticks = ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.payload).__aiter__()
            for _ in range(10_000):
                _, _, i_ready, o_valid, w = await ticks.__anext__()
                if o_valid:
                    got[n].append({"weight": w.weight, "k": w.k, "first": w.first,
                                   "last": w.last})
                    taken += 1
                if sent < len(tokens) and i_ready:
                    sent += 1
                    ctx.set(dut.i.valid, sent < len(tokens))
                    if sent < len(tokens):
                        ctx.set(dut.i.payload, tokens[sent])
                if taken == len(expected):
                    break
            await ticks.aclose()
            assert ctx.get(dut.error) == ExpandError.NONE, f"layer {n}"
            assert got[n] == expected, f"layer {n}"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    sim.run()
    assert all(got)


# -- sparse mode ----------------------------------------------------------------------------

def check_channels(channels, *, fan_in, codebook, run_bits, seed, stall=STALL):
    """Hand-made channel symbols through both modes."""
    alpha = Alphabet(len(codebook), run_bits)
    params = {"fan_in": fan_in, "codebook_size": len(codebook), "run_bits": run_bits,
              "max_len": 1}
    tokens = tokens_of(channels, len(codebook), run_bits)
    for sparse, reference in ((False, dense_reference), (True, sparse_reference)):
        expected = reference(channels, alpha, fan_in, np.asarray(codebook))
        got, result = simulate(SMALL, params, codebook, tokens, len(expected), seed=seed,
                               stall=stall, sparse=sparse)
        assert result["error"] == ExpandError.NONE
        assert got == expected, "sparse" if sparse else "dense"


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_channel_ends(seed):
    """Channels that end with EOS, with a ZRUN that reaches N, with a pair (also at N-1
    after a run), a channel of only EOS, of only ZRUNs, a pair whose codebook entry is 0,
    and fan-in 1."""
    alpha = Alphabet(3, 1)  # K = 3, R + 1 = 2 zeros per ZRUN
    z, e, pair = alpha.zrun, alpha.eos, alpha.pair
    codebook = [5, 0, -128]
    channels = [
        [pair(1, 0), e],  # k 1, then EOS
        [pair(1, 2), z, z, z],  # k 1, then ZRUNs to 7
        [z, pair(1, 1), z, pair(0, 0), pair(0, 2)],  # ends with a pair at 7
        [e],  # all zero: only the end marker
        [z, z, z, z],  # all zero by ZRUNs
        [pair(0, 1), pair(0, 1), pair(1, 0), z, pair(1, 1)],  # codebook 0 entries, last at 7
        [pair(0, 0)] * 8,  # dense
    ]
    check_channels(channels, fan_in=8, codebook=codebook, run_bits=1, seed=seed)
    one = Alphabet(2, 0)
    check_channels([[one.pair(0, 1)], [one.eos], [one.zrun], [one.pair(0, 0)]], fan_in=1,
                   codebook=[0, -7], run_bits=0, seed=seed)


@pytest.mark.parametrize("seed", [2, 3])
def test_sparse_zero_codebook_entries(seed):
    """A random layer whose codebook holds zeros: those pairs still give entries."""
    case = synthetic_case(seed, fan_in=30, out_c=5, k=4, run_bits=2, density=0.3)
    case = dataclasses.replace(case, codebook=np.array([0, 3, 0, -1]))
    check_case(case, seed=seed, sparse=True)


def test_sparse_one_token_per_clock():
    """Unstalled, the expander takes a token a clock, including the ones that give nothing:
    from its first entry to its last, the layer takes as many clocks as tokens remain."""
    case = synthetic_case(11, fan_in=200, out_c=4, k=3, run_bits=1, density=0.15)
    tokens = case.tokens()
    assert sum(t["kind"] != TokenKind.PAIR for t in tokens) > len(tokens) // 4
    expected = sparse_reference(case.symbols(), case.alpha, case.fan_in, case.codebook)
    cycles = []
    got, result = simulate(SMALL, case.params, case.codebook, tokens, len(expected),
                           stall=0.0, cycles=cycles, sparse=True)
    assert got == expected
    first_emitting = next(n for n, t in enumerate(tokens)
                          if t["kind"] == TokenKind.PAIR or t["last"])
    assert cycles[-1] - cycles[0] + 1 == len(tokens) - first_emitting
    assert len(expected) < len(tokens) < case.fan_in * 4  # fewer clocks than dense


# -- errors ---------------------------------------------------------------------------------

def token(kind, run=0, index=0, first=0, last=0):
    return {"kind": kind, "run": run, "index": index, "first": first, "last": last}


PAIR, ZRUN, EOS = TokenKind.PAIR, TokenKind.ZRUN, TokenKind.EOS


@pytest.mark.parametrize("tokens,n_ok,error", [
    # fan-in 4, R = 3: a weight at 2, then one that would land on 4
    ([token(PAIR, 2, first=1), token(PAIR, 1, last=1)], 3, ExpandError.PAST_FAN_IN),
    # ZRUN covers 0..3 of 4 but is not marked last
    ([token(ZRUN, first=1)], 0, ExpandError.FRAMING),
    # a channel's second token marked first
    ([token(PAIR, 0, first=1), token(PAIR, 0, first=1)], 1, ExpandError.FRAMING),
    # marked last two weights early
    ([token(PAIR, 1, first=1, last=1)], 0, ExpandError.FRAMING),
])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_errors(tokens, n_ok, error, sparse):
    params = {"fan_in": 4, "codebook_size": 1, "run_bits": 2, "max_len": 1}
    # The last token is the bad one; sparse, the entries before it are the pairs' only.
    n = sum(t["kind"] == PAIR for t in tokens[:-1]) if sparse else n_ok
    got, result = simulate(SMALL, params, [5], tokens, n, stall=0.0, settle=8, sparse=sparse)
    assert result["error"] == error and not result["valid"]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_error_bad_params(sparse):
    params = {"fan_in": 0, "codebook_size": 1, "run_bits": 0, "max_len": 1}
    _, result = simulate(SMALL, params, [5], [token(EOS, first=1, last=1)], 0, stall=0.0,
                         sparse=sparse)
    assert result["error"] == ExpandError.PARAMS
