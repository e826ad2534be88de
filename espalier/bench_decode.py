"""Decoder throughput on a weight image: simulate a preset's Huffman-decode lanes (pysim).

``bench_decode(image_bytes, preset)`` decodes every layer of the image on the preset's
``decode_lanes`` lanes, each a ``StreamFetch`` lane reading the image buffer and a
``HuffmanDecoder``, and counts clocks. Channels are dealt to the lanes as the weight unit
deals them: a convolution's in turn (the fetch's ``dense``), a fully connected layer's by
load. What is measured is the Huffman stage, tokens to a
sink that is always ready: from the fetch's start (the table already loaded) to the last
token of the layer. The run expanders behind it emit one dense weight a clock per lane, so
a layer's dense weights take at least ``weight_cycles`` (``ceil(out_c / lanes) ·
fan_in``); both are reported. Table loading (a word a clock through the ``SymbolSplit``
that ``DecodePath`` also has, from the decoders' start until every decoder can take
bytes) is not in ``cycles`` and is reported as ``table_cycles``.

The image buffer is preloaded (the loader's one byte a clock is not simulated); every
other capacity is the preset's, checked as ``AcceleratorConfig.check_image`` does.
"""

import time

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.sim import Simulator

from hw.broadcast import StreamBroadcast
from hw.config import get_preset, with_settings
from hw.huffman_decode import DecodeError, HuffmanDecoder
from hw.image_loader import DescWord, descriptor_words, image_words
from hw.layouts import DecodeParams
from hw.stream_fetch import StreamFetch
from hw.symbol_split import SymbolSplit, TableItem
from weights.image import Kind, read_image

__all__ = ["bench_decode"]


class _Harness(wiring.Component):
    """Image buffer (preloaded) + StreamFetch + a SymbolSplit and one HuffmanDecoder per
    lane; counts the tokens and clocks of a layer in hardware so the testbench does not
    poll every clock. ``loaded``: every decoder has its table (takes bytes)."""

    def __init__(self, config, words):
        self._config = config
        self._words = words
        super().__init__({
            "start": wiring.In(1),
            "go": wiring.In(1),
            "params": wiring.In(DecodeParams(config)),
            "out_c": wiring.In(16),
            "sizes_addr": wiring.In(config.image_addr_width + 1),
            "streams_addr": wiring.In(config.image_addr_width + 1),
            "streams_bytes": wiring.In(config.image_addr_width + 1),
            "dense": wiring.In(1),
            "limit": wiring.In(32),
            "table": wiring.In(stream.Signature(unsigned(config.symbol_width))),
            "done": wiring.Out(1),
            "loaded": wiring.Out(1),
            "error": wiring.Out(1),
            "stuck": wiring.Out(1),
            "tokens": wiring.Out(32),
            "cycles": wiring.Out(32),
            "now": wiring.Out(32),
        })

    def elaborate(self, platform):
        cfg = self._config
        lanes = cfg.decode_lanes
        m = Module()
        m.submodules.image = img = memory.Memory(
            shape=8 * cfg.image_word_bytes, depth=cfg.image_words, init=self._words)
        rd = img.read_port()
        m.submodules.fetch = fetch = StreamFetch(cfg)
        m.submodules.split = split = SymbolSplit(cfg)
        m.d.comb += [split.start.eq(self.start), split.params.eq(self.params)]
        m.submodules.tables = tables = StreamBroadcast(TableItem(cfg), lanes)
        wiring.connect(m, wiring.flipped(self.table), split.i)
        wiring.connect(m, split.o, tables.i)
        m.d.comb += [
            rd.addr.eq(fetch.rd_addr),
            fetch.rd_data.eq(rd.data),
            fetch.start.eq(self.go),
            fetch.out_c.eq(self.out_c),
            fetch.sizes_addr.eq(self.sizes_addr),
            fetch.streams_addr.eq(self.streams_addr),
            fetch.streams_bytes.eq(self.streams_bytes),
            fetch.dense.eq(self.dense),
        ]
        ends = Signal(17)  # channels whose last token has left
        running = Signal()
        errors = []
        for j in range(lanes):
            dec = m.submodules[f"decoder_{j}"] = HuffmanDecoder(cfg)
            m.d.comb += [dec.start.eq(self.start), dec.params.eq(self.params),
                         dec.o.ready.eq(1)]
            wiring.connect(m, tables.o[j], dec.table)
            wiring.connect(m, fetch.o[j], dec.i)
            m.d.comb += fetch.ch[j].ready.eq(dec.o.valid & dec.o.payload.last)
            errors.append(dec.error != DecodeError.NONE)
        decoders = [m.submodules[f"decoder_{j}"] for j in range(lanes)]
        taken = [d.o for d in decoders]
        # A decoder takes bytes once its table is loaded and while its buffer has room; the
        # buffer is empty until the fetch starts.
        m.d.comb += self.loaded.eq(Cat(*(d.i.ready for d in decoders)).all())
        n_tok = Signal(range(lanes + 1))
        n_end = Signal(range(lanes + 1))
        m.d.comb += [n_tok.eq(sum(o.valid for o in taken)),
                     n_end.eq(sum(o.valid & o.payload.last for o in taken))]
        m.d.sync += self.now.eq(self.now + 1)
        with m.If(self.go):
            m.d.sync += [ends.eq(0), running.eq(1), self.tokens.eq(0), self.cycles.eq(0)]
        with m.Elif(running):
            m.d.sync += [ends.eq(ends + n_end), self.tokens.eq(self.tokens + n_tok),
                         self.cycles.eq(self.cycles + 1)]
            with m.If(ends + n_end >= self.out_c):
                m.d.sync += running.eq(0)
        m.d.comb += [
            self.done.eq(~running & ~self.go),
            self.error.eq(Cat(*errors).any()),
            self.stuck.eq(running & (self.cycles >= self.limit)),
        ]
        return m


def bench_decode(image_bytes: bytes, preset: str, progress=None, settings=()) -> dict:
    """Simulate Huffman decoding of every layer of ``image_bytes`` on preset ``preset``
    (with ``FIELD=VALUE`` ``settings`` applied, ``hw.config.with_settings``).

    Returns ``symbols``, ``cycles`` (the decode stage's clocks, all layers), ``lanes``,
    ``symbols_per_cycle_per_lane`` (``symbols / (cycles · lanes)``), ``weights``,
    ``weight_cycles``, ``table_cycles``, ``sim_cycles`` (every simulated clock),
    ``sim_seconds``, ``sim_cycles_per_s`` and ``layers``: a list with, per layer, ``name``,
    ``symbols``, ``cycles``, ``symbols_per_cycle_per_lane``, ``weights``, ``weight_cycles``,
    ``table_cycles``, ``bytes``. ``progress(done, total, layer_figures)`` is called after
    each layer (``done`` layers of ``total``). Raises ``weights.image.ImageError`` for an
    invalid image and ValueError for one that does not fit the preset.
    """
    cfg = with_settings(get_preset(preset), settings)
    data = bytes(image_bytes)
    image = read_image(data)
    cfg.check_image(image, len(data))
    lanes = cfg.decode_lanes
    dut = _Harness(cfg, image_words(data, cfg.image_word_bytes))
    descs = descriptor_words(image)
    names = image.layer_names()
    layers = []
    total = {}

    async def bench(ctx):
        for n, (layer, d) in enumerate(zip(image.layers, descs, strict=True)):
            ctx.set(dut.params, {"fan_in": layer.fan_in, "codebook_size": len(layer.codebook),
                                 "run_bits": layer.run_bits, "max_len": layer.table.max_len})
            ctx.set(dut.out_c, layer.out_c)
            ctx.set(dut.sizes_addr, d[DescWord.SIZES_ADDR])
            ctx.set(dut.streams_addr, d[DescWord.STREAMS_ADDR])
            ctx.set(dut.streams_bytes, d[DescWord.STREAMS_BYTES])
            # (as the weight unit: a convolution's channels are dealt in turn)
            ctx.set(dut.dense, layer.kind == Kind.CONV)
            # (far more clocks than a layer's decoding takes: a harness that never ends
            # is reported, not waited for)
            ctx.set(dut.limit, 4 * (layer.symbol_count() + d[DescWord.STREAMS_BYTES]) + 1000)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            t0 = ctx.get(dut.now)
            words = list(layer.table.counts) + list(layer.table.symbols)
            ctx.set(dut.table.valid, 1)
            for w in words:
                ctx.set(dut.table.payload, w)
                await ctx.tick().until(dut.table.ready)
            ctx.set(dut.table.valid, 0)
            while not ctx.get(dut.loaded):
                await ctx.tick()
            table_cycles = ctx.get(dut.now) - t0
            ctx.set(dut.go, 1)
            await ctx.tick()
            ctx.set(dut.go, 0)
            await ctx.tick().until(dut.done | dut.error | dut.stuck)
            if ctx.get(dut.error):
                raise RuntimeError(f"layer {n}: the decoder stopped on an error")
            if ctx.get(dut.stuck):
                raise RuntimeError(f"layer {n}: not decoded after {ctx.get(dut.cycles)} "
                                   f"clocks")
            cycles, tokens = ctx.get(dut.cycles), ctx.get(dut.tokens)
            if tokens != layer.symbol_count():
                raise RuntimeError(f"layer {n}: {tokens} tokens, the golden model decodes "
                                   f"{layer.symbol_count()} symbols")
            per_lane = [len(range(j, layer.out_c, lanes)) * layer.fan_in for j in range(lanes)]
            fig = {
                "name": names[n],
                "symbols": tokens,
                "cycles": cycles,
                "symbols_per_cycle_per_lane": tokens / (cycles * lanes),
                "weights": layer.out_c * layer.fan_in,
                "weight_cycles": max(per_lane),
                "table_cycles": table_cycles,
                "bytes": d[DescWord.STREAMS_BYTES],
            }
            layers.append(fig)
            if progress is not None:
                progress(n + 1, len(image.layers), fig)
        total["cycles"] = ctx.get(dut.now)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    t = time.perf_counter()
    sim.run()
    seconds = time.perf_counter() - t
    symbols = sum(f["symbols"] for f in layers)
    cycles = sum(f["cycles"] for f in layers)
    return {
        "preset": preset,
        "settings": list(settings),
        "lanes": lanes,
        "symbols": symbols,
        "cycles": cycles,
        "symbols_per_cycle_per_lane": symbols / (cycles * lanes),
        "weights": sum(f["weights"] for f in layers),
        "weight_cycles": sum(f["weight_cycles"] for f in layers),
        "table_cycles": sum(f["table_cycles"] for f in layers),
        "sim_cycles": total["cycles"],
        "sim_seconds": seconds,
        "sim_cycles_per_s": total["cycles"] / seconds if seconds else 0.0,
        "layers": layers,
    }
