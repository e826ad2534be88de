"""One stream to several: every sink takes every payload exactly once, at its own pace."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamBroadcast"]


class StreamBroadcast(wiring.Component):
    """Copies the stream ``i`` to the streams ``o[0..n-1]``.

    A sink that has taken the current payload is masked off (a register per sink) until
    every sink has; then ``i`` transfers. Each ``o[j].valid`` depends only on ``i.valid``
    and that register, never on a ready; ``i.ready`` depends on the sinks' ``ready``.

    Latency: none (combinational). Throughput: one payload per clock while all sinks are
    ready together; otherwise a payload takes until the slowest sink has taken it.
    """

    def __init__(self, shape, n: int):
        if n < 1:
            raise ValueError(f"a broadcast needs at least one sink, not {n}")
        self._n = n
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)).array(n),
        })

    def elaborate(self, platform):
        m = Module()
        taken = Signal(self._n)
        done = Signal(self._n)
        for j, sink in enumerate(self.o):
            m.d.comb += [
                sink.valid.eq(self.i.valid & ~taken[j]),
                sink.payload.eq(self.i.payload),
                done[j].eq(taken[j] | sink.ready),
            ]
        m.d.comb += self.i.ready.eq(done.all())
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += taken.eq(0)
        with m.Else():
            m.d.sync += taken.eq(taken | Cat(*(s.valid & s.ready for s in self.o)))
        return m
