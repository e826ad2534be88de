"""Post-processing: bias, requantize and ReLU of exact accumulators into the activation
buffer, one accumulator per clock.

Ref: docs/numerics.md, "Steps of one layer", steps 2-5; mirrors ``golden.model.postprocess``
bit for bit (``requantize(acc + align_bias(...))``, then ``relu``). Max-pooling (step 6)
happens before, on the accumulators (``ConvDrain``): the steps here never decrease a value,
so the maximum of a window's outputs is the output of its largest accumulator. With
``config.pool_after_post`` (one row, one item a clock) it happens here, after them, on the
``bw``-bit outputs.
"""

from itertools import pairwise

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.fixedpoint import int_range
from hw.layouts import PostItem, PostParams
from hw.ram import read_port

__all__ = ["PostProcess"]


class PostProcess(wiring.Component):
    """Adds the bias, requantizes and applies ReLU to accumulators, into an output bank.

    Ports:
        ``params`` (in, ``PostParams``): ``bias_shift`` = ``acc_fl - b_fl``, ``out_shift`` =
            ``acc_fl - out_fl`` (negative: a saturating left shift) and ``relu``. Steady
            from the clock the layer's first item is accepted until ``idle``.
        ``bias_wr_addr``, ``bias_wr_data``, ``bias_wr_en`` (in): the write port of the bias
            memory (``max_channels`` raw biases, signed ``acc_width`` bits), written before
            a layer while no item is in the pipeline.
        ``i`` (in stream of ``PostItem``): accumulators with their bias ``channel`` and
            output word ``addr`` (with ``config.pool_after_post`` also each one's pooling
            window's flags, ``opens``, ``closes`` and ``live``: ``PostItem``).
        ``wr_addr``, ``wr_data``, ``wr_en`` (out): the output bank's write port.
        ``wr_data1``, ``wr_two`` (out, ``drain_width`` 2 only): an item's second result
            (``acc1``, to ``wr_addr + 1``) and whether it is written (``two``).
        ``idle`` (out): no accepted item is in the pipeline, and every write has landed
            (with ``pool_after_post``: no item of a live channel; a dead column's items
            write nothing).

    Precondition (the sequencer checks it): every bias shifted left by ``bias_shift`` fits
    in ``acc_width`` signed bits, so the aligned bias is exact. A nonzero bias then has
    ``bias_shift <= acc_width - 1``, and a larger ``bias_shift`` (all biases 0) is used
    modulo ``2^ceil(log2(acc_width))``, which still gives 0.

    Stages: ``a_`` bias read; ``b_`` bias aligned; ``c_`` sum; ``d_`` rounded shift;
    ``e_`` saturated and ReLU-ed, and written (with ``pool_after_post``: the larger of it
    and the channel's running maximum, unless the item opens its window, written when it
    closes the window of a live channel).
    Latency: an item accepted in clock 0 is written (``wr_en``) in clock 5; ``idle`` rises
    in clock 6 after the last item, when the bank holds it.
    Throughput: one item per clock (two results with ``drain_width`` 2: the second goes
    through its own copy of stages ``b``-``e``, with the same bias).
    Back-pressure: none; the pipeline advances every clock and writes never stall, so
    ``i.ready`` is always 1.
    """

    def __init__(self, config):
        self._config = config
        ports = {
            "params": In(PostParams(config)),
            "bias_wr_addr": In(unsigned(config.channel_width)),
            "bias_wr_data": In(signed(config.acc_width)),
            "bias_wr_en": In(1),
            "i": In(stream.Signature(PostItem(config))),
            "wr_addr": Out(unsigned(config.act_addr_width)),
            "wr_data": Out(signed(config.bw)),
            "wr_en": Out(1),
            "idle": Out(1),
        }
        if config.drain_width == 2:
            ports["wr_data1"] = Out(signed(config.bw))
            ports["wr_two"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        p = self.params
        acc_w = cfg.acc_width
        sum_w = acc_w + 1  # acc + aligned bias, exact
        lo, hi = int_range(cfg.bw)

        m.submodules.bias = bias = memory.Memory(shape=signed(acc_w), depth=cfg.max_channels,
                                                 init=[])
        bias_wr = bias.write_port()
        bias_rd = read_port(m, bias, name="bias_rd")  # (written only between layers)
        m.d.comb += [
            bias_wr.addr.eq(self.bias_wr_addr),
            bias_wr.data.eq(self.bias_wr_data),
            bias_wr.en.eq(self.bias_wr_en),
            bias_rd.addr.eq(self.i.payload.channel + p.bias_base),
            self.i.ready.eq(1),
        ]

        # Every stage carries the item's valid bit and its address along.
        stages = "abcde"
        valid = {s: Signal(name=f"{s}_valid") for s in stages}
        addr = {s: Signal(cfg.act_addr_width, name=f"{s}_addr") for s in stages}
        m.d.sync += [valid["a"].eq(self.i.valid), addr["a"].eq(self.i.payload.addr)]
        for prev, cur in pairwise(stages):
            m.d.sync += [valid[cur].eq(valid[prev]), addr[cur].eq(addr[prev])]
        if not cfg.pool_after_post:
            m.d.comb += self.idle.eq(~Cat(*valid.values()).any())

        # -- a: the bias word is being read ------------------------------------------------
        pairs = cfg.drain_width == 2
        a_acc = Signal(signed(acc_w))
        m.d.sync += a_acc.eq(self.i.payload.acc)
        two = {s: Signal(name=f"{s}_two") for s in stages}
        if pairs:
            a_acc1 = Signal(signed(acc_w))
            m.d.sync += [a_acc1.eq(self.i.payload.acc1), two["a"].eq(self.i.payload.two)]
            for prev, cur in pairwise(stages):
                m.d.sync += two[cur].eq(two[prev])

        # The shift amounts, clamped to what the widths need, are registered once (the
        # parameters are steady for a layer), so no comparison sits in front of a shifter.
        # An item accepted in clock 0 meets them from clock 1 on.
        #
        # Requantization is one arithmetic right shift of the sum pre-scaled by 2^pre: a
        # left shift by L <= pre is a right shift by pre - L that drops no bits. A larger L
        # is clamped to pre: any nonzero sum shifted left by bw - 1 or more is at or past an
        # end of the bw-bit range (-1 << (bw-1) is its low end), so saturation gives the
        # same. A right shift past sum_w is clamped to sum_w, where every sum rounds to 0.
        pre = cfg.bw - 1
        s = p.out_shift
        l_bias_sh = Signal(range(acc_w))
        l_shift = Signal(range(sum_w + pre + 1))
        m.d.sync += [
            l_bias_sh.eq(p.bias_shift),
            l_shift.eq(Mux(s <= -pre, 0, Mux(s >= sum_w, sum_w + pre, s + pre))),
        ]

        # -- b: golden.fixedpoint.align_bias: b << (acc_fl - b_fl), exact ------------------
        # The precondition makes the truncation to acc_width bits exact and lets the shift
        # amount be taken modulo the width of l_bias_sh (see the class docstring).
        b_bias = Signal(signed(acc_w))
        m.d.sync += b_bias.eq((bias_rd.data << l_bias_sh)[:acc_w].as_signed())

        def result(a_acc, k):
            """Stages b-e of one accumulator (``k`` names its signals); the output."""
            b_acc = Signal(signed(acc_w), name=f"b_acc{k}")
            m.d.sync += b_acc.eq(a_acc)

            # -- c: acc + aligned bias, exact in acc_width + 1 bits -----------------------
            c_sum = Signal(signed(sum_w), name=f"c_sum{k}")
            m.d.sync += c_sum.eq(b_acc + b_bias)

            # -- d: golden.fixedpoint.round_shift: round half up (requantize before
            # saturate). (x + 2^(s-1)) >> s == ((2x >> s) + 1) >> 1 with arithmetic
            # shifts; that is x for s == 0 and the exact x << -s for s < 0 (2x << -s is
            # even).
            scaled = Cat(Const(0, pre + 1), c_sum).as_signed()  # 2x · 2^pre
            halves = Signal(signed(len(scaled)), name=f"halves{k}")
            m.d.comb += halves.eq(scaled >> l_shift)
            d_r = Signal(signed(len(scaled)), name=f"d_r{k}")
            m.d.sync += d_r.eq((halves + 1) >> 1)

            # -- e: golden.fixedpoint.saturate to bw bits, then golden.fixedpoint.relu -----
            # d_r fits bw bits when its bits from bw - 1 up are all equal to its sign.
            d_top = d_r[cfg.bw - 1:]
            d_neg = d_r[-1]
            e_y = Signal(signed(cfg.bw), name=f"e_y{k}")
            m.d.sync += e_y.eq(Mux(p.relu & d_neg, 0,
                                   Mux(d_top.all() | ~d_top.any(), d_r[:cfg.bw].as_signed(),
                                       Mux(d_neg, lo, hi))))
            return e_y

        e_y = result(a_acc, "")
        wr_en = valid["e"]
        if cfg.pool_after_post:
            # Max-pooling on the outputs: each channel's running maximum, ``cols`` of them
            # rotating a place an item (a tile's every vector is ``cols`` items, channel
            # after channel), so that the item's channel's is always ``mx[0]``; a window's
            # first item starts it again, its last is written, if its channel is live.
            flags = ("opens", "closes", "live")
            flag = {(f, st): Signal(name=f"{st}_{f}") for f in flags for st in stages}
            for f in flags:
                m.d.sync += flag[f, "a"].eq(self.i.payload[f])
                for prev, cur in pairwise(stages):
                    m.d.sync += flag[f, cur].eq(flag[f, prev])
            mx = [Signal(signed(cfg.bw), name=f"mx_{j}") for j in range(cfg.cols)]
            e_max = Signal(signed(cfg.bw))
            m.d.comb += e_max.eq(Mux(flag["opens", "e"] | (e_y > mx[0]), e_y, mx[0]))
            with m.If(valid["e"]):
                m.d.sync += [mx[j].eq(mx[j + 1]) for j in range(cfg.cols - 1)]
                m.d.sync += mx[-1].eq(e_max)
            e_y = e_max
            wr_en = valid["e"] & flag["closes", "e"] & flag["live", "e"]
            # A dead column's item writes nothing: ``idle`` does not wait for it (it only
            # turns the maxima, whose next window starts them again).
            m.d.comb += self.idle.eq(~Cat(*(valid[st] & flag["live", st]
                                            for st in stages)).any())
        if pairs:
            m.d.comb += [self.wr_data1.eq(result(a_acc1, "1")),
                         self.wr_two.eq(valid["e"] & two["e"])]

        m.d.comb += [
            self.wr_addr.eq(addr["e"]),
            self.wr_data.eq(e_y),
            self.wr_en.eq(wr_en),
        ]

        return m
