"""The layer sequencer: walks the loaded image's layer table and runs layers without a host.

For each layer it reads the layer-table entry from the image buffer, starting the weight
unit on the layer as it does (the unit loads the layer's Huffman table meanwhile), derives
the geometry the blocks walk (products, differences and quotients, computed once per layer
by a micro-program over one shift-add multiplier, whose result register a shift-subtract
divider shares), checks that the layer fits this build (or drops the weight unit's
layer), reads the biases in the clocks the weight unit leaves the image buffer's port
free, then lets the weights stream, starts the compute path and waits for both to drain.

Ref: docs/weight-image.md (header, layer table entry, biases: MSB-first two's complement);
docs/numerics.md ("Steps of one layer": ``acc_fl = in_fl + w_fl``, the bias and
requantizing shifts); docs/architecture.md ("Sequencer").
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from hw.conv_drain import DrainParams
from hw.conv_feed import ConvParams, coord_width
from hw.image_loader import DESC_WORDS, ENTRY_BYTES, HEADER_BYTES, DescWord, desc_word_width
from hw.layouts import PostParams
from hw.tile_buffer import tile_and_column
from hw.weight_unit import TABLE_START
from weights.image import MAX_BIAS_BITS, Kind

__all__ = ["DECODE_LEAD", "RunError", "Sequencer", "decode_lead", "entry_bytes_read"]

_ENTRY_READ = 28  # bytes 0..27 of an entry: everything but the section size
# A prepared image's layer reads bytes 0..22 only: 23..26 are the weight unit's, and byte
# 27's check (bias_bits) was made and kept by the preparation, which also put the biases.
_ENTRY_READ_PREPARED = 23
_GEOM_FIRST, _GEOM_END = 4, 20  # bytes 4..19: kernel, stride, padding and the shapes
# The ``decode`` pulse comes in the entry's clock (``cnt``) n - TABLE_START, n the bytes it
# reads: the weight unit's table reader takes the image buffer's port TABLE_START clocks
# later, when the entry's last byte has been addressed (at cnt n - 1).
# Clocks from the ``decode`` pulse to the entry's last, cnt n + 1 (``hw.layer_plan``): the
# same for a prepared layer's shorter entry (n = 23, not 28), whose decode is as much
# earlier.
DECODE_LEAD = TABLE_START + 1


def decode_lead(config) -> int:
    """``DECODE_LEAD`` on a build: the entry's bytes arrive ``image_read_latency - 1``
    clocks later, and its last clock with them; the ``decode`` pulse, which goes by the
    addresses, does not move."""
    return DECODE_LEAD + config.image_read_latency - 1


def entry_bytes_read(prepared: bool) -> int:
    """Bytes the sequencer reads of a layer's entry (bytes 0 .. n - 1): all but the section
    size, or on a prepared image all but the weight unit's and ``bias_bits``."""
    return _ENTRY_READ_PREPARED if prepared else _ENTRY_READ
assert ENTRY_BYTES == 32


def _entry_byte(layer, n: int):
    """The byte address of byte ``n`` of ``layer``'s table entry, without an adder (entries
    are 32 bytes: the layer number goes above the offset)."""
    q, r = divmod(HEADER_BYTES + n, ENTRY_BYTES)
    return Cat(Const(r, 5), layer + q if q else layer)


def _exceeds(value, limit: int):
    """``value > limit``; for a power of two 2^k (every memory depth) as zero tests, which
    take fewer LUTs than a comparator."""
    if limit & (limit - 1):
        return value > limit
    k = limit.bit_length() - 1
    return (value[k + 1:] != 0) | (value[k] & (value[:k] != 0))


def _derive_width(config) -> int:
    """Bits of the derive datapath: the conv feed's coordinate step (its offsets are
    narrower: both are kept modulo 2^bits), and room to compare a product with each limit
    the checks use."""
    return max(coord_width(config), config.fan_in_width + 1, config.act_addr_width + 2,
               config.tile_addr_width + 2, 17)


class RunError(enum.Enum, shape=4):
    """Why a run stopped (``NONE``: every layer ran). Sticky until the next run."""

    NONE = 0
    NOT_LOADED = 1  # no image is loaded (or the last load failed)
    RANGE = 2  # no layers asked for, or past the image's last layer
    DECODE = 3  # a weight stream was refused by the decoder
    TOO_BIG = 4  # a layer exceeds the build: activation bank, tile buffer or channels
    UNSUPPORTED = 5  # pool window != pool stride, a bias too wide for the accumulator, or
    #                  no whole pooling window (an output smaller than the window)
    BAD_DATA_WIDTH = 6  # the image's bw is not the build's (the loader refuses it first)


class _S(enum.Enum, shape=3):
    IDLE = 0
    FL = 1  # read the input's fractional length (header, or the previous layer's out_fl)
    # on the first layer of a run (later ones keep the previous layer's out_fl)
    ENTRY = 2  # read the layer-table entry
    DERIVE = 3  # products and quotients, then the checks
    BIAS = 4  # biases: a byte fetched and a bias emitted per clock
    START = 5
    RUN = 6
    NEXT = 7


class Sequencer(wiring.Component):
    """Runs layers ``first .. first + count - 1`` of the loaded image.

    Ports:
        ``run`` (in): one-cycle pulse with ``first``, ``count`` (in): run those layers.
            Ignored while ``busy``. Layer ``L`` reads activation bank ``L mod 2`` and writes
            bank ``(L + 1) mod 2`` (``in_bank``, ``out_bank`` out).
        ``busy`` (out); ``status`` (out, ``RunError``); ``cycles`` (out): clocks from the
            ``run`` pulse to the end of the last run (kept until the next).
        ``layer`` (out): the layer being run; ``loaded``, ``n_layers`` (in): the loader's.
        ``img_addr``, ``img_en`` (out), ``img_data`` (in): a read port on the image buffer
            (word-addressed, data ``image_read_latency`` clocks after ``img_en``: the
            entry's fields and its end come as much later, ``decode_lead``); used only in
            clocks with ``img_free`` (in): the weight unit does not read the buffer (its
            ``port_free``), and the top gives the sequencer the buffer then.
        ``desc_addr`` (out), ``desc_data`` (in): the loader's descriptor memory (the weight
            unit's while it reads a layer's descriptor, in the entry's last clocks and the
            derive program's first, when the sequencer does not read it).
        ``decode``, ``decode_layer``, ``sparse`` (out): start the weight unit on a layer
            (``sparse`` for a fully connected layer); ``go`` (out) lets its streams start,
            ``drop`` (out) abandons it (a layer the checks refuse); ``decode_busy``,
            ``decode_error`` (in).
        ``prepare`` (in): one-cycle pulse (the top gives it when an image whose tables fit
            side by side, the weight unit's ``image_resident``, has loaded): the
            preparation (``preparing``, out), a pass over every layer that loads its table
            and codebook into the decode lanes and its biases into the bias memory, each at
            its bases (``DescWord``), keeps the derive program's checks, and runs nothing;
            ``busy`` meanwhile. ``prepared`` (out): the
            pass has completed; the runs since then read only each table's ``L`` counts
            (the top gives the weight unit this as its ``resident``) and no biases, and
            fewer of each entry's bytes (``entry_bytes_read``). ``unprepare`` (in): a
            load starts (``prepared`` falls). ``held`` (in): the weight unit holds a
            loaded table; ``bias_base`` (in): the layer's bias base (the weight unit's).
        ``conv`` (out): the layer is a convolution (the top routes the activation read
            ports to the conv feed, else to the sparse fc path).
        ``conv_start`` (out), ``conv_params`` (out, ``ConvParams``), ``drain_params``
            (out, ``DrainParams``), ``out_c`` (out): the conv path's; ``conv_done`` (in):
            the drain has emitted every item.
        ``fc_start`` (out), ``fc_idle`` (in): the sparse fc path's.
        ``post_params`` (out, ``PostParams``), ``post_idle`` (in); ``bias_wr_addr``,
            ``bias_wr_data``, ``bias_wr_en`` (out): the post-processing block's (with
            several rows from registers, each write a clock after its bias is formed).

    Each layer costs, before its compute starts: the input's fractional length (a clock,
    on the first layer of a run), the entry (30; 25 prepared, bytes 0..22), then the
    derive program (a clock, then 27 steps of a clock each plus one per bit of the step's
    multiplier, or 16 for the two divisions, none by 1; the checks are made in the clock
    that ends the last step), then one clock per bias (wider than 8 bits: one per byte), as
    a byte is fetched and a bias emitted in the same clock, and the start (1), which lets
    the weight streams go; the clock that finds the layer's blocks idle goes to the next
    entry. Meanwhile the weight unit (``decode`` 12 clocks before the entry
    ends: its table reader needs the buffer just after the entry's last byte) loads the table
    and codebook; the biases take each word's bytes from a copy and fetch no byte of another
    in a clock the table reader has the port (``img_free`` low). Prepared: no biases, only
    the table's counts, and a fully connected layer's derive program is its kept checks.
    docs/architecture.md has the cycle model (``hw.layer_plan``'s ``entry_cycles``,
    ``derive_cycles``, ``bias_cycles`` and ``go_cycles`` count these clocks exactly).
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "run": In(1),
            "first": In(8),
            "count": In(8),
            "busy": Out(1),
            "status": Out(RunError),
            "cycles": Out(32),
            "layer": Out(8),
            "in_bank": Out(1),
            "out_bank": Out(1),
            "loaded": In(1),
            "n_layers": In(8),
            "img_addr": Out(range(config.image_words)),
            "img_en": Out(1),
            "img_data": In(8 * config.image_word_bytes),
            "desc_addr": Out(range(config.max_layers * DESC_WORDS)),
            "desc_data": In(desc_word_width(config)),
            "img_free": In(1),
            "decode": Out(1),
            "decode_layer": Out(8),
            "sparse": Out(1),
            "go": Out(1),
            "drop": Out(1),
            "prepare": In(1),
            "unprepare": In(1),
            "prepared": Out(1),
            "preparing": Out(1),
            "held": In(1),
            "bias_base": In(unsigned(config.channel_width)),
            "decode_busy": In(1),
            "decode_error": In(1),
            "conv": Out(1),
            "conv_start": Out(1),
            "conv_params": Out(ConvParams(config)),
            "drain_params": Out(DrainParams(config)),
            "out_c": Out(unsigned(config.channel_width + 1)),
            "conv_done": In(1),
            "fc_start": Out(1),
            "fc_idle": In(1),
            "post_params": Out(PostParams(config)),
            "post_idle": In(1),
            "bias_wr_addr": Out(unsigned(config.channel_width)),
            "bias_wr_data": Out(signed(config.acc_width)),
            "bias_wr_en": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        wb = cfg.image_word_bytes
        ob = (wb - 1).bit_length()
        aw = cfg.act_addr_width
        dw = _derive_width(cfg)

        state = Signal(_S)
        m.d.comb += self.busy.eq(state != _S.IDLE)
        # the preparation: tables, codebooks and biases only (never without resident_tables:
        # ``prep`` and ``prepared`` are then constant 0)
        rt = cfg.resident_tables
        prep = Signal() if rt else Const(0)
        prepared = self.prepared if rt else Const(0)
        m.d.comb += self.preparing.eq(prep)
        if rt:
            with m.If(self.unprepare):
                m.d.sync += self.prepared.eq(0)
        last_layer = Signal(9)
        in_fl = Signal(signed(8))

        with m.If((state != _S.IDLE) & ~prep):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.Elif(self.run):
            m.d.sync += self.cycles.eq(1)
        m.d.comb += [self.in_bank.eq(self.layer[0]), self.out_bank.eq(~self.layer[0]),
                     self.decode_layer.eq(self.layer)]

        # -- byte reads from the image buffer: address in one clock, byte in the next -----
        rd_byte = Signal(unsigned(cfg.image_addr_width + 1))
        rd_off = Signal(max(1, ob))
        byte = Signal(8)
        # The biases keep the last word they read (``c_word``, at word address ``c_addr``):
        # a byte in it is taken from there (``from_c``) without the port, so the biases ask
        # for the port once a word, and the weight unit's table reader, which has it when
        # it asks, rarely makes them wait (``img_free``).
        c_word = Signal(8 * wb)
        c_addr = Signal(len(rd_byte) - ob)
        c_ok = Signal()
        # (c_word is the biases' alone: it empties in every clock outside BIAS, so it is
        # empty when BIAS begins. Emptied by the descriptor checks that lead into BIAS,
        # it waited for them: their end was the sequencer's longest path on the ULX3S,
        # 17.6 ns into ``c_ok``'s enable, session 24.)
        with m.If(state != _S.BIAS):
            m.d.sync += c_ok.eq(0)
        from_c = Signal()  # the byte arriving now is in c_word
        hit = Signal()  # the byte at rd_byte is in c_word
        word = Signal(8 * wb)
        m.d.comb += [self.img_addr.eq(rd_byte[ob:]),
                     hit.eq(c_ok & (rd_byte[ob:] == c_addr)),
                     word.eq(Mux(from_c, c_word, self.img_data)),
                     byte.eq(word.word_select(rd_off, 8) if ob else word)]
        # With an image_read_latency of 2 (``lx`` 1) a byte is on its way for a clock:
        # ``rd_off_1`` is its place in the word while ``got_1`` says one was read.
        lx = cfg.image_read_latency - 1
        if lx:
            rd_off_1 = Signal.like(rd_off)
            got_1 = Signal()
            with m.If(self.img_en):
                m.d.sync += rd_off_1.eq(rd_byte[:ob] if ob else 0)
            m.d.sync += got_1.eq(self.img_en)
            with m.If(got_1):
                m.d.sync += rd_off.eq(rd_off_1)
        else:
            with m.If(self.img_en):
                m.d.sync += rd_off.eq(rd_byte[:ob] if ob else 0)
        # The input's fractional length and the entry's fields are taken from ``e_byte``,
        # the byte a clock after it arrives: their checks and sums then start at a
        # register, not at the image buffer's outputs (a comparison and an adder behind
        # the buffer's read were the sequencer's longest paths on the ULX3S, 23 ns,
        # session 12). The biases, a byte a clock in a flow-controlled loop, use ``byte``.
        e_byte = Signal(8)
        m.d.sync += e_byte.eq(byte)

        # -- the entry, byte by byte: only the fields used later are kept -----------------
        cnt = Signal(range(_ENTRY_READ + 3 + lx))  # FL's clocks, the entry's bytes, derive steps
        # The FL byte reaches ``e_byte`` in the entry's clock 1 (``fl_wait``), with an
        # ``image_read_latency`` of 2 in its clock 2 (``fl_wait`` then ``fl_wait_1``): the
        # input's fractional length is taken from there, not from ``byte`` (17.5-18.8 ns
        # from the buffer's output in every ULX3S placement of session 31).
        fl_wait = Signal()
        fl_wait_1 = Signal() if lx else None
        is_conv = Signal()
        relu = Signal()
        pool = Signal(8)
        # Bytes 4..19 (kh, kw, stride, padding, then in_c .. out_w, u16 each) shift in as
        # they arrive: no decoding per byte.
        geom = Signal(8 * (_GEOM_END - _GEOM_FIRST))
        kh, kw, stride, padding = (geom[8 * n:8 * n + 8] for n in range(4))
        in_c, in_h, in_w, out_c = (geom[32 + 16 * n:48 + 16 * n] for n in range(4))
        out_h = geom[96:112]  # divided in place by the pool window: then ``pooled_h``
        out_w = geom[112:128]  # and ``pooled_w``
        bias_bits = Signal(8)
        # The fractional lengths and the checks that need no product are worked out as
        # their bytes arrive, so only the results are kept (in_fl becomes out_fl, the next
        # layer's input). Ref: docs/numerics.md, ``acc_fl = in_fl + w_fl``.
        acc_fl = Signal(signed(10))
        bias_shift = Signal(signed(10))
        out_shift = Signal(signed(10))
        unsupported = Signal()
        fl_diff = Signal(signed(10))
        # acc_width - bias_shift, kept with bias_shift: byte 27's check is then one
        # comparison of the byte (an adder and a comparison after the buffer's read were
        # the ULX3S build's critical path, 28.5 ns, session 12).
        bias_room = Signal(signed(12))
        m.d.comb += fl_diff.eq(acc_fl - e_byte.as_signed())
        # What is kept of byte n (in ``e_byte`` when cnt = n + 2). 3: the pooling stride must
        # be the window; 27: bias_bits, the aligned biases must fit the accumulator
        # (bias_shift + bias_bits <= acc_width).
        fields = {0: [is_conv.eq(e_byte == int(Kind.CONV))], 1: [relu.eq(e_byte == 1)],
                  2: [pool.eq(e_byte)], 3: [unsupported.eq(e_byte != pool)],
                  20: [acc_fl.eq(in_fl + e_byte.as_signed())],
                  21: [bias_shift.eq(fl_diff), bias_room.eq(cfg.acc_width - fl_diff)],
                  22: [out_shift.eq(fl_diff), in_fl.eq(e_byte)],
                  27: [bias_bits.eq(e_byte),
                       unsupported.eq(unsupported | (bias_shift < 0) | (e_byte > bias_room))]}
        # A prepared image's layers read fewer of the entry's bytes (``entry_bytes_read``).
        entry_read = Mux(prepared, _ENTRY_READ_PREPARED, _ENTRY_READ)
        # (steady from the decode, in the entry's clock 12 or 17, long after byte 0 set
        # is_conv, until the layer has drained)
        m.d.comb += [self.conv.eq(is_conv), self.sparse.eq(~is_conv)]
        p_eff = Signal(8)  # the pool window as a divisor: 1 without pooling
        m.d.comb += p_eff.eq(Mux(pool == 0, 1, pool))

        # -- products and quotients: a micro-program over one shift-add multiplier --------
        # Each step loads the multiplicand ``x_a`` and the multiplier ``x_b`` and adds
        # ``x_a << i`` to ``x_r`` for each set bit ``i`` of ``x_b`` (LSB first, one bit a
        # clock, done when no bits are left); a subtracting step loads ``~a`` and shifts in
        # ones, so adding it plus one subtracts. ``x_r`` keeps the products modulo 2^dw;
        # ``x_r_ovf`` records a true product of 2^dw or more, so the size checks are exact.
        # A division of out_h or out_w by p (restoring, MSB first) shifts the quotient
        # into the dividend's own register, with ``x_r`` as the remainder: 16 clocks (as
        # ``x_b`` is loaded with 1 << 15), none by 1.
        fan_in = Signal(cfg.fan_in_width)
        # (the feed's offsets modulo the bank's depth, its coordinate step modulo
        # 2^coord_width: ``ConvParams``)
        p_s_in_w, line_step, win_step, pad_off, ky_step = (
            Signal(aw, name=n) for n in ("p_s_in_w", "line_step", "win_step", "pad_off",
                                         "ky_step"))
        p1_stride = Signal(coord_width(cfg))
        # (as a multiplier, its low 16 bits: the products it makes are offsets, kept in
        # fewer bits)
        p1_stride16 = p1_stride[:16]
        pool_area = Signal(16)
        pooled_hw = Signal(cfg.act_addr_width + 1)
        x_r = Signal(dw)  # the last step's result: ci_step
        x_r_ovf = Signal()
        x_a = Signal(dw)
        x_a_ovf = Signal()
        x_b = Signal(16)
        x_sub = Signal()
        x_div = Signal()
        x_div_h = Signal()  # out_h, else out_w
        too_big = Signal()
        no_window = Signal()  # the output has no whole pooling window (the drain would wait
        #                       for one forever)
        # Each layer's too_big and no_window, as the preparation's program found them.
        kept_too_big = Signal(cfg.max_layers)
        kept_no_window = Signal(cfg.max_layers)
        kept_unsupported = Signal(cfg.max_layers)  # (byte 27's check, unread when prepared)

        def fits(limit):
            return ~x_r_ovf & ~_exceeds(x_r, limit)

        # check: (condition, the flag it sets)
        checks = {
            "fan_in": (~fits(cfg.max_fan_in) | (is_conv & ~fits(cfg.tile_depth)), too_big),
            "size": (~fits(cfg.act_depth), too_big),
            "windows": (~x_r_ovf & (x_r == 0), no_window),
        }
        one, res = Const(1, 1), "R"
        # (op, multiplicand, multiplier, destination, check); op: "mul" (x_r from 0),
        # "mac" (add to x_r), "msub" (subtract from x_r), "div" (the register // p_eff).
        program = [
            ("mul", one, kh, None, None),
            ("mul", res, kw, None, None),
            ("mul", res, in_c, fan_in, "fan_in"),  # kh·kw·in_c
            ("mul", in_w, in_h, None, None),
            ("mul", res, in_c, None, "size"),  # the input: in_h·in_w·in_c
            ("mul", one, stride, None, None),
            ("mul", res, p_eff, None, None),
            ("msub", one, stride, p1_stride, None),  # (p - 1)·stride
            ("mul", in_w, stride, None, None),
            ("mul", res, p_eff, p_s_in_w, None),  # p·stride·in_w
            ("mul", in_w, stride, None, None),
            ("msub", one, p1_stride16, line_step, None),  # stride·in_w - (p - 1)·stride
            ("mul", one, stride, None, None),
            ("msub", in_w, p1_stride16, win_step, None),  # stride - (p - 1)·stride·in_w
            ("div", out_w, None, None, None),  # pooled_w
            ("div", out_h, None, None, None),  # pooled_h
            ("mul", one, p_eff, None, None),
            ("mul", res, p_eff, pool_area, None),
            ("mul", out_h, out_w, pooled_hw, "windows"),  # pooled_h·pooled_w
            # the output (a wider out_c is too_many)
            ("mul", res, out_c[:cfg.channel_width + 1], None, "size"),
            ("mul", in_w, padding, None, None),
            ("mac", one, padding, pad_off, None),  # padding·in_w + padding
            ("mul", in_w, one, None, None),
            ("msub", one, kw, None, None),
            ("mac", one, one, ky_step, None),  # in_w - kw + 1
            ("mac", in_w, in_h, None, None),
            ("msub", in_w, kh, None, None),  # ci_step = ky_step + (in_h - kh)·in_w
        ]
        step = cnt
        assert len(program) < 2 ** len(cnt)
        # The biases' address is read from the descriptor memory as the program ends; the
        # weight unit, started DECODE_LEAD clocks before it, reads that memory for its first
        # DESC_WORDS clocks at most, and the program takes longer (a clock a step at least,
        # and three more).
        assert DECODE_LEAD + len(program) + 3 > DESC_WORDS

        def load(op, a, b):
            stmts = [x_sub.eq(op == "msub"), x_div.eq(op == "div")]
            if op in ("mul", "div"):
                stmts += [x_r.eq(0), x_r_ovf.eq(0)]
            if op == "div":
                return stmts + [x_div_h.eq(a is out_h), x_b.eq(Mux(p_eff == 1, 0, 1 << 15))]
            if a is res:
                stmts += [x_a.eq(x_r), x_a_ovf.eq(x_r_ovf)]
            else:
                # ``a ^ -1`` is signed, so it extends to ~a in all dw bits.
                stmts += [x_a.eq(a ^ -1 if op == "msub" else a), x_a_ovf.eq(0)]
            return stmts + [x_b.eq(b)]

        # -- biases: MSB-first, bias_bits each, sign-extended --------------------------------
        # ``b_q`` takes the bytes in at the bottom; its ``b_n`` low bits are not yet used.
        # A byte is read only while fewer than 2·bias_bits bits will be there, so a bias is
        # emitted with at most 7 later bits below it: a shift of 0..7 aligns it.
        obits = min(cfg.acc_width, MAX_BIAS_BITS)
        b_q = Signal(obits + 7)
        b_n = Signal(range(obits + 8))
        b_arriving = Signal()  # a byte read image_read_latency clocks before arrives now
        b_arr_1 = Signal() if lx else None  # (lx: a byte read in the previous clock ...
        from_c_1 = Signal() if lx else None  # ... from c_word)
        b_ch = Signal(unsigned(cfg.channel_width + 1))
        b_emit = Signal()
        b_left = Signal(signed(len(b_n) + 1))  # the bits after the next bias
        b_done = Signal()  # every bias is out (out_c fits b_ch, as the checks passed)
        m.d.comb += b_done.eq(b_ch == out_c[:len(b_ch)])
        b_raw = Signal(obits)
        bias_addr = Signal.like(self.bias_wr_addr)
        bias_data = Signal.like(self.bias_wr_data)
        bias_en = Signal()  # a bias is written this clock
        b_sign = Signal()
        m.d.comb += [
            b_left.eq(b_n - bias_bits[:6]),
            b_emit.eq((b_left >= 0) & ~b_done),
            b_raw.eq(b_q >> b_left[:3]),
            b_sign.eq(b_raw.bit_select((bias_bits - 1)[:5], 1)),
            bias_addr.eq(b_ch + self.bias_base),
            bias_data.eq(Cat(*(Mux((bias_bits - 1)[:5] >= i, b_raw[i], b_sign)
                               for i in range(obits)),
                             b_sign.replicate(cfg.acc_width - obits))),
        ]
        # With several rows (the ECP5's) the bias write leaves from registers, a clock
        # later: the alignment and sign extension above, in front of the bias memory's
        # data inputs, were one of the ULX3S build's longest paths (16.8 ns, session 24).
        # Nothing reads the bias memory before the layer's outputs, long after. With one
        # row (the UP5K's, where logic cells count) it leaves as formed.
        bias_out = [self.bias_wr_addr.eq(bias_addr), self.bias_wr_data.eq(bias_data),
                    self.bias_wr_en.eq(bias_en)]
        if cfg.rows > 1:
            m.d.sync += bias_out
        else:
            m.d.comb += bias_out

        # -- the parameters the blocks see ------------------------------------------------
        # The conv path's tile count, ceil(out_c / cols), from a register: out_c is in place
        # once the entry's geometry has shifted in, long before the layer starts, and the
        # division (a multiplication by the reciprocal, in adders) in front of the conv
        # feed's ``tiles`` and its check at ``start`` was the ULX3S build's critical path
        # (19.1 ns into the feed's state, session 26).
        t_q, t_r = tile_and_column(out_c[:cfg.channel_width + 1], cfg.cols)
        tiles = Signal.like(self.conv_params.tiles)
        m.d.sync += tiles.eq(t_q + (t_r != 0))
        cp, dp, pp = self.conv_params, self.drain_params, self.post_params
        m.d.comb += [
            cp.in_h.eq(in_h), cp.in_w.eq(in_w), cp.kh.eq(kh), cp.kw.eq(kw),
            cp.stride.eq(stride), cp.padding.eq(padding),
            cp.fan_in.eq(fan_in),
            cp.pool.eq(p_eff), cp.pooled_w.eq(out_w), cp.pooled_hw.eq(pooled_hw),
            cp.tiles.eq(tiles), cp.p1_stride.eq(p1_stride),
            cp.line_step.eq(line_step), cp.win_step.eq(win_step), cp.p_s_in_w.eq(p_s_in_w),
            cp.pad_off.eq(pad_off), cp.ky_step.eq(ky_step), cp.ci_step.eq(x_r[:aw]),
            dp.out_c.eq(out_c), dp.pool_area.eq(pool_area), dp.pooled_hw.eq(pooled_hw),
            self.out_c.eq(out_c),
            pp.bias_shift.eq(bias_shift), pp.out_shift.eq(out_shift),
            pp.relu.eq(relu), pp.bias_base.eq(self.bias_base),
        ]

        # -- the checks that need no product: the layer must fit this build ----------------
        too_many = Signal()
        m.d.comb += too_many.eq(_exceeds(out_c, cfg.max_channels))

        m.d.comb += self.desc_addr.eq(Cat(Const(int(DescWord.BIAS_ADDR), 4), self.layer))

        def advance():
            # To the next layer's entry (in_fl is the out_fl this layer kept), or the end.
            m.d.sync += self.layer.eq(self.layer + 1)
            with m.If(self.layer + 1 == last_layer):
                m.d.sync += state.eq(_S.IDLE)
            with m.Else():
                m.d.sync += [state.eq(_S.ENTRY), cnt.eq(0),
                             rd_byte.eq(_entry_byte(self.layer + 1, 0))]

        with m.Switch(state):
            with m.Case(_S.IDLE):
                with m.If(self.run):
                    m.d.sync += [self.layer.eq(self.first),
                                 last_layer.eq(self.first + self.count)]
                    with m.If(~self.loaded):
                        m.d.sync += self.status.eq(RunError.NOT_LOADED)
                    with m.Elif((self.count == 0)
                                | (self.first + self.count > self.n_layers)):
                        m.d.sync += self.status.eq(RunError.RANGE)
                    with m.Else():
                        m.d.sync += [self.status.eq(RunError.NONE), state.eq(_S.FL),
                                     cnt.eq(0), rd_byte.eq(
                                         Mux(self.first == 0, 7,
                                             _entry_byte(self.first, 22 - ENTRY_BYTES)))]
                if rt:
                    with m.Elif(self.prepare & self.loaded & (self.n_layers != 0)):
                        m.d.sync += [self.layer.eq(0), last_layer.eq(self.n_layers),
                                     prep.eq(1), state.eq(_S.FL), cnt.eq(0), rd_byte.eq(7)]
            with m.Case(_S.FL):
                # Clock 0 addresses the byte; clock 1 takes it as it arrives (a register
                # loaded from the buffer's output, no logic after it) and addresses the
                # entry's byte 0, as the entry's clock 0 would: the entry goes on at 1.
                m.d.comb += self.img_en.eq(1)
                with m.If(cnt == 0):
                    m.d.sync += [cnt.eq(1), rd_byte.eq(_entry_byte(self.layer, 0))]
                with m.Else():
                    m.d.sync += [fl_wait.eq(1), state.eq(_S.ENTRY),
                                 cnt.eq(1), rd_byte.eq(rd_byte + 1)]
            with m.Case(_S.ENTRY):
                # One byte addressed per clock; byte n-1-lx arrives while n is addressed
                # and is in ``e_byte`` a clock later.
                # (bytes 0 .. entry_read - 1; the port is the weight unit's after them)
                m.d.comb += self.img_en.eq(cnt < entry_read)
                m.d.sync += [cnt.eq(cnt + 1), rd_byte.eq(rd_byte + 1)]
                if lx:
                    with m.If(fl_wait):
                        m.d.sync += [fl_wait_1.eq(1), fl_wait.eq(0)]
                    with m.If(fl_wait_1):
                        m.d.sync += [in_fl.eq(e_byte.as_signed()), fl_wait_1.eq(0)]
                else:
                    with m.If(fl_wait):
                        m.d.sync += [in_fl.eq(e_byte.as_signed()), fl_wait.eq(0)]
                with m.Switch(cnt):
                    for n, stmts in fields.items():
                        with m.Case(n + 2 + lx):
                            m.d.sync += stmts
                with m.If((cnt > _GEOM_FIRST + 1 + lx) & (cnt <= _GEOM_END + 1 + lx)):
                    m.d.sync += geom.eq(Cat(geom[8:], e_byte))
                with m.If(cnt == entry_read - TABLE_START):
                    # The weight unit loads the layer's table while the derive program
                    # runs (``is_conv``, hence ``sparse``, came with byte 0).
                    m.d.comb += self.decode.eq(1)
                with m.If(cnt == entry_read + (1 + lx)):
                    m.d.sync += [state.eq(_S.DERIVE), cnt.eq(0), x_b.eq(0),
                                 too_big.eq(0), no_window.eq(0)]
                    with m.If(prepared):
                        m.d.sync += unsupported.eq(kept_unsupported.bit_select(self.layer, 1))
                    with m.If(prepared & ~is_conv):
                        # A fully connected layer of a prepared image uses none of the
                        # program's results but its checks, which the preparation kept:
                        # straight to the program's end, which applies them.
                        m.d.sync += [cnt.eq(len(program)),
                                     too_big.eq(kept_too_big.bit_select(self.layer, 1)),
                                     no_window.eq(kept_no_window.bit_select(self.layer, 1))]
            with m.Case(_S.DERIVE):
                with m.If(x_b != 0):
                    with m.If(x_div):
                        trial = Cat(Mux(x_div_h, out_h[15], out_w[15]), x_r[:8])
                        diff = Signal(signed(10))  # negative: the divisor does not go
                        m.d.comb += diff.eq(trial - p_eff)
                        m.d.sync += x_r[:9].eq(Mux(diff < 0, trial, diff))
                        with m.If(x_div_h):
                            m.d.sync += out_h.eq(Cat(diff >= 0, out_h[:15]))
                        with m.Else():
                            m.d.sync += out_w.eq(Cat(diff >= 0, out_w[:15]))
                    with m.Else():
                        total = Signal(dw + 1)
                        m.d.comb += total.eq(x_r + x_a + x_sub)
                        with m.If(x_b[0]):
                            m.d.sync += [x_r.eq(total[:dw]),
                                         x_r_ovf.eq(x_r_ovf | x_a_ovf | total[dw])]
                        m.d.sync += [x_a.eq(Cat(x_sub, x_a[:-1])),
                                     x_a_ovf.eq(x_a_ovf | x_a[-1])]
                    m.d.sync += x_b.eq(x_b >> 1)
                with m.Else():
                    # The step ``step - 1`` is done: keep its result, load the next.
                    m.d.sync += step.eq(step + 1)
                    with m.Switch(step):
                        for n in range(len(program) + 1):
                            with m.Case(n):
                                if n:
                                    op, _, _, dst, check = program[n - 1]
                                    if dst is not None:
                                        m.d.sync += dst.eq(x_r)
                                    if check is not None:
                                        cond, flag = checks[check]
                                        with m.If(cond):
                                            m.d.sync += flag.eq(1)
                                if n < len(program):
                                    m.d.sync += load(*program[n][:3])
                                else:
                                    # (the preparation checks nothing: the loader found
                                    # that the layers fit side by side)
                                    with m.If(prep):
                                        m.d.sync += [
                                            kept_too_big.bit_select(self.layer, 1).eq(
                                                too_big),
                                            kept_no_window.bit_select(self.layer, 1).eq(
                                                no_window),
                                            kept_unsupported.bit_select(self.layer, 1).eq(
                                                unsupported)]
                                        m.d.sync += [state.eq(_S.BIAS), b_n.eq(0),
                                                     b_ch.eq(0), b_arriving.eq(0),
                                                     rd_byte.eq(self.desc_data),
                                                     *([b_arr_1.eq(0)] if lx else [])]
                                    with m.Elif(too_big | too_many):
                                        m.d.comb += self.drop.eq(1)
                                        m.d.sync += [self.status.eq(RunError.TOO_BIG),
                                                     state.eq(_S.IDLE)]
                                    with m.Elif(unsupported | no_window):
                                        m.d.comb += self.drop.eq(1)
                                        m.d.sync += [self.status.eq(RunError.UNSUPPORTED),
                                                     state.eq(_S.IDLE)]
                                    with m.Elif(prepared):
                                        # (the biases are in the bias memory already)
                                        m.d.sync += state.eq(_S.START)
                                    with m.Else():
                                        m.d.sync += [state.eq(_S.BIAS), b_n.eq(0),
                                                     b_ch.eq(0), b_arriving.eq(0),
                                                     rd_byte.eq(self.desc_data),
                                                     *([b_arr_1.eq(0)] if lx else [])]
            with m.Case(_S.BIAS):
                # Each clock: emit a bias if enough bits are in, append the byte read in
                # the previous clock, and read another while fewer than 2·bias_bits bits
                # will be in.
                n_after = Signal.like(b_n)
                n_next = Signal.like(b_n)
                m.d.comb += [
                    n_after.eq(Mux(b_emit, b_left, b_n)),
                    n_next.eq(n_after + Mux(b_arriving, 8, 0)),
                    bias_en.eq(b_emit),
                ]
                m.d.sync += b_n.eq(n_next)
                with m.If(b_arriving):
                    m.d.sync += b_q.eq(Cat(byte, b_q))
                with m.If(b_emit):
                    m.d.sync += b_ch.eq(b_ch + 1)
                issue = Signal()
                # (a byte outside c_word waits for a clock the weight unit's table reader
                # does not have the port)
                if lx:
                    # (a byte on its way counts as in: it arrives in the next clock)
                    m.d.comb += [issue.eq((n_next + Mux(b_arr_1, 8, 0) < Cat(0, bias_bits))
                                          & ~b_done & (hit | self.img_free)),
                                 self.img_en.eq(issue & ~hit)]
                    m.d.sync += [b_arr_1.eq(issue), b_arriving.eq(b_arr_1), got_1.eq(issue)]
                    with m.If(issue):
                        m.d.sync += [rd_byte.eq(rd_byte + 1), from_c_1.eq(hit),
                                     rd_off_1.eq(rd_byte[:ob] if ob else 0)]
                        with m.If(~hit):
                            m.d.sync += [c_addr.eq(rd_byte[ob:]), c_ok.eq(1)]
                    with m.If(b_arr_1):
                        m.d.sync += from_c.eq(from_c_1)
                else:
                    m.d.comb += [issue.eq((n_next < Cat(0, bias_bits)) & ~b_done
                                          & (hit | self.img_free)),
                                 self.img_en.eq(issue & ~hit)]
                    m.d.sync += b_arriving.eq(issue)
                    with m.If(issue):
                        m.d.sync += [rd_byte.eq(rd_byte + 1), from_c.eq(hit),
                                     rd_off.eq(rd_byte[:ob] if ob else 0)]
                        with m.If(~hit):
                            m.d.sync += [c_addr.eq(rd_byte[ob:]), c_ok.eq(1)]
                with m.If(b_arriving & ~from_c):
                    m.d.sync += c_word.eq(self.img_data)
                with m.If(b_done):
                    m.d.sync += [state.eq(_S.START), b_arriving.eq(0), from_c.eq(0),
                                 *([b_arr_1.eq(0)] if lx else [])]
            with m.Case(_S.START):
                with m.If(~prep):
                    m.d.comb += [self.go.eq(1), self.conv_start.eq(is_conv),
                                 self.fc_start.eq(~is_conv)]
                m.d.sync += state.eq(_S.RUN)
            with m.Case(_S.RUN):
                drained = Signal()
                m.d.comb += drained.eq(~self.decode_busy & self.post_idle
                                       & Mux(is_conv, self.conv_done, self.fc_idle))
                with m.If(self.decode_error):
                    m.d.sync += [self.status.eq(RunError.DECODE), state.eq(_S.IDLE)]
                    if rt:
                        m.d.sync += prep.eq(0)
                with m.Elif(prep):
                    # The layer's table and codebook are in: nothing to run.
                    with m.If(self.held):
                        m.d.comb += self.drop.eq(1)
                        m.d.sync += state.eq(_S.NEXT)
                with m.Elif(drained):
                    advance()
            with m.Case(_S.NEXT):
                # (the preparation's, after each layer)
                advance()
                with m.If(self.layer + 1 == last_layer):
                    if rt:
                        m.d.sync += [prep.eq(0), self.prepared.eq(1)]
        return m
