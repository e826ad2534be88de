"""The weight-image loader: a byte stream in, a checked image in on-chip memories out.

Ref: docs/weight-image.md (the format and the reader's order of checks); CRC-32 as zlib
(ISO-HDLC, reflected 0xEDB88320), computed bytewise by ``amaranth.lib.crc``.
"""

from enum import IntEnum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from hw.layouts import ImageByte
from hw.ram import read_port
from weights.huffman import MAX_CODE_LENGTH
from weights.image import MAGIC, MAX_ALPHABET, MAX_BIAS_BITS, MAX_INDEX_BITS, MAX_RUN_BITS
from weights.image import VERSION as IMAGE_VERSION

__all__ = ["DESC_WORDS", "ENTRY_BYTES", "HEADER_BYTES", "DescWord", "ImageLoader", "LoadError",
           "buffer_inputs", "buffer_signature", "descriptor_words", "image_words", "resident_fits"]

HEADER_BYTES = 20  # the image's header (docs/weight-image.md)
ENTRY_BYTES = 32  # a layer-table entry
_CRC_BYTES = 4


class LoadError(enum.Enum, shape=5):
    """What the loader found wrong with an image (``NONE``: loaded).

    Format errors come first, in the reader's order (docs/weight-image.md, "order of
    checks"); the ``CAP_*`` errors (the image is valid but exceeds this build) are reported
    only when the whole image is otherwise valid, as ``AcceleratorConfig.check_image``
    is applied after ``read_image``. ``CAP_IMAGE`` is the exception: an image larger than
    the buffer stops the load as soon as its header says so.
    """

    NONE = 0
    MAGIC = 1  # not "ESPW"
    VERSION = 2  # not version 1
    TRUNCATED = 3  # the input ended (``last`` or ``abort``) before ``file_size`` bytes
    LENGTH = 4  # ``file_size`` below 24, or bytes after ``file_size`` (no ``last`` there)
    CRC = 5  # CRC-32 mismatch
    HEADER = 6  # bad bw, no layers, bad input shape, reserved field, table past the end
    ENTRY = 7  # a table entry's kind, activation, index/run/bias bits, K, out_c, fc kernel
    SECTIONS = 8  # section sizes do not add up, a section's parts do not fill it, or a
    #              stream is empty
    TABLE = 9  # a Huffman table: L, over-subscribed, incomplete, symbol out of range or order
    CAP_IMAGE = 10  # larger than the image buffer
    CAP_BW = 11  # the image's bw is not the build's
    CAP_LAYERS = 12  # more layers than ``max_layers``
    CAP_FAN_IN = 13  # a fan-in above ``max_fan_in``
    CAP_CODEBOOK = 14  # a codebook above ``2^max_index_bits`` entries
    CAP_RUN_BITS = 15  # run_bits above ``max_run_bits``
    CAP_CODE_LEN = 16  # a Huffman code longer than ``max_code_len``
    CAP_TABLE = 17  # more table symbols than ``max_table_symbols``


class DescWord(IntEnum):
    """Word ``w`` of layer ``i``'s descriptor is at address ``i · DESC_WORDS + w``.

    Addresses are byte offsets in the image (and the image buffer); ``TABLE_ADDR`` is the
    first count (after the ``L`` byte), ``STREAMS_BYTES`` the sum of the stream sizes.
    ``SYM_BASE``, ``CB_BASE`` and ``BIAS_BASE`` are the sums of the earlier layers' table
    symbols, codebook entries and output channels: where the layer's symbols, codebook
    and biases stay in the decoders' symbol memories, the expanders' codebook memories
    and the bias memory when the whole image's fit side by side (``ImageLoader.resident``,
    ``resident_fits``).
    """

    FAN_IN = 0
    CODEBOOK_SIZE = 1
    RUN_BITS = 2
    MAX_LEN = 3
    OUT_C = 4
    N_SYMBOLS = 5
    SYM_BASE = 6
    CODEBOOK_ADDR = 7
    TABLE_ADDR = 8
    SYMBOLS_ADDR = 9
    BIAS_ADDR = 10
    SIZES_ADDR = 11
    STREAMS_ADDR = 12
    STREAMS_BYTES = 13
    CB_BASE = 14
    BIAS_BASE = 15


DESC_WORDS = 16


def desc_word_width(config) -> int:
    """Bits of a descriptor word: a u16 field or a byte address of the image buffer."""
    return max(16, config.image_addr_width + 1)


def descriptor_words(image, config=None) -> list[list[int]]:
    """The software face of the descriptor memory: each layer's ``DESC_WORDS`` words for a
    ``weights.image.Image``, with the byte offsets its file layout gives (the bases are 0
    on a ``config`` without ``resident_tables``, whose loader does not sum them)."""
    sums = config is None or config.resident_tables
    out = []
    n = len(image.layers)
    section = HEADER_BYTES + ENTRY_BYTES * n
    sym_base = cb_base = bias_base = 0
    for layer in image.layers:
        k = len(layer.codebook)
        table_addr = section + k * image.bw // 8 + 1
        symbols_addr = table_addr + 2 * layer.table.max_len
        bias_addr = symbols_addr + 2 * len(layer.table.symbols)
        sizes_addr = bias_addr + (layer.out_c * layer.bias_bits + 7) // 8
        streams_addr = sizes_addr + 2 * layer.out_c
        streams_bytes = sum(len(s) for s in layer.streams)
        words = {
            DescWord.FAN_IN: layer.fan_in, DescWord.CODEBOOK_SIZE: k,
            DescWord.RUN_BITS: layer.run_bits, DescWord.MAX_LEN: layer.table.max_len,
            DescWord.OUT_C: layer.out_c, DescWord.N_SYMBOLS: len(layer.table.symbols),
            DescWord.SYM_BASE: sym_base,
            DescWord.CODEBOOK_ADDR: section, DescWord.TABLE_ADDR: table_addr,
            DescWord.SYMBOLS_ADDR: symbols_addr, DescWord.BIAS_ADDR: bias_addr,
            DescWord.SIZES_ADDR: sizes_addr, DescWord.STREAMS_ADDR: streams_addr,
            DescWord.STREAMS_BYTES: streams_bytes, DescWord.CB_BASE: cb_base,
            DescWord.BIAS_BASE: bias_base,
        }
        if sums:
            sym_base += len(layer.table.symbols)
            cb_base += k
            bias_base += layer.out_c
        out.append([words[DescWord(w)] for w in range(DESC_WORDS)])
        section = streams_addr + streams_bytes
    return out


def resident_fits(config, image) -> bool:
    """Whether every layer's table symbols, codebook entries and biases fit the build's
    memories side by side (``ImageLoader.resident`` in software; never without
    ``resident_tables``): docs/architecture.md, "Resident tables"."""
    layers = image.layers
    return config.resident_tables and (
        sum(len(layer.table.symbols) for layer in layers) <= config.max_table_symbols
        and sum(len(layer.codebook) for layer in layers) <= config.max_codebook_size
        and sum(layer.out_c for layer in layers) <= config.max_channels)


def image_words(data: bytes, word_bytes: int) -> list[int]:
    """Image bytes packed into buffer words, little-endian (byte ``a`` is byte ``a mod W``
    of word ``a div W``), as the loader writes them."""
    data = bytes(data) + bytes(-len(data) % word_bytes)
    return [int.from_bytes(data[j:j + word_bytes], "little")
            for j in range(0, len(data), word_bytes)]



def _above(value, n: int):
    """``value > n`` for a constant ``n``, as plain logic (yosys makes a carry chain of any
    comparison, a constant one too): from the top bit down, ``value`` is above ``n`` at
    the first bit where it has a 1 and ``n`` a 0, every bit above being equal. One chain
    of single-bit terms shares that prefix; an equality ``value[i + 1:] == n >> (i + 1)``
    for each ``i`` apart left the loader with 1,600 bits of equality cells and 27 more
    LUT4 on the iCE40 (session 17)."""
    value = Value.cast(value)
    if n >= (1 << len(value)) - 1:
        return Const(0)
    above = Const(0)
    equal = Const(1)
    for i in reversed(range(len(value))):
        if (n >> i) & 1:
            equal = equal & value[i]
        else:
            above = above | (equal & value[i])
            equal = equal & ~value[i]
    return above


class _BufferWrite:
    def __init__(self, cfg):
        self.data = Signal(8 * cfg.image_word_bytes, name="buf_wr_data")
        self.en = Signal(cfg.image_word_bytes, name="buf_wr_en")


class _BufferRead:
    def __init__(self, cfg):
        self.addr = Signal(range(cfg.image_words), name="buf_addr")
        self.data = Signal(8 * cfg.image_word_bytes, name="buf_rd_data")
        self.en = Signal(name="buf_rd_en")


def buffer_signature(config) -> wiring.Signature:
    """The image buffer's one port, as the loader drives it (``external_buffer=True``):
    ``addr`` (word), ``wr_data`` and ``wr_en`` (a byte enable per byte lane), ``rd_en``
    and ``rd_data`` (the word at ``addr`` of the clock ``image_read_latency`` clocks
    before, when ``rd_en`` was high then; held otherwise, as the iCE40 SPRAM and yosys'
    model of it behave). With a latency of 2 a write, too, lands a clock later
    (``buffer_inputs``)."""
    return wiring.Signature({
        "addr": Out(range(config.image_words)),
        "wr_data": Out(8 * config.image_word_bytes),
        "wr_en": Out(config.image_word_bytes),
        "rd_en": Out(1),
        "rd_data": In(8 * config.image_word_bytes),
    })


def buffer_inputs(m, config, addr, wr_data, wr_en, rd_en):
    """The image buffer's inputs as its RAMs take them: as given for an
    ``image_read_latency`` of 1; with 2, registered first (write enables and read enable
    reset low), which is the latency's extra clock."""
    if config.image_read_latency == 1:
        return addr, wr_data, wr_en, rd_en
    regs = (Signal.like(addr, name="buf_addr_r"), Signal.like(wr_data, name="buf_wr_data_r"),
            Signal.like(wr_en, name="buf_wr_en_r"), Signal.like(rd_en, name="buf_rd_en_r"))
    m.d.sync += [r.eq(v) for r, v in zip(regs, (addr, wr_data, wr_en, rd_en), strict=True)]
    return regs


class _P(enum.Enum, shape=5):
    """The loader's states."""

    IDLE = 0
    RECEIVE = 1
    CRC = 2
    HEADER = 3
    HEADER_CHECK = 4
    E_START = 5
    E_READ = 6
    E_SIZE = 7
    E_END = 8
    FETCH = 9
    S_CB = 10
    S_L = 11
    S_TABLE = 12
    S_SYMBOLS = 13
    S_COUNT = 14
    S_COUNTED = 15
    S_LEN = 16
    S_SYM = 17
    S_BIAS = 18
    S_SIZES = 19
    S_STREAMS = 20
    S_STREAMS_ADDR = 21
    S_STREAMS_BYTES = 22
    S_SIZE = 23
    S_SIZE_GOT = 24
    S_NEXT = 25
    DONE = 26


class ImageLoader(wiring.Component):
    """Receives a weight image byte by byte, stores it and checks it completely.

    Ports:
        ``start`` (in): one-cycle pulse: forget the previous image (``loaded`` falls) and
            receive a new one from ``i``.
        ``i`` (in stream of ``ImageByte``): the file's bytes; ``last`` on its last byte.
        ``abort`` (in): the source gave up (e.g. a host timeout): a load in progress ends
            with ``TRUNCATED``.
        ``busy`` (out): a load is in progress. ``status`` (out, ``LoadError``): the result of
            the last load, valid while not ``busy``. ``loaded`` (out): the buffers hold an
            image that passed every check; cleared by ``start``, set only at the end.
        ``n_layers`` (out): the loaded image's layer count.
        ``resident`` (out): with ``loaded``: every layer's table symbols, codebook entries
            and output channels fit side by side in the build's memories
            (``resident_fits``), at the ``SYM_BASE``, ``CB_BASE`` and ``BIAS_BASE`` the
            descriptors give.
        ``rd_addr``/``rd_data``: a read port of the image buffer (word address, word
            ``image_read_latency`` clocks later), for the blocks that use the image;
            ignored while ``busy``.
        ``desc_addr``/``desc_data``: a read port of the descriptor memory.
        ``buffer`` (only with ``external_buffer=True``; ``buffer_signature``): the image
            buffer's port, for a platform that provides the RAM itself (SPRAM on the
            iCE40UP5K); the ``image_data`` memory is then not instantiated.

    Memories (``amaranth.lib.memory``, portable; mapping the image buffer to SPRAM or
    block RAM is the platform's job):
        ``image_data``: ``image_words`` words of ``image_word_bytes`` bytes: the whole file,
            byte ``a`` at byte lane ``a mod W`` of word ``a div W``. The codebooks, Huffman
            tables, stream sizes and streams stay there; descriptors point at them.
        ``desc_data``: ``max_layers · DESC_WORDS`` words (``DescWord``), each written when
            the parse reaches its value (a load that fails can leave a layer's words part
            old, part new; ``loaded`` stays low).

    Operation. Receiving: one byte per clock (``i.ready`` is high in this phase only); the
    magic, the version and ``file_size`` are checked as they arrive (a ``file_size`` above
    the buffer stops the load at once, so no wait is longer than the buffer); the CRC runs
    over every byte. Then, if the CRC matches, the image is parsed back from the buffer, a
    byte a clock, by one engine: header fields; every
    table entry, its 32 bytes in order, each field checked as it arrives (a shift-and-add
    multiplier forms the fan-in meanwhile), and the sum of the section sizes; then, layer
    by layer, the entry again and its section: one adder walks the section's parts
    (codebook, Huffman table, biases, stream sizes, streams) and one subtractor checks
    each against the section's end, while the Huffman table is read for ``L``, counts
    complete and not over-subscribed (a single symbol only as one 1-bit code), and symbols
    in range and increasing within each length. Parsing takes about ``4 · (table symbols +
    channels) + 200`` clocks per layer (LeNet-5: about 8,000); every loop is bounded by a
    length already checked against the section. Not checked in hardware: layer geometry
    (kernel, stride, shapes chaining, fractional lengths), symbols listed twice under
    different lengths, and the streams' contents (the decoder reports those when it decodes
    them).
    """

    def __init__(self, config, *, external_buffer: bool = False):
        self._config = config
        self._external_buffer = external_buffer
        ports = {"buffer": Out(buffer_signature(config))} if external_buffer else {}
        super().__init__({
            **ports,
            "start": In(1),
            "abort": In(1),
            "i": In(stream.Signature(ImageByte())),
            "busy": Out(1),
            "status": Out(LoadError),
            "loaded": Out(1),
            "n_layers": Out(8),
            "resident": Out(1),
            "rd_addr": In(range(config.image_words)),
            "rd_data": Out(8 * config.image_word_bytes),
            "desc_addr": In(range(config.max_layers * DESC_WORDS)),
            "desc_data": Out(desc_word_width(config)),
        })
        self.image_word_bytes = config.image_word_bytes
        self.image_data = memory.MemoryData(
            shape=8 * config.image_word_bytes, depth=config.image_words, init=[])
        self.desc_data_mem = memory.MemoryData(
            shape=desc_word_width(config), depth=config.max_layers * DESC_WORDS, init=[])

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()  # byte-offset bits in a word

        # The image buffer: one address for writing (while receiving) and reading (after),
        # so it maps to a single-port RAM such as the iCE40UP5K's SPRAM.
        img_wr = _BufferWrite(cfg)
        img_rd = _BufferRead(cfg)
        if self._external_buffer:
            m.d.comb += [
                self.buffer.addr.eq(img_rd.addr),
                self.buffer.wr_data.eq(img_wr.data),
                self.buffer.wr_en.eq(img_wr.en),
                self.buffer.rd_en.eq(img_rd.en),
                img_rd.data.eq(self.buffer.rd_data),
            ]
        else:
            m.submodules.image = img = memory.Memory(data=self.image_data)
            wr = img.write_port(granularity=8)
            rd = img.read_port()
            addr, wr_data, wr_en, rd_en = buffer_inputs(m, cfg, img_rd.addr, img_wr.data,
                                                        img_wr.en, img_rd.en)
            m.d.comb += [
                wr.addr.eq(addr), wr.data.eq(wr_data), wr.en.eq(wr_en),
                rd.addr.eq(addr), rd.en.eq(rd_en), img_rd.data.eq(rd.data),
            ]
        m.submodules.desc = desc = memory.Memory(data=self.desc_data_mem)
        desc_wr = desc.write_port()
        desc_rd = read_port(m, desc, name="desc_rd")  # (read only once an image is loaded)
        m.submodules.crc = crc = catalog.CRC32_ISO_HDLC(data_width=8).create()
        # The SPRAM (and yosys' model of it) keeps its output during a write.
        m.d.comb += img_rd.en.eq(~img_wr.en.any())
        m.d.comb += [
            desc_rd.addr.eq(self.desc_addr),
            self.desc_data.eq(desc_rd.data),
            self.rd_data.eq(img_rd.data),
        ]

        # Widths. ``aw``: a byte address or a size up to ``image_bytes``. ``ew``: a section's
        # end, or in phase 0 the table's end + 4 + the section sizes so far (each sum is
        # checked against file_size before the next size is added; the table ends by
        # 20 + 32 · 255). ``mw``: the saturating multiplier (above ``max_fan_in``, and 8 ·
        # ``image_bytes`` so that a saturated bias size runs past any section). ``xw``: any
        # value of ``acc``, a checked address plus one addend, or plus the counts of a
        # Huffman table (below 2^17 while they are not over-subscribed, plus one count).
        aw = max(cfg.image_bytes.bit_length(), 5)
        ew = max(aw + 1, (HEADER_BYTES + _CRC_BYTES + ENTRY_BYTES * 255).bit_length())
        mw = max(cfg.fan_in_width + 1, aw + 3, 16)
        xw = max(ew, 18, mw - 3) + 1
        dw = desc_word_width(cfg)

        # The control signals each state drives (all low by default); the registers they
        # steer are assigned in one place each, so that each is one multiplexer.
        state = Signal(_P)
        m.d.comb += self.busy.eq(state != _P.IDLE)
        err = Signal()  # stop with status err_code
        err_code = Signal(LoadError)
        cap_err = Signal(LoadError)  # the first capacity error, reported at the end
        cap_hit = Signal()  # a capacity error cap_code (the first one is kept)
        cap_code = Signal(LoadError)

        def fail(code):
            m.d.comb += [err.eq(1), err_code.eq(code)]

        def cap(code):
            m.d.comb += [cap_hit.eq(1), cap_code.eq(code)]

        with m.If(cap_hit & (cap_err == LoadError.NONE)):
            m.d.sync += cap_err.eq(cap_code)

        rd = Signal()  # read the byte at c (and step c)
        c_entry = Signal()  # c := the current table entry
        c_acc = Signal()  # c := acc
        c_swap = Signal()  # c, cp := cp, c

        add = Signal()  # acc += y + cin
        y_sel = Signal(2)  # 0: 0; 1: fv16 (doubled if y_dbl); 2: 2 · max_len; 3: r / 8
        y_dbl = Signal()
        cin = Signal()

        def accumulate(sel, carry=0, double=0):
            m.d.comb += [add.eq(1), y_sel.eq(sel), cin.eq(carry), y_dbl.eq(double)]

        d_en = Signal()  # write descriptor word d_word of layer li from source d_sel
        d_word = Signal(4)
        # 0: sym_sum, 1: acc, 2: fv16, 3: fv8, 4: fan-in, 5: n_sym, 6: room, 7: cb_sum,
        # 8: ch_sum
        d_sel = Signal(4)
        li = Signal(8)  # layer

        def desc_word(word, sel):
            m.d.comb += [d_en.eq(1), d_word.eq(int(word)), d_sel.eq(sel)]

        # -- receiving -----------------------------------------------------------------------
        c = Signal(aw)  # receiving: bytes taken; parsing: the address of the next byte read
        size = Signal(32)  # file_size
        bw = Signal(8)
        n_layers = Signal(8)
        hdr_bad = Signal()  # input shape zero or reserved field set
        hdr_lo = Signal(8)  # the low byte of a u16 field, held for its high byte
        m.d.comb += self.n_layers.eq(n_layers)
        byte = self.i.payload.data
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(state == _P.RECEIVE),
            take.eq(self.i.valid & self.i.ready),
            crc.data.eq(byte),
            crc.valid.eq(take),
            img_wr.data.eq(Cat(*([byte] * wb))),
        ]
        with m.If(take):
            m.d.comb += img_wr.en.eq(1 << c[:ob])
            m.d.sync += hdr_lo.eq(byte)

        # -- reading the buffer back: a byte a clock at c, shifted into fv ------------------
        with m.If(self.busy):
            m.d.comb += img_rd.addr.eq(c[ob:])
        with m.Else():
            m.d.comb += img_rd.addr.eq(self.rd_addr)
        # (``lx``: the buffer's clocks of latency beyond one, ``image_read_latency - 1``)
        lx = cfg.image_read_latency - 1
        f_off = Signal(max(1, ob))
        landed = Signal()  # rd_byte is the byte read image_read_latency clocks before
        rd_byte = Signal(8)
        fv = Signal(32)  # the last four bytes read, the latest in fv[24:]
        fv8 = fv[24:]
        fv16 = fv[16:]  # the last two bytes read, as a little-endian u16
        m.d.comb += rd_byte.eq(img_rd.data.word_select(f_off, 8) if ob else img_rd.data)
        if lx:
            f_off_1 = Signal.like(f_off)  # (the read of the clock before, on its way)
            landed_1 = Signal()
            m.d.sync += [f_off_1.eq(c[:ob] if ob else 0), landed_1.eq(rd),
                         f_off.eq(f_off_1), landed.eq(landed_1)]
        else:
            m.d.sync += [f_off.eq(c[:ob] if ob else 0), landed.eq(rd)]
        with m.If(landed):
            m.d.sync += fv.eq(Cat(fv[8:], rd_byte))
        k = Signal(6)  # clocks in a reading state; a byte read at k is in fv at k + 2 + lx

        def read(n):
            """In a state that reads n bytes at c: the condition that they are in fv."""
            done = k == n + 1 + lx
            with m.If(~done):
                m.d.comb += rd.eq(k < n)
                m.d.sync += k.eq(k + 1)
            return done

        def goto(next_state):
            m.d.sync += [state.eq(next_state), k.eq(0)]

        cp = Signal(aw)  # the other read pointer: counts and symbols are read in turn
        entry = Cat(Const(HEADER_BYTES, 5), li)  # 20 + 32 · li
        acc = Signal(xw)
        with m.If(take | rd):
            m.d.sync += c.eq(c + 1)
        with m.If(c_entry):
            m.d.sync += c.eq(entry)
        with m.If(c_acc):
            m.d.sync += c.eq(acc)
        with m.If(c_swap):
            m.d.sync += [c.eq(cp), cp.eq(c)]

        # -- a saturating multiplier, most significant bit of b first: r = a · b[8:], or with
        # a reload after 8 steps a · b[8:] · b[:8]. The fan-in (in_c · kernel_w · kernel_h),
        # the bias bits (out_c · bias_bits) and 16 · out_c. -------------------------------------
        a = Signal(mw)
        b = Signal(16)
        r = Signal(mw)
        steps = Signal(5)  # 17: two products (the reload at 9); 8: one product
        prod = Signal(mw + 2)
        m.d.comb += prod.eq((r << 1) + Mux(b[15], a, 0))
        with m.If(steps == 9):
            m.d.sync += [a.eq(r), r.eq(0), steps.eq(steps - 1)]
        with m.Elif(steps != 0):
            m.d.sync += [r.eq(Mux(prod[mw:].any(), (1 << mw) - 1, prod[:mw])),
                         b.eq(b << 1), steps.eq(steps - 1)]

        # -- the one adder of section addresses, acc += y + cin, and the one comparator -----
        max_len = Signal(5)  # L
        y = Signal(xw)
        with m.Switch(y_sel):
            with m.Case(1):
                m.d.comb += y.eq(Mux(y_dbl, fv16 << 1, fv16))
            with m.Case(2):
                m.d.comb += y.eq(max_len << 1)
            with m.Case(3):
                m.d.comb += y.eq(r[3:])
        with m.If(add):
            m.d.sync += acc.eq(acc + y + cin)
        s_end = Signal(ew)  # phase 1: the section's end; phase 0: see ew
        room = Signal(signed(xw + 1))  # negative: acc is past the section's end
        m.d.comb += room.eq(s_end - acc)

        # -- the descriptor memory: each word is written where the parse finds it -----------
        n_sym = Signal(17)  # the Huffman table's symbols, counted as they are listed
        # The earlier layers' symbols, codebook entries and channels (the next layer's
        # SYM_BASE, CB_BASE, BIAS_BASE), each with a sticky flag: past the build's memory.
        # (0 without resident_tables: the bases are unused)
        sums = {}
        for name, cap_n in (("sym", cfg.max_table_symbols), ("cb", cfg.max_codebook_size),
                            ("ch", cfg.max_channels)):
            sums[name] = (Signal(cap_n.bit_length(), name=f"{name}_sum"),
                          Signal(name=f"{name}_over"), cap_n)
        sym_sum, cb_sum, ch_sum = (sums[n][0] for n in ("sym", "cb", "ch"))

        def add_to(name, addend):
            if not cfg.resident_tables:
                return
            total, over, cap_n = sums[name]
            s = Signal(max(len(total), len(addend)) + 1, name=f"{name}_next")
            m.d.comb += s.eq(total + addend)
            m.d.sync += total.eq(s[:len(total)])
            with m.If(_above(s, cap_n)):
                m.d.sync += over.eq(1)
        fan_big = _above(r, cfg.max_fan_in)
        fan_in = Mux(fan_big, cfg.max_fan_in + 1, r)  # FAN_IN, saturated as it always was
        m.d.comb += [desc_wr.addr.eq(Cat(d_word, li)),
                     desc_wr.en.eq(d_en & ~_above(li, cfg.max_layers - 1))]
        with m.Switch(d_sel):
            for n, value in enumerate([sym_sum, acc, fv16, fv8, fan_in, n_sym, room[:dw],
                                       cb_sum, ch_sum]):
                with m.Case(n):
                    m.d.comb += desc_wr.data.eq(value)

        # -- the parse's registers -----------------------------------------------------------
        phase = Signal()  # 0: checking the table entries, 1: the sections
        e_bad = Signal()  # a table entry's field that ENTRY refuses
        fc = Signal()  # the entry is fully connected
        ib = Signal(4)  # index_bits (when valid)
        alph = Signal(MAX_ALPHABET.bit_length())  # K · 2^run_bits: the alphabet size - 2
        shifts = Signal(4)  # run_bits shifts of alph still to do
        with m.If(shifts != 0):
            m.d.sync += [alph.eq(alph << 1), shifts.eq(shifts - 1)]
        ln = Signal(5)  # the code length being counted / listed
        # Counting: codes of length ln still free (2^ln - the canonical first code); listing
        # the symbols: alph.
        avail = Signal(17)
        kraft = Signal(signed(18))
        m.d.comb += kraft.eq(avail - fv16)
        left = Signal(16)  # symbols left in length ln; stream sizes left
        first = Signal()  # the first symbol of its length
        prev = Signal(16)

        with m.Switch(state):
            with m.Case(_P.RECEIVE):
                with m.If(take):
                    # The end of the input against file_size (known from byte 20 on: a
                    # file_size that would end at byte 19 is below 24, refused below).
                    with m.If(_above(c, HEADER_BYTES - 1) & (c + 1 == size[:aw])):
                        with m.If(self.i.payload.last):
                            m.d.sync += state.eq(_P.CRC)
                        with m.Else():
                            fail(LoadError.LENGTH)
                    with m.Elif(self.i.payload.last):
                        fail(LoadError.TRUNCATED)
                    # A field check that fails overrides the above.
                    with m.If(c[5:] == 0):
                        with m.Switch(c[:5]):
                            for n in range(4):
                                with m.Case(n):
                                    with m.If(byte != MAGIC[n]):
                                        fail(LoadError.MAGIC)
                            with m.Case(4):
                                with m.If(byte != IMAGE_VERSION):
                                    fail(LoadError.VERSION)
                            with m.Case(5):
                                m.d.sync += bw.eq(byte)
                            with m.Case(6):
                                m.d.sync += n_layers.eq(byte)
                            for n in (9, 11, 13):  # input_c, _h, _w must be >= 1
                                with m.Case(n):
                                    with m.If(Cat(hdr_lo, byte) == 0):
                                        m.d.sync += hdr_bad.eq(1)
                            for n in (14, 15):  # reserved
                                with m.Case(n):
                                    with m.If(byte != 0):
                                        m.d.sync += hdr_bad.eq(1)
                            for n in (16, 17, 18):
                                with m.Case(n):
                                    m.d.sync += size.word_select(n - 16, 8).eq(byte)
                            with m.Case(19):
                                full = Cat(size[:24], byte)
                                m.d.sync += size.eq(full)
                                with m.If(~_above(full, HEADER_BYTES + _CRC_BYTES - 1)):
                                    fail(LoadError.LENGTH)
                                with m.Elif(_above(full, cfg.image_bytes)):
                                    fail(LoadError.CAP_IMAGE)
                with m.If(self.abort):
                    fail(LoadError.TRUNCATED)

            with m.Case(_P.CRC):
                with m.If(crc.match_detected):
                    m.d.sync += state.eq(_P.HEADER)
                with m.Else():
                    fail(LoadError.CRC)

            # -- header -----------------------------------------------------------------------
            with m.Case(_P.HEADER):
                with m.If(bw != cfg.bw):
                    cap(LoadError.CAP_BW)
                with m.If(_above(n_layers, cfg.max_layers)):
                    cap(LoadError.CAP_LAYERS)
                # The table's end + 4, so that s_end > file_size: the table runs into the CRC.
                m.d.sync += [s_end.eq(Cat(Const(HEADER_BYTES + _CRC_BYTES, 5), n_layers)),
                             li.eq(0), phase.eq(0), state.eq(_P.HEADER_CHECK)]
            with m.Case(_P.HEADER_CHECK):
                with m.If(((bw != 8) & (bw != 16)) | (n_layers == 0) | hdr_bad
                          | (s_end > size[:aw])):
                    fail(LoadError.HEADER)
                with m.Else():
                    m.d.sync += state.eq(_P.E_START)

            # -- a table entry: its 32 bytes in order, each field checked as it arrives ------
            # Phase 0 multiplies out the fan-in and sums the section sizes; phase 1 reads the
            # entry again for its section (acc: the codebook's end, a: out_c, r: the bias
            # bits) and checks the same fields again (they pass; their capacity errors are
            # latched already).
            with m.Case(_P.E_START):
                desc_word(DescWord.SYM_BASE, 0)  # (phase 1's is the one kept)
                m.d.comb += c_entry.eq(1)
                m.d.sync += [acc.eq(s_end), e_bad.eq(0)]
                goto(_P.E_READ)
            with m.Case(_P.E_READ):
                m.d.comb += rd.eq(~_above(k, ENTRY_BYTES - 1))
                m.d.sync += k.eq(k + 1)
                with m.If(k == ENTRY_BYTES + lx):  # the last byte is in fv at E_SIZE
                    goto(_P.E_SIZE)
                # Byte n of the entry is in fv[24:] at k = n + 2 + lx; each case below is
                # named by n + 2 and comes lx clocks later, all of them together.
                with m.Switch(k - lx if lx else k):
                    with m.Case(0):
                        with m.If(phase):
                            desc_word(DescWord.CODEBOOK_ADDR, 1)
                    with m.Case(2):  # kind
                        m.d.sync += fc.eq(fv8 == 2)
                        with m.If((fv8 != 1) & (fv8 != 2)):
                            m.d.sync += e_bad.eq(1)
                    with m.Case(3):  # activation
                        with m.If(_above(fv8, 1)):
                            m.d.sync += e_bad.eq(1)
                    with m.Case(7):  # kernel_h, kernel_w: 1 × 1 for fc; the fan-in's factors
                        with m.If(fc & (fv16 != 0x0101)):
                            m.d.sync += e_bad.eq(1)
                        with m.If(~phase):
                            m.d.sync += b.eq(fv16)
                    with m.Case(11):  # in_c
                        with m.If(~phase):
                            m.d.sync += [a.eq(fv16), r.eq(0), steps.eq(17)]
                    with m.Case(17):  # out_c
                        desc_word(DescWord.OUT_C, 2)
                        with m.If(fv16 == 0):
                            m.d.sync += e_bad.eq(1)
                        with m.If(phase):
                            m.d.sync += a.eq(fv16)
                    with m.Case(25):  # index_bits
                        with m.If(phase):
                            desc_word(DescWord.CB_BASE, 7)
                        m.d.sync += ib.eq(fv8)
                        with m.If((fv8 == 0) | _above(fv8, MAX_INDEX_BITS)):
                            m.d.sync += e_bad.eq(1)
                    with m.Case(27):  # K
                        desc_word(DescWord.CODEBOOK_SIZE, 2)
                        accumulate(1, double=bw == 16)
                        m.d.sync += alph.eq(fv16)
                        with m.If(phase):
                            add_to("cb", fv16)
                        with m.If((fv16 == 0) | fv16[9:].any()
                                  | (fv16[:9] > (Const(1, 9) << ib)[:9])):
                            m.d.sync += e_bad.eq(1)
                    with m.Case(28):  # run_bits (K is in fv[8:24])
                        desc_word(DescWord.RUN_BITS, 3)
                        m.d.sync += shifts.eq(fv8)
                        with m.If(_above(fv8, MAX_RUN_BITS)):
                            m.d.sync += e_bad.eq(1)
                        with m.If(_above(fv[8:24], cfg.max_codebook_size)):
                            cap(LoadError.CAP_CODEBOOK)
                        with m.If(_above(fv8, cfg.max_run_bits)):
                            cap(LoadError.CAP_RUN_BITS)
                    with m.Case(29):  # bias_bits (run_bits in the low byte: never multiplied)
                        with m.If(phase):
                            desc_word(DescWord.BIAS_BASE, 8)
                        with m.If((fv8 == 0) | _above(fv8, MAX_BIAS_BITS)):
                            m.d.sync += e_bad.eq(1)
                        with m.If(phase):
                            m.d.sync += [b.eq(fv16), r.eq(0), steps.eq(8)]
            with m.Case(_P.E_SIZE):  # section_size
                m.d.sync += [s_end.eq(s_end + fv[:aw]), state.eq(_P.E_END)]
                with m.If(_above(fv, cfg.image_bytes)):
                    fail(LoadError.SECTIONS)
            with m.Case(_P.E_END):
                with m.If((steps == 0) & (shifts == 0)):  # the multiplier and alph are done
                    with m.If(e_bad | _above(alph, MAX_ALPHABET - 2)):
                        fail(LoadError.ENTRY)
                    with m.Elif(phase):
                        m.d.sync += state.eq(_P.S_CB)
                    with m.Else():
                        desc_word(DescWord.FAN_IN, 4)
                        with m.If(fan_big):
                            cap(LoadError.CAP_FAN_IN)
                        # Sections past the body fail at once, so the sum stays in ew bits.
                        with m.If(s_end > size[:aw]):
                            fail(LoadError.SECTIONS)
                        with m.Elif(li + 1 == n_layers):
                            with m.If(s_end != size[:aw]):
                                fail(LoadError.SECTIONS)
                            with m.Else():
                                # Phase 1 reads the entries again, layer 0 first; section 0
                                # starts at the table's end.
                                m.d.sync += [li.eq(0), phase.eq(1), state.eq(_P.E_START),
                                             s_end.eq(Cat(Const(HEADER_BYTES, 5), n_layers))]
                        with m.Else():
                            m.d.sync += [li.eq(li + 1), state.eq(_P.E_START)]

            # -- a section: codebook, Huffman table, biases, stream sizes --------------------
            # acc walks the section's parts, each checked against s_end as it is added; c
            # reads the Huffman table and the stream sizes.
            with m.Case(_P.S_CB):  # acc: the L byte
                with m.If(room[-1] | (room == 0)):
                    fail(LoadError.SECTIONS)
                with m.Else():
                    m.d.comb += c_acc.eq(1)
                    goto(_P.S_L)
            with m.Case(_P.S_L):
                with m.If(read(1)):
                    with m.If((fv8 == 0) | _above(fv8, MAX_CODE_LENGTH)):
                        fail(LoadError.TABLE)
                    with m.Else():
                        desc_word(DescWord.MAX_LEN, 3)
                        accumulate(0, carry=1)
                        m.d.sync += [max_len.eq(fv8), state.eq(_P.S_TABLE)]
                        with m.If(_above(fv8, cfg.max_code_len)):
                            cap(LoadError.CAP_CODE_LEN)
            with m.Case(_P.S_TABLE):  # acc and c: the first count
                desc_word(DescWord.TABLE_ADDR, 1)
                accumulate(2)
                m.d.sync += [cp.eq(c), state.eq(_P.S_SYMBOLS)]
            with m.Case(_P.S_SYMBOLS):  # acc: the symbols
                with m.If(room[-1]):
                    fail(LoadError.SECTIONS)
                with m.Else():
                    desc_word(DescWord.SYMBOLS_ADDR, 1)
                    m.d.sync += [avail.eq(2), ln.eq(1)]
                    goto(_P.S_COUNT)

            # The counts: complete and not over-subscribed (Kraft), count[L] not zero.
            with m.Case(_P.S_COUNT):
                with m.If(read(2)):
                    accumulate(1, double=1)
                    with m.If(kraft[-1]):
                        fail(LoadError.TABLE)  # over-subscribed
                    with m.Elif(ln == max_len):
                        single = (max_len == 1) & (fv16 == 1)
                        with m.If((fv16 == 0) | ((kraft != 0) & ~single)):
                            fail(LoadError.TABLE)  # incomplete, or no code of length L
                        with m.Else():
                            goto(_P.S_COUNTED)
                    with m.Else():
                        m.d.sync += [avail.eq(kraft << 1), ln.eq(ln + 1)]
                        goto(_P.S_COUNT)
            with m.Case(_P.S_COUNTED):  # acc: the biases; c: the symbols, cp: the counts
                with m.If(room[-1]):
                    fail(LoadError.SECTIONS)
                with m.Else():
                    desc_word(DescWord.BIAS_ADDR, 1)
                    m.d.comb += c_swap.eq(1)
                    m.d.sync += [avail.eq(alph), ln.eq(1), n_sym.eq(0)]
                    goto(_P.S_LEN)

            # Symbols: each in the alphabet, increasing within its length. S_LEN reads the
            # next length's count again, S_SYM a symbol; c and cp change places in between.
            with m.Case(_P.S_LEN):
                with m.If(read(2)):
                    m.d.sync += [left.eq(fv16), first.eq(1)]
                    with m.If(fv16 == 0):
                        m.d.sync += ln.eq(ln + 1)
                        goto(_P.S_LEN)
                    with m.Else():
                        m.d.comb += c_swap.eq(1)
                        goto(_P.S_SYM)
            with m.Case(_P.S_SYM):
                with m.If(read(2)):
                    m.d.sync += [prev.eq(fv16), first.eq(0), left.eq(left - 1),
                                 n_sym.eq(n_sym + 1)]
                    # kraft = alph - symbol: below -1 if the symbol is outside the alphabet.
                    with m.If((kraft[-1] & ~kraft.all()) | (~first & (fv16 <= prev))):
                        fail(LoadError.TABLE)
                    with m.Elif(left == 1):
                        m.d.comb += c_swap.eq(1)
                        with m.If(ln == max_len):
                            goto(_P.S_BIAS)
                        with m.Else():
                            m.d.sync += ln.eq(ln + 1)
                            goto(_P.S_LEN)
                    with m.Else():
                        goto(_P.S_SYM)

            # Biases: ceil(out_c · bias_bits / 8) bytes (r / 8, rounded up); stream sizes:
            # 2 · out_c bytes (r = 16 · out_c).
            with m.Case(_P.S_BIAS):
                desc_word(DescWord.N_SYMBOLS, 5)
                add_to("sym", n_sym)
                with m.If(_above(n_sym, cfg.max_table_symbols)):
                    cap(LoadError.CAP_TABLE)
                accumulate(3, carry=r[:3].any())
                m.d.sync += state.eq(_P.S_SIZES)
            with m.Case(_P.S_SIZES):
                desc_word(DescWord.SIZES_ADDR, 1)
                m.d.comb += c_acc.eq(1)
                m.d.sync += [r.eq(0), b.eq(16 << 8), steps.eq(8), state.eq(_P.S_STREAMS)]
            with m.Case(_P.S_STREAMS):
                with m.If(steps == 0):
                    accumulate(3)
                    m.d.sync += state.eq(_P.S_STREAMS_ADDR)
            with m.Case(_P.S_STREAMS_ADDR):
                with m.If(room[-1]):
                    fail(LoadError.SECTIONS)
                with m.Else():
                    desc_word(DescWord.STREAMS_ADDR, 1)
                    m.d.sync += [left.eq(a), state.eq(_P.S_STREAMS_BYTES)]
            with m.Case(_P.S_STREAMS_BYTES):
                # What the streams must fill; checked below as the sizes are added.
                desc_word(DescWord.STREAMS_BYTES, 6)
                goto(_P.S_SIZE)
            with m.Case(_P.S_SIZE):
                # The sizes only grow acc: past s_end it can never come back.
                with m.If(room[-1]):
                    fail(LoadError.SECTIONS)
                with m.Elif(left == 0):
                    with m.If(room != 0):
                        fail(LoadError.SECTIONS)
                    with m.Else():
                        m.d.sync += state.eq(_P.S_NEXT)
                with m.Else():
                    with m.If(read(2)):
                        accumulate(1)
                        m.d.sync += [left.eq(left - 1), k.eq(0)]
                        with m.If(fv16 == 0):
                            fail(LoadError.SECTIONS)  # an empty stream cannot hold a channel

            with m.Case(_P.S_NEXT):
                add_to("ch", a)  # (out_c, since the entry's byte 17)
                with m.If(li + 1 == n_layers):
                    m.d.sync += state.eq(_P.DONE)
                with m.Else():
                    m.d.sync += [li.eq(li + 1), state.eq(_P.E_START)]

            with m.Case(_P.DONE):
                m.d.sync += [self.status.eq(cap_err),
                             self.loaded.eq(cap_err == LoadError.NONE), state.eq(_P.IDLE),
                             self.resident.eq(cfg.resident_tables
                                              & ~Cat(*(v[1] for v in sums.values())).any())]

        with m.If(err):
            m.d.sync += [self.status.eq(err_code), state.eq(_P.IDLE)]

        # -- start ----------------------------------------------------------------------------
        with m.If(self.start):
            m.d.sync += [
                state.eq(_P.RECEIVE),
                c.eq(0),
                self.loaded.eq(0),
                self.resident.eq(0),
                self.status.eq(LoadError.NONE),
                *(v.eq(0) for total, over, _ in sums.values() for v in (total, over)),
                cap_err.eq(LoadError.NONE),
                hdr_bad.eq(0),
                size.eq(0),
            ]
            m.d.comb += crc.start.eq(1)
        return m
