"""From the array's accumulator vectors to post-processing items: max-pooling windows, output
channels and output addresses.

Ref: golden.model.postprocess (max-pool after requantize and ReLU) and
golden.fixedpoint.maxpool (windows of ``pool x pool`` with stride ``pool``, partial ones
dropped); golden.fixedpoint.flatten (the ``(c, y, x)`` order of the output bank).

Pooling the exact accumulators before post-processing gives the golden result: adding a
channel's bias, ``requantize`` (``round_shift`` then ``saturate``) and ``relu`` are each
non-decreasing, so the maximum of the post-processed values of a window is the
post-processed maximum of its accumulators. The channel-by-channel form
(``config.pool_after_post``) leaves the pooling to post-processing, after those steps.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.const_arith import times
from hw.layouts import PostItem
from hw.pe_array import AccumulatorVector

__all__ = ["ConvDrain", "DrainParams"]


class DrainParams(data.StructLayout):
    """A convolution layer's output geometry: ``out_c``; ``pool_area`` = ``p²`` (1: no
    pooling), the positions of a window; ``pooled_hw`` = ``pooled_h·pooled_w``, the windows
    (the output positions, without pooling) of a channel."""

    def __init__(self, config):
        aw = config.act_addr_width
        super().__init__({
            "out_c": unsigned(config.channel_width + 1),
            "pool_area": unsigned(16),
            "pooled_hw": unsigned(aw + 1),
        })


class _OutputWalk:
    """Where the items being emitted go, the same for both forms of the drain: the tile's
    first channel ``ch`` (``t·cols``), its base address ``tile_base`` (``t·cols·pooled_hw``),
    the channel's column offset ``col_addr`` (``c·pooled_hw``, stepped by the caller), the
    window ``win``; ``running`` until the last tile's last window has gone. An item of
    column ``c`` has ``channel = ch + c`` and ``addr = tile_base + col_addr + win``; the
    tile's live columns are those below ``left = out_c - ch``, ``live = min(left, cols)``
    of them. With ``registered`` (the general drain) ``left`` and ``live`` are registers,
    stepped with ``ch`` (as a subtraction from ``ch`` they were the start of the drain's
    longest path on the ECP5, into the emitter's ``valid`` and the vector's ``ready``);
    otherwise (the channel-by-channel drain of the UP5K's preset, where logic cells count)
    ``left`` is that subtraction and ``live`` and ``next_*`` are not used (Yosys drops
    them; leaving them out of that form moved the UP5K build by 28 logic cells, by
    synthesis noise alone)."""

    def __init__(self, m, config, params, *, registered: bool = True):
        aw = config.act_addr_width
        self._m, self._cols, self._p = m, config.cols, params
        self._registered = registered
        self.running = Signal()
        self.ch = Signal(unsigned(config.channel_width + 1))
        self.tile_base = Signal(unsigned(aw + 8))
        self.col_addr = Signal(unsigned(aw + 8))
        self.win = Signal(unsigned(aw + 1))
        self.left = Signal(signed(config.channel_width + 2))
        self.live = Signal(range(config.cols + 1))
        # the next tile's ``left`` and ``live``, from registers
        self.next_left = Signal.like(self.left)
        self.next_live = Signal.like(self.live)
        cols = config.cols
        m.d.comb += [self.next_left.eq(self.left - cols),
                     self.next_live.eq(Mux(self.next_left >= cols, cols, self.next_left))]
        if not registered:
            m.d.comb += self.left.eq(params.out_c - self.ch)

    def ends_tile(self, after):
        """``after`` (the window after the emitted one) is past the tile's last."""
        return after == self._p.pooled_hw

    def channel(self, c):
        return self.ch + c

    def addr(self):
        return self.tile_base + self.col_addr + self.win

    def next_window(self, after):
        """The emitted window or pair is done: the window ``after`` it (``win + 1``, or
        ``win + 2`` after a pair), or the next tile's first, or the end."""
        m, p, cols = self._m, self._p, self._cols
        with m.If(self.ends_tile(after)):
            m.d.sync += [self.win.eq(0), self.ch.eq(self.ch + cols),
                         self.tile_base.eq(self.tile_base + times(p.pooled_hw, cols))]
            if self._registered:
                m.d.sync += [self.left.eq(self.next_left), self.live.eq(self.next_live)]
            with m.If(self.left <= cols):
                m.d.sync += self.running.eq(0)
        with m.Else():
            m.d.sync += self.win.eq(after)

    def start(self):
        p, cols = self._p, self._cols
        self._m.d.sync += [self.running.eq(p.out_c != 0), self.ch.eq(0),
                           self.tile_base.eq(0), self.col_addr.eq(0), self.win.eq(0)]
        if self._registered:
            self._m.d.sync += [self.left.eq(p.out_c),
                               self.live.eq(Mux(p.out_c >= cols, cols, p.out_c))]


class ConvDrain(wiring.Component):
    """Folds each pooling window's ``AccumulatorVector``s (``ConvFeed`` sends a window's
    ``p²`` positions one after the other) into their per-channel maximum, and splits the
    result into ``PostItem``s, one per live channel of the tile.

    The vectors come tile by tile, window by window; the drain counts them to know each
    one's tile ``t`` and window ``w`` (``(py, px)`` in raster order); channel
    ``ch = t·cols + c`` goes to ``addr = ch·pooled_hw + w`` (the item holds the whole
    window). Channels at or past ``out_c`` (a last partial tile) are not
    emitted.

    Ports:
        ``start`` (in): one-cycle pulse; ``params`` (in, ``DrainParams``) steady from then.
        ``i`` (in stream of ``AccumulatorVector``), ``o`` (out stream of ``PostItem``).
        ``done`` (out): every window of every tile has been emitted (until ``start``).

    With ``drain_width`` 2, windows go in pairs: windows ``2k`` and ``2k + 1`` of a tile
    (``k`` from 0; a tile's last window alone when ``pooled_hw`` is odd) leave together, an
    item per live channel carrying both (``acc`` for window ``2k`` at ``addr``, ``acc1``
    for ``2k + 1`` at ``addr + 1``, ``two`` set). The first window of a pair is held while
    the second is folded, so folding never waits for the emitter on it.

    One row with ``drain_width`` 1 (the ``icebreaker`` preset, ``config.pool_after_post``)
    does not fold: a vector stays at ``i`` for ``cols`` clocks, one a channel, in which
    channel ``c``'s accumulator leaves as an item, every position's, with its window's
    flags (``opens``, ``closes``, and ``live`` for the tile's live columns: the dead ones
    leave too, so that every vector is ``cols`` items); the vector is taken with its last
    channel. Post-processing keeps the running maxima, of ``bw`` bits instead of
    ``acc_width`` (the same result: the steps there never decrease a value). The array's
    output comes only once in ``N`` clocks there, so with ``N >= cols`` it never waits
    for the drain.

    Throughput: a vector a clock is folded in (one row, one width: a vector in ``cols``
    clocks); a window's (or pair's) items leave one a clock. A group's ``rows`` vectors
    leave the array on consecutive clocks, so a FIFO of
    ``rows + 1`` vectors takes the burst (with one row there is no FIFO: ``i`` is read
    directly, its ``ready`` the read enable); the array stalls only when a group's items
    (``rows · live channels / (p² · drain_width)``) outnumber the clocks of a group
    (``N``).
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "params": In(DrainParams(config)),
            "i": In(stream.Signature(AccumulatorVector(config))),
            "o": Out(stream.Signature(PostItem(config))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        cols = cfg.cols
        p = self.params
        aw = cfg.act_addr_width
        m = Module()
        if cfg.rows == 1 and cfg.drain_width == 1:
            self._channel_by_channel(m)
            return m

        if cfg.rows > 1:
            m.submodules.burst = burst = fifo.SyncFIFOBuffered(
                width=AccumulatorVector(cfg).size, depth=cfg.rows + 1)
            m.d.comb += [burst.w_data.eq(self.i.payload), burst.w_en.eq(self.i.valid),
                         self.i.ready.eq(burst.w_rdy)]
            src = AccumulatorVector(cfg)(burst.r_data)
            r_rdy, r_en = burst.r_rdy, burst.r_en
        else:
            # One row: a group is one vector, and the array's output queue (two entries, one
            # with row_broadcast) is the burst buffer; the drain reads ``i`` directly
            # (``i.ready`` is the read enable; the array's ``o.ready`` reaches only its queue
            # and its ``step`` register).
            src = self.i.payload
            r_rdy, r_en = self.i.valid, self.i.ready

        # -- folding a window: the running maximum of its vectors ---------------------------
        mx = Signal(AccumulatorVector(cfg))
        folded = Signal(AccumulatorVector(cfg))
        wi = Signal(16)  # the window's vectors folded so far
        # ``wi == 0`` and "the vector closes its window" (``wi + 1 == pool_area``) as
        # registers, stepped with ``wi``: the vector's ``take`` (every folding register's
        # enable) then starts from flip-flops.
        opening = Signal()
        closes = Signal()
        for c in range(cols):
            m.d.comb += folded.acc[c].eq(Mux(opening | (src.acc[c] > mx.acc[c]),
                                             src.acc[c], mx.acc[c]))

        # -- pairs of windows (drain_width 2): which window of the tile is being folded ----
        # ``fw_left`` windows of the tile follow the one being folded; ``odd``: it is the
        # second of a pair. A window opens a pair when it is even and not the tile's last.
        pairs = cfg.drain_width == 2
        held = Signal(AccumulatorVector(cfg))  # the folded first window of a pair
        fw_left = Signal(unsigned(aw + 1))
        odd = Signal()
        opens = Signal()
        if pairs:
            m.d.comb += opens.eq(~odd & (fw_left != 0))

        # -- emitting a window: one item per live channel -----------------------------------
        vec = Signal(AccumulatorVector(cfg))
        vec1 = Signal(AccumulatorVector(cfg))  # the pair's second window (drain_width 2)
        two = Signal()  # the emitted item carries a pair
        have = Signal()
        c = Signal(range(cols + 1))
        out = _OutputWalk(m, cfg, p)
        # ``past``: c >= live (no item left of the window); ``at_last``: c + 1 >= live (the
        # item at ``o`` is the window's last). Registers, stepped with ``c`` and ``live``,
        # so the emitter's ``valid`` and "last item" (which gates taking the next vector,
        # the read enable of every folding register) come from flip-flops, not a
        # comparison (the drain's longest path on the ECP5).
        past = Signal()
        at_last = Signal()
        m.d.comb += self.done.eq(~out.running)

        acc = Signal(signed(cfg.acc_width))
        acc1 = Signal(signed(cfg.acc_width))
        with m.Switch(c):
            for j in range(cols):
                with m.Case(j):
                    m.d.comb += [acc.eq(vec.acc[j]), acc1.eq(vec1.acc[j])]
        m.d.comb += [
            self.o.valid.eq(have & ~past),
            self.o.payload.acc.eq(acc),
            self.o.payload.channel.eq(out.channel(c)),
            self.o.payload.addr.eq(out.addr()),
        ]
        if pairs:
            m.d.comb += [self.o.payload.acc1.eq(acc1), self.o.payload.two.eq(two)]
        last_item = Signal()
        m.d.comb += last_item.eq(have & ((at_last & self.o.ready) | past))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [c.eq(c + 1), out.col_addr.eq(out.col_addr + p.pooled_hw),
                         past.eq(at_last), at_last.eq(c + 2 >= out.live)]

        # A vector is taken when it does not close its window (or closes the first of a
        # pair), or when the emitter is free.
        take = Signal()
        emits = Signal()  # the vector taken closes a window that goes to the emitter
        m.d.comb += [
            r_en.eq(out.running & (~closes | opens | ~have | last_item)),
            take.eq(r_rdy & r_en),
            emits.eq(take & closes & ~opens),
        ]
        with m.If(take):
            with m.If(closes):
                m.d.sync += [wi.eq(0), opening.eq(1), closes.eq(p.pool_area == 1)]
                with m.If(opens):
                    m.d.sync += held.eq(folded)
                with m.Else():
                    m.d.sync += [have.eq(1), c.eq(0), out.col_addr.eq(0), two.eq(odd)]
                    # c = 0 against the live count of the window's tile: the next tile's
                    # when the item going out now is the current tile's last
                    new_tile = last_item & out.ends_tile(out.win + 1 + two)
                    m.d.sync += [past.eq(0),
                                 at_last.eq(Mux(new_tile, out.next_live, out.live) <= 1)]
                    if pairs:
                        m.d.sync += [vec.eq(Mux(odd, held, folded)), vec1.eq(folded)]
                    else:
                        m.d.sync += vec.eq(folded)
                if pairs:
                    with m.If(fw_left == 0):
                        m.d.sync += [fw_left.eq(p.pooled_hw - 1), odd.eq(0)]
                    with m.Else():
                        m.d.sync += [fw_left.eq(fw_left - 1), odd.eq(~odd)]
            with m.Else():
                m.d.sync += [mx.eq(folded), wi.eq(wi + 1), opening.eq(0),
                             closes.eq(wi + 2 == p.pool_area)]
        with m.If(last_item & ~emits):
            m.d.sync += have.eq(0)

        # The window (or pair) being emitted moves on with its last item.
        with m.If(last_item):
            out.next_window(out.win + 1 + two)

        with m.If(self.start):
            out.start()
            m.d.sync += [have.eq(0), c.eq(0), wi.eq(0), two.eq(0), opening.eq(1),
                         closes.eq(p.pool_area == 1)]
            if pairs:
                m.d.sync += [fw_left.eq(p.pooled_hw - 1), odd.eq(0)]
        return m

    def _channel_by_channel(self, m):
        """One row, one item a clock: the vector at ``i`` leaves a channel a clock, every
        position's, with its window's flags; post-processing pools
        (``config.pool_after_post``)."""
        cfg = self._config
        cols = cfg.cols
        p = self.params
        src = self.i.payload

        c = Signal(range(cols))  # the channel leaving
        wi = Signal(16)  # the window's vectors before this one
        x = Signal(signed(cfg.acc_width))
        with m.Switch(c):
            for j in range(cols):
                with m.Case(j):
                    m.d.comb += x.eq(src.acc[j])

        out = _OutputWalk(m, cfg, p, registered=False)
        closes = Signal()
        step = Signal()  # the channel leaves this clock
        last_c = Signal()
        m.d.comb += [
            closes.eq(wi + 1 == p.pool_area),
            step.eq(out.running & self.i.valid & self.o.ready),
            last_c.eq(c == cols - 1),
            self.i.ready.eq(step & last_c),
            self.o.valid.eq(out.running & self.i.valid),
            self.o.payload.acc.eq(x),
            self.o.payload.channel.eq(out.channel(c)),
            self.o.payload.addr.eq(out.addr()),
            self.o.payload.opens.eq(wi == 0),
            self.o.payload.closes.eq(closes),
            self.o.payload.live.eq(out.left > c),
            self.done.eq(~out.running),
        ]
        with m.If(step):
            with m.If(last_c):
                m.d.sync += [c.eq(0), out.col_addr.eq(0)]
                with m.If(closes):
                    m.d.sync += wi.eq(0)
                    out.next_window(out.win + 1)
                with m.Else():
                    m.d.sync += wi.eq(wi + 1)
            with m.Else():
                m.d.sync += [c.eq(c + 1), out.col_addr.eq(out.col_addr + p.pooled_hw)]

        with m.If(self.start):
            out.start()
            m.d.sync += [c.eq(0), wi.eq(0)]
