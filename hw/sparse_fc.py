"""Sparse fully connected layers: accumulators from the non-zero weights only.

Each decode lane's sparse entries (``RunExpander`` in sparse mode: a weight with its
fan-in position ``k``) select the input activation ``x[k]`` they multiply, so a fully
connected layer takes time proportional to its non-zero weights, not to ``out_c · fan_in``.

Ref: EIE (Han et al., ISCA 2016), section III: each processing element walks the non-zero
weights of its output rows, reading the activation each one's index selects;
docs/numerics.md, step 1 (``golden.fixedpoint.accumulate``: the sum is exact).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import PostItem
from hw.pe import multiplier_ports
from hw.weight_unit import LaneWeight

__all__ = ["SparseFC"]


class SparseFC(wiring.Component):
    """Multiplies each lane's sparse weights by the activations they select and sums them
    into one exact accumulator per output channel.

    Ports:
        ``start`` (in): one-cycle pulse: clears everything (entries in flight and results
            not yet delivered are dropped) and begins a layer.
        ``i[j]`` (in streams of ``LaneWeight``): lane ``j``'s entries (``weight``, ``k``,
            ``first``, ``last``, ``channel``), a channel's entries back to back from its
            ``first`` to its ``last`` (``WeightUnit`` in sparse mode). An entry of weight 0
            (the end marker) is summed like any other.
        ``x_addr[j]``, ``x_en[j]`` (out), ``x_data[j]`` (in, signed ``bw``): lane ``j``'s read
            port on the input vector ``x``: synchronous, ``x_data[j]`` is the word at the
            ``x_addr[j]`` of the last clock in which ``x_en[j]`` was high, held while it is low
            (an ``amaranth.lib.memory`` read port with ``en``). The address is ``k``.
        ``o`` (out stream of ``PostItem``): one item per channel, in the order the lanes
            finish them: ``acc`` = the sum of ``x[k] · weight`` over the channel's entries
            (``golden.fixedpoint.accumulate``, exact in ``acc_width`` bits), ``channel`` and
            ``addr`` = the channel.
        ``idle`` (out): nothing accepted is in flight: every accepted entry whose channel
            has ended has left on ``o``, and no entry is in a lane's pipeline. (A channel
            whose ``last`` has not come yet keeps only its partial sum, which does not
            count.) After a layer's decoding is done, ``idle`` says its results are out.

    Each lane is a pipeline that advances as one: the entry's read (``x_en``, one clock),
    the multiplier's input registers (``m_``), the registered product (``p_``), then the
    accumulator, which on the channel's ``last`` entry hands its sum to the lane's holding
    register (``h_``). The multiplier is a plain ``*`` between registers, so synthesis can
    put the registers and the product into a MULT18X18D or SB_MAC16. A round-robin arbiter
    moves one holding register a clock into the output register.

    Latency: a channel's item is on ``o`` five clocks after its last entry is accepted
    (read, multiplier inputs, product, accumulate into the holding register, output
    register), when the arbiter takes that lane first. Throughput: one entry per clock per
    lane; ``o`` carries one item a clock, shared by the lanes. Back-pressure: a lane stalls
    (``i[j].ready`` low; its whole pipeline holds, ``x_en[j]`` low) only when a channel's
    last entry reaches the accumulator while the lane's holding register is full (for a
    clock at least: the register empties at the end of the clock the arbiter takes it);
    ``o.valid`` and ``o.payload`` are registers. ``i[j].ready`` depends only on the lane's
    own registers and ``start`` (not on ``o.ready``); it is low during ``start``.

    With ``AcceleratorConfig.fc_on_array`` the lanes have no multipliers of their own: lane
    ``j`` shows its multiplier's inputs on ``mul_a[j]`` and ``mul_b[j]`` (out) and takes
    the product on ``mul_p[j]`` (in, combinational), which the accelerator computes on PE
    ``(0, j)``'s multiplier (``PEArray``) while a fully connected layer runs.
    """

    def __init__(self, config):
        self._config = config
        lanes = config.decode_lanes
        ports = {
            "start": In(1),
            "i": In(stream.Signature(LaneWeight(config))).array(lanes),
            "x_addr": Out(unsigned(config.act_addr_width)).array(lanes),
            "x_en": Out(1).array(lanes),
            "x_data": In(signed(config.bw)).array(lanes),
            "o": Out(stream.Signature(PostItem(config))),
            "idle": Out(1),
        }
        if config.fc_on_array:
            ports.update(multiplier_ports(config, lanes))
        super().__init__(ports)

    def elaborate(self, platform):
        cfg = self._config
        lanes = cfg.decode_lanes
        m = Module()

        # -- output register, filled by the arbiter -------------------------------------------
        o_valid = Signal()
        o_acc = Signal(signed(cfg.acc_width))
        o_channel = Signal(cfg.channel_width)
        m.d.comb += [
            self.o.valid.eq(o_valid),
            self.o.payload.acc.eq(o_acc),
            self.o.payload.channel.eq(o_channel),
            self.o.payload.addr.eq(o_channel),
            # (a channel's sum is its output: with pooling after post-processing, a window
            # of one, written)
            *([self.o.payload.opens.eq(1), self.o.payload.closes.eq(1),
               self.o.payload.live.eq(1)] if cfg.pool_after_post else []),
        ]

        h_full = Signal(lanes)  # the lanes' holding registers hold a finished channel
        h_take = Signal(lanes)  # the arbiter moves lane j's holding register to o
        busy = []  # the lanes' pipeline valid bits, for idle

        for j in range(lanes):
            i = self.i[j]
            go = Signal(name=f"go_{j}")  # the lane's pipeline advances
            accept = Signal(name=f"accept_{j}")

            # Read stage: x_data is x[k] of the entry accepted in the clock before.
            r_valid = Signal(name=f"r_valid_{j}")
            r_weight = Signal(signed(cfg.bw), name=f"r_weight_{j}")
            r_first = Signal(name=f"r_first_{j}")
            r_last = Signal(name=f"r_last_{j}")
            r_channel = Signal(cfg.channel_width, name=f"r_channel_{j}")
            # Multiplier inputs.
            m_valid = Signal(name=f"m_valid_{j}")
            m_x = Signal(signed(cfg.bw), name=f"m_x_{j}")
            m_w = Signal(signed(cfg.bw), name=f"m_w_{j}")
            m_first = Signal(name=f"m_first_{j}")
            m_last = Signal(name=f"m_last_{j}")
            m_channel = Signal(cfg.channel_width, name=f"m_channel_{j}")
            # Product.
            p_valid = Signal(name=f"p_valid_{j}")
            p_prod = Signal(signed(2 * cfg.bw), name=f"p_prod_{j}")
            p_first = Signal(name=f"p_first_{j}")
            p_last = Signal(name=f"p_last_{j}")
            p_channel = Signal(cfg.channel_width, name=f"p_channel_{j}")
            # Accumulator and holding register.
            acc = Signal(signed(cfg.acc_width), name=f"acc_{j}")
            acc_next = Signal(signed(cfg.acc_width), name=f"acc_next_{j}")
            h_acc = Signal(signed(cfg.acc_width), name=f"h_acc_{j}")
            h_channel = Signal(cfg.channel_width, name=f"h_channel_{j}")
            busy += [r_valid, m_valid, p_valid]

            if cfg.fc_on_array:
                m.d.comb += [self.mul_a[j].eq(m_x), self.mul_b[j].eq(m_w)]
            m.d.comb += [
                # A lane whose holding register is full stalls its channel's end a clock
                # even when the arbiter empties the register in that clock: `go` (the
                # lane's `i.ready`) then comes from the lane's own registers, not through
                # the arbiter from `o.ready` (that chain, into the weight unit's
                # expander, was the ULX3S build's critical path, 26.3 ns, session 12).
                go.eq(~(p_valid & p_last & h_full[j])),
                i.ready.eq(go & ~self.start),
                accept.eq(i.valid & i.ready),
                self.x_addr[j].eq(i.payload.k),
                self.x_en[j].eq(accept),
                # golden.fixedpoint.accumulate: exact (acc_width holds any sum of max_fan_in
                # products, AcceleratorConfig.min_acc_width).
                acc_next.eq(Mux(p_first, 0, acc) + p_prod),
            ]
            with m.If(go):
                m.d.sync += [
                    r_valid.eq(accept),
                    r_weight.eq(i.payload.weight),
                    r_first.eq(i.payload.first),
                    r_last.eq(i.payload.last),
                    r_channel.eq(i.payload.channel),
                    m_valid.eq(r_valid),
                    m_x.eq(self.x_data[j]),
                    m_w.eq(r_weight),
                    m_first.eq(r_first),
                    m_last.eq(r_last),
                    m_channel.eq(r_channel),
                    p_valid.eq(m_valid),
                    p_prod.eq(self.mul_p[j] if cfg.fc_on_array else m_x * m_w),
                    p_first.eq(m_first),
                    p_last.eq(m_last),
                    p_channel.eq(m_channel),
                ]
                with m.If(p_valid):
                    m.d.sync += acc.eq(acc_next)
                    with m.If(p_last):
                        m.d.sync += [h_acc.eq(acc_next), h_channel.eq(p_channel)]

            # The holding register empties when the arbiter takes it and fills (in the same
            # clock, if need be) with the channel that ends now.
            with m.If(h_take[j]):
                m.d.sync += h_full[j].eq(0)
            with m.If(go & p_valid & p_last):
                m.d.sync += h_full[j].eq(1)
            with m.If(h_take[j]):
                m.d.sync += [o_acc.eq(h_acc), o_channel.eq(h_channel)]

            with m.If(self.start):
                m.d.sync += [r_valid.eq(0), m_valid.eq(0), p_valid.eq(0), h_full[j].eq(0)]

        # -- round-robin arbiter: the first full holding register at or after `ptr` --------
        ptr = Signal(range(lanes))
        grant = Signal(range(lanes))
        move = Signal()
        # Later assignments win: the lowest full lane, then the lowest at or after ptr.
        for j in reversed(range(lanes)):
            with m.If(h_full[j]):
                m.d.comb += grant.eq(j)
        for j in reversed(range(lanes)):
            with m.If(h_full[j] & (ptr <= j)):
                m.d.comb += grant.eq(j)
        m.d.comb += move.eq(h_full.any() & (~o_valid | self.o.ready))
        for j in range(lanes):
            m.d.comb += h_take[j].eq(move & (grant == j))
        with m.If(move):
            m.d.sync += [o_valid.eq(1), ptr.eq(Mux(grant == lanes - 1, 0, grant + 1))]
        with m.Elif(self.o.ready):
            m.d.sync += o_valid.eq(0)

        m.d.comb += self.idle.eq(~(Cat(*busy).any() | h_full.any() | o_valid))
        with m.If(self.start):
            m.d.sync += [o_valid.eq(0), ptr.eq(0)]
        return m
