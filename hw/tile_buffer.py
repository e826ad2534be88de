"""The decoded-weight tile buffer: double-buffered, so decoding the next tile of output
channels overlaps computing with the current one.

Ref: docs/architecture.md ("Convolution: tiles"); the tile of output channels is the
systolic array's ``cols`` columns (docs/pe-array.md).
"""

import functools
import math
import operator

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.const_arith import reciprocal, times
from hw.pe_array import WeightVector
from hw.ram import read_port
from hw.weight_unit import LaneWeight

__all__ = ["TileBuffer"]


def tile_and_column(channel, cols: int):
    """``(channel // cols, channel % cols)`` for a constant ``cols``: shifts when it is a
    power of two, else a multiplication by the reciprocal (``reciprocal``; Yosys builds
    ``//`` by a constant as a whole divider) and a subtraction, in shifts and adders."""
    if cols & (cols - 1) == 0:
        s = (cols - 1).bit_length()
        return channel >> s, channel[:s] if s else 0
    mul, shift = reciprocal(cols, len(channel))
    t = times(channel, mul) >> shift
    t = t[:max(1, len(channel) - cols.bit_length() + 1)]
    return t, (channel - times(t, cols))[:(cols - 1).bit_length()]


class TileBuffer(wiring.Component):
    """Holds the dense weights of two tiles of ``cols`` output channels.

    Tile ``t`` is channels ``t·cols .. t·cols + cols - 1`` (the last tile may be partial);
    channel ``ch`` goes to column ``ch mod cols`` of bank ``t mod 2``, at address ``k`` (its
    fan-in position). Each (bank, column) is its own ``tile_depth``-word memory, so any lanes
    may write in the same clock (two lanes never hold the same (bank, column): tiles ``t``
    and ``t + 2`` never fill at once).

    Ports:
        ``start`` (in): one-cycle pulse: a new layer, tile 0 at the head, both banks empty.
            ``out_c`` (in) must be steady from then on.
        ``i[j]`` (in streams of ``LaneWeight``): lane ``j``'s dense weights (``k``,
            ``channel``, ``last``), of channels ``j``, ``j + lanes``, ``j + 2 lanes``...
            (``StreamFetch``'s dense deal). Lane ``j`` is wired only to the columns equal
            to ``j`` modulo ``g = gcd(lanes, cols)``, the only ones its channels reach (a
            weight of another channel would be lost: the deal is the accelerator's own,
            so no input can break it). A weight of tile ``t`` is accepted while ``t`` is the
            head tile or the one after it; a lane that reaches tile ``head + 2`` waits until
            the head is released (its earlier channels are all in, since a lane's channels
            come in increasing order, so this cannot deadlock).
        ``head`` (out): the tile the reader works on; ``head_ready`` (out): all its
            channels are complete.
        ``rd_addr``, ``rd_en`` (in), ``rd_data`` (out, ``WeightVector``): the head tile's
            weights at fan-in position ``rd_addr``, one clock after ``rd_en``; held while
            ``rd_en`` is low. Columns past ``out_c`` read stale words (the array's results
            for them are discarded).
        ``release`` (in): one-cycle pulse: the head tile is consumed; its bank is emptied and
            the head moves on.

    Throughput: one weight per clock per lane; one weight vector read per clock.
    Latency: a weight accepted in clock 0 is written in clock 1 (at the earliest), and
    counts for ``head_ready`` from clock 2.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "out_c": In(unsigned(config.channel_width + 1)),
            "i": In(stream.Signature(LaneWeight(config))).array(config.decode_lanes),
            "head": Out(unsigned(config.channel_width + 1)),
            "head_ready": Out(1),
            "rd_addr": In(unsigned(config.tile_addr_width)),
            "rd_en": In(1),
            "rd_data": Out(WeightVector(config)),
            "release": In(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        cols, lanes = cfg.cols, cfg.decode_lanes
        m = Module()

        mems = [[memory.Memory(shape=cfg.bw, depth=cfg.tile_depth, init=[])
                 for _ in range(cols)] for _ in range(2)]
        for b in range(2):
            for c in range(cols):
                m.submodules[f"bank{b}_col{c}"] = mems[b][c]
        wrs = [[mems[b][c].write_port() for c in range(cols)] for b in range(2)]
        # (a bank is read only once its tile is complete, and written again only after
        # its release)
        rds = [[read_port(m, mems[b][c], name=f"rd{b}_{c}") for c in range(cols)]
               for b in range(2)]

        head = self.head
        hb = Signal()  # the head tile's bank
        m.d.comb += hb.eq(head[0])

        # Channels still missing in each bank; a bank's count is set when its tile becomes
        # the head or the one after it.
        missing = [Signal(range(cols + 1), name=f"missing{b}") for b in range(2)]

        left_shape = signed(cfg.channel_width + 2 + cols.bit_length())

        def clamp(left):
            """A tile's channels from ``left = out_c - t·cols``: ``min(cols, max(0, left))``."""
            return Mux(left >= cols, cols, Mux(left < 0, 0, left))

        def tile_channels(t: int):
            """Channels of tile ``t`` (0 or 1, at ``start``): ``min(cols, out_c - t·cols)``."""
            left = Signal(left_shape, name="left")
            m.d.comb += left.eq(self.out_c - t * cols)
            return clamp(left)

        # ``out_c - (head + 2)·cols``, kept in a register that steps by ``cols`` with each
        # release, for the count of the tile a release brings in: formed from ``head`` at
        # the release (an adder, a multiplication by ``cols`` in adders and a subtraction
        # in front of the count's own), it was one of the ULX3S build's longest paths
        # (18.2 ns into ``missing0``, session 24).
        left_next = Signal(left_shape)
        # ``head + 2``, the first tile a weight may not be written for yet, kept in a
        # register stepped with ``head``: an adder on ``head`` began the paths through
        # every lane's ``ok`` and the banks' counts of last weights into ``missing``
        # (18.5 ns into ``missing1`` on the ULX3S, session 26).
        head_2 = Signal(len(head) + 1, init=2)

        # Each lane's weight waits one clock in a register with its tile and column (a
        # division by cols unless it is a power of two), then is written when its tile is
        # the head or the next one.
        ch_w = cfg.channel_width
        # Lane j holds channels j, j + lanes, ...: their columns are those equal to j
        # modulo g, so only those are wired to it.
        g = math.gcd(lanes, cols)
        go, sels, held = [], [], []
        for j in range(lanes):
            lane = self.i[j]
            p = lane.payload
            t_in, c_in = tile_and_column(p.channel[:ch_w], cols)
            s_valid = Signal(name=f"s_valid{j}")
            s_k = Signal.like(p.k, name=f"s_k{j}")
            s_w = Signal.like(p.weight, name=f"s_w{j}")
            s_last = Signal(name=f"s_last{j}")
            s_t = Signal(unsigned(ch_w + 1), name=f"s_t{j}")
            s_c = Signal(range(cols), name=f"s_c{j}")
            ok = Signal(name=f"ok{j}")
            m.d.comb += [ok.eq(s_valid & (s_t < head_2)), lane.ready.eq(~s_valid | ok)]
            with m.If(lane.valid & lane.ready):
                m.d.sync += [s_valid.eq(1), s_k.eq(p.k), s_w.eq(p.weight), s_last.eq(p.last),
                             s_t.eq(t_in), s_c.eq(c_in)]
            with m.Elif(ok):
                m.d.sync += s_valid.eq(0)
            with m.If(self.start):
                m.d.sync += s_valid.eq(0)
            go.append((ok, s_t, s_c, s_last))
            sels.append([[ok & (s_t[0] == b) & (s_c == cc) if cc % g == j % g else None
                          for cc in range(cols)] for b in range(2)])
            held.append((s_k, s_w))

        # Each memory's write port takes the one lane that selects it (two lanes never
        # select the same one, see above), through AND-OR selects rather than a priority
        # chain of `lanes` multiplexers.
        # Where one lane reaches a memory (one lane, or lanes dividing cols), the memory
        # takes that lane's address and weight as they are (only the enables select): the
        # AND-OR would be 2·cols·(address + weight) LUTs for nothing (272 LUT4 on the 1x8
        # iCE40 array). On the ECP5's 5 lanes and 10 columns each lane reaches 2 columns
        # instead of 10: the crossbar of every lane to all 20 memories was 999 of the 3,104
        # overused wires where router2 stuck (docs/results.md, session 13).
        for b in range(2):
            for cc in range(cols):
                js = [j for j in range(lanes) if sels[j][b][cc] is not None]
                sel = {j: Signal(name=f"sel{j}_b{b}_c{cc}") for j in js}
                m.d.comb += [sel[j].eq(sels[j][b][cc]) for j in js]
                if len(js) == 1:
                    (j,) = js
                    m.d.comb += [wrs[b][cc].en.eq(sel[j]), wrs[b][cc].addr.eq(held[j][0]),
                                 wrs[b][cc].data.eq(held[j][1])]
                    continue
                m.d.comb += [
                    wrs[b][cc].en.eq(functools.reduce(operator.or_, sel.values())),
                    wrs[b][cc].addr.eq(functools.reduce(
                        operator.or_, (Mux(sel[j], held[j][0], 0) for j in js))),
                    wrs[b][cc].data.eq(functools.reduce(
                        operator.or_, (Mux(sel[j], held[j][1], 0) for j in js))),
                ]

        lasts = [Signal(range(lanes + 1), name=f"lasts{b}") for b in range(2)]
        for b in range(2):
            m.d.comb += lasts[b].eq(sum(ok & s_last & (s_t[0] == b)
                                        for ok, s_t, _, s_last in go))

        for c in range(cols):
            for b in range(2):
                m.d.comb += [rds[b][c].addr.eq(self.rd_addr), rds[b][c].en.eq(self.rd_en)]
        # The bank is chosen when the word is read, so the output holds with rd_en low.
        r_bank = Signal()
        with m.If(self.rd_en):
            m.d.sync += r_bank.eq(hb)
        for c in range(cols):
            m.d.comb += self.rd_data.w[c].eq(Mux(r_bank, rds[1][c].data, rds[0][c].data))

        m.d.comb += self.head_ready.eq(Mux(hb, missing[1], missing[0]) == 0)

        with m.If(self.start):
            m.d.sync += [head.eq(0), head_2.eq(2), missing[0].eq(tile_channels(0)),
                         missing[1].eq(tile_channels(1)),
                         left_next.eq(self.out_c - 2 * cols)]
        with m.Else():
            for b in range(2):
                with m.If(self.release & (hb == b)):
                    # The freed bank takes tile head + 2; its count starts at that tile's.
                    m.d.sync += missing[b].eq(clamp(left_next) - lasts[b])
                with m.Else():
                    m.d.sync += missing[b].eq(missing[b] - lasts[b])
            with m.If(self.release):
                m.d.sync += [head.eq(head + 1), head_2.eq(head_2 + 1),
                             left_next.eq(left_next - cols)]
        return m
