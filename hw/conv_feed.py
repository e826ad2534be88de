"""Convolution address generation: im2col on the fly, feeding the systolic array.

Ref: golden.model.im2col and conv_accumulate (the (c, ky, kx) fan-in order and the
zero padding); docs/architecture.md ("Convolution: tiles, groups and the walker").
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.pe_array import ActivationVector, WeightVector

__all__ = ["ConvFeed", "ConvParams", "coord_width"]


def coord_width(config) -> int:
    """Bits of a signed input coordinate (a window origin ``iy0``, ``ix0``, or a tap
    ``iy0 + ky``): a tap of a layer whose input fits the bank lies in ``-padding ..
    in_dim - 1 + padding``, with ``in_dim <= act_depth`` and ``padding <= 255``."""
    return max(config.act_addr_width, 8) + 2


class ConvParams(data.StructLayout):
    """A convolution layer's geometry as the feed walks it (the sequencer derives it from
    the layer table entry; products are precomputed so the feed only adds).

    ``in_h``, ``in_w``: the input map; ``kh``, ``kw``, ``stride``, ``padding``; ``fan_in`` =
    ``in_c·kh·kw``; ``pool`` the pooling window ``p`` (1: none) and ``pooled_w`` the pooled
    map's width and ``pooled_hw`` = ``pooled_h·pooled_w`` the windows (the positions in
    whole windows are computed, the others are dropped by the pooling); ``tiles`` =
    ``ceil(out_c / cols)``; ``p1_stride`` = ``(p-1)·stride``, ``line_step`` =
    ``stride·in_w - (p-1)·stride`` (to a window's next line), ``win_step`` = ``stride -
    (p-1)·stride·in_w`` (to the next window of the row) and ``p_s_in_w`` =
    ``p·stride·in_w`` (to the next row of windows): the walker's steps; ``pad_off`` =
    ``padding·(in_w + 1)``, how far the first window's first tap lies before the map's
    first word (the padding); ``ky_step`` = ``in_w - kw + 1`` and
    ``ci_step`` = ``in_h·in_w - (kh-1)·in_w - kw + 1``: the address steps of the fan-in
    counters when ``kx`` and then ``ky`` wrap.

    Offsets (the fields from ``line_step`` on) are kept modulo the bank's
    depth, ``2^act_addr_width``: a tap's address is a sum of them, and only an address of a
    tap inside the map is used, so its low bits are all that matter. ``p1_stride`` also
    steps the coordinates: it is kept modulo ``2^coord_width``. ``pooled_w`` and
    ``pooled_hw`` are at most the bank's depth when the output fits it (the sequencer's
    check).
    """

    def __init__(self, config):
        aw = config.act_addr_width
        super().__init__({
            "in_h": unsigned(aw + 1),
            "in_w": unsigned(aw + 1),
            "kh": unsigned(8),
            "kw": unsigned(8),
            "stride": unsigned(8),
            "padding": unsigned(8),
            "fan_in": unsigned(config.fan_in_width),
            "pool": unsigned(8),
            "pooled_w": unsigned(aw + 1),
            "pooled_hw": unsigned(aw + 1),
            "tiles": unsigned(config.channel_width + 1),
            "p1_stride": unsigned(coord_width(config)),
            "line_step": unsigned(aw),
            "win_step": unsigned(aw),
            "p_s_in_w": unsigned(aw),
            "pad_off": unsigned(aw),
            "ky_step": unsigned(aw),
            "ci_step": unsigned(aw),
        })


class _Pos(data.StructLayout):
    """An output position as the feed needs it: the top-left input coordinate of its window
    (``iy0``, ``ix0``, may be negative in the padding), the window's input offset ``off`` =
    ``iy0·in_w + ix0`` (modulo the bank's depth), and ``live`` (the position is in one of
    the ``pooled_hw`` windows)."""

    def __init__(self, config):
        cw = coord_width(config)
        super().__init__({"iy0": signed(cw), "ix0": signed(cw),
                          "off": unsigned(config.act_addr_width), "live": 1})


class _S(enum.Enum, shape=3):
    IDLE = 0
    TILE = 1  # wait for the tile's weights, restart the walker
    FILL = 2  # the walker fills the first group's positions
    RUN = 3  # one fan-in index per clock
    NEXT = 4  # a group is issued; wait for the next group's positions


class ConvFeed(wiring.Component):
    """Walks a convolution layer tile by tile, group by group, fan-in index by index, and
    sends the array one ``ActivationVector`` and one ``WeightVector`` per step.

    Order: for each tile of ``cols`` output channels (weights from the ``TileBuffer``
    head), for each group of ``rows`` output positions in pooling-window order (window by
    window in raster order, the ``p x p`` positions of a window in raster order within it;
    without pooling, plain raster order; row ``r`` of group ``g`` holds the ``g·rows + r``-th
    position), for each fan-in
    index ``k = (c·kh + ky)·kw + kx``: row ``r`` gets ``x[c, iy0 + ky, ix0 + kx]`` (0 in the
    padding), column ``c`` gets ``w[c, k]``; ``first``/``last`` mark ``k = 0`` and
    ``N - 1``; ``mask`` the live rows of a final partial group.

    A walker computes the next group's positions one per clock while the current group
    runs (only additions: a position steps by ``stride`` columns or lines within a window,
    to the next window, or to the next row of windows), so a group follows the previous one
    without a gap whenever ``N >= rows``. Walking window by window lets ``ConvDrain`` pool
    the accumulators of a window as they come, so one output per window and channel is
    written, and positions outside every whole window are never computed.

    Ports:
        ``start`` (in): one-cycle pulse; ``params`` (in, ``ConvParams``) steady from then
            (with several rows they are registered at ``start`` and only that clock's
            values are used; with one row they are used as they come).
        ``x_addr[r]``, ``x_en`` (out), ``x_data[r]`` (in): row ``r``'s read port on the
            input bank (synchronous; data the clock after ``x_en``, held while it is low).
        ``tile_head_ready`` (in), ``tile_release`` (out), ``tile_addr``, ``tile_en`` (out),
            ``tile_data`` (in, ``WeightVector``): the ``TileBuffer``'s reader ports.
        ``i`` (out, ``ActivationVector``) and ``w`` (out, ``WeightVector``): to the
            ``PEArray``; both carry the same step and are valid together.
        ``busy`` (out): a layer is being fed.

    Latency: a step's vectors are valid one clock after its addresses. Throughput: one step
    per clock; ``rows`` clocks to restart the walker at each tile. Back-pressure: while the
    array does not take a step, the reads are not re-issued and every counter holds.
    """

    def __init__(self, config):
        self._config = config
        rows = config.rows
        super().__init__({
            "start": In(1),
            "params": In(ConvParams(config)),
            "x_addr": Out(unsigned(config.act_addr_width)).array(rows),
            "x_en": Out(1),
            "x_data": In(signed(config.bw)).array(rows),
            "tile_head_ready": In(1),
            "tile_release": Out(1),
            "tile_addr": Out(unsigned(config.tile_addr_width)),
            "tile_en": Out(1),
            "tile_data": In(WeightVector(config)),
            "i": Out(stream.Signature(ActivationVector(config))),
            "w": Out(stream.Signature(WeightVector(config))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        rows = cfg.rows
        aw = cfg.act_addr_width
        cw = coord_width(cfg)
        one_row = rows == 1
        m = Module()
        # With several rows the layer's parameters are registers, loaded at ``start``:
        # the sequencer derives them from its own registers through adders, so every
        # path that used them began in the sequencer (one of them, through the tile
        # count, was the ULX3S build's longest in a session 14 placement, 24.8 ns). With
        # one row (the UP5K, where logic cells count) they are used as they come.
        if one_row:
            p = self.params
        else:
            p = Signal(ConvParams(cfg), name="p")
            with m.If(self.start):
                m.d.sync += p.eq(self.params)

        state = Signal(_S)
        m.d.comb += self.busy.eq(state != _S.IDLE)
        tile = Signal.like(p.tiles)

        # -- the walker: output positions in window order, one per clock -----------------
        # (the walker runs at most 2 · rows positions past the last window before the tile
        # ends, so ``wk_win`` stays below act_depth + 2 · rows)
        wk_win = Signal(range(cfg.act_depth + 2 * rows + 1))  # the window
        wk_dx = Signal(8)
        wk_dy = Signal(8)
        wk_px = Signal(aw + 1)
        wk_iy0 = Signal(signed(cw))
        wk_ix0 = Signal(signed(cw))
        wk_line = Signal(aw)  # the offset of the row of windows' first position
        wk_off = Signal(aw)
        wk_restart = Signal()
        walk = Signal()  # the walker steps to the next position
        cur = [Signal(_Pos(cfg), name=f"cur{r}") for r in range(rows)]
        if one_row:
            # The walker's position is the current one; it steps at the group's end, and
            # ``wk_live`` is whether it is in one of the windows.
            wk_live = Signal()
            m.d.comb += [cur[0].iy0.eq(wk_iy0), cur[0].ix0.eq(wk_ix0),
                         cur[0].off.eq(wk_off), cur[0].live.eq(wk_live)]
        else:
            # The walker fills the next group's positions while the current group runs.
            nxt = [Signal(_Pos(cfg), name=f"nxt{r}") for r in range(rows)]
            fill = Signal(range(rows + 1))
            m.d.comb += walk.eq(fill != rows)
        # "the last position of the window's line" (``wk_dx + 1 == pool``), "of the window"
        # (``wk_dy + 1 == pool``) and "the row's last window" (``wk_px + 1 == pooled_w``):
        # with several rows, registers stepped with the counters (the comparisons were the
        # start of the walker's longest path on the ECP5, into its coordinate adders); with
        # one row (the UP5K's preset, where logic cells count and the clock is 30 MHz)
        # compared each clock.
        flags = not one_row
        if flags:
            dx_last, dy_last, px_last = (Signal(name=f"{x}_last") for x in ("dx", "dy", "px"))
        else:
            dx_last, dy_last, px_last = (wk_dx + 1 == p.pool, wk_dy + 1 == p.pool,
                                         wk_px + 1 == p.pooled_w)
        with m.If(wk_restart):
            pad = p.padding
            m.d.sync += [
                wk_win.eq(0), wk_dx.eq(0), wk_dy.eq(0), wk_px.eq(0),
                wk_iy0.eq(-pad), wk_ix0.eq(-pad),
                wk_line.eq(-p.pad_off), wk_off.eq(-p.pad_off),
            ]
            if flags:
                m.d.sync += [dx_last.eq(p.pool == 1), dy_last.eq(p.pool == 1),
                             px_last.eq(p.pooled_w == 1)]
            if one_row:
                m.d.sync += wk_live.eq(p.pooled_hw != 0)
            else:
                m.d.sync += fill.eq(0)
        with m.Elif(walk):
            if one_row:
                with m.If(dx_last & dy_last):
                    # The window's last position: the next is the next window's first.
                    # (The steps c and d below, spelled from the counters' comparisons:
                    # taken from those steps' selects the build was 25-35 LCs larger.)
                    m.d.sync += wk_live.eq(wk_win + 1 != p.pooled_hw)
            else:
                for r in range(rows):
                    with m.If(fill == r):
                        m.d.sync += [nxt[r].iy0.eq(wk_iy0), nxt[r].ix0.eq(wk_ix0),
                                     nxt[r].off.eq(wk_off),
                                     nxt[r].live.eq(wk_win < p.pooled_hw)]
                m.d.sync += fill.eq(fill + 1)
            # The step: along the window's line (a), to the window's next line (b), to the
            # next window of the row (c), or to the next row of windows (d). One adder for
            # the offset and one for each coordinate, their operands selected.
            st_a, st_b, st_c, st_d = (Signal(name=f"step_{x}") for x in "abcd")
            m.d.comb += [
                st_a.eq(~dx_last),
                st_b.eq(~st_a & ~dy_last),
                st_c.eq(~st_a & ~st_b & ~px_last),
                st_d.eq(~st_a & ~st_b & ~st_c),
            ]
            off_step = Signal(aw)
            ix_step = Signal(cw)
            iy_step = Signal(cw)
            off_next = Signal(aw)
            m.d.comb += [
                off_step.eq(Mux(st_a, p.stride, Mux(st_b, p.line_step,
                                                    Mux(st_c, p.win_step, p.p_s_in_w)))),
                ix_step.eq(Mux(st_b, -p.p1_stride, Mux(st_d, -p.padding, p.stride))),
                iy_step.eq(Mux(st_c, -p.p1_stride, Mux(st_a, 0, p.stride))),
                off_next.eq(Mux(st_d, wk_line, wk_off) + off_step),
            ]
            m.d.sync += [
                wk_off.eq(off_next),
                wk_ix0.eq(Mux(st_d, 0, wk_ix0) + ix_step),
                wk_iy0.eq(wk_iy0 + iy_step),
                wk_dx.eq(Mux(st_a, wk_dx + 1, 0)),
            ]
            with m.If(st_b):
                m.d.sync += wk_dy.eq(wk_dy + 1)
            with m.Elif(~st_a):
                m.d.sync += wk_dy.eq(0)
            with m.If(st_c):
                m.d.sync += wk_px.eq(wk_px + 1)
            with m.Elif(st_d):
                m.d.sync += [wk_px.eq(0), wk_line.eq(off_next)]
            if flags:
                m.d.sync += dx_last.eq(Mux(st_a, wk_dx + 2 == p.pool, p.pool == 1))
                with m.If(st_b):
                    m.d.sync += dy_last.eq(wk_dy + 2 == p.pool)
                with m.Elif(~st_a):
                    m.d.sync += dy_last.eq(p.pool == 1)
                with m.If(st_c):
                    m.d.sync += px_last.eq(wk_px + 2 == p.pooled_w)
                with m.Elif(st_d):
                    m.d.sync += px_last.eq(p.pooled_w == 1)
            with m.If(st_c | st_d):
                m.d.sync += wk_win.eq(wk_win + 1)

        # -- the fan-in counters ------------------------------------------------------------
        k = Signal(unsigned(cfg.fan_in_width))
        kx = Signal(8)
        ky = Signal(8)
        # c·in_h·in_w + ky·in_w + kx, modulo the bank's depth (read with one row only: with
        # several, each row's address register steps by the same amounts itself)
        k_off = Signal(aw)
        # "the group's last step" (``k == fan_in - 1``) and the wraps of ``kx`` and ``ky``:
        # with several rows, registers set with the counters (the comparison of ``k`` with
        # ``fan_in - 1`` began the ULX3S build's longest path in session 14, 23.2 ns, into
        # the enables of every row's position and address registers); with one row
        # compared each clock, as the walker's flags above.
        if flags:
            k_last, kx_wrap, ky_wrap = (Signal(name=f"{x}_last") for x in ("k", "kx", "ky"))
        else:
            k_last, kx_wrap, ky_wrap = (k == p.fan_in - 1, kx + 1 == p.kw, ky + 1 == p.kh)

        def restart_counters(q):
            """The fan-in counters at a group's first step (``q``: the parameters)."""
            m.d.sync += [k.eq(0), kx.eq(0), ky.eq(0), k_off.eq(0)]
            if flags:
                m.d.sync += [k_last.eq(q.fan_in == 1), kx_wrap.eq(q.kw == 1),
                             ky_wrap.eq(q.kh == 1)]

        # -- stage B: the step whose reads were issued, waiting for the array ---------------
        b_valid = Signal()
        b_inb = Signal(rows)
        b_first = Signal()
        b_last = Signal()
        b_mask = Signal(rows)
        taken = Signal()
        adv = Signal()
        m.d.comb += [
            taken.eq(self.i.valid & self.i.ready),
            adv.eq(~b_valid | taken),
            self.i.valid.eq(b_valid),
            self.w.valid.eq(b_valid),
            self.i.payload.first.eq(b_first),
            self.i.payload.last.eq(b_last),
            self.i.payload.mask.eq(b_mask),
            self.w.payload.eq(self.tile_data),
        ]
        for r in range(rows):
            m.d.comb += self.i.payload.x[r].eq(Mux(b_inb[r], self.x_data[r], 0))

        issue = Signal()
        m.d.comb += [
            # (with one row, a position past the windows ends the tile instead)
            issue.eq((state == _S.RUN) & adv & (cur[0].live if one_row else 1)),
            self.x_en.eq(issue),
            self.tile_en.eq(issue),
            self.tile_addr.eq(k),
        ]
        inb = Signal(rows)
        # Row r's read address, ``cur[r].off + k_off`` (modulo the bank's depth). With
        # several rows it is a register kept equal to that sum (loaded with the group,
        # when k_off is 0, and stepped with k_off), so the bank's address leaves
        # from a register: the sum, added after the counters and then multiplexed with the
        # fc path's and the host's addresses in front of the bank's memories, was one of
        # the ULX3S build's longest paths into the activation banks (20.6 ns, session 12).
        # With one row (the UP5K's preset, where logic cells count) the sum is formed each
        # clock.
        addrs = [Signal(aw, name=f"addr{r}") for r in range(rows)]
        for r in range(rows):
            y = Signal(signed(cw), name=f"y{r}")
            x = Signal(signed(cw), name=f"x{r}")
            m.d.comb += [
                y.eq(cur[r].iy0 + ky),
                x.eq(cur[r].ix0 + kx),
                inb[r].eq((y >= 0) & (y < p.in_h) & (x >= 0) & (x < p.in_w)),
                self.x_addr[r].eq(addrs[r]),
            ]
            if one_row:
                m.d.comb += addrs[r].eq(cur[r].off + k_off)
        with m.If(issue):
            m.d.sync += [
                b_valid.eq(1),
                b_inb.eq(inb),
                b_first.eq(k == 0),
                b_last.eq(k_last),
                b_mask.eq(Cat(*(c.live for c in cur))),
            ]
        with m.Elif(taken):
            m.d.sync += b_valid.eq(0)

        group_end = Signal()
        m.d.comb += group_end.eq(issue & k_last)
        with m.If(issue):
            with m.If(group_end):
                restart_counters(p)
                # (no step is issued after a group's last before the next group is taken,
                # which loads the addresses)
            with m.Else():
                # (one adder, its operand selected)
                k_step = Mux(kx_wrap, Mux(ky_wrap, p.ci_step, p.ky_step), 1)
                m.d.sync += [k.eq(k + 1), k_off.eq(k_off + k_step)]
                if not one_row:
                    m.d.sync += [addrs[r].eq(addrs[r] + k_step) for r in range(rows)]
                if flags:
                    m.d.sync += k_last.eq(k + 2 == p.fan_in)
                with m.If(kx_wrap):
                    m.d.sync += [kx.eq(0), ky.eq(Mux(ky_wrap, 0, ky + 1))]
                    if flags:
                        m.d.sync += [kx_wrap.eq(p.kw == 1),
                                     ky_wrap.eq(Mux(ky_wrap, p.kh == 1, ky + 2 == p.kh))]
                with m.Else():
                    m.d.sync += kx.eq(kx + 1)
                    if flags:
                        m.d.sync += kx_wrap.eq(kx + 2 == p.kw)

        if one_row:
            m.d.comb += walk.eq(group_end)

        # -- the tile and group sequence ----------------------------------------------------
        def release_tile():
            # The tile's last step is issued (its weights are latched in the read port), so
            # its bank may take the tile after next.
            m.d.comb += self.tile_release.eq(1)
            m.d.sync += tile.eq(tile + 1)
            with m.If(tile + 1 == p.tiles):
                m.d.sync += state.eq(_S.IDLE)
            with m.Else():
                m.d.sync += state.eq(_S.TILE)

        def take_next_group():
            # (k_off is 0 here: it restarts with each group's last step)
            for r in range(rows):
                m.d.sync += [cur[r].eq(nxt[r]), addrs[r].eq(nxt[r].off)]
            m.d.sync += fill.eq(0)  # the walker goes on from where it stopped

        with m.Switch(state):
            with m.Case(_S.IDLE):
                with m.If(self.start):
                    # (the parameters as they come: ``p`` takes them in this clock)
                    m.d.sync += [tile.eq(0), state.eq(_S.TILE)]
                    restart_counters(self.params)
                    with m.If(self.params.tiles == 0):
                        m.d.sync += state.eq(_S.IDLE)
            with m.Case(_S.TILE):
                # The walker restarts in every clock of TILE, not only in the one that
                # leaves it: it is idle there (the next tile's first positions are what it
                # must hold when TILE ends), and its restart select then comes from the
                # state register alone. Selected by ``tile_head_ready``, which the tile
                # buffer forms from its counts, it was the ULX3S build's second longest
                # path (19.6 ns, session 24), through the walker's every register.
                m.d.comb += wk_restart.eq(1)
                with m.If(self.tile_head_ready):
                    m.d.sync += state.eq(_S.RUN if one_row else _S.FILL)
        if one_row:
            # A group is one position; the walker steps at its end, and the tile ends at
            # the first position past the windows.
            with m.If((state == _S.RUN) & ~cur[0].live):
                release_tile()
            return m
        with m.Switch(state):
            with m.Case(_S.FILL):
                with m.If(fill == rows):
                    take_next_group()
                    m.d.sync += state.eq(_S.RUN)
            with m.Case(_S.RUN, _S.NEXT):
                # The next group starts in the clock after the last step of this one when
                # the walker is ready (no gap); otherwise NEXT waits for it.
                with m.If((state == _S.RUN) & ~group_end):
                    pass
                with m.Elif(fill != rows):
                    m.d.sync += state.eq(_S.NEXT)
                with m.Else():
                    with m.If(nxt[0].live):
                        take_next_group()
                        m.d.sync += state.eq(_S.RUN)
                    with m.Else():
                        release_tile()
        return m
