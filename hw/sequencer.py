"""The layer sequencer: walks the loaded image's layer table and runs layers without a host.

For each layer it reads the layer-table entry and the biases from the image buffer,
derives the geometry the blocks walk (products and quotients, computed once per layer by
a shift-add multiplier and a shift-subtract divider), checks that the layer fits this
build, then starts the weight decoding and the compute path and waits for both to drain.

Ref: docs/weight-image.md (header, layer table entry, biases: MSB-first two's complement);
docs/numerics.md ("Steps of one layer": ``acc_fl = in_fl + w_fl``, the bias and
requantizing shifts); docs/architecture.md ("Sequencer").
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from hw.conv_drain import DrainParams
from hw.conv_feed import ConvParams, offset_width
from hw.image_loader import DESC_WORDS, ENTRY_BYTES, HEADER_BYTES, DescWord, desc_word_width
from hw.layouts import PostParams
from hw.tile_buffer import tile_and_column
from weights.image import Kind

__all__ = ["RunError", "Sequencer"]

_ENTRY_READ = 28  # bytes 0..27 of an entry: everything but the section size


class RunError(enum.Enum, shape=4):
    """Why a run stopped (``NONE``: every layer ran). Sticky until the next run."""

    NONE = 0
    NOT_LOADED = 1  # no image is loaded (or the last load failed)
    RANGE = 2  # no layers asked for, or past the image's last layer
    DECODE = 3  # a weight stream was refused by the decoder
    TOO_BIG = 4  # a layer exceeds the build: activation bank, tile buffer or channels
    UNSUPPORTED = 5  # pool window != pool stride, or a bias too wide for the accumulator
    BAD_DATA_WIDTH = 6  # the image's bw is not the build's (the loader refuses it first)


class _S(enum.Enum, shape=4):
    IDLE = 0
    FL = 1  # read the input's fractional length (header, or the previous layer's out_fl)
    ENTRY = 2  # read the layer-table entry
    DESC = 3  # read the bias address from the descriptor memory
    DERIVE = 4  # products and quotients
    CHECK = 5
    BIAS = 6  # biases: a byte fetched and a bias emitted per clock
    START = 7
    RUN = 8
    NEXT = 9


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
            (word-addressed, data the clock after ``img_en``); used only while the weight
            unit is idle, the top gives it the buffer then.
        ``desc_addr`` (out), ``desc_data`` (in): the loader's descriptor memory.
        ``decode``, ``decode_layer``, ``sparse`` (out): start the weight unit on a layer
            (``sparse`` for a fully connected layer); ``decode_busy``, ``decode_error`` (in).
        ``conv`` (out): the layer is a convolution (the top routes the activation read
            ports to the conv feed, else to the sparse fc path).
        ``conv_start`` (out), ``conv_params`` (out, ``ConvParams``), ``drain_params``
            (out, ``DrainParams``), ``out_c`` (out): the conv path's; ``conv_done`` (in):
            the drain has emitted every item.
        ``fc_start`` (out), ``fc_idle`` (in): the sparse fc path's.
        ``post_params`` (out, ``PostParams``), ``post_idle`` (in); ``bias_wr_addr``,
            ``bias_wr_data``, ``bias_wr_en`` (out): the post-processing block's.

    Each layer costs, before its compute starts: the entry (29 clocks), the descriptor
    word (2), thirteen products and two quotients (steps of at most 18 clocks, fewer for
    small operands), then one clock per bias (wider than 8 bits: one per byte), as a
    byte is fetched and a bias emitted in the same clock. docs/architecture.md has the
    cycle model (``hw.layer_plan.setup_cycles`` counts these clocks exactly).
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
            "decode": Out(1),
            "decode_layer": Out(8),
            "sparse": Out(1),
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

        state = Signal(_S)
        m.d.comb += self.busy.eq(state != _S.IDLE)
        last_layer = Signal(9)
        in_fl = Signal(signed(8))

        with m.If(state != _S.IDLE):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.comb += [self.in_bank.eq(self.layer[0]), self.out_bank.eq(~self.layer[0]),
                     self.decode_layer.eq(self.layer)]

        # -- byte reads from the image buffer: address in one clock, byte in the next -----
        rd_byte = Signal(unsigned(cfg.image_addr_width + 1))
        rd_off = Signal(max(1, ob))
        byte = Signal(8)
        m.d.comb += [self.img_addr.eq(rd_byte[ob:]),
                     byte.eq(self.img_data.word_select(rd_off, 8) if ob else self.img_data)]
        with m.If(self.img_en):
            m.d.sync += rd_off.eq(rd_byte[:ob] if ob else 0)

        # -- the entry, byte by byte ------------------------------------------------------
        entry = [Signal(8, name=f"e{n}") for n in range(_ENTRY_READ)]
        e_n = Signal(range(_ENTRY_READ + 2))

        def u8(n):
            return entry[n]

        def u16(n):
            return Cat(entry[n], entry[n + 1])

        def i8(n):
            return entry[n].as_signed()

        kind, activation, pool, pool_stride = u8(0), u8(1), u8(2), u8(3)
        kh, kw, stride, padding = u8(4), u8(5), u8(6), u8(7)
        in_c, in_h, in_w, out_c = u16(8), u16(10), u16(12), u16(14)
        out_h, out_w = u16(16), u16(18)
        w_fl, b_fl, out_fl = i8(20), i8(21), i8(22)
        bias_bits = u8(27)
        is_conv = Signal()
        m.d.comb += [is_conv.eq(kind == int(Kind.CONV)), self.conv.eq(is_conv)]

        # -- products and quotients: a micro-program over one multiplier and one divider --
        # Each step: dst = a * b, or dst = a // b. Operands up to 32 x 16 bits.
        in_hw = Signal(48)
        s_in_w = Signal(48)
        kh1_in_w = Signal(48)
        in_size = Signal(48)
        pooled_h = Signal(48)
        pooled_w = Signal(48)
        pooled_hw = Signal(48)
        out_size = Signal(48)
        tiles = Signal(cfg.channel_width + 2)
        p_eff = Signal(8)  # the pool window as a divisor: 1 without pooling
        m.d.comb += p_eff.eq(Mux(pool == 0, 1, pool))
        khkw = Signal(48)
        fan_in = Signal(48)
        pool_area = Signal(48)
        walk = Signal(48)
        p1_stride = Signal(48)
        p1_s_in_w = Signal(48)
        p_s_in_w = Signal(48)
        program = [
            ("mul", khkw, kh, kw),
            ("mul", fan_in, khkw, in_c),
            ("mul", in_hw, in_h, in_w),
            ("mul", s_in_w, in_w, stride),
            ("mul", kh1_in_w, in_w, kh - 1),
            ("mul", in_size, in_hw, in_c),
            ("div", pooled_h, out_h, p_eff),
            ("div", pooled_w, out_w, p_eff),
            ("mul", pooled_hw, pooled_h, pooled_w),
            ("mul", out_size, pooled_hw, out_c),
            ("mul", pool_area, p_eff, p_eff),
            ("mul", walk, pooled_hw, pool_area),
            ("mul", p1_stride, stride, p_eff - 1),
            ("mul", p1_s_in_w, s_in_w, p_eff - 1),
            ("mul", p_s_in_w, s_in_w, p_eff),
        ]
        step = Signal(range(len(program) + 1))
        x_a = Signal(48)  # multiplicand (shifted left) / dividend (shifted out)
        x_b = Signal(16)  # multiplier (shifted right) / divisor
        x_r = Signal(48)  # product / quotient
        x_rem = Signal(17)
        x_n = Signal(6)
        x_busy = Signal()
        x_div = Signal()
        with m.If(state == _S.DERIVE):
            with m.If(~x_busy):
                with m.If(step == len(program)):
                    m.d.sync += state.eq(_S.CHECK)
                with m.Else():
                    m.d.sync += [x_busy.eq(1), x_r.eq(0), x_rem.eq(0), x_n.eq(0)]
                    with m.Switch(step):
                        for n, (op, _, a, b) in enumerate(program):
                            with m.Case(n):
                                m.d.sync += [x_a.eq(a), x_b.eq(b), x_div.eq(op == "div")]
            with m.Else():
                with m.If(~x_div):
                    # Shift-add: done when no multiplier bits are left.
                    with m.If(x_b == 0):
                        m.d.sync += [x_busy.eq(0), step.eq(step + 1)]
                    with m.Else():
                        with m.If(x_b[0]):
                            m.d.sync += x_r.eq(x_r + x_a)
                        m.d.sync += [x_a.eq(x_a << 1), x_b.eq(x_b >> 1)]
                with m.Else():
                    # Restoring division of a 16-bit dividend (x_a[0:16]), MSB first.
                    with m.If(x_n == 16):
                        m.d.sync += [x_busy.eq(0), step.eq(step + 1)]
                    with m.Else():
                        trial = Cat(x_a[15], x_rem[:16])
                        with m.If(trial >= x_b):
                            m.d.sync += [x_rem.eq(trial - x_b), x_r.eq(Cat(1, x_r[:47]))]
                        with m.Else():
                            m.d.sync += [x_rem.eq(trial), x_r.eq(Cat(0, x_r[:47]))]
                        m.d.sync += [x_a.eq(x_a << 1), x_n.eq(x_n + 1)]
                with m.If((x_div & (x_n == 16)) | (~x_div & (x_b == 0))):
                    with m.Switch(step):
                        for n, (_, dst, _, _) in enumerate(program):
                            with m.Case(n):
                                m.d.sync += dst.eq(x_r)

        # -- the parameters the blocks see ------------------------------------------------
        acc_fl = Signal(signed(10))
        bias_shift = Signal(signed(10))
        out_shift = Signal(signed(10))
        m.d.comb += [
            acc_fl.eq(in_fl + w_fl),
            bias_shift.eq(acc_fl - b_fl),
            out_shift.eq(acc_fl - out_fl),
        ]
        t_q, t_r = tile_and_column(out_c, cfg.cols)
        m.d.comb += tiles.eq(t_q + (t_r != 0))
        cp, dp, pp = self.conv_params, self.drain_params, self.post_params
        ow = offset_width(cfg)
        m.d.comb += [
            cp.in_h.eq(in_h), cp.in_w.eq(in_w), cp.kh.eq(kh), cp.kw.eq(kw),
            cp.stride.eq(stride), cp.padding.eq(padding),
            cp.fan_in.eq(fan_in),
            cp.pool.eq(p_eff), cp.pooled_w.eq(pooled_w), cp.positions.eq(walk[:ow]),
            cp.tiles.eq(tiles), cp.s_in_w.eq(s_in_w[:ow]), cp.p1_stride.eq(p1_stride[:ow]),
            cp.p1_s_in_w.eq(p1_s_in_w[:ow]), cp.p_s_in_w.eq(p_s_in_w[:ow]),
            cp.ky_step.eq(in_w - kw + 1),
            cp.ci_step.eq(in_hw[:ow] - kh1_in_w[:ow] - kw + 1),
            dp.out_c.eq(out_c), dp.pool_area.eq(pool_area), dp.pooled_hw.eq(pooled_hw),
            self.out_c.eq(out_c),
            pp.bias_shift.eq(bias_shift), pp.out_shift.eq(out_shift),
            pp.relu.eq(activation == 1),
        ]

        # -- checks: the layer must fit this build -----------------------------------------
        too_big = Signal()
        unsupported = Signal()
        m.d.comb += [
            too_big.eq((in_size > cfg.act_depth) | (out_size > cfg.act_depth)
                       | (out_c > cfg.max_channels) | (fan_in > cfg.max_fan_in)
                       | (is_conv & (fan_in > cfg.tile_depth))),
            unsupported.eq((pool != pool_stride) | (bias_shift < 0)
                           | (bias_bits + bias_shift > cfg.acc_width)),
        ]

        # -- biases: MSB-first, bias_bits each, sign-extended --------------------------------
        b_sr = Signal(40)  # valid bits at the top
        b_n = Signal(range(41))
        b_arriving = Signal()  # a byte read in the previous clock arrives now
        b_ch = Signal(unsigned(cfg.channel_width + 1))
        bias_addr = Signal(desc_word_width(cfg))
        raw = Signal(32)
        b_top = Signal(6)  # 40 - bias_bits: where a bias starts, from the bottom
        b_sign = Signal(5)  # bias_bits - 1: its sign bit
        m.d.comb += [b_top.eq(40 - bias_bits), b_sign.eq(bias_bits - 1),
                     raw.eq(b_sr >> b_top)]
        sign = Signal(33)
        m.d.comb += sign.eq(Const(1, 33) << b_sign)
        m.d.comb += [
            self.bias_wr_addr.eq(b_ch),
            # Two's complement of bias_bits bits, sign-extended: (raw ^ sign) - sign.
            self.bias_wr_data.eq((raw ^ sign) - sign),
        ]

        m.d.comb += self.desc_addr.eq(Cat(Const(int(DescWord.BIAS_ADDR), 4), self.layer))

        with m.Switch(state):
            with m.Case(_S.IDLE):
                with m.If(self.run):
                    m.d.sync += [self.cycles.eq(1), self.layer.eq(self.first),
                                 last_layer.eq(self.first + self.count)]
                    with m.If(~self.loaded):
                        m.d.sync += self.status.eq(RunError.NOT_LOADED)
                    with m.Elif((self.count == 0)
                                | (self.first + self.count > self.n_layers)):
                        m.d.sync += self.status.eq(RunError.RANGE)
                    with m.Else():
                        m.d.sync += [self.status.eq(RunError.NONE), state.eq(_S.FL),
                                     e_n.eq(0), rd_byte.eq(
                                         Mux(self.first == 0, 7,
                                             HEADER_BYTES + ENTRY_BYTES * (self.first - 1)
                                             + 22))]
            with m.Case(_S.FL):
                # Clock 0 addresses the byte, clock 1 takes it.
                m.d.comb += self.img_en.eq(e_n == 0)
                m.d.sync += e_n.eq(e_n + 1)
                with m.If(e_n == 1):
                    m.d.sync += [in_fl.eq(byte.as_signed()), e_n.eq(0), state.eq(_S.ENTRY),
                                 rd_byte.eq(HEADER_BYTES + ENTRY_BYTES * self.layer)]
            with m.Case(_S.ENTRY):
                # One byte addressed per clock; byte n-1 arrives while n is addressed.
                m.d.comb += self.img_en.eq(1)
                m.d.sync += [e_n.eq(e_n + 1), rd_byte.eq(rd_byte + 1)]
                with m.Switch(e_n):
                    for n in range(1, _ENTRY_READ + 1):
                        with m.Case(n):
                            m.d.sync += entry[n - 1].eq(byte)
                with m.If(e_n == _ENTRY_READ):
                    m.d.sync += [state.eq(_S.DESC), e_n.eq(0)]
            with m.Case(_S.DESC):
                m.d.sync += e_n.eq(e_n + 1)
                with m.If(e_n == 1):
                    m.d.sync += [bias_addr.eq(self.desc_data), step.eq(0), x_busy.eq(0),
                                 state.eq(_S.DERIVE)]
            with m.Case(_S.CHECK):
                with m.If(too_big):
                    m.d.sync += [self.status.eq(RunError.TOO_BIG), state.eq(_S.IDLE)]
                with m.Elif(unsupported):
                    m.d.sync += [self.status.eq(RunError.UNSUPPORTED), state.eq(_S.IDLE)]
                with m.Else():
                    m.d.sync += [state.eq(_S.BIAS), b_n.eq(0), b_sr.eq(0), b_ch.eq(0),
                                 b_arriving.eq(0), rd_byte.eq(bias_addr)]
            with m.Case(_S.BIAS):
                # Each clock: emit a bias if enough bits are in, append the byte read in
                # the previous clock, and read another while it will fit.
                emit = Signal()
                n_after = Signal.like(b_n)
                sr_after = Signal.like(b_sr)
                n_next = Signal(range(49))
                m.d.comb += [
                    emit.eq((b_n >= bias_bits) & (b_ch != out_c)),
                    n_after.eq(Mux(emit, b_n - bias_bits, b_n)),
                    sr_after.eq(Mux(emit, b_sr << bias_bits[:6], b_sr)),
                    n_next.eq(n_after + Mux(b_arriving, 8, 0)),
                    self.bias_wr_en.eq(emit),
                ]
                m.d.sync += [
                    b_sr.eq(sr_after | Mux(b_arriving, Cat(Const(0, 32), byte) >> n_after, 0)),
                    b_n.eq(n_next),
                ]
                with m.If(emit):
                    m.d.sync += b_ch.eq(b_ch + 1)
                issue = Signal()
                m.d.comb += [issue.eq((n_next + 8 <= 40) & (b_ch != out_c)),
                             self.img_en.eq(issue)]
                m.d.sync += b_arriving.eq(issue)
                with m.If(issue):
                    m.d.sync += rd_byte.eq(rd_byte + 1)
                with m.If(b_ch == out_c):
                    m.d.sync += [state.eq(_S.START), b_arriving.eq(0)]
            with m.Case(_S.START):
                m.d.comb += [self.decode.eq(1), self.conv_start.eq(is_conv),
                             self.fc_start.eq(~is_conv), self.sparse.eq(~is_conv)]
                m.d.sync += state.eq(_S.RUN)
            with m.Case(_S.RUN):
                m.d.comb += self.sparse.eq(~is_conv)
                drained = Signal()
                m.d.comb += drained.eq(~self.decode_busy & self.post_idle
                                       & Mux(is_conv, self.conv_done, self.fc_idle))
                with m.If(self.decode_error):
                    m.d.sync += [self.status.eq(RunError.DECODE), state.eq(_S.IDLE)]
                with m.Elif(drained):
                    m.d.sync += state.eq(_S.NEXT)
            with m.Case(_S.NEXT):
                m.d.sync += [in_fl.eq(out_fl), self.layer.eq(self.layer + 1)]
                with m.If(self.layer + 1 == last_layer):
                    m.d.sync += state.eq(_S.IDLE)
                with m.Else():
                    m.d.sync += [state.eq(_S.ENTRY), e_n.eq(0),
                                 rd_byte.eq(HEADER_BYTES + ENTRY_BYTES * (self.layer + 1))]
        return m
