# amaranth: UnusedElaboratable=no
"""The Sequencer against hw.layer_plan: the parameters and biases it derives for every
layer of real and random images, its setup cycles, and its refusals."""

import dataclasses
import itertools
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import C, Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from hw.config import get_preset
from hw.image_loader import (
    DescWord,
    buffer_inputs,
    descriptor_words,
    image_words,
    resident_fits,
)
from hw.layer_plan import (
    bias_cycles,
    compute_problems,
    derive_cycles,
    entry_cycles,
    layer_params,
    setup_cycles,
    table_requests,
)
from hw.sequencer import RunError, Sequencer, decode_lead
from hw.weight_unit import TABLE_START
from tests.imagegen import random_image, random_layer
from weights.image import Image, Kind, read_image, write_image

IMAGES = Path(__file__).resolve().parent.parent / "weights" / "images"


class Harness(wiring.Component):
    """A Sequencer with the image buffer and the descriptor memory filled in advance."""

    def __init__(self, cfg, data, buffer=None):
        self.cfg = cfg
        self.seq = Sequencer(cfg)
        image = read_image(data)
        # (``buffer``: other bytes in the image buffer, with ``data``'s descriptors)
        self._words = image_words(buffer or data, cfg.image_word_bytes)
        self._desc = [w for layer in descriptor_words(image) for w in layer]
        super().__init__({})

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.seq = seq = self.seq
        m.submodules.img = img = memory.Memory(
            shape=8 * cfg.image_word_bytes, depth=cfg.image_words, init=self._words)
        m.submodules.desc = desc = memory.Memory(
            shape=seq.desc_data.shape(), depth=cfg.max_layers * 16, init=self._desc)
        rd = img.read_port()
        drd = desc.read_port()
        # (the buffer's inputs as its RAM takes them: registered with a latency of 2)
        addr, _, _, en = buffer_inputs(m, cfg, seq.img_addr, C(0, 1), C(0, 1), seq.img_en)
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(en),
                     seq.img_data.eq(rd.data), drd.addr.eq(seq.desc_addr),
                     seq.desc_data.eq(drd.data)]
        return m


def sequence(cfg, data, first, count, *, loaded=True, buffer=None, port=None,
             prepared=False):
    """Run the sequencer with instant blocks; returns (status, per-layer captures).
    ``port(layer)``: the clocks after that layer's ``decode`` in which the image buffer's
    port is the weight unit's (default: the unit's table reads, ``table_requests``).
    ``prepared``: the preparation first (the weight unit holding each layer's table a few
    clocks after its ``decode``); its bias writes are in ``prepared_biases``."""
    image = read_image(data)
    bases = [d[DescWord.BIAS_BASE] if resident_fits(cfg, image) else 0
             for d in descriptor_words(image)]
    if port is None:
        def port(n):
            return table_requests(cfg, image, n, resident=prepared)[0]
    dut = Harness(cfg, data, buffer)
    seq = dut.seq
    got = {"layers": [], "status": None}

    async def prepare(ctx):
        ctx.set(seq.prepare, 1)
        await ctx.tick()
        ctx.set(seq.prepare, 0)
        ctx.set(seq.img_free, 1)
        written, decoded, held_in = {}, [], None
        while ctx.get(seq.busy):
            assert not ctx.get(seq.go) and not ctx.get(seq.conv_start)
            assert not ctx.get(seq.fc_start)
            if ctx.get(seq.bias_wr_en):
                written[ctx.get(seq.bias_wr_addr)] = ctx.get(seq.bias_wr_data)
            if ctx.get(seq.decode):
                assert ctx.get(seq.prepared) == 0
                decoded.append(ctx.get(seq.decode_layer))
                ctx.set(seq.bias_base, bases[decoded[-1]])
                held_in = 40
            dropped = ctx.get(seq.drop)
            if dropped:
                assert ctx.get(seq.held)
                held_in = None
            elif held_in is not None:
                held_in -= 1
                ctx.set(seq.held, held_in <= 0)
            await ctx.tick()
            if dropped:  # (the unit is idle from the clock after the drop)
                ctx.set(seq.held, 0)
        assert decoded == list(range(len(image.layers)))
        assert ctx.get(seq.prepared)
        got["prepared_biases"] = written

    async def bench(ctx):
        ctx.set(seq.loaded, loaded)
        ctx.set(seq.n_layers, len(image.layers))
        ctx.set(seq.post_idle, 1)
        ctx.set(seq.fc_idle, 1)
        ctx.set(seq.conv_done, 1)
        if prepared:
            await prepare(ctx)
            cycles_before = ctx.get(seq.cycles)
        ctx.set(seq.first, first)
        ctx.set(seq.count, count)
        ctx.set(seq.run, 1)
        await ctx.tick()
        ctx.set(seq.run, 0)
        clocks = 1
        biases = {}
        since = 1
        ctx.set(seq.img_free, 1)
        # The weight unit, as the sequencer sees it: from ``decode`` its table reader has
        # the image buffer's port in the clocks ``port(layer)`` gives (counted from the
        # decode); after ``go`` it streams for a few clocks.
        streaming = 0
        rec = busy = None
        t = 0  # clocks since the decode
        while ctx.get(seq.busy):
            if ctx.get(seq.bias_wr_en):
                biases[ctx.get(seq.bias_wr_addr)] = ctx.get(seq.bias_wr_data)
            if ctx.get(seq.decode):
                assert rec is None and not biases
                assert ctx.get(seq.prepared) == prepared
                ctx.set(seq.bias_base, bases[ctx.get(seq.decode_layer)])
                rec = {"layer": ctx.get(seq.decode_layer), "conv": ctx.get(seq.conv),
                       "sparse": ctx.get(seq.sparse), "setup": since}
                busy = port(rec["layer"])
                rec["busy"] = busy
                ctx.set(seq.decode_busy, 1)
                since = t = 0
            if ctx.get(seq.drop):
                rec = None
            if ctx.get(seq.go):
                assert rec is not None
                assert ctx.get(seq.sparse) == rec["sparse"]
                rec.update({
                    "conv_start": ctx.get(seq.conv_start), "fc_start": ctx.get(seq.fc_start),
                    "params": {
                        "conv": {k: ctx.get(getattr(seq.conv_params, k))
                                 for k in layer_params(cfg, image, 0)["conv"]},
                        "drain": {k: ctx.get(getattr(seq.drain_params, k))
                                  for k in layer_params(cfg, image, 0)["drain"]},
                        "post": {k: ctx.get(getattr(seq.post_params, k))
                                 for k in layer_params(cfg, image, 0)["post"]},
                        "biases": [biases[o + bases[rec["layer"]]]
                                   for o in range(len(biases))],
                    },
                    "to_go": since,
                })
                got["layers"].append(rec)
                rec, biases, busy = None, {}, None
                streaming = 3
            t += 1
            if busy is not None:
                assert not (ctx.get(seq.img_en) and not ctx.get(seq.img_free)), \
                    "read without the port"
            ctx.set(seq.img_free, int(busy is None or t not in busy))
            await ctx.tick()
            clocks += 1
            since += 1
            if streaming:
                streaming -= 1
                if not streaming:
                    ctx.set(seq.decode_busy, 0)
                    since = 0
            assert clocks < 200_000
        # A layer the checks refuse was dropped: the weight unit is not left holding it.
        assert rec is None, "a decode neither went nor was dropped"
        got["status"] = ctx.get(seq.status)
        got["cycles"] = ctx.get(seq.cycles)
        if prepared:
            assert cycles_before == 0  # (the preparation is not a run)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def check_layers(cfg, data, first, count, *, port=None, prepared=False):
    image = read_image(data)
    got = sequence(cfg, data, first, count, port=port, prepared=prepared)
    assert got["status"] == RunError.NONE
    assert [g["layer"] for g in got["layers"]] == list(range(first, first + count))
    for g in got["layers"]:
        n = g["layer"]
        want = layer_params(cfg, image, n)
        conv = int(image.layers[n].kind) == 1
        assert (g["conv"], g["sparse"], g["conv_start"], g["fc_start"]) == (
            conv, not conv, conv, not conv)
        if conv:
            assert g["params"]["conv"] == want["conv"]
            assert g["params"]["drain"] == want["drain"]
        assert g["params"]["post"] == want["post"]
        assert g["params"]["biases"] == ([] if prepared else want["biases"])
        # From the run pulse (or from the clock the previous layer's blocks fell idle, which
        # the model counts with that layer, and which addresses nothing: the next entry
        # starts in the clock after it) to the decode pulse; then to the go: the derive
        # program, and the biases, which read no byte while the port is not free.
        assert g["setup"] == entry_cycles(first=(n == first), prepared=prepared), n
        derive = decode_lead(cfg) + derive_cycles(cfg, image, n, resident=prepared)
        busy = frozenset(t - derive - 1 for t in g["busy"] if t > derive)
        assert g["to_go"] == derive + bias_cycles(cfg, image, n, busy,
                                                  resident=prepared), n
        if not busy:
            assert g["setup"] + g["to_go"] == setup_cycles(
                cfg, image, n, first=(n == first), resident=prepared)
    if prepared:
        # The preparation put every layer's biases at its base, side by side.
        want = [b for n in range(len(image.layers)) for b in layer_params(cfg, image, n)["biases"]]
        assert got["prepared_biases"] == dict(enumerate(want))
    return got


@pytest.mark.parametrize("latency", [1, 2])
@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_shipped_images(name, latency):
    """Every layer's parameters, biases and clocks as the cycle model has them, with the
    port taken by the table reader as the model says and in three other patterns; with
    ``latency`` 2 the image buffer's address is registered (``image_read_latency``)."""
    cfg = dataclasses.replace(get_preset("small"), image_read_latency=latency)
    data = (IMAGES / f"{name}.img").read_bytes()
    n = len(read_image(data).layers)
    check_layers(cfg, data, 0, n)
    check_layers(cfg, data, 1, n - 1)  # in_fl from the previous layer's entry
    # a port that is the weight unit's one clock in two, or always for 500 clocks, from the
    # clock its table reader can first ask (TABLE_START after the decode)
    check_layers(cfg, data, 0, n, port=lambda _: frozenset(range(TABLE_START, 2000, 2)))
    check_layers(cfg, data, 0, n, port=lambda _: frozenset(range(TABLE_START, 500)))
    check_layers(cfg, data, 0, n, port=lambda _: frozenset())


@pytest.mark.parametrize("latency", [1, 2])
@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_prepared(name, latency):
    """The preparation writes every layer's biases at its base and runs nothing; the runs
    after it write no biases and go once the derive program is done."""
    # (both images' tables fit side by side)
    cfg = dataclasses.replace(get_preset("ulx3s-85f"), image_read_latency=latency)
    data = (IMAGES / f"{name}.img").read_bytes()
    n = len(read_image(data).layers)
    assert resident_fits(cfg, read_image(data))
    check_layers(cfg, data, 0, n, prepared=True)
    check_layers(cfg, data, 1, n - 1, prepared=True)


@pytest.mark.parametrize("seed", range(6))
def test_random_images(seed):
    # (seeds 4 and 5 with the image buffer's address registered: every byte a clock later)
    cfg = dataclasses.replace(get_preset("small"), act_depth=1 << 16,
                              image_read_latency=2 if seed >= 4 else 1)
    image = random_image(seed)
    data = write_image(image)
    n = len(image.layers)
    runnable = [i for i in range(n) if not compute_problems(cfg, image, i)]
    if len(runnable) == n:
        check_layers(cfg, data, 0, n)
    else:
        for i in runnable:
            check_layers(cfg, data, i, 1)


def test_refusals():
    cfg = get_preset("small")
    data = (IMAGES / "lenet5.img").read_bytes()
    assert sequence(cfg, data, 0, 1, loaded=False)["status"] == RunError.NOT_LOADED
    assert sequence(cfg, data, 0, 0)["status"] == RunError.RANGE
    assert sequence(cfg, data, 3, 2)["status"] == RunError.RANGE
    small = dataclasses.replace(cfg, act_depth=1024)  # conv1's 2,880 outputs do not fit
    got = sequence(small, data, 0, 1)
    assert got["status"] == RunError.TOO_BIG and got["layers"] == []
    assert compute_problems(small, read_image(data), 0)
    narrow = dataclasses.replace(cfg, tile_depth=256)  # conv2's fan-in is 500
    got = sequence(narrow, data, 1, 1)
    assert got["status"] == RunError.TOO_BIG


@pytest.mark.parametrize("out_hw", [(1, 24), (24, 1), (0, 0)])
def test_refuses_an_output_without_a_whole_window(out_hw):
    """conv1 (2x2 pooling) with its out_h, out_w patched smaller than the window: the
    loader does not check the geometry (read_image would refuse it), and the drain would
    wait forever for a window, so the sequencer refuses the layer."""
    cfg = get_preset("small")
    data = (IMAGES / "lenet5.img").read_bytes()
    body = bytearray(data[:-4])
    entry = 20  # layer 0's table entry; out_h and out_w are its bytes 16..19
    body[entry + 16:entry + 20] = struct.pack("<HH", *out_hw)
    patched = bytes(body) + struct.pack("<I", zlib.crc32(body))
    got = sequence(cfg, data, 0, 1, buffer=patched)
    assert got["status"] == RunError.UNSUPPORTED and got["layers"] == []
    assert sequence(cfg, data, 0, 1)["status"] == RunError.NONE
    # The software face: compute_problems names it (read_image refuses such a file, so the
    # layer is built directly: a window larger than conv1's 24x24 output).
    image = read_image(data)
    wide = dataclasses.replace(image.layers[0], pool=25, pool_stride=25)
    problems = compute_problems(cfg, dataclasses.replace(image, layers=(wide,)), 0)
    assert any("no whole max-pool window" in p for p in problems), problems


def _image(layers, input_shape, input_fl=6):
    return Image(bw=8, input_fl=input_fl, input_shape=input_shape, layers=tuple(layers))


@pytest.mark.parametrize("seed", range(4))
def test_geometries(seed):
    """Kernels, strides, paddings and pooling windows the shipped images do not have."""
    rng = np.random.default_rng(100 + seed)
    cfg = dataclasses.replace(get_preset("small"), act_depth=1 << 16)
    shape = (int(rng.integers(1, 4)), int(rng.integers(7, 14)), int(rng.integers(7, 14)))
    in_fl, layers = 6, []
    for _ in range(2):
        kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        pool = int(rng.choice([0, 2, 3]))
        layer = random_layer(rng, Kind.CONV, shape, int(rng.integers(1, 7)), in_fl=in_fl,
                             kernel=kernel, stride=int(rng.integers(1, 4)),
                             padding=int(rng.integers(0, 3)), pool=pool, pool_stride=pool)
        if min(layer.out_shape[1:]) < max(pool, 1):
            layer = dataclasses.replace(layer, pool=0, pool_stride=0)
        layers.append(layer)
        shape, in_fl = layer.pooled_shape, layer.out_fl
    layers.append(random_layer(rng, Kind.FC, shape, 3, in_fl=in_fl))
    image = _image(layers, layers[0].in_shape)
    assert all(not compute_problems(cfg, image, i) for i in range(len(layers)))
    check_layers(cfg, write_image(image), 0, len(layers))


@pytest.mark.parametrize("bias_bits", [1, 7, 8, 9, 15, 16, 17, 25, 31, 32])
def test_bias_widths(bias_bits):
    """Every bias width the format allows, up to a 32-bit accumulator's."""
    rng = np.random.default_rng(bias_bits)
    cfg = dataclasses.replace(get_preset("small"), acc_width=32)
    layer = random_layer(rng, Kind.FC, (6, 1, 1), 37)
    half = 1 << (bias_bits - 1)
    bias = np.concatenate([[-half, half - 1], rng.integers(-half, half, size=35)])
    layer = dataclasses.replace(layer, bias_bits=bias_bits, bias=bias,
                                b_fl=6 + layer.w_fl)  # no shift: any width fits
    check_layers(cfg, write_image(_image([layer], (6, 1, 1))), 0, 1)


def test_prepared_fc_refusals():
    """A prepared image's fully connected layers skip the derive program and take its
    checks from the preparation: an input and an output larger than an activation bank
    are refused all the same."""
    rng = np.random.default_rng(7)
    cfg = dataclasses.replace(get_preset("small"), act_depth=64)
    fc1 = random_layer(rng, Kind.FC, (100, 1, 1), 8)
    fc2 = random_layer(rng, Kind.FC, (8, 1, 1), 80, in_fl=fc1.out_fl)
    image = _image([fc1, fc2], (100, 1, 1))
    data = write_image(image)
    for i, what in enumerate(("input", "output")):
        assert any(f"its {what}" in p for p in compute_problems(cfg, image, i))
        for prepared in (False, True):
            got = sequence(cfg, data, i, 1, prepared=prepared)
            assert got["status"] == RunError.TOO_BIG and got["layers"] == [], (i, prepared)


@pytest.mark.parametrize("seed", range(3))
def test_refusals_match_software(seed):
    """Each layer of random images alone, on builds too small for some of them: the
    sequencer refuses exactly the layers ``compute_problems`` lists, with the right error."""
    rng = np.random.default_rng(200 + seed)
    image = random_image(seed)
    layers = list(image.layers)
    # Biases that overflow the accumulator once aligned.
    acc_fl = layers[1].out_fl + layers[2].w_fl
    # bias_bits + shift > 26, the small preset's accumulator
    shift = 27 - layers[2].bias_bits + int(rng.integers(0, 3))
    layers[2] = dataclasses.replace(layers[2], b_fl=acc_fl - shift)
    # A pooling stride unlike the window: alone, as it changes the output shape.
    pooled = dataclasses.replace(layers[0], pool_stride=int(rng.integers(1, 4)))
    images = [dataclasses.replace(image, layers=tuple(layers)),
              dataclasses.replace(image, layers=(pooled,))]
    base = get_preset("small")
    for case in images:
        data = write_image(case)
        for cfg in (base, dataclasses.replace(base, act_depth=128),
                    dataclasses.replace(base, tile_depth=16, max_channels=4)):
            for i, prepared in itertools.product(range(len(case.layers)), (False, True)):
                # (prepared: a fully connected layer's checks are the preparation's)
                problems = compute_problems(cfg, case, i)
                status = sequence(cfg, data, i, 1, prepared=prepared)["status"]
                if not problems:
                    assert status == RunError.NONE, (i, cfg)
                elif any("max-pool" not in p and "biases" not in p for p in problems):
                    assert status == RunError.TOO_BIG, (i, problems)
                else:
                    assert status == RunError.UNSUPPORTED, (i, problems)
