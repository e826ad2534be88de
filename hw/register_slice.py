"""A register slice for a stream: every output and ``i.ready`` come from registers.

Put between two blocks whose valid/ready handshake would otherwise chain combinational
logic from one block's state through the other's (a consumer's ``ready`` computed from its
own state, feeding a producer's next-state logic). Ref: the "skid buffer" of AXI register
slices.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice"]


class RegisterSlice(wiring.Component):
    """Passes ``i`` to ``o`` through an output register and a skid register.

    Latency: one clock. Throughput: one item per clock. Back-pressure: ``i.ready`` is low
    only while the skid register holds an item (``o`` stalled with its register full and
    one more item taken); ``o.valid`` and ``o.payload`` are registers, held until taken.

    ``clear`` (in, a one-clock pulse; never driven: never cleared) empties the slice: the
    items it holds and an item taken in that clock are dropped, so a producer and consumer
    that restart together (a layer's ``start``) see nothing of the previous run.
    ``i.ready`` does not look at ``clear``, which keeps every output a register.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self._shape)
        skid_valid = Signal()
        take = Signal()
        m.d.comb += [self.i.ready.eq(~skid_valid), take.eq(self.i.valid & self.i.ready)]
        # The payload registers load whatever is offered whenever they are free, taken or
        # not (an empty register's payload is not looked at): their enables then do not
        # wait for ``i.valid``, which comes late from some producers (a decoder's symbol
        # check on its table's output).
        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(take)]
        with m.Elif(take):
            m.d.sync += skid_valid.eq(1)
        with m.If(~skid_valid):
            m.d.sync += skid.eq(self.i.payload)
        with m.If(self.clear):
            m.d.sync += [self.o.valid.eq(0), skid_valid.eq(0)]
        return m
