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

__all__ = ["TABLE_START", "ItemReader", "LaneWeight", "WeightUnit"]


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
    HOLD = 6  # the table and codebook are loaded; the streams wait for ``go``


# The descriptor words the unit keeps while it decodes a layer, in the order it reads
# them: the first ``_KEEP_START`` are what the table's load needs from its start (the
# table's place and size, the decode path's parameters); the rest are read while the
# table loads.
_KEEP = (DescWord.TABLE_ADDR, DescWord.MAX_LEN, DescWord.N_SYMBOLS, DescWord.FAN_IN,
         DescWord.CODEBOOK_SIZE, DescWord.RUN_BITS, DescWord.OUT_C, DescWord.SYM_BASE,
         DescWord.CB_BASE,
         DescWord.CODEBOOK_ADDR, DescWord.SIZES_ADDR, DescWord.STREAMS_ADDR,
         DescWord.STREAMS_BYTES, DescWord.BIAS_BASE)
_KEEP_START = 9
# Clocks from a ``decode`` pulse to the table reader's start (its first image buffer read):
# the first _KEEP_START words, a clock each and one to keep the last, and the start.
TABLE_START = _KEEP_START + 2


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
        ``rd_req`` (out): the reader reads the image buffer this clock, at ``rd_addr``
            (out; the word on ``rd_data`` (in) ``image_read_latency`` clocks later). The
            reader must be given the port whenever it asks; in the other clocks the port
            is free for another reader (the sequencer's biases), whose words the reader
            ignores. ``rd_req`` is ``start`` or a function of registers, as is ``rd_addr``
            but for ``start``.
        ``o`` (out stream): ``data`` (the item, zero-extended to 16 bits) and ``tag``.

    The reader keeps the buffer word that holds the next item's first byte (``hold``)
    and the word after it (``nxt``, or on ``rd_data`` in the clock after it is read), so
    an item that straddles two words is whole in the two. It reads each word once: the
    run's first at ``start``, the second in the next clock, and each later one in the
    clock after the item that moves the word after ``hold`` into ``hold``. With words of
    at least 4 bytes and items of at most 2, the item after that one still lies within
    ``hold``, so the word read then is never waited for: the port is the reader's in two
    clocks of each run and once for each word crossed, and free in the others. With an
    ``image_read_latency`` of 2 that holds on words of 8 bytes or more; on 4-byte words
    a run of 2-byte items then waits a clock for every other word.

    Latency: after ``start``, ``image_read_latency`` clocks to read the first word, then
    the first item is loaded into ``o``'s register (valid in the clock after).
    Throughput: one item a clock; a run of ``count`` items keeps the reader ``busy`` for
    ``count + 1 + image_read_latency`` clocks after ``start`` when ``o`` is always ready
    (``hw.layer_plan._reader_run`` counts every clock, waits included). Back-pressure:
    ``o.valid`` and the payload are registers, held until the transfer; the next item is
    loaded in the clock ``o`` is empty or transfers.
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
            "rd_req": Out(1),
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
        # The word after the one in hold, kept as a register: an adder on the word in hold
        # went straight into the image buffer's address multiplexers and the 64 block
        # RAMs beyond them (22.0 ns on the ULX3S, session 14).
        h1 = Signal(len(a) - ob)
        hold = Signal(8 * wb)
        nxt = Signal(8 * wb)  # word h1, once read
        nxt_ok = Signal()  # nxt holds word h1
        pend = Signal()  # word h1 was read in the previous clock: it is on rd_data
        left = Signal.like(self.count)
        wide = Signal()
        tag = Signal()
        priming = Signal()  # hold gets the run's first word this clock
        running = Signal()  # items left to load
        # With an image_read_latency of 2 a word is on its way for a clock before it is on
        # rd_data: the run's first (``priming_1``, then ``priming``) and word h1
        # (``pend_1``, then ``pend``). A start drops both.
        lx = cfg.image_read_latency - 1
        if lx:
            priming_1 = Signal()
            pend_1 = Signal()
            ask = Signal()  # read word h1 now
            m.d.comb += [
                self.busy.eq(priming_1 | priming | running),
                self.rd_addr.eq(Mux(self.start, self.addr[ob:], h1)),
                ask.eq((priming_1 | priming | running) & ~nxt_ok & ~pend & ~pend_1),
                self.rd_req.eq(self.start | ask),
            ]
            m.d.sync += [pend_1.eq(~self.start & ask), pend.eq(~self.start & pend_1)]
        else:
            m.d.comb += [
                self.busy.eq(priming | running),
                self.rd_addr.eq(Mux(self.start, self.addr[ob:], h1)),
                self.rd_req.eq(self.start | ((priming | running) & ~nxt_ok & ~pend)),
            ]
            m.d.sync += pend.eq(~self.start & (priming | running) & ~nxt_ok & ~pend)

        after = Signal(8 * wb)  # word h1: on rd_data the clock after its read, then in nxt
        m.d.comb += after.eq(Mux(pend, self.rd_data, nxt))
        off = Signal(ob)
        lo = Signal(8)
        hi = Signal(8)
        a_next = Signal.like(a)
        crossing = Signal()  # the next item starts in word h1
        m.d.comb += [
            off.eq(a[:ob]),
            lo.eq(hold.word_select(off, 8)),
            hi.eq(Cat(hold, after[:8]).word_select(off + 1, 8)),
            a_next.eq(a + Mux(wide, 2, 1)),
            crossing.eq(a_next[ob:] != a[ob:]),
        ]
        with m.If(pend):
            m.d.sync += [nxt.eq(self.rd_data), nxt_ok.eq(1)]

        o_valid = Signal()
        m.d.comb += self.o.valid.eq(o_valid)
        # (an item that crosses, or straddles, into word h1 waits for it: never, with the
        # reader given the port whenever it asks, as said above)
        with m.If(running & (~o_valid | self.o.ready) & (~crossing | nxt_ok | pend)):
            m.d.sync += [
                o_valid.eq(1),
                self.o.payload.data.eq(Cat(lo, Mux(wide, hi, 0))),
                self.o.payload.tag.eq(tag),
                a.eq(a_next),
                left.eq(left - 1),
            ]
            with m.If(crossing):
                m.d.sync += [hold.eq(after), h1.eq(h1 + 1), nxt_ok.eq(0)]
            with m.If(left == 1):
                m.d.sync += running.eq(0)
        with m.Elif(self.o.ready):
            m.d.sync += o_valid.eq(0)

        with m.If(priming):
            m.d.sync += [hold.eq(self.rd_data), priming.eq(0), running.eq(left != 0)]
        if lx:
            m.d.sync += priming_1.eq(0)
            with m.If(priming_1):
                m.d.sync += priming.eq(1)
        with m.If(self.start):
            m.d.sync += [
                a.eq(self.addr),
                h1.eq(self.addr[ob:] + 1),
                left.eq(self.count),
                wide.eq(self.wide),
                tag.eq(self.tag),
                priming.eq(1),
                running.eq(0),
                nxt_ok.eq(0),
            ]
            if lx:
                m.d.sync += [priming_1.eq(1), priming.eq(0)]
        with m.If(self.flush):
            m.d.sync += o_valid.eq(0)
        return m


class WeightUnit(wiring.Component):
    """Loads a weight image and decodes any of its layers into dense or sparse weights.

    Ports:
        ``load`` (in), ``abort`` (in), ``i`` (in stream of ``ImageByte``): as the
            ``ImageLoader``'s ``start``, ``abort`` and ``i``.
        ``load_busy``, ``status`` (``LoadError``), ``loaded``, ``n_layers``,
            ``image_resident`` (out): the loader's (``image_resident`` is its
            ``resident``: the image's tables, codebooks and biases fit side by side).
        ``aux_desc_addr`` (in), ``desc_data`` (out): the loader's descriptor memory, for
            the sequencer, while the unit is idle (the word one clock after the address).
        ``decode`` (in): one-cycle pulse: decode layer ``layer`` (in) of the loaded image;
            ignored unless ``loaded`` and idle, or if ``layer >= n_layers``.
        ``sparse`` (in): the decode mode (``RunExpander``): 0 gives every weight, 1 only
            the (run, index) pairs' weights at their positions ``k`` and a weight-0 end
            marker on channels whose last weight is zero. Must be steady from the
            ``decode`` pulse until ``busy`` falls.
        ``resident`` (in, sampled at ``decode``): the layer's symbols and codebook are in
            the lanes' memories already (at their ``SYM_BASE`` and ``CB_BASE``, from an
            earlier decode of the layer, the sequencer's preparation): only the table's
            ``L`` counts are read. Without it, a resident image's symbols and codebook are
            written at those bases, another image's at 0.
        ``held`` (out): the table and codebook are in and the streams wait for ``go``.
        ``bias_base`` (out): the layer's ``BIAS_BASE`` for a resident image, else 0
            (from a few clocks after ``decode`` until the next ``decode``).
        ``go`` (in): one-cycle pulse, at or after ``decode``: the layer's streams may start
            once its table and codebook are loaded (a ``go`` before then is kept). A
            ``decode`` with ``go`` in the same clock decodes straight through.
        ``drop`` (in): one-cycle pulse: abandon a layer whose streams have not started
            (back to idle, nothing emitted; ``error`` unchanged).
        ``port_free`` (out): the unit does not read the image buffer this clock: it is
            not streaming, and its table reader (``ItemReader``, which reads a word only
            when it needs one) does not ask for the port. The sequencer reads the layer's
            biases in those clocks while the table loads (docs/architecture.md,
            "Sequencer").
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

    A layer: the unit reads the words it needs of the layer's descriptor (nine, 10
    clocks, then five more while the table loads), starts the
    ``DecodePath`` (``path``) and, through an ``ItemReader`` (``reader``) on the image
    buffer's read port, sends it the Huffman table (counts then symbols) and then the
    codebook, an item a clock; then it starts the ``StreamFetch`` (``fetch``), which
    feeds each lane its channels' bytes (the read port is the reader's until then, the
    fetch's after). From the ``decode`` pulse, ``path.start`` comes 11 clocks later
    (``TABLE_START``) and ``fetch.start`` ``L + n + K + 4`` clocks after that (``L``
    counts, ``n`` table symbols, ``K`` codebook entries; the path takes a word a clock, so
    this is exact; ``L + 2`` for a ``resident`` layer), or in the clock of ``go`` if that
    comes later (the unit holds the loaded table till then).
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
            "image_resident": Out(1),
            "aux_desc_addr": In(range(config.max_layers * DESC_WORDS)),
            "desc_data": Out(desc_word_width(config)),
            "decode": In(1),
            "layer": In(8),
            "sparse": In(1),
            "resident": In(1),
            "held": Out(1),
            "bias_base": Out(unsigned(config.channel_width)),
            "go": In(1),
            "drop": In(1),
            "port_free": Out(1),
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
            self.image_resident.eq(ld.resident),
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
        d_k = Signal(range(len(_KEEP) + 2))
        d_word = Signal(4)  # the descriptor word addressed: _KEEP[d_k]
        with m.Switch(d_k):
            for i, w in enumerate(_KEEP):
                with m.Case(i):
                    m.d.comb += d_word.eq(int(w))
        d_reading = Signal()  # the unit addresses its descriptor words (from the decode)
        # Otherwise the descriptor memory is the sequencer's (``aux_desc_addr``): it reads
        # the layer's bias address while the table loads, after the unit's reads.
        m.d.comb += [
            ld.desc_addr.eq(Mux(d_reading, Cat(d_word, layer), self.aux_desc_addr)),
            self.port_free.eq((state != _Q.STREAMS) & ~self.reader.rd_req),
            self.desc_data.eq(ld.desc_data),
        ]
        res = Signal()  # this layer's symbols and codebook are resident already
        m.d.comb += [
            path.params.resident.eq(res),
            # (a resident image's tables stay at their bases; another's at 0)
            path.params.table_base.eq(Mux(ld.resident, keep[DescWord.SYM_BASE], 0)),
            path.params.codebook_base.eq(Mux(ld.resident, keep[DescWord.CB_BASE], 0)),
            self.bias_base.eq(Mux(ld.resident, keep[DescWord.BIAS_BASE], 0)),
            self.held.eq(state == _Q.HOLD),
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

        go_seen = Signal()  # ``go`` came while the table was loading
        with m.If(self.go):
            m.d.sync += go_seen.eq(1)
        with m.If((state == _Q.IDLE) & self.decode & ld.loaded & ~ld.busy
                  & (self.layer < ld.n_layers)):
            m.d.sync += [layer.eq(self.layer), d_k.eq(0), state.eq(_Q.DESC),
                         res.eq(self.resident & ld.resident),
                         self.error.eq(0), go_seen.eq(self.go), d_reading.eq(1)]

        # Descriptor: word _KEEP[d_k] is addressed in one clock and kept in the next; the
        # table's load starts once the first _KEEP_START are in, the rest follow.
        with m.If(d_reading | (d_k == len(_KEEP))):
            m.d.sync += d_k.eq(d_k + 1)
            with m.Switch(d_k):
                for i, w in enumerate(_KEEP):
                    with m.Case(i + 1):
                        m.d.sync += keep[w].eq(ld.desc_data)
            with m.If(d_k == len(_KEEP) - 1):
                m.d.sync += d_reading.eq(0)
        with m.If((state == _Q.DESC) & (d_k == _KEEP_START)):
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
                rdr.count.eq(keep[DescWord.MAX_LEN] + Mux(res, 0, keep[DescWord.N_SYMBOLS])),
                rdr.wide.eq(1),
                rdr.tag.eq(0),
            ]
            m.d.sync += state.eq(_Q.TABLE)
        with m.If((state == _Q.TABLE) & ~rdr.busy & ~res):
            m.d.comb += [
                rdr.start.eq(1),
                rdr.addr.eq(keep[DescWord.CODEBOOK_ADDR]),
                rdr.count.eq(keep[DescWord.CODEBOOK_SIZE]),
                rdr.wide.eq(cfg.bw == 16),
                rdr.tag.eq(1),
            ]
            m.d.sync += state.eq(_Q.CODEBOOK)
        # The last codebook entry may still wait on the reader's output or in the item
        # slice: the read port is free, so the fetch starts (after ``go``).
        # (a resident layer has no codebook to read: its counts are the whole table)
        with m.If(((state == _Q.CODEBOOK) | ((state == _Q.TABLE) & res)) & ~rdr.busy):
            with m.If(go_seen | self.go):
                m.d.comb += fetch.start.eq(1)
                m.d.sync += state.eq(_Q.STREAMS)
            with m.Else():
                m.d.sync += state.eq(_Q.HOLD)
        with m.If((state == _Q.HOLD) & self.go):
            m.d.comb += fetch.start.eq(1)
            m.d.sync += state.eq(_Q.STREAMS)

        with m.If(state == _Q.STREAMS):
            with m.If(path.done | path.error):
                m.d.sync += [state.eq(_Q.IDLE), self.error.eq(path.error)]
        with m.If(failing):
            m.d.sync += [state.eq(_Q.IDLE), self.error.eq(1)]
        with m.If(self.drop & (state != _Q.STREAMS)):
            m.d.sync += [state.eq(_Q.IDLE), d_reading.eq(0)]
        return m
