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
from hw.register_slice import RegisterSlice
from hw.stream_fetch import StreamFetch

__all__ = ["ItemReader", "LaneWeight", "WeightUnit"]


class LaneWeight(data.StructLayout):
    """A lane's weight (dense) or sparse entry: ``WeightOut`` and the output ``channel`` it
    belongs to."""

    def __init__(self, config):
        super().__init__({**dict(WeightOut(config).members), "channel": unsigned(16)})


class _Q(enum.Enum, shape=3):
    IDLE = 0
    DESC = 1
    START = 2
    TABLE = 3
    CODEBOOK = 4
    STREAMS = 5


# The descriptor words the sequencer keeps while it decodes a layer.
_KEEP = (DescWord.FAN_IN, DescWord.CODEBOOK_SIZE, DescWord.RUN_BITS, DescWord.MAX_LEN,
         DescWord.OUT_C, DescWord.N_SYMBOLS, DescWord.CODEBOOK_ADDR, DescWord.TABLE_ADDR,
         DescWord.SIZES_ADDR, DescWord.STREAMS_ADDR, DescWord.STREAMS_BYTES)


class _Item(data.StructLayout):
    """An item leaving the ``ItemReader``: its bytes and its run's tag."""

    def __init__(self):
        super().__init__({"data": 16, "tag": 1})


class ItemReader(wiring.Component):
    """Reads a run of little-endian items of one or two bytes from the image buffer, one
    item a clock: the sequencer's feeder for a layer's Huffman table and codebook.

    Ports:
        ``start`` (in): one-cycle pulse: read ``count`` items of ``wide ? 2 : 1`` bytes
            from byte address ``addr`` (any alignment); each carries ``tag`` (in) to ``o``.
            The inputs are sampled at ``start``; a ``start`` while ``busy`` abandons the
            run in progress.
        ``flush`` (in): one-cycle pulse: drop the item waiting on ``o`` (with ``start``,
            to begin afresh after an aborted run).
        ``busy`` (out): the run's items are not all on ``o`` yet (a register).
        ``rd_addr`` (out), ``rd_data`` (in): the image buffer's read port (word address;
            the word a clock later). ``rd_addr`` depends on registers and ``start`` only.
        ``o`` (out stream): ``data`` (the item, zero-extended to 16 bits) and ``tag``.

    The reader keeps the buffer word that holds the next item's first byte (``hold``)
    and reads the word after it, so an item that straddles two words is whole in
    ``hold`` and ``rd_data``. With words of at least 4 bytes and items of at most 2, the
    item after the one that crosses into the next word (which moves that word into
    ``hold`` and asks for the one after) still lies within ``hold``, so the read a clock
    late is never waited for.

    Latency: after ``start``, one clock to read the first word, then the first item is
    loaded into ``o``'s register (valid in the clock after). Throughput: one item a
    clock; a run of ``count`` items keeps the reader ``busy`` for ``count + 2`` clocks
    after ``start`` when ``o`` is always ready. Back-pressure: ``o.valid`` and the payload
    are registers, held until the transfer; the next item is loaded in the clock ``o``
    is empty or transfers.
    """

    def __init__(self, config):
        if config.image_word_bytes < 4:
            raise ValueError(f"the item reader needs image words of at least 4 bytes, not "
                             f"{config.image_word_bytes}")
        self._config = config
        super().__init__({
            "start": In(1),
            "flush": In(1),
            "addr": In(config.image_addr_width + 1),
            "count": In(17),
            "wide": In(1),
            "tag": In(1),
            "busy": Out(1),
            "rd_addr": Out(range(config.image_words)),
            "rd_data": In(8 * config.image_word_bytes),
            "o": Out(stream.Signature(_Item())),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()

        a = Signal(cfg.image_addr_width + 1)  # byte address of the next item
        h = Signal(len(a) - ob)  # the word in hold: a's word
        # h + 1, the word read, kept as a register: its adder went straight into the image
        # buffer's address multiplexers and the 64 block RAMs beyond them (22.0 ns on the
        # ULX3S, session 14). (``h`` itself is no longer read; Yosys drops it. Removing it
        # from the source moved the ULX3S placement, 48.45 -> 42.22 MHz routed with the
        # default seed: left as it is until the next hardware change is placed anyway.)
        h1 = Signal.like(h)
        hold = Signal(8 * wb)
        left = Signal.like(self.count)
        wide = Signal()
        tag = Signal()
        priming = Signal()  # hold gets the run's first word this clock
        running = Signal()  # items left to load
        m.d.comb += [
            self.busy.eq(priming | running),
            self.rd_addr.eq(Mux(self.start, self.addr[ob:], h1)),
        ]

        off = Signal(ob)
        lo = Signal(8)
        hi = Signal(8)
        a_next = Signal.like(a)
        m.d.comb += [
            off.eq(a[:ob]),
            lo.eq(hold.word_select(off, 8)),
            hi.eq(Cat(hold, self.rd_data[:8]).word_select(off + 1, 8)),
            a_next.eq(a + Mux(wide, 2, 1)),
        ]

        o_valid = Signal()
        m.d.comb += self.o.valid.eq(o_valid)
        with m.If(running & (~o_valid | self.o.ready)):
            m.d.sync += [
                o_valid.eq(1),
                self.o.payload.data.eq(Cat(lo, Mux(wide, hi, 0))),
                self.o.payload.tag.eq(tag),
                a.eq(a_next),
                left.eq(left - 1),
            ]
            with m.If(a_next[ob:] != a[ob:]):
                m.d.sync += [hold.eq(self.rd_data), h.eq(h1), h1.eq(h1 + 1)]
            with m.If(left == 1):
                m.d.sync += running.eq(0)
        with m.Elif(self.o.ready):
            m.d.sync += o_valid.eq(0)

        with m.If(priming):
            m.d.sync += [hold.eq(self.rd_data), priming.eq(0), running.eq(left != 0)]
        with m.If(self.start):
            m.d.sync += [
                a.eq(self.addr),
                h.eq(self.addr[ob:]),
                h1.eq(self.addr[ob:] + 1),
                left.eq(self.count),
                wide.eq(self.wide),
                tag.eq(self.tag),
                priming.eq(1),
                running.eq(0),
            ]
        with m.If(self.flush):
            m.d.sync += o_valid.eq(0)
        return m


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
        ``busy`` (out): a layer is being decoded, or its last weights have not all left
            on ``o`` (each lane's output is a ``RegisterSlice``, one clock of latency; an
            error drops what they hold). ``error`` (out): the last layer's
            decoding stopped on an error (a stream the decoder refuses); sticky until the
            next ``decode``.
        ``o[j]`` (out streams of ``LaneWeight``): lane ``j``'s weights with their
            positions ``k`` (dense: ``fan_in`` per channel in fan-in order; sparse: in
            increasing ``k``, ``last`` on each channel's final entry), with the output
            ``channel`` they belong to. Each channel goes to exactly one lane, and a
            lane's channels come in increasing order. Dense, channel ``c`` goes to lane
            ``c mod decode_lanes`` (what the tile buffer's wiring assumes); sparse, the
            fetch deals channels to lanes by load, so which lane gets which channel
            depends on the stream sizes.

    A layer: the sequencer reads the layer's descriptor (17 clocks), starts the
    ``DecodePath`` (``path``) and, through an ``ItemReader`` (``reader``) on the image
    buffer's read port, sends it the Huffman table (counts then symbols) and then the
    codebook, an item a clock; then it starts the ``StreamFetch`` (``fetch``), which
    feeds each lane its channels' bytes (the read port is the reader's until then, the
    fetch's after). From the ``decode`` pulse, ``path.start`` comes 18 clocks later and
    ``fetch.start`` ``L + n + K + 4`` clocks after that (``L`` counts, ``n`` table
    symbols, ``K`` codebook entries; the path takes a word a clock, so this is exact).
    It is done when every lane has emitted its last weight. Throughput: dense, one weight
    per clock per lane; sparse, up to one Huffman symbol per clock per lane (as the
    decoders and the fetch's bytes allow).
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
        self.reader = ItemReader(config)
        self.fetch = StreamFetch(config)
        self.path = DecodePath(config)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.loader = ld = self.loader
        m.submodules.fetch = fetch = self.fetch
        m.submodules.path = path = self.path

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
        state = Signal(_Q)
        # A lane's error ends the layer: the weights still in the output slices are dropped
        # (consumers may have stopped taking them), so ``busy`` falls.
        failing = Signal()
        m.d.comb += failing.eq(path.error & (state != _Q.IDLE) & (state != _Q.DESC)
                               & (state != _Q.START))
        out_held = []  # the output slices hold a weight
        for j in range(cfg.decode_lanes):
            # (a register slice: the byte the fetch picks from its queue went straight into
            # the decoder's buffer shift, the longest path on the ECP5)
            reg = m.submodules[f"byte_slice_{j}"] = RegisterSlice(unsigned(8))
            wiring.connect(m, fetch.o[j], reg.i)
            wiring.connect(m, reg.o, path.i[j])
            # The lane's output leaves through a register slice too: its consumers' ready
            # (the tile buffer's, or the sparse fc path's) reached through the expander
            # and the fetch's channel queue into their next-state logic (the ULX3S build's
            # critical path, session 12).
            out = m.submodules[f"out_slice_{j}"] = RegisterSlice(LaneWeight(cfg))
            w, ch = path.o[j], fetch.ch[j]
            m.d.comb += [
                reg.clear.eq(state == _Q.START),
                out.clear.eq((state == _Q.START) | failing),
                out.i.valid.eq(w.valid),
                out.i.payload.weight.eq(w.payload.weight),
                out.i.payload.k.eq(w.payload.k),
                out.i.payload.first.eq(w.payload.first),
                out.i.payload.last.eq(w.payload.last),
                out.i.payload.channel.eq(ch.payload),
                w.ready.eq(out.i.ready),
                ch.ready.eq(w.valid & out.i.ready & w.payload.last),
            ]
            wiring.connect(m, out.o, wiring.flipped(self.o[j]))
            out_held.append(out.o.valid)

        # Busy until the last weight has left the output slices.
        m.d.comb += self.busy.eq((state != _Q.IDLE) | Cat(*out_held).any())
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
            fetch.dense.eq(~self.sparse),
            fetch.out_c.eq(keep[DescWord.OUT_C]),
            fetch.sizes_addr.eq(keep[DescWord.SIZES_ADDR]),
            fetch.streams_addr.eq(keep[DescWord.STREAMS_ADDR]),
            fetch.streams_bytes.eq(keep[DescWord.STREAMS_BYTES]),
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

        # Table words, then codebook entries, a word a clock from the image buffer.
        m.submodules.reader = rdr = self.reader
        # (a register slice: the lanes' ready, joined by the broadcasts, reached the
        # reader's 64-bit hold register's enable, one of the ULX3S build's longest paths)
        m.submodules.item_slice = items = RegisterSlice(_Item())
        wiring.connect(m, rdr.o, items.i)
        item = items.o.payload
        m.d.comb += [
            rdr.rd_data.eq(ld.rd_data),
            items.clear.eq(state == _Q.START),
            path.table.valid.eq(items.o.valid & ~item.tag),
            path.table.payload.eq(item.data),
            path.codebook.valid.eq(items.o.valid & item.tag),
            path.codebook.payload.eq(item.data[:cfg.bw]),
            items.o.ready.eq(Mux(item.tag, path.codebook.ready, path.table.ready)),
        ]
        with m.If(state == _Q.STREAMS):
            m.d.comb += ld.rd_addr.eq(fetch.rd_addr)
        with m.Else():
            m.d.comb += ld.rd_addr.eq(rdr.rd_addr)

        with m.If(state == _Q.START):
            m.d.comb += [
                path.start.eq(1),
                rdr.start.eq(1),
                rdr.flush.eq(1),
                rdr.addr.eq(keep[DescWord.TABLE_ADDR]),
                rdr.count.eq(keep[DescWord.MAX_LEN] + keep[DescWord.N_SYMBOLS]),
                rdr.wide.eq(1),
                rdr.tag.eq(0),
            ]
            m.d.sync += state.eq(_Q.TABLE)
        with m.If((state == _Q.TABLE) & ~rdr.busy):
            m.d.comb += [
                rdr.start.eq(1),
                rdr.addr.eq(keep[DescWord.CODEBOOK_ADDR]),
                rdr.count.eq(keep[DescWord.CODEBOOK_SIZE]),
                rdr.wide.eq(cfg.bw == 16),
                rdr.tag.eq(1),
            ]
            m.d.sync += state.eq(_Q.CODEBOOK)
        # The last codebook entry may still wait on the reader's output or in the item
        # slice: the read port is free, so the fetch starts.
        with m.If((state == _Q.CODEBOOK) & ~rdr.busy):
            m.d.comb += fetch.start.eq(1)
            m.d.sync += state.eq(_Q.STREAMS)

        with m.If(state == _Q.STREAMS):
            with m.If(path.done | path.error):
                m.d.sync += [state.eq(_Q.IDLE), self.error.eq(path.error)]
        with m.If(failing):
            m.d.sync += [state.eq(_Q.IDLE), self.error.eq(1)]
        return m
