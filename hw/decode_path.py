"""A layer's weight-decode path: ``decode_lanes`` Huffman decoders and run expanders that
decode different output channels in parallel.

Ref: docs/weight-image.md, "Stream sizes and streams"; mirrors ``golden.decode.decode_channel``
for every channel of a layer.
"""

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.broadcast import StreamBroadcast
from hw.huffman_decode import DecodeError, HuffmanDecoder
from hw.layouts import DecodeParams, Token, WeightOut
from hw.register_slice import RegisterSlice
from hw.run_expand import ExpandError, RunExpander
from hw.symbol_split import SymbolSplit, TableItem

__all__ = ["DecodePath"]


class DecodePath(wiring.Component):
    """Decodes all output channels of one layer into weights on parallel lanes.

    Each lane (of ``n = config.decode_lanes``) decodes the channels whose streams its byte
    input carries, back to back, and emits their weights in fan-in order with
    ``first``/``last`` per channel (dense mode), or only the pairs' weights and an end
    marker (sparse mode, ``RunExpander``); which channels a lane gets is the feeder's
    choice (``StreamFetch`` deals them by load; the tests also deal them in turn).
    Each lane is a ``HuffmanDecoder`` (``decoder_{j}``) feeding a ``RunExpander``
    (``expander_{j}``); every lane holds its own copy of the table and codebook, which
    ``StreamBroadcast`` blocks copy to all lanes. The table's symbols are split into
    (kind, run, index) once, by a ``SymbolSplit`` (``split``) in front of the table's
    broadcast.

    Ports:
        ``start`` (in): one-cycle pulse; clears everything and begins a layer. ``params``,
            ``channels`` and ``sparse`` must be steady from then on.
        ``params`` (in, ``DecodeParams``); ``channels`` (in): the layer's ``out_c``.
        ``sparse`` (in): every expander's output mode (``RunExpander``).
        ``table`` (in stream of u16): the Huffman table (counts, then symbols), given once;
            split and broadcast to every lane, a word a clock (``SymbolSplit``'s pipeline
            adds ``split.stages`` clocks of latency).
        ``codebook`` (in stream of signed ``bw``-bit): the ``K`` entries, broadcast.
        ``i[j]`` (in streams of bytes), ``o[j]`` (out streams of ``WeightOut``): lane ``j``.
        ``done`` (out): the lanes together have emitted the last entry of ``channels``
            channels.
        ``error`` (out): a lane's decoder or expander stopped on an error (sticky until
            ``start``; the lanes' own ``error`` ports say which and why).

    Latency: four clocks from a code's last bit to its first weight (decoder two, a
    ``RegisterSlice`` one, expander one); with several rows a byte passes a
    ``RegisterSlice`` (``byte_slice_{j}``) on its way into the decoder, a clock more.
    Throughput: one weight per clock per lane; a lane's decoder runs at up to a symbol per
    clock, so it keeps its expander busy whenever a channel's symbols average at most one
    per weight. Sparse: up to one symbol per clock per lane (the expander takes a token a
    clock, so the decoder sets the pace).
    Back-pressure: per lane, as in its blocks; the broadcast table and codebook advance
    when every lane has taken the current word.
    """

    def __init__(self, config):
        self._config = config
        lanes = config.decode_lanes
        super().__init__({
            "start": In(1),
            "params": In(DecodeParams(config)),
            "channels": In(unsigned(16)),
            "sparse": In(1),
            "table": In(stream.Signature(unsigned(config.symbol_width))),
            "codebook": In(stream.Signature(signed(config.bw))),
            "i": In(stream.Signature(unsigned(8))).array(lanes),
            "o": Out(stream.Signature(WeightOut(config))).array(lanes),
            "done": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        lanes = cfg.decode_lanes
        m = Module()

        decoders, expanders = [], []
        for j in range(lanes):
            dec = m.submodules[f"decoder_{j}"] = HuffmanDecoder(cfg)
            exp = m.submodules[f"expander_{j}"] = RunExpander(cfg)
            m.d.comb += [
                dec.start.eq(self.start),
                exp.start.eq(self.start),
                dec.params.eq(self.params),
                exp.params.eq(self.params),
                exp.sparse.eq(self.sparse),
            ]
            # (a register slice between them: the expander's ready, computed from its
            # state, went straight into the decoder's buffer logic, the longest path)
            reg = m.submodules[f"slice_{j}"] = RegisterSlice(Token(cfg))
            m.d.comb += reg.clear.eq(self.start)  # (no token of a stopped layer is left)
            if cfg.rows > 1:
                # (with several rows, the ECP5's: a register slice in front of the decoder
                # too, placed by it. Its bytes came from the weight unit's output slice
                # 42 tiles away, and the decoder's ``ready`` went there and its refill came
                # back (the ULX3S build's longest path, 19.5 ns, session 24); now only
                # registers cross that distance. With one row, the UP5K's, the cells count.
                # It takes no byte at ``start``, which empties it: the decoder takes none
                # then either, so a byte offered in that clock stays offered.)
                near = m.submodules[f"byte_slice_{j}"] = RegisterSlice(unsigned(8))
                m.d.comb += [
                    near.clear.eq(self.start),
                    near.i.valid.eq(self.i[j].valid & ~self.start),
                    near.i.payload.eq(self.i[j].payload),
                    self.i[j].ready.eq(near.i.ready & ~self.start),
                ]
                wiring.connect(m, near.o, dec.i)
            else:
                wiring.connect(m, wiring.flipped(self.i[j]), dec.i)
            wiring.connect(m, dec.o, reg.i)
            wiring.connect(m, reg.o, exp.i)
            wiring.connect(m, exp.o, wiring.flipped(self.o[j]))
            decoders.append(dec)
            expanders.append(exp)
        m.submodules.split = split = SymbolSplit(cfg)
        m.d.comb += [split.start.eq(self.start), split.params.eq(self.params)]
        m.submodules.table_broadcast = tables = StreamBroadcast(TableItem(cfg), lanes)
        m.submodules.codebook_broadcast = codebooks = StreamBroadcast(signed(cfg.bw), lanes)
        wiring.connect(m, wiring.flipped(self.table), split.i)
        wiring.connect(m, split.o, tables.i)
        wiring.connect(m, wiring.flipped(self.codebook), codebooks.i)
        for j in range(lanes):
            wiring.connect(m, tables.o[j], decoders[j].table)
            wiring.connect(m, codebooks.o[j], expanders[j].codebook)

        # Done when the lanes together have emitted the last entry of every channel (the
        # channels may be dealt to lanes in any order; both modes mark one per channel).
        finished = Signal(17)
        lasts = Signal(range(lanes + 1))
        m.d.comb += lasts.eq(sum(o.valid & o.ready & o.payload.last for o in self.o))
        with m.If(self.start):
            m.d.sync += finished.eq(0)
        with m.Else():
            m.d.sync += finished.eq(finished + lasts)

        started = Signal()
        with m.If(self.start):
            m.d.sync += started.eq(1)
        m.d.comb += self.done.eq(started & ~self.start & (finished >= self.channels))
        failed = [(d.error != DecodeError.NONE) | (e.error != ExpandError.NONE)
                  for d, e in zip(decoders, expanders, strict=True)]
        m.d.comb += self.error.eq(Cat(*failed).any())
        return m
