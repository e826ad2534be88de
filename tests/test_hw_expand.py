"""RunExpander against golden codebook_lookup(expand_runs(symbols)), weight by weight."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.decode import codebook_lookup, expand_runs
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
)
from weights.image import read_image_file


def expected_weights(case) -> list[dict]:
    """Golden expansion and codebook stages, channel after channel, with first/last."""
    out = []
    for syms in case.symbols():
        w = codebook_lookup(expand_runs(syms, case.alpha, case.fan_in), case.codebook)
        out.extend({"weight": int(v), "first": int(j == 0), "last": int(j == case.fan_in - 1)}
                   for j, v in enumerate(w))
    return out


def simulate(cfg, params, codebook, tokens, n_out, *, seed=0, stall=STALL, cycles=None,
             settle=4):
    """Run tokens through a RunExpander: (received weights as dicts, final error)."""
    dut = RunExpander(cfg)
    rng = np.random.default_rng(seed) if stall else None
    got = []
    result = {}

    async def control(ctx):
        ctx.set(dut.params, params)
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
    weights = [{"weight": w.weight, "first": w.first, "last": w.last} for w in got]
    return weights, result


def check_case(case, cfg=SMALL, *, seed=0, stall=STALL):
    expected = expected_weights(case)
    got, result = simulate(cfg, case.params, case.codebook, case.tokens(), len(expected),
                           seed=seed, stall=stall)
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
def test_imagegen_layers(seed, bw, index_bits, run_bits, density):
    case = imagegen_case(seed, bw=bw, fan_in=24, out_c=3, index_bits=index_bits,
                         run_bits=run_bits, density=density)
    check_case(case, small_config(bw), seed=seed)


@pytest.mark.parametrize("density,run_bits", [(1.0, 0), (0.0, 0), (0.0, 2), (0.5, 1)])
def test_codebook_of_one(density, run_bits):
    """K = 1: dense channels, empty ones (EOS alone), and a mix."""
    case = synthetic_case(3, fan_in=11, out_c=4, k=1, run_bits=run_bits, density=density,
                          bw=16)
    check_case(case, small_config(16), seed=1)


def test_long_zero_runs():
    """run_bits 8: ZRUN fillers of 256 zeros and runs up to 255."""
    case = synthetic_case(4, fan_in=600, out_c=2, k=2, run_bits=8, density=0.01)
    assert any(t["kind"] == TokenKind.ZRUN for t in case.tokens())
    check_case(case, seed=2, stall=0.1)


def test_full_codebook():
    """256 entries (max_index_bits 8) at bw 16, every index used."""
    case = synthetic_case(5, fan_in=300, out_c=1, k=256, run_bits=0, density=1.0, bw=16)
    check_case(case, small_config(16), stall=0.1)


@pytest.mark.skipif(not IMAGES, reason="no weights/images/lenet300*.img yet")
def test_real_image_layer():
    image = read_image_file(IMAGES[0])
    layer = min(image.layers, key=lambda la: la.fan_in * la.out_c)
    check_case(case_from_layer(layer), small_config(image.bw), stall=0.1)


def test_throughput_one_weight_per_clock():
    case = imagegen_case(8, fan_in=40, out_c=4, run_bits=2, density=0.5)
    expected = expected_weights(case)
    cycles = []
    got, result = simulate(SMALL, case.params, case.codebook, case.tokens(), len(expected),
                           stall=0.0, cycles=cycles)
    assert got == expected
    assert cycles[-1] - cycles[0] + 1 == len(expected)


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
def test_errors(tokens, n_ok, error):
    params = {"fan_in": 4, "codebook_size": 1, "run_bits": 2, "max_len": 1}
    got, result = simulate(SMALL, params, [5], tokens, n_ok, stall=0.0, settle=8)
    assert result["error"] == error and not result["valid"]


def test_error_bad_params():
    params = {"fan_in": 0, "codebook_size": 1, "run_bits": 0, "max_len": 1}
    _, result = simulate(SMALL, params, [5], [token(EOS, first=1, last=1)], 0, stall=0.0)
    assert result["error"] == ExpandError.PARAMS
