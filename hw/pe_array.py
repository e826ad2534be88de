"""The output-stationary systolic array: ``rows`` x ``cols`` PEs with streams at its edges.

Computes ``golden.fixedpoint.accumulate(x, w, bw)`` (``x`` (M, N), ``w`` (cols, N)):
``rows`` output positions at a time, one fan-in index ``k`` per clock. The dataflow, the
timing and the ports are described in docs/pe-array.md.

Ref: Kung, "Why systolic architectures?" (IEEE Computer, 1982); Gemmini's PE -> Mesh ->
MeshWithDelays layering (here ``PE`` -> ``PEArray`` with ``Skew`` at the edges).
"""

import functools
import operator

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.global_buffer import global_buffer
from hw.pe import PE, ActivationLane, multiplier_ports
from hw.skew import Skew

__all__ = ["AccumulatorVector", "ActivationVector", "PEArray", "WeightVector"]


class ActivationVector(data.StructLayout):
    """One fan-in index ``k`` of ``rows`` output positions: ``x[r]`` is ``x[m_r, k]``.

    ``mask`` bit ``r`` is set when row ``r`` holds a real output position (a batch whose
    ``M`` is not a multiple of ``rows`` ends with a partial group); a row whose bit is clear
    neither accumulates nor emits. ``first`` marks ``k = 0`` and ``last`` ``k = N - 1`` of
    the group's reduction (both on one vector when ``N = 1``). ``mask`` must not change
    within a reduction.
    """

    def __init__(self, config):
        super().__init__({
            "x": data.ArrayLayout(signed(config.bw), config.rows),
            "mask": config.rows,
            "first": 1,
            "last": 1,
        })


class WeightVector(data.StructLayout):
    """The weights of fan-in index ``k`` for every column: ``w[c]`` is ``w[c, k]``."""

    def __init__(self, config):
        super().__init__({"w": data.ArrayLayout(signed(config.bw), config.cols)})


class AccumulatorVector(data.StructLayout):
    """One output position's finished accumulators: ``acc[c]`` is ``sum_k x[m, k] w[c, k]``."""

    def __init__(self, config):
        super().__init__({"acc": data.ArrayLayout(signed(config.acc_width), config.cols)})


class _ColumnResult(data.StructLayout):
    def __init__(self, config):
        super().__init__({"acc": signed(config.acc_width), "valid": 1})


class PEArray(wiring.Component):
    """An output-stationary ``rows`` x ``cols`` array of ``PE`` (submodules ``pe_{r}_{c}``).

    PE ``(r, c)`` accumulates ``sum_k x[m_r, k] · w[c, k]`` for the output position ``m_r``
    that row ``r`` holds in the current group. Activations move east along the rows,
    weights south down the columns, both skewed by ``Skew`` so that ``x[m_r, k]`` and
    ``w[c, k]`` meet in PE ``(r, c)``. A finished reduction is read from each column through
    a bus (in any clock at most one row of a column finishes), de-skewed, and leaves as one
    ``AccumulatorVector`` per live row, row 0 first.

    Ports:
        ``i`` (in stream, ``ActivationVector``): one fan-in index of ``rows`` positions.
        ``w`` (in stream, ``WeightVector``): the weights of the same fan-in index. ``i`` and
            ``w`` transfer together (each one's ``ready`` looks at the other's ``valid``).
        ``o`` (out stream, ``AccumulatorVector``): ``popcount(mask)`` vectors per group.

    With ``row_broadcast`` (``AcceleratorConfig``), a row's activation goes to all its PEs
    in the same clock, the weights enter the columns unskewed and there is no de-skew.

    With ``fc_on_array``, ``mul_a[j]``, ``mul_b[j]`` (out) and ``mul_p[j]`` (in) are PE
    ``(0, j)``'s multiplier, outside the array (``PE``'s ``shared``), for ``j`` below
    ``decode_lanes``; whoever instantiates the array must return ``mul_a[j] · mul_b[j]`` on
    ``mul_p[j]`` in the same clock whenever the array runs.

    Latency: the first output vector of a group is valid ``row_clocks + 3`` clocks after the
    transfer of its ``last`` input vector (``AcceleratorConfig.row_clocks``: ``cols``, or 1
    with ``row_broadcast``); row ``r``'s vector ``r`` clocks after that.
    Throughput: one input vector per clock while reductions are at least ``rows`` long
    (``N >= rows``). A ``last`` vector is accepted at least ``rows`` clocks after the
    previous one, because a group puts up to ``rows`` vectors on the single output stream,
    so shorter reductions run at ``N / rows`` vectors per clock.
    Back-pressure: the whole array (skews, PEs) advances only in clocks where ``step`` is
    high, and ``step`` is a register: high when the two-entry output queue (``o``'s payload
    register and one skid register behind it) will have a free entry in the clock it
    governs, whatever the array pushes into it in the current one. So ``o.ready`` reaches
    only the queue and that one flip-flop, never the array's thousands of registers
    through logic; when ``o`` stalls, the array runs one clock more (into the skid
    register), then stops, and ``i`` and ``w`` are not ready. Nothing is dropped or
    overwritten. ``o.valid`` never depends on ``o.ready``; ``i.ready`` and ``w.ready``
    depend on the other input's ``valid`` (and ``i.ready`` on ``i.payload.last``), not on
    ``o.ready``.
    """

    def __init__(self, config):
        self._config = config
        ports = {
            "i": In(stream.Signature(ActivationVector(config))),
            "w": In(stream.Signature(WeightVector(config))),
            "o": Out(stream.Signature(AccumulatorVector(config))),
        }
        if config.fc_on_array:
            # PE (0, j)'s multiplier, for decode lane j's sparse fc multiplies.
            ports.update(multiplier_ports(config, config.decode_lanes))
        super().__init__(ports)

    def elaborate(self, platform):
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols
        m = Module()

        # One clock enable for everything: a stalled output freezes the whole pipeline, so
        # the fixed timing between PEs (which replaces handshakes inside the array) holds.
        # It is a register, set from the output queue's fill: `o.ready` decided the enable
        # combinationally before, through the enable's global buffer to every PE (adding
        # the buffer cost the 13x10 ECP5 build's placement estimate 34.8 -> 29.1 MHz;
        # docs/pe-array.md).
        step = Signal(init=1)
        # The enable reaches every register of the array (thousands on 13x10): on the ECP5
        # it goes through a global buffer (a DCCA), as routed in the fabric it was, after
        # the reset, the most congested net of the 13x10 build. Logic uses ``step`` itself.
        en = global_buffer(m, platform, step, "en_buf")

        # Enabled clocks until another `last` may enter: a group's rows leave the columns
        # one per clock, so two groups' `last`s closer than `rows` would collide on the
        # column buses.
        gap = Signal(range(rows))
        last_ok = Signal()
        take = Signal()
        m.d.comb += [
            last_ok.eq((gap == 0) | ~self.i.payload.last),
            take.eq(step & self.i.valid & self.w.valid & last_ok),
            self.i.ready.eq(step & self.w.valid & last_ok),
            self.w.ready.eq(step & self.i.valid & last_ok),
        ]
        with m.If(step):
            with m.If(take & self.i.payload.last):
                m.d.sync += gap.eq(rows - 1)
            with m.Elif(gap != 0):
                m.d.sync += gap.eq(gap - 1)

        m.submodules.a_skew = a_skew = Skew(ActivationLane(cfg), rows)
        m.d.comb += a_skew.en.eq(en)
        if cfg.row_broadcast:
            # Every column sees a row's activation in the same clock: the weights need no
            # skew and the columns' results no de-skew (they finish together).
            w_in = self.w.payload.w
            results = [Signal(_ColumnResult(cfg), name=f"result_{c}") for c in range(cols)]
            out = results
        else:
            m.submodules.w_skew = w_skew = Skew(signed(cfg.bw), cols)
            m.submodules.o_deskew = o_deskew = Skew(_ColumnResult(cfg), cols, reverse=True)
            m.d.comb += [w_skew.en.eq(en), o_deskew.en.eq(en)]
            w_in, results, out = w_skew.o, o_deskew.i, o_deskew.o
        for r in range(rows):
            lane = a_skew.i[r]
            m.d.comb += [
                lane.x.eq(self.i.payload.x[r]),
                lane.valid.eq(take & self.i.payload.mask[r]),
                lane.first.eq(self.i.payload.first),
                lane.last.eq(self.i.payload.last),
            ]
        if not cfg.row_broadcast:
            for c in range(cols):
                # Weights enter every enabled clock; without `take` they meet no valid
                # activation.
                m.d.comb += w_skew.i[c].eq(self.w.payload.w[c])

        # With fc_on_array, the first row's first decode_lanes PEs show their multipliers'
        # operands on mul_a / mul_b and take the product from mul_p: the accelerator
        # multiplies there, for the array or for the fc path, whichever runs.
        shared = cfg.decode_lanes if cfg.fc_on_array else 0
        pes = [[PE(cfg, shared=r == 0 and c < shared) for c in range(cols)]
               for r in range(rows)]
        for j in range(shared):
            m.d.comb += [self.mul_a[j].eq(pes[0][j].mul_a), self.mul_b[j].eq(pes[0][j].mul_b),
                         pes[0][j].mul_p.eq(self.mul_p[j])]
        for r in range(rows):
            for c in range(cols):
                pe = pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [
                    pe.en.eq(en),
                    pe.a_i.eq(a_skew.o[r] if c == 0 or cfg.row_broadcast
                              else pes[r][c - 1].a_o),
                    pe.w_i.eq(w_in[c] if r == 0 else pes[r - 1][c].w_o),
                ]

        # Column buses: row r of a group finishes in clock t + r + c (t + r with
        # row_broadcast), so in any clock at most one PE of a column has `done` (the `gap`
        # rule keeps groups apart), and an AND-OR mux reads it.
        for c in range(cols):
            col = [pes[r][c] for r in range(rows)]
            if rows == 1:
                # One PE a column: its accumulator is the bus (read only with `done`).
                m.d.comb += [results[c].acc.eq(col[0].acc), results[c].valid.eq(col[0].done)]
                continue
            m.d.comb += [
                results[c].acc.eq(
                    functools.reduce(operator.or_, (Mux(pe.done, pe.acc, 0) for pe in col))),
                results[c].valid.eq(functools.reduce(operator.or_, (pe.done for pe in col))),
            ]

        if rows == 1 and cfg.row_broadcast:
            self._one_entry_queue(m, step, out, pes[0][0])
            return m

        # The output queue: `o`'s payload register, then a skid register. The array pushes
        # at most one vector in a clock with `step` high (the last column's de-skew delay
        # is 0). `step` is registered from the queue's fill after this clock, so the array
        # only steps into a clock that starts with a free entry.
        push = Signal()
        pop = Signal()
        full = Signal()  # the skid register holds a vector (behind the one on `o`)
        skid = Signal(AccumulatorVector(cfg))
        new = Signal(AccumulatorVector(cfg))
        m.d.comb += [
            push.eq(step & out[0].valid),
            pop.eq(self.o.valid & self.o.ready),
        ]
        for c in range(cols):
            m.d.comb += new.acc[c].eq(out[c].acc)
        with m.If(full):
            # (no push: `step` is low while the skid register is full)
            with m.If(pop):
                m.d.sync += [self.o.payload.eq(skid), full.eq(0)]
        with m.Elif(self.o.valid & ~pop):
            with m.If(push):
                m.d.sync += [skid.eq(new), full.eq(1)]
        with m.Else():
            m.d.sync += self.o.valid.eq(push)
            with m.If(push):
                m.d.sync += self.o.payload.eq(new)
        # Entries after this clock: (o.valid + full) + push - pop; step iff at most one.
        m.d.sync += step.eq(~(full & ~pop) & ~(self.o.valid & ~pop & push))
        return m

    def _one_entry_queue(self, m, step, out, pe):
        """With one row and ``row_broadcast``: ``o``'s payload register is the whole queue
        (no skid register, ``cols · acc_width`` flip-flops fewer). The row's PEs finish
        together and their results go out undelayed, so whether the next clock would push
        is known a clock ahead (PE ``finishing``, or ``done`` held):
        ``step`` is low only in a clock that starts with the entry full and a result
        waiting. The array then waits for the pop and steps in the clock after it; when
        results come further apart than the consumer takes to pop (``N`` clocks apart, a
        one-row drain takes a vector in ``cols``), it never waits. ``o.ready`` still
        reaches only the queue and the ``step`` flip-flop."""
        cols = self._config.cols
        push = Signal()
        pop = Signal()
        m.d.comb += [
            push.eq(step & out[0].valid),
            pop.eq(self.o.valid & self.o.ready),
        ]
        # (never a push into a full entry: step is low in a clock that starts full with a
        # result done)
        with m.If(push):
            m.d.sync += [self.o.valid.eq(1)]
            for c in range(cols):
                m.d.sync += self.o.payload.acc[c].eq(out[c].acc)
        with m.Elif(pop):
            m.d.sync += self.o.valid.eq(0)
        full_next = push | (self.o.valid & ~pop)
        done_next = Mux(step, pe.finishing, pe.done)
        m.d.sync += step.eq(~(full_next & done_next))
