"""From the array's accumulator vectors to post-processing items: output channels, pooling
windows and output addresses.

Ref: golden.model.postprocess (max-pool after requantize and ReLU) and
golden.fixedpoint.maxpool (windows of ``pool x pool`` with stride ``pool``, partial ones
dropped); golden.fixedpoint.flatten (the ``(c, y, x)`` order of the output bank).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.conv_feed import offset_width
from hw.layouts import PostItem
from hw.pe_array import AccumulatorVector

__all__ = ["ConvDrain", "DrainParams"]


class DrainParams(data.StructLayout):
    """A convolution layer's output geometry: ``out_c``, ``out_w`` and ``positions`` =
    ``out_h·out_w`` before pooling; ``pool`` the window and stride (1: no pooling);
    ``pooled_h``, ``pooled_w`` and ``pooled_hw`` = ``pooled_h·pooled_w`` after it."""

    def __init__(self, config):
        aw = config.act_addr_width
        super().__init__({
            "out_c": unsigned(config.channel_width + 1),
            "out_w": unsigned(16),
            "positions": unsigned(offset_width(config)),
            "pool": unsigned(8),
            "pooled_h": unsigned(aw + 1),
            "pooled_w": unsigned(aw + 1),
            "pooled_hw": unsigned(aw + 1),
        })


class ConvDrain(wiring.Component):
    """Splits each ``AccumulatorVector`` (one output position, ``cols`` channels of a tile)
    into ``PostItem``s, one per live channel, and gives each its output address.

    The array's vectors come in the feed's order: tile by tile, positions in raster order
    within a tile. The drain counts them to know each one's tile ``t`` and position
    ``(oy, ox)``; channel ``t·cols + c`` goes to ``addr = ch·pooled_hw + (oy div p)·pooled_w
    + (ox div p)``, with ``first`` when ``(oy mod p, ox mod p) = (0, 0)`` and ``drop``
    outside the whole windows. Channels at or past ``out_c`` (a last partial tile) are
    not emitted.

    Ports:
        ``start`` (in): one-cycle pulse; ``params`` (in, ``DrainParams``) steady from then.
        ``i`` (in stream of ``AccumulatorVector``), ``o`` (out stream of ``PostItem``).
        ``done`` (out): every position of every tile has been emitted (until ``start``).

    Throughput: one item per clock. A group's ``rows`` vectors leave the array on
    consecutive clocks, so a FIFO of ``rows`` vectors takes the burst; the array stalls only
    when a group's items (``rows x live channels``) outnumber the clocks of a group (``N``).
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

        m.submodules.burst = burst = fifo.SyncFIFOBuffered(
            width=AccumulatorVector(cfg).size, depth=cfg.rows + 1)
        m.d.comb += [burst.w_data.eq(self.i.payload), burst.w_en.eq(self.i.valid),
                     self.i.ready.eq(burst.w_rdy)]
        src_valid = burst.r_rdy
        src_payload = AccumulatorVector(cfg)(burst.r_data)

        vec = Signal(AccumulatorVector(cfg))
        have = Signal()
        c = Signal(range(cols + 1))
        live = Signal(range(cols + 1))  # channels of the current tile
        ch = Signal(unsigned(cfg.channel_width + 1))  # t·cols
        tile_base = Signal(unsigned(aw + 8))  # t·cols·pooled_hw
        col_addr = Signal(unsigned(aw + 8))  # c·pooled_hw
        pos = Signal(unsigned(offset_width(cfg)))
        ox = Signal(16)
        rx = Signal(8)
        ry = Signal(8)
        px = Signal(aw + 1)
        py = Signal(aw + 1)
        line = Signal(unsigned(aw + 1))  # py·pooled_w
        running = Signal()

        left = Signal(signed(cfg.channel_width + 2))
        m.d.comb += [
            left.eq(p.out_c - ch),
            live.eq(Mux(left >= cols, cols, left)),
            self.done.eq(~running),
        ]

        acc = Signal(signed(cfg.acc_width))
        with m.Switch(c):
            for j in range(cols):
                with m.Case(j):
                    m.d.comb += acc.eq(vec.acc[j])
        m.d.comb += [
            self.o.valid.eq(have & (c < live)),
            self.o.payload.acc.eq(acc),
            self.o.payload.channel.eq(ch + c),
            self.o.payload.addr.eq(tile_base + col_addr + line + px),
            self.o.payload.first.eq((rx == 0) & (ry == 0)),
            self.o.payload.drop.eq((px >= p.pooled_w) | (py >= p.pooled_h)),
        ]
        last_item = Signal()
        m.d.comb += [
            last_item.eq(have & (((c + 1 >= live) & self.o.ready) | (c >= live))),
            burst.r_en.eq(running & (~have | last_item)),
        ]
        take = Signal()
        m.d.comb += take.eq(src_valid & burst.r_en)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [c.eq(c + 1), col_addr.eq(col_addr + p.pooled_hw)]

        with m.If(take):
            m.d.sync += [vec.eq(src_payload), have.eq(1), c.eq(0), col_addr.eq(0)]
        with m.Elif(last_item):
            m.d.sync += have.eq(0)

        # The position of the vector being emitted moves on with its last item.
        with m.If(last_item):
            with m.If(pos + 1 == p.positions):
                m.d.sync += [pos.eq(0), ox.eq(0), rx.eq(0), ry.eq(0), px.eq(0), py.eq(0),
                             line.eq(0), ch.eq(ch + cols),
                             tile_base.eq(tile_base + cols * p.pooled_hw)]
                with m.If(ch + cols >= p.out_c):
                    m.d.sync += running.eq(0)
            with m.Else():
                m.d.sync += pos.eq(pos + 1)
                with m.If(ox + 1 == p.out_w):
                    m.d.sync += [ox.eq(0), rx.eq(0), px.eq(0)]
                    with m.If(ry + 1 == p.pool):
                        m.d.sync += [ry.eq(0), py.eq(py + 1), line.eq(line + p.pooled_w)]
                    with m.Else():
                        m.d.sync += ry.eq(ry + 1)
                with m.Else():
                    m.d.sync += ox.eq(ox + 1)
                    with m.If(rx + 1 == p.pool):
                        m.d.sync += [rx.eq(0), px.eq(px + 1)]
                    with m.Else():
                        m.d.sync += rx.eq(rx + 1)

        with m.If(self.start):
            m.d.sync += [running.eq(p.out_c != 0), have.eq(0), c.eq(0), ch.eq(0),
                         tile_base.eq(0), col_addr.eq(0), pos.eq(0), ox.eq(0), rx.eq(0),
                         ry.eq(0), px.eq(0), py.eq(0), line.eq(0)]
        return m
