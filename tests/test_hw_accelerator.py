# amaranth: UnusedElaboratable=no
"""The whole accelerator core against the golden model, layer by layer, bit for bit: random
networks (several array shapes) and the shipped LeNets (slow)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.fixedpoint import int_range
from golden.model import GoldenModel
from hw.accelerator import AcceleratorCore
from hw.config import get_preset
from hw.image_loader import LoadError, resident_fits
from hw.layer_plan import check_runnable, compute_problems, predict_cycles
from hw.sequencer import RunError
from tests.imagegen import random_image
from tests.streams import stream_put
from weights.image import read_image, write_image

IMAGES = Path(__file__).resolve().parent.parent / "weights" / "images"


async def load_image(ctx, ctl, data, rng=None):
    ctx.set(ctl.load, 1)
    await ctx.tick()
    ctx.set(ctl.load, 0)
    await stream_put(ctx, ctl.image, [{"data": b, "last": int(n == len(data) - 1)}
                                      for n, b in enumerate(data)], rng=rng, stall=0.1)
    while ctx.get(ctl.load_busy):
        await ctx.tick()
    return ctx.get(ctl.load_status)


async def write_input(ctx, ctl, values):
    for a, v in enumerate(values):
        ctx.set(ctl.act_wr_addr, a)
        ctx.set(ctl.act_wr_data, int(v))
        ctx.set(ctl.act_wr_en, 1)
        await ctx.tick()
    ctx.set(ctl.act_wr_en, 0)


async def run_layers(ctx, ctl, first, count, limit=5_000_000):
    ctx.set(ctl.run_first, first)
    ctx.set(ctl.run_count, count)
    ctx.set(ctl.run, 1)
    await ctx.tick()
    ctx.set(ctl.run, 0)
    n = 0
    while ctx.get(ctl.busy):
        await ctx.tick()
        n += 1
        assert n < limit, "the run does not end"
    return ctx.get(ctl.run_status), ctx.get(ctl.cycles)


async def read_bank(ctx, ctl, bank, count):
    out = []
    ctx.set(ctl.act_rd_bank, bank)
    ctx.set(ctl.act_rd_en, 1)
    for a in range(count):
        ctx.set(ctl.act_rd_addr, a)
        await ctx.tick()
        out.append(ctx.get(ctl.act_rd_data))
    ctx.set(ctl.act_rd_en, 0)
    return np.array(out, dtype=np.int64)


def run_network(cfg, data, inputs, *, layer_by_layer=True):
    """Load ``data``, then for each integer input run the layers one at a time (or all at
    once) and read every layer's output. Returns (load status, results): per input a list
    of (run status, cycles, output) per run."""
    image = read_image(data)
    dut = AcceleratorCore(cfg)
    ctl = dut.ctl
    got = {"results": []}

    async def bench(ctx):
        got["load"] = await load_image(ctx, ctl, data, np.random.default_rng(0))
        # (an image whose tables fit side by side is prepared as it loads)
        assert ctx.get(ctl.prepared) == (got["load"] == LoadError.NONE
                                         and resident_fits(cfg, image))
        if got["load"] != LoadError.NONE:
            return
        for x in inputs:
            await write_input(ctx, ctl, x.reshape(-1))
            runs = []
            spans = ([(n, 1) for n in range(len(image.layers))] if layer_by_layer
                     else [(0, len(image.layers))])
            for first, count in spans:
                status, cycles = await run_layers(ctx, ctl, first, count)
                last = image.layers[first + count - 1]
                size = int(np.prod(last.pooled_shape))
                out = await read_bank(ctx, ctl, (first + count) % 2, size)
                runs.append((status, cycles, out))
                if status != RunError.NONE.value:
                    break
            got["results"].append(runs)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got["load"], got["results"]


def check_network(cfg, data, inputs, *, model_tolerance=None):
    image = read_image(data)
    golden = GoldenModel(image)
    load, results = run_network(cfg, data, inputs)
    assert load == LoadError.NONE
    for x, runs in zip(inputs, results, strict=True):
        outs = golden.forward(x[None])
        assert len(runs) == len(image.layers)
        for n, ((status, cycles, out), want) in enumerate(zip(runs, outs, strict=True)):
            assert status == RunError.NONE.value, (n, status)
            assert np.array_equal(out, want.reshape(-1)), f"layer {n} differs"
            if model_tolerance is not None:
                predicted = predict_cycles(cfg, image, n)
                assert abs(predicted - cycles) <= model_tolerance * cycles, (
                    n, cycles, predicted)
    return results


def random_inputs(image, n, seed):
    rng = np.random.default_rng(seed)
    lo, hi = int_range(image.bw)
    return [rng.integers(lo, hi + 1, size=image.input_shape) for _ in range(n)]


# (rows, cols, lanes, drain_width, ice); 1x4 with one lane is the iCE40 shape (one read port
# a bank: SPRAM); drain_width 2 is the ECP5 preset's two-item drain (split banks); ice: the
# icebreaker preset's row_broadcast and fc_on_array (the fc lanes multiply on the array's
# first row).
SHAPES = [(2, 2, 2, 1, False), (4, 4, 2, 1, False), (2, 3, 1, 1, False), (3, 2, 2, 1, False),
          (1, 4, 1, 1, True), (3, 4, 2, 1, True), (3, 4, 2, 2, False), (2, 3, 3, 2, False)]


def shape_id(shape):
    return ("x".join(map(str, shape[:3])) + ("-dw2" if shape[3] == 2 else "")
            + ("-ice" if shape[4] else ""))


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_network(shape, seed):
    rows, cols, lanes, drain_width, ice = shape
    cfg = dataclasses.replace(get_preset("small"), rows=rows, cols=cols, decode_lanes=lanes,
                              act_depth=1024, max_channels=64, drain_width=drain_width,
                              row_broadcast=ice, fc_on_array=ice)
    image = random_image(seed + 10 * rows + cols)
    assert not any(compute_problems(cfg, image, i) for i in range(len(image.layers)))
    check_network(cfg, write_image(image), random_inputs(image, 1, seed))


@pytest.mark.parametrize("shape", [(1, 4, 1, True), (2, 3, 2, False)],
                         ids=["1x4x1-ice", "2x3x2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_network_serial_decoder(shape, seed):
    """The Huffman decoders' serial form (``serial_decoder``: a code length a clock, after
    a first step of the shortest code's bits): bit-exact, on the iCE40's shape and on one
    with two lanes, and the cycle model within 10 % of every layer (its decode terms count
    each code's clocks instead of a clock a symbol)."""
    rows, cols, lanes, ice = shape
    cfg = dataclasses.replace(get_preset("small"), rows=rows, cols=cols, decode_lanes=lanes,
                              act_depth=1024, max_channels=64, row_broadcast=ice,
                              fc_on_array=ice, serial_decoder=True)
    image = random_image(seed + 20)
    check_network(cfg, write_image(image), random_inputs(image, 1, seed),
                  model_tolerance=0.10)


@pytest.mark.parametrize("shape", [(2, 3, 1, 1, False), (1, 4, 1, 1, True),
                                   (3, 4, 2, 2, False), (2, 3, 3, 2, False)],
                         ids=["2x3x1", "1x4x1-ice", "3x4x2-dw2", "2x3x3-dw2"])
@pytest.mark.parametrize("resident", [True, False])
def test_random_network_registered_image_address(shape, resident):
    """The image buffer's address registered (``image_read_latency`` 2, as swept on the ULX3S):
    every read of the image a clock later, for the loader, the table reader, the
    sequencer and the fetch (one lane and several, 4- and 8-byte words); bit-exact, on a
    build whose tables are resident and on one that loads them layer by layer. Each
    layer takes a few clocks more than with the address unregistered, and the cycle
    model's error (up to 20 clocks on these tiny layers, its terms fitted to the shipped
    ones) moves by at most 2 clocks a layer: the model counts the latency's clocks."""
    rows, cols, lanes, drain_width, ice = shape
    image = random_image(30 + rows + cols)
    data = write_image(image)
    x = random_inputs(image, 1, rows)
    total = sum(layer.out_c for layer in image.layers)
    base = dataclasses.replace(get_preset("small"), rows=rows, cols=cols, decode_lanes=lanes,
                               act_depth=1024, max_channels=total if resident else total - 1,
                               drain_width=drain_width, row_broadcast=ice, fc_on_array=ice)
    assert resident_fits(base, image) == resident
    errors = {}
    for latency in (1, 2):
        cfg = dataclasses.replace(base, image_read_latency=latency)
        (runs,) = check_network(cfg, data, x)
        errors[latency] = [(cycles, cycles - predict_cycles(cfg, image, n))
                           for n, (_, cycles, _) in enumerate(runs)]
    for n, ((c1, e1), (c2, e2)) in enumerate(zip(errors[1], errors[2], strict=True)):
        assert c1 < c2 <= c1 + 12, (n, c1, c2)
        assert abs(e2 - e1) <= 2, (n, e1, e2)


def test_resident_and_layer_by_layer_tables():
    """The same network on a build whose memories hold every layer's tables, codebooks
    and biases side by side (prepared at the load) and on one whose bias memory holds one
    layer's at a time: both bit-exact, every layer faster when resident, by the clocks the
    cycle model says (it is off by the same 2-22 clocks in both modes on these tiny
    layers: its terms are fitted to the shipped ones)."""
    image = random_image(7)
    data = write_image(image)
    x = random_inputs(image, 1, 7)
    total = sum(layer.out_c for layer in image.layers)
    fits = dataclasses.replace(get_preset("small"), act_depth=1024, max_channels=total)
    tight = dataclasses.replace(fits, max_channels=total - 1)
    assert resident_fits(fits, image) and not resident_fits(tight, image)
    resident = check_network(fits, data, x)
    by_layer = check_network(tight, data, x)
    for n, ((_, fast, _), (_, slow, _)) in enumerate(zip(resident[0], by_layer[0],
                                                         strict=True)):
        assert fast < slow, n
        saved = predict_cycles(tight, image, n) - predict_cycles(fits, image, n)
        assert slow - fast == saved, (n, fast, slow, saved)


def test_whole_run_equals_layer_runs():
    """One run of every layer gives the last layer's output of the layer-by-layer runs."""
    cfg = dataclasses.replace(get_preset("small"), act_depth=1024, max_channels=64)
    image = random_image(3)
    data = write_image(image)
    x = random_inputs(image, 1, 3)
    _, whole = run_network(cfg, data, x, layer_by_layer=False)
    status, cycles, out = whole[0][0]
    assert status == RunError.NONE.value
    want = GoldenModel(image).forward(x[0][None])[-1].reshape(-1)
    assert np.array_equal(out, want)


def test_refuses_a_layer_too_big():
    cfg = dataclasses.replace(get_preset("small"), act_depth=128, max_channels=64)
    image = random_image(4)
    assert compute_problems(cfg, image, 0)
    with pytest.raises(ValueError, match="layer 0 does not fit this accelerator: its input"):
        check_runnable(cfg, image, len(write_image(image)))
    _, results = run_network(cfg, write_image(image), random_inputs(image, 1, 4))
    assert results[0][0][0] == RunError.TOO_BIG.value


def test_runs_after_a_refused_layer():
    """A layer the sequencer's checks refuse has its table loading already (the weight unit
    starts as the entry is read): it is dropped, and the next runs are bit-exact, clock for
    clock as without the refusal."""
    cfg = dataclasses.replace(get_preset("small"), act_depth=1024, max_channels=6)
    image = random_image(5)
    assert [bool(compute_problems(cfg, image, i)) for i in range(4)] == [0, 0, 1, 0]
    data = write_image(image)
    x = random_inputs(image, 1, 5)[0]
    want = GoldenModel(image).forward(x[None])
    dut = AcceleratorCore(cfg)
    ctl = dut.ctl
    got = []

    async def bench(ctx):
        assert await load_image(ctx, ctl, data) == LoadError.NONE
        await write_input(ctx, ctl, x.reshape(-1))
        status, _ = await run_layers(ctx, ctl, 0, 3)
        got.append(status)
        # (layer 1's output went to bank 0, the input's)
        await write_input(ctx, ctl, x.reshape(-1))
        for n in (0, 1):
            status, cycles = await run_layers(ctx, ctl, n, 1)
            size = int(np.prod(image.layers[n].pooled_shape))
            got.append((status, cycles, await read_bank(ctx, ctl, (n + 1) % 2, size)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got[0] == RunError.TOO_BIG.value
    _, fresh = run_network(cfg, data, [x])
    for n, (status, cycles, out) in enumerate(got[1:]):
        assert status == RunError.NONE.value
        assert np.array_equal(out, want[n].reshape(-1)), f"layer {n}"
        assert cycles == fresh[0][n][1], f"layer {n}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_shipped_network(name):
    from weights.datasets import load_mnist, to_float

    cfg = get_preset("small")
    data = (IMAGES / f"{name}.img").read_bytes()
    image = read_image(data)
    x, _ = load_mnist("test")
    golden = GoldenModel(image)
    # LeNet-5 is ~500,000 clocks a digit on `small` (minutes of pysim): one digit there.
    digits = (0, 1) if name == "lenet300" else (0,)
    inputs = [golden.quantize_input(to_float(x[i:i + 1]))[0] for i in digits]
    check_network(cfg, data, inputs, model_tolerance=0.05)


def compressed_network(seed):
    """A random small network (random shapes, padding, stride, pooling) trained briefly on
    random data and compressed by the project's compressor with random plans."""
    import torch
    from torch import nn

    from weights.compress import CompressConfig, LayerPlan, compress

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    c_in, size = int(rng.integers(1, 3)), int(rng.integers(7, 11))
    c1, k1 = int(rng.integers(2, 6)), int(rng.integers(2, 4))
    pad, stride = int(rng.integers(0, 2)), int(rng.integers(1, 3))
    pool = int(rng.integers(0, 3))
    layers = [nn.Conv2d(c_in, c1, k1, stride=stride, padding=pad), nn.ReLU()]
    out = (size + 2 * pad - k1) // stride + 1
    if pool >= 2 and out >= pool:
        layers.append(nn.MaxPool2d(pool))
        out //= pool
    c2 = int(rng.integers(2, 5))
    layers += [nn.Conv2d(c1, c2, 2), nn.ReLU(), nn.Flatten()]
    out -= 1
    hidden, classes = int(rng.integers(5, 13)), int(rng.integers(2, 5))
    layers += [nn.Linear(c2 * out * out, hidden), nn.ReLU(), nn.Linear(hidden, classes)]
    model = nn.Sequential(*layers)
    x = rng.normal(size=(64, c_in, size, size)).astype(np.float32) * float(rng.uniform(0.5, 3))
    y = rng.integers(0, classes, size=64)
    plans = tuple(LayerPlan(keep=float(rng.uniform(0.3, 1.0)),
                            weight_bits=int(rng.integers(2, 6)),
                            run_bits=int(rng.integers(0, 5))) for _ in range(4))
    config = CompressConfig(plans=plans, retrain_epochs=1, batch_size=16, calib_size=64,
                            seed=seed)
    image, data, _ = compress(model, (x, y), (x, y), config)
    return image, data, x


@pytest.mark.parametrize("seed", range(3))
def test_compressed_random_network(seed):
    """Networks from the compressor, on 2x2 and a non-square array, with inputs scaled up
    so that outputs saturate."""
    image, data, x = compressed_network(seed)
    golden = GoldenModel(image)
    inputs = [golden.quantize_input(x[:1])[0], golden.quantize_input(4 * x[1:2])[0]]
    for rows, cols, lanes, dw, ice in ((2, 2, 2, 1, False), (2, 3, 3, 1, False),
                                       (3, 2, 2, 2, False), (1, 4, 1, 1, True)):
        cfg = dataclasses.replace(get_preset("small"), rows=rows, cols=cols,
                                  decode_lanes=lanes, act_depth=1024, max_channels=64,
                                  drain_width=dw, row_broadcast=ice, fc_on_array=ice)
        check_network(cfg, data, inputs)
    lo, hi = int_range(image.bw)
    outs = [o for v in inputs for o in golden.forward(v[None])]
    assert any(((o == lo) | (o == hi)).any() for o in outs), "no layer saturates"
