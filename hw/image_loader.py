"""The weight-image loader: a byte stream in, a checked image in on-chip memories out.

Ref: docs/weight-image.md (the format and the reader's order of checks); CRC-32 as zlib
(ISO-HDLC, reflected 0xEDB88320), computed bytewise by ``amaranth.lib.crc``.
"""

from enum import IntEnum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from hw.layouts import ImageByte
from weights.huffman import MAX_CODE_LENGTH
from weights.image import MAGIC, MAX_ALPHABET, MAX_BIAS_BITS, MAX_INDEX_BITS, MAX_RUN_BITS
from weights.image import VERSION as IMAGE_VERSION

__all__ = ["DESC_WORDS", "ENTRY_BYTES", "HEADER_BYTES", "DescWord", "ImageLoader", "LoadError",
           "buffer_signature", "descriptor_words", "image_words"]

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
    """

    FAN_IN = 0
    CODEBOOK_SIZE = 1
    RUN_BITS = 2
    MAX_LEN = 3
    OUT_C = 4
    N_SYMBOLS = 5
    ENTRY_ADDR = 6
    CODEBOOK_ADDR = 7
    TABLE_ADDR = 8
    SYMBOLS_ADDR = 9
    BIAS_ADDR = 10
    SIZES_ADDR = 11
    STREAMS_ADDR = 12
    STREAMS_BYTES = 13
    INDEX_BITS = 14
    BIAS_BITS = 15


DESC_WORDS = 16


def desc_word_width(config) -> int:
    """Bits of a descriptor word: a u16 field or a byte address of the image buffer."""
    return max(16, config.image_addr_width + 1)


def descriptor_words(image) -> list[list[int]]:
    """The software face of the descriptor memory: each layer's ``DESC_WORDS`` words for a
    ``weights.image.Image``, with the byte offsets its file layout gives."""
    out = []
    n = len(image.layers)
    section = HEADER_BYTES + ENTRY_BYTES * n
    for i, layer in enumerate(image.layers):
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
            DescWord.ENTRY_ADDR: HEADER_BYTES + ENTRY_BYTES * i,
            DescWord.CODEBOOK_ADDR: section, DescWord.TABLE_ADDR: table_addr,
            DescWord.SYMBOLS_ADDR: symbols_addr, DescWord.BIAS_ADDR: bias_addr,
            DescWord.SIZES_ADDR: sizes_addr, DescWord.STREAMS_ADDR: streams_addr,
            DescWord.STREAMS_BYTES: streams_bytes, DescWord.INDEX_BITS: layer.index_bits,
            DescWord.BIAS_BITS: layer.bias_bits,
        }
        out.append([words[DescWord(w)] for w in range(DESC_WORDS)])
        section = streams_addr + streams_bytes
    return out


def image_words(data: bytes, word_bytes: int) -> list[int]:
    """Image bytes packed into buffer words, little-endian (byte ``a`` is byte ``a mod W``
    of word ``a div W``), as the loader writes them."""
    data = bytes(data) + bytes(-len(data) % word_bytes)
    return [int.from_bytes(data[j:j + word_bytes], "little")
            for j in range(0, len(data), word_bytes)]


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
    and ``rd_data`` (the word at ``addr`` of the previous clock when ``rd_en`` was high;
    held while ``rd_en`` is low, as the iCE40 SPRAM and yosys' model of it behave)."""
    return wiring.Signature({
        "addr": Out(range(config.image_words)),
        "wr_data": Out(8 * config.image_word_bytes),
        "wr_en": Out(config.image_word_bytes),
        "rd_en": Out(1),
        "rd_data": In(8 * config.image_word_bytes),
    })


class _P(enum.Enum, shape=6):
    """The loader's states."""

    IDLE = 0
    RECEIVE = 1
    CRC = 2
    HEADER = 3
    E_KIND = 4
    E_IN_C = 5
    E_KERNEL = 6
    E_OUT_C = 7
    E_INDEX = 8
    E_BIAS = 9
    E_SIZE = 10
    E_CHECK = 11
    E_MUL_KW = 12
    E_NEXT = 13
    S_L = 14
    S_COUNT = 15
    S_LEN = 16
    S_LEN_GOT = 17
    S_SYM = 18
    S_SYM_GOT = 19
    S_BIAS = 20
    S_SIZES = 21
    S_SIZE_GOT = 22
    S_DESC = 23
    DONE = 24
    FETCH = 25
    MUL = 26
    S_CB = 27


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
        ``rd_addr``/``rd_data``: a read port of the image buffer (word address, word a
            clock later), for the blocks that use the image; ignored while ``busy``.
        ``desc_addr``/``desc_data``: a read port of the descriptor memory.
        ``buffer`` (only with ``external_buffer=True``; ``buffer_signature``): the image
            buffer's port, for a platform that provides the RAM itself (SPRAM on the
            iCE40UP5K); the ``image_data`` memory is then not instantiated.

    Memories (``amaranth.lib.memory``, portable; mapping the image buffer to SPRAM or
    block RAM is the platform's job):
        ``image_data``: ``image_words`` words of ``image_word_bytes`` bytes: the whole file,
            byte ``a`` at byte lane ``a mod W`` of word ``a div W``. The codebooks, Huffman
            tables, stream sizes and streams stay there; descriptors point at them.
        ``desc_data``: ``max_layers · DESC_WORDS`` words (``DescWord``), written when the
            layer's section has been checked.

    Operation. Receiving: one byte per clock (``i.ready`` is high in this phase only); the
    magic, the version and ``file_size`` are checked as they arrive (a ``file_size`` above
    the buffer stops the load at once, so no wait is longer than the buffer); the CRC runs
    over every byte. Then, if the CRC matches, the image is parsed back from the buffer:
    header fields, every table entry (and the sum of the section sizes), then every
    section: codebook size, Huffman table (``L``; counts complete and not over-subscribed;
    symbols in range and increasing within each length; a single symbol only as one 1-bit
    code), biases, stream sizes adding up to the section. Each step reads a few bytes at
    a known address (a byte a clock), so parsing takes about ``4 · (table symbols) + 3 ·
    (channels) + 60`` clocks per layer; every loop is bounded by a length already checked
    against the section. Not checked in hardware: layer geometry (kernel, stride, shapes
    chaining, fractional lengths), symbols listed twice under different lengths, and the
    streams' contents (the decoder reports those when it decodes them).
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
            m.d.comb += [
                wr.addr.eq(img_rd.addr), wr.data.eq(img_wr.data), wr.en.eq(img_wr.en),
                rd.addr.eq(img_rd.addr), rd.en.eq(img_rd.en), img_rd.data.eq(rd.data),
            ]
        m.submodules.desc = desc = memory.Memory(data=self.desc_data_mem)
        desc_wr = desc.write_port()
        desc_rd = desc.read_port()
        m.submodules.crc = crc = catalog.CRC32_ISO_HDLC(data_width=8).create()
        # The SPRAM (and yosys' model of it) keeps its output during a write.
        m.d.comb += img_rd.en.eq(~img_wr.en.any())
        m.d.comb += [
            desc_rd.addr.eq(self.desc_addr),
            self.desc_data.eq(desc_rd.data),
            self.rd_data.eq(img_rd.data),
        ]

        state = Signal(_P)
        m.d.comb += self.busy.eq(state != _P.IDLE)
        cap_err = Signal(LoadError)  # the first capacity error, reported at the end

        def fail(code):
            m.d.sync += [self.status.eq(code), state.eq(_P.IDLE)]

        def cap(code):
            with m.If(cap_err == LoadError.NONE):
                m.d.sync += cap_err.eq(code)

        # -- receiving -----------------------------------------------------------------------
        aw = cfg.image_addr_width + 2
        pos = Signal(aw)
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
            m.d.comb += img_wr.en.eq(1 << pos[:ob])
            m.d.sync += [pos.eq(pos + 1), hdr_lo.eq(byte)]
            # The end of the input against file_size (known from byte 19 on); a field
            # check below that fails overrides this.
            known = pos >= 19
            final = known & (pos + 1 == Mux(pos == 19, Cat(size[:24], byte), size))
            with m.If(final):
                with m.If(self.i.payload.last):
                    m.d.sync += state.eq(_P.CRC)
                with m.Else():
                    fail(LoadError.LENGTH)
            with m.Elif(self.i.payload.last):
                fail(LoadError.TRUNCATED)
            with m.Switch(pos):
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
                    with m.If(full < HEADER_BYTES + _CRC_BYTES):
                        fail(LoadError.LENGTH)
                    with m.Elif(full > cfg.image_bytes):
                        fail(LoadError.CAP_IMAGE)
        with m.If((state == _P.RECEIVE) & self.abort):
            fail(LoadError.TRUNCATED)

        with m.If(state == _P.CRC):
            with m.If(crc.match_detected):
                m.d.sync += state.eq(_P.HEADER)
            with m.Else():
                fail(LoadError.CRC)

        # -- reading the buffer back: FETCH reads n bytes at f_addr, little-endian ---------
        f_addr = Signal(aw)
        f_k = Signal(3)
        f_n = Signal(3)
        f_val = Signal(32)
        f_ret = Signal(_P)
        f_off = Signal(max(1, ob))
        rd_byte = Signal(8)
        f_baddr = Signal(aw)
        m.d.comb += [
            f_baddr.eq(f_addr + f_k),
            rd_byte.eq(img_rd.data.word_select(f_off, 8) if ob else img_rd.data),
        ]
        with m.If(state == _P.RECEIVE):
            m.d.comb += img_rd.addr.eq(pos[ob:])
        with m.Elif(self.busy):
            m.d.comb += img_rd.addr.eq(f_baddr[ob:])
        with m.Else():
            m.d.comb += img_rd.addr.eq(self.rd_addr)
        m.d.sync += f_off.eq(f_baddr[:ob] if ob else 0)

        def fetch(addr, n, ret):
            m.d.sync += [f_addr.eq(addr), f_k.eq(0), f_n.eq(n), f_val.eq(0), f_ret.eq(ret),
                         state.eq(_P.FETCH)]

        with m.If(state == _P.FETCH):
            m.d.sync += f_k.eq(f_k + 1)
            with m.Switch(f_k):
                for n in range(1, 5):
                    with m.Case(n):
                        m.d.sync += f_val.word_select(n - 1, 8).eq(rd_byte)
            with m.If(f_k == f_n):
                m.d.sync += state.eq(f_ret)

        # -- serial multiplier: mul_p = mul_a · mul_b (mul_b < 256), one bit a clock ---------
        mul_a = Signal(32)
        mul_b = Signal(8)
        mul_p = Signal(32)
        mul_ret = Signal(_P)

        def multiply(a, b, ret):
            m.d.sync += [mul_a.eq(a), mul_b.eq(b), mul_p.eq(0), mul_ret.eq(ret),
                         state.eq(_P.MUL)]

        with m.If(state == _P.MUL):
            with m.If(mul_b == 0):
                m.d.sync += state.eq(mul_ret)
            with m.Else():
                with m.If(mul_b[0]):
                    m.d.sync += mul_p.eq(mul_p + mul_a)
                m.d.sync += [mul_a.eq(mul_a << 1), mul_b.eq(mul_b >> 1)]

        # -- header -------------------------------------------------------------------------
        table_end = Signal(aw + 1)
        body_end = Signal(aw + 1)  # where the CRC starts
        m.d.comb += [
            table_end.eq(HEADER_BYTES + n_layers * ENTRY_BYTES),
            body_end.eq(size - _CRC_BYTES),
        ]
        li = Signal(8)  # layer
        phase = Signal()  # 0: checking the table entries, 1: the sections
        sec_acc = Signal(aw)  # phase 0: sum of section sizes; phase 1: section start
        entry = Signal(aw + 1)
        m.d.comb += entry.eq(HEADER_BYTES + li * ENTRY_BYTES)

        with m.If(state == _P.HEADER):
            with m.If(((bw != 8) & (bw != 16)) | (n_layers == 0) | hdr_bad
                      | (table_end > body_end)):
                fail(LoadError.HEADER)
            with m.Else():
                with m.If(bw != cfg.bw):
                    cap(LoadError.CAP_BW)
                with m.If(n_layers > cfg.max_layers):
                    cap(LoadError.CAP_LAYERS)
                m.d.sync += [li.eq(0), phase.eq(0), sec_acc.eq(0)]
                fetch(HEADER_BYTES, 2, _P.E_KIND)  # entry 0 (li is still the old one)

        # -- a table entry: read the fields both phases need ----------------------------------
        kind = Signal(8)
        act = Signal(8)
        in_c = Signal(16)
        kh = Signal(8)
        kw = Signal(8)
        out_c = Signal(16)
        index_bits = Signal(8)
        k = Signal(16)
        run_bits = Signal(8)
        bias_bits = Signal(8)
        sec_size = Signal(aw)
        fan_in = Signal(cfg.fan_in_width + 1)  # saturates above max_fan_in

        with m.If(state == _P.E_KIND):
            m.d.sync += [kind.eq(f_val[:8]), act.eq(f_val[8:16])]
            fetch(entry + 8, 2, _P.E_IN_C)
        with m.If(state == _P.E_IN_C):
            m.d.sync += in_c.eq(f_val[:16])
            fetch(entry + 4, 2, _P.E_KERNEL)
        with m.If(state == _P.E_KERNEL):
            m.d.sync += [kh.eq(f_val[:8]), kw.eq(f_val[8:16])]
            fetch(entry + 14, 2, _P.E_OUT_C)
        with m.If(state == _P.E_OUT_C):
            m.d.sync += out_c.eq(f_val[:16])
            fetch(entry + 23, 4, _P.E_INDEX)
        with m.If(state == _P.E_INDEX):
            m.d.sync += [index_bits.eq(f_val[:8]), k.eq(f_val[8:24]), run_bits.eq(f_val[24:])]
            fetch(entry + 27, 1, _P.E_BIAS)
        with m.If(state == _P.E_BIAS):
            m.d.sync += bias_bits.eq(f_val[:8])
            fetch(entry + 28, 4, _P.E_SIZE)
        with m.If(state == _P.E_SIZE):
            m.d.sync += [sec_size.eq(f_val), state.eq(_P.E_CHECK)]
            with m.If(f_val > cfg.image_bytes):
                fail(LoadError.SECTIONS)

        alphabet = Signal(32)  # (R + 1)·K + 2
        m.d.comb += alphabet.eq((k << run_bits[:4]) + 2)
        with m.If(state == _P.E_CHECK):
            bad = ((kind != 1) & (kind != 2) | (act > 1)
                   | (index_bits == 0) | (index_bits > MAX_INDEX_BITS)
                   | (k == 0) | (k > (Const(1, 9) << index_bits[:4]))
                   | (run_bits > MAX_RUN_BITS) | (alphabet > MAX_ALPHABET)
                   | (bias_bits == 0) | (bias_bits > MAX_BIAS_BITS) | (out_c == 0)
                   | ((kind == 2) & ((kh != 1) | (kw != 1))))  # the fan-in is in_c
            with m.If(bad):
                fail(LoadError.ENTRY)
            with m.Else():
                with m.If(phase == 0):
                    with m.If(k > cfg.max_codebook_size):
                        cap(LoadError.CAP_CODEBOOK)
                    with m.If(run_bits > cfg.max_run_bits):
                        cap(LoadError.CAP_RUN_BITS)
                multiply(in_c, kh, _P.E_MUL_KW)
        with m.If(state == _P.E_MUL_KW):
            multiply(mul_p, kw, _P.E_NEXT)

        # -- section parse registers ------------------------------------------------------------
        s_end = Signal(aw)
        t_addr = Signal(aw)  # the L byte
        max_len = Signal(8)
        n_sym = Signal(21)
        code = Signal(20)  # canonical first code of the current length (Kraft running sum)
        ln = Signal(5)  # code length being counted / listed
        left = Signal(16)  # symbols left in the current length
        first_in_len = Signal()
        prev_sym = Signal(16)
        sym_k = Signal(21)
        bias_addr = Signal(aw)
        sizes_addr = Signal(aw)
        streams_addr = Signal(aw)
        ch = Signal(16)
        s_sum = Signal(32)
        counts_addr = Signal(aw)
        symbols_addr = Signal(aw)
        m.d.comb += [
            counts_addr.eq(t_addr + 1),
            symbols_addr.eq(counts_addr + (max_len << 1)),
        ]

        with m.If(state == _P.E_NEXT):
            m.d.sync += fan_in.eq(Mux(mul_p > cfg.max_fan_in, cfg.max_fan_in + 1, mul_p))
            with m.If(phase == 0):
                with m.If(mul_p > cfg.max_fan_in):
                    cap(LoadError.CAP_FAN_IN)
                m.d.sync += sec_acc.eq(sec_acc + sec_size)
                # Sections past the body fail at once, so the sum stays within the buffer.
                with m.If(sec_acc + sec_size > body_end - table_end):
                    fail(LoadError.SECTIONS)
                with m.Elif(li + 1 == n_layers):
                    with m.If(sec_acc + sec_size != body_end - table_end):
                        fail(LoadError.SECTIONS)
                    with m.Else():
                        # Phase 1 reads the entries again, layer 0 first.
                        m.d.sync += [li.eq(0), phase.eq(1), sec_acc.eq(table_end)]
                        fetch(HEADER_BYTES, 2, _P.E_KIND)
                with m.Else():
                    m.d.sync += li.eq(li + 1)
                    fetch(entry + ENTRY_BYTES, 2, _P.E_KIND)
            with m.Else():
                m.d.sync += state.eq(_P.S_CB)

        # -- a section: codebook, Huffman table, biases, stream sizes ------------------------
        with m.If(state == _P.S_CB):
            ta = sec_acc + Mux(bw == 16, k << 1, k)
            m.d.sync += [s_end.eq(sec_acc + sec_size), t_addr.eq(ta)]
            with m.If(ta + 1 > sec_acc + sec_size):
                fail(LoadError.SECTIONS)
            with m.Else():
                fetch(ta, 1, _P.S_L)

        with m.If(state == _P.S_L):
            m.d.sync += [max_len.eq(f_val[:8]), code.eq(0), ln.eq(1), n_sym.eq(0)]
            with m.If((f_val[:8] == 0) | (f_val[:8] > MAX_CODE_LENGTH)):
                fail(LoadError.TABLE)
            with m.Elif(t_addr + 1 + (f_val[:8] << 1) > s_end):
                fail(LoadError.SECTIONS)
            with m.Else():
                with m.If(f_val[:8] > cfg.max_code_len):
                    cap(LoadError.CAP_CODE_LEN)
                fetch(t_addr + 1, 2, _P.S_COUNT)

        with m.If(state == _P.S_COUNT):
            count = f_val[:16]
            nxt = Signal(20)
            total = Signal(21)
            m.d.comb += [nxt.eq(code + count), total.eq(n_sym + count)]
            m.d.sync += [code.eq(nxt << 1), n_sym.eq(total), ln.eq(ln + 1)]
            with m.If(nxt > (Const(1, 17) << ln)):
                fail(LoadError.TABLE)  # over-subscribed
            with m.Elif(ln == max_len):
                single = (max_len == 1) & (count == 1)
                with m.If((count == 0) | ((nxt != (Const(1, 17) << ln)) & ~single)):
                    fail(LoadError.TABLE)  # incomplete, or no code of the longest length
                with m.Elif(symbols_addr + (total << 1) > s_end):
                    fail(LoadError.SECTIONS)
                with m.Else():
                    with m.If(total > cfg.max_table_symbols):
                        cap(LoadError.CAP_TABLE)
                    m.d.sync += [ln.eq(1), sym_k.eq(0)]
                    fetch(counts_addr, 2, _P.S_LEN_GOT)
            with m.Else():
                fetch(counts_addr + (ln << 1), 2, _P.S_COUNT)

        # Symbols: each in the alphabet, increasing within its length. S_LEN finds the next
        # length with codes (re-reading its count from the buffer).
        with m.If(state == _P.S_LEN):
            with m.If(sym_k == n_sym):
                m.d.sync += state.eq(_P.S_BIAS)
            with m.Else():
                fetch(counts_addr + ((ln - 1) << 1), 2, _P.S_LEN_GOT)
        with m.If(state == _P.S_LEN_GOT):
            m.d.sync += [left.eq(f_val[:16]), first_in_len.eq(1)]
            with m.If(f_val[:16] == 0):
                m.d.sync += [ln.eq(ln + 1), state.eq(_P.S_LEN)]
            with m.Else():
                fetch(symbols_addr + (sym_k << 1), 2, _P.S_SYM_GOT)
        with m.If(state == _P.S_SYM):
            fetch(symbols_addr + (sym_k << 1), 2, _P.S_SYM_GOT)
        with m.If(state == _P.S_SYM_GOT):
            sym = f_val[:16]
            m.d.sync += [prev_sym.eq(sym), first_in_len.eq(0), sym_k.eq(sym_k + 1),
                         left.eq(left - 1)]
            with m.If((sym >= alphabet) | (~first_in_len & (sym <= prev_sym))):
                fail(LoadError.TABLE)
            with m.Elif(sym_k + 1 == n_sym):
                m.d.sync += state.eq(_P.S_BIAS)
            with m.Elif(left == 1):
                m.d.sync += [ln.eq(ln + 1), state.eq(_P.S_LEN)]
            with m.Else():
                m.d.sync += state.eq(_P.S_SYM)

        with m.If(state == _P.S_BIAS):
            m.d.sync += bias_addr.eq(symbols_addr + (n_sym << 1))
            multiply(out_c, bias_bits, _P.S_SIZES)
            m.d.sync += [ch.eq(0), s_sum.eq(0), sizes_addr.eq(0)]

        with m.If(state == _P.S_SIZES):
            # sizes_addr is 0 only on the first visit (a real one is past the layer table).
            sa = Mux(sizes_addr == 0, bias_addr + ((mul_p + 7) >> 3), sizes_addr)
            sta = sa + (out_c << 1)
            m.d.sync += [sizes_addr.eq(sa), streams_addr.eq(sta)]
            with m.If(sta > s_end):
                fail(LoadError.SECTIONS)
            with m.Elif(ch == out_c):
                with m.If(sta + s_sum != s_end):
                    fail(LoadError.SECTIONS)
                with m.Else():
                    m.d.sync += [state.eq(_P.S_DESC), sym_k.eq(0)]
            with m.Else():
                fetch(sa + (ch << 1), 2, _P.S_SIZE_GOT)
        with m.If(state == _P.S_SIZE_GOT):
            m.d.sync += [s_sum.eq(s_sum + f_val[:16]), ch.eq(ch + 1), state.eq(_P.S_SIZES)]
            with m.If(f_val[:16] == 0):
                fail(LoadError.SECTIONS)  # an empty stream cannot hold a channel

        # -- descriptor: one word a clock ----------------------------------------------------
        w = sym_k[:4]
        words = {
            DescWord.FAN_IN: fan_in, DescWord.CODEBOOK_SIZE: k, DescWord.RUN_BITS: run_bits,
            DescWord.MAX_LEN: max_len, DescWord.OUT_C: out_c, DescWord.N_SYMBOLS: n_sym,
            DescWord.ENTRY_ADDR: entry, DescWord.CODEBOOK_ADDR: sec_acc,
            DescWord.TABLE_ADDR: counts_addr, DescWord.SYMBOLS_ADDR: symbols_addr,
            DescWord.BIAS_ADDR: bias_addr, DescWord.SIZES_ADDR: sizes_addr,
            DescWord.STREAMS_ADDR: streams_addr, DescWord.STREAMS_BYTES: s_sum,
            DescWord.INDEX_BITS: index_bits, DescWord.BIAS_BITS: bias_bits,
        }
        m.d.comb += desc_wr.addr.eq(Cat(w, li))
        with m.If(state == _P.S_DESC):
            m.d.comb += desc_wr.en.eq(li < cfg.max_layers)
            with m.Switch(w):
                for name, value in words.items():
                    with m.Case(int(name)):
                        m.d.comb += desc_wr.data.eq(value)
            m.d.sync += sym_k.eq(sym_k + 1)
            with m.If(w == DESC_WORDS - 1):
                with m.If(li + 1 == n_layers):
                    m.d.sync += state.eq(_P.DONE)
                with m.Else():
                    m.d.sync += [li.eq(li + 1), sec_acc.eq(s_end)]
                    fetch(entry + ENTRY_BYTES, 2, _P.E_KIND)

        with m.If(state == _P.DONE):
            m.d.sync += [self.status.eq(cap_err), self.loaded.eq(cap_err == LoadError.NONE),
                         state.eq(_P.IDLE)]

        # -- start ----------------------------------------------------------------------------
        with m.If(self.start):
            m.d.sync += [
                state.eq(_P.RECEIVE),
                pos.eq(0),
                self.loaded.eq(0),
                self.status.eq(LoadError.NONE),
                cap_err.eq(LoadError.NONE),
                hdr_bad.eq(0),
                size.eq(0),
            ]
            m.d.comb += crc.start.eq(1)
        return m
