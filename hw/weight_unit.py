"""The whole weight-decompression path: image loader, per-lane stream fetch, decode lanes.

Ref: docs/weight-image.md; docs/decoder.md ("WeightUnit").
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.decode_path import DecodePath
from hw.image_loader import (
    DESC_WORDS,
    DescWord,
    ImageLoader,
    LoadError,
    buffer_signature,
    desc_word_width,
)
from hw.layouts import ImageByte, WeightOut
from hw.stream_fetch import StreamFetch

__all__ = ["LaneWeight", "WeightUnit"]


class LaneWeight(data.StructLayout):
    """A lane's weight (dense) or sparse entry: ``WeightOut`` and the output ``channel`` it
    belongs to."""

    def __init__(self, config):
        super().__init__({**dict(WeightOut(config).members), "channel": unsigned(16)})


class _Q(enum.Enum, shape=4):
    IDLE = 0
    DESC = 1
    START = 2
    T_LO = 3
    T_HI = 4
    T_PUSH = 5
    C_LO = 6
    C_HI = 7
    C_PUSH = 8
    STREAMS = 9


# The descriptor words the sequencer keeps while it decodes a layer.
_KEEP = (DescWord.FAN_IN, DescWord.CODEBOOK_SIZE, DescWord.RUN_BITS, DescWord.MAX_LEN,
         DescWord.OUT_C, DescWord.N_SYMBOLS, DescWord.CODEBOOK_ADDR, DescWord.TABLE_ADDR,
         DescWord.SIZES_ADDR, DescWord.STREAMS_ADDR)


class WeightUnit(wiring.Component):
    """Loads a weight image and decodes any of its layers into dense or sparse weights.

    Ports:
        ``load`` (in), ``abort`` (in), ``i`` (in stream of ``ImageByte``): as the
            ``ImageLoader``'s ``start``, ``abort`` and ``i``.
        ``load_busy``, ``status`` (``LoadError``), ``loaded``, ``n_layers`` (out): the
            loader's.
        ``aux_desc_addr`` (in), ``desc_data`` (out): the loader's descriptor memory, for
            the sequencer, while the unit is idle (the word one clock after the address).
        ``decode`` (in): one-cycle pulse: decode layer ``layer`` (in) of the loaded image;
            ignored unless ``loaded`` and idle, or if ``layer >= n_layers``.
        ``sparse`` (in): the decode mode (``RunExpander``): 0 gives every weight, 1 only
            the (run, index) pairs' weights at their positions ``k`` and a weight-0 end
            marker on channels whose last weight is zero. Must be steady from the
            ``decode`` pulse until ``busy`` falls.
        ``buffer`` (only with ``external_buffer=True``): the loader's image-buffer port.
        ``busy`` (out): a layer is being decoded. ``error`` (out): the last layer's
            decoding stopped on an error (a stream the decoder refuses); sticky until the
            next ``decode``.
        ``o[j]`` (out streams of ``LaneWeight``): lane ``j``'s weights with their
            positions ``k`` (dense: ``fan_in`` per channel in fan-in order; sparse: in
            increasing ``k``, ``last`` on each channel's final entry), with the output
            ``channel`` they belong to. The fetch
            deals channels to lanes by load, so which lane gets which channel depends on
            the stream sizes (each channel goes to exactly one lane, and a lane's channels
            come in increasing order).

    A layer: the sequencer reads the layer's descriptor (16 clocks), starts the
    ``DecodePath``, sends it the Huffman table (counts then symbols, 3 clocks a word, or
    slower while the decoders split the symbols) and the codebook read from the image
    buffer, then starts the ``StreamFetch``, which feeds each lane its channels' bytes
    (the read port is the sequencer's until then, the fetch's after). It is done when
    every lane has emitted its last weight. Throughput: dense, one weight per clock per
    lane; sparse, up to one Huffman symbol per clock per lane (as the decoders and the
    fetch's bytes allow).
    """

    def __init__(self, config, *, external_buffer: bool = False):
        self._config = config
        self._external_buffer = external_buffer
        ports = {"buffer": Out(buffer_signature(config))} if external_buffer else {}
        super().__init__({
            **ports,
            "load": In(1),
            "abort": In(1),
            "i": In(stream.Signature(ImageByte())),
            "load_busy": Out(1),
            "status": Out(LoadError),
            "loaded": Out(1),
            "n_layers": Out(8),
            "aux_desc_addr": In(range(config.max_layers * DESC_WORDS)),
            "desc_data": Out(desc_word_width(config)),
            "decode": In(1),
            "layer": In(8),
            "sparse": In(1),
            "busy": Out(1),
            "error": Out(1),
            "o": Out(stream.Signature(LaneWeight(config))).array(config.decode_lanes),
        })
        self.loader = ImageLoader(config, external_buffer=external_buffer)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()
        m.submodules.loader = ld = self.loader
        m.submodules.fetch = fetch = StreamFetch(cfg)
        m.submodules.path = path = DecodePath(cfg)

        m.d.comb += [
            ld.start.eq(self.load),
            ld.abort.eq(self.abort),
            self.load_busy.eq(ld.busy),
            self.status.eq(ld.status),
            self.loaded.eq(ld.loaded),
            self.n_layers.eq(ld.n_layers),
            fetch.rd_data.eq(ld.rd_data),
        ]
        wiring.connect(m, wiring.flipped(self.i), ld.i)
        if self._external_buffer:
            wiring.connect(m, ld.buffer, wiring.flipped(self.buffer))
        for j in range(cfg.decode_lanes):
            wiring.connect(m, fetch.o[j], path.i[j])
            w, o, ch = path.o[j], self.o[j], fetch.ch[j]
            m.d.comb += [
                o.valid.eq(w.valid),
                o.payload.weight.eq(w.payload.weight),
                o.payload.k.eq(w.payload.k),
                o.payload.first.eq(w.payload.first),
                o.payload.last.eq(w.payload.last),
                o.payload.channel.eq(ch.payload),
                w.ready.eq(o.ready),
                ch.ready.eq(w.valid & o.ready & w.payload.last),
            ]

        state = Signal(_Q)
        m.d.comb += self.busy.eq(state != _Q.IDLE)
        layer = Signal(8)
        keep = {w: Signal(ld.desc_data.shape(), name=f"d_{w.name.lower()}") for w in _KEEP}
        d_k = Signal(range(DESC_WORDS + 1))
        # While idle the descriptor memory is the sequencer's (``aux_desc_addr``).
        m.d.comb += [
            ld.desc_addr.eq(Mux(state == _Q.IDLE, self.aux_desc_addr, Cat(d_k[:4], layer))),
            self.desc_data.eq(ld.desc_data),
        ]
        m.d.comb += [
            path.params.fan_in.eq(keep[DescWord.FAN_IN]),
            path.params.codebook_size.eq(keep[DescWord.CODEBOOK_SIZE]),
            path.params.run_bits.eq(keep[DescWord.RUN_BITS]),
            path.params.max_len.eq(keep[DescWord.MAX_LEN]),
            path.channels.eq(keep[DescWord.OUT_C]),
            path.sparse.eq(self.sparse),
            fetch.out_c.eq(keep[DescWord.OUT_C]),
            fetch.sizes_addr.eq(keep[DescWord.SIZES_ADDR]),
            fetch.streams_addr.eq(keep[DescWord.STREAMS_ADDR]),
        ]

        with m.If((state == _Q.IDLE) & self.decode & ld.loaded & ~ld.busy
                  & (self.layer < ld.n_layers)):
            m.d.sync += [layer.eq(self.layer), d_k.eq(0), state.eq(_Q.DESC),
                         self.error.eq(0)]

        # Descriptor: word d_k is addressed in one clock and read in the next.
        with m.If(state == _Q.DESC):
            m.d.sync += d_k.eq(d_k + 1)
            with m.Switch(d_k):
                for w in _KEEP:
                    with m.Case(int(w) + 1):
                        m.d.sync += keep[w].eq(ld.desc_data)
            with m.If(d_k == DESC_WORDS):
                m.d.sync += state.eq(_Q.START)

        # Table words and codebook entries, read a byte a clock from the image buffer.
        addr = Signal(cfg.image_addr_width + 1)
        left = Signal(24)
        lo = Signal(8)
        hi = Signal(8)
        off = Signal(max(1, ob))
        byte = Signal(8)
        # A word's high byte arrives in the first clock of a PUSH state and is held in hi
        # from then on, so the payload is steady while valid.
        first_push = Signal()
        word = Signal(16)
        m.d.sync += first_push.eq((state == _Q.T_HI) | (state == _Q.C_HI))
        m.d.comb += [
            byte.eq(ld.rd_data.word_select(off, 8)),
            word.eq(Cat(lo, Mux(first_push, byte, hi))),
            path.table.payload.eq(word),
            path.codebook.payload.eq(word if cfg.bw == 16 else lo),
        ]
        with m.If(first_push):
            m.d.sync += hi.eq(byte)
        rd_byte_addr = Signal.like(addr)
        m.d.comb += rd_byte_addr.eq(Mux((state == _Q.T_HI) | (state == _Q.C_HI), addr + 1,
                                        addr))
        m.d.sync += off.eq(rd_byte_addr[:ob])
        with m.If(state == _Q.STREAMS):
            m.d.comb += ld.rd_addr.eq(fetch.rd_addr)
        with m.Else():
            m.d.comb += ld.rd_addr.eq(rd_byte_addr[ob:])

        with m.If(state == _Q.START):
            m.d.comb += path.start.eq(1)
            m.d.sync += [
                addr.eq(keep[DescWord.TABLE_ADDR]),
                left.eq(keep[DescWord.MAX_LEN] + keep[DescWord.N_SYMBOLS]),
                state.eq(_Q.T_LO),
            ]
        with m.If(state == _Q.T_LO):
            m.d.sync += state.eq(_Q.T_HI)
        with m.If(state == _Q.T_HI):
            m.d.sync += [lo.eq(byte), state.eq(_Q.T_PUSH)]
        with m.If(state == _Q.T_PUSH):
            m.d.comb += path.table.valid.eq(1)
            with m.If(path.table.ready):
                m.d.sync += [addr.eq(addr + 2), left.eq(left - 1), state.eq(_Q.T_LO)]
                with m.If(left == 1):
                    m.d.sync += [addr.eq(keep[DescWord.CODEBOOK_ADDR]),
                                 left.eq(keep[DescWord.CODEBOOK_SIZE]), state.eq(_Q.C_LO)]

        with m.If(state == _Q.C_LO):
            m.d.sync += state.eq(_Q.C_HI)
        with m.If(state == _Q.C_HI):
            m.d.sync += [lo.eq(byte), state.eq(_Q.C_PUSH)]
        with m.If(state == _Q.C_PUSH):
            m.d.comb += path.codebook.valid.eq(1)
            with m.If(path.codebook.ready):
                m.d.sync += [addr.eq(addr + cfg.bw // 8), left.eq(left - 1),
                             state.eq(_Q.C_LO)]
                with m.If(left == 1):
                    m.d.comb += fetch.start.eq(1)
                    m.d.sync += state.eq(_Q.STREAMS)

        with m.If(state == _Q.STREAMS):
            with m.If(path.done | path.error):
                m.d.sync += [state.eq(_Q.IDLE), self.error.eq(path.error)]
        with m.If(path.error & (state != _Q.IDLE) & (state != _Q.DESC) & (state != _Q.START)):
            m.d.sync += [state.eq(_Q.IDLE), self.error.eq(1)]
        return m
