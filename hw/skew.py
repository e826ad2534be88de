"""Diagonal delay for the edges of the systolic array: skew on the way in, de-skew on the way
out.

A systolic array sees lane ``j`` of a vector ``j`` clocks after lane 0 (the wavefront moves
one PE per clock). ``Skew`` puts that delay in front of the array (``reverse=False``: lane
``j`` waits ``j`` clocks) and takes it out behind it (``reverse=True``: lane ``j`` waits
``n - 1 - j`` clocks, so lanes that left the array ``j`` clocks late line up again).

Ref: Gemmini ``MeshWithDelays`` (the shift registers around ``Mesh``).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Skew"]


class Skew(wiring.Component):
    """Delays lane ``j`` of ``i`` by ``j`` clocks (``n - 1 - j`` with ``reverse=True``).

    Ports:
        ``en`` (in): the clock enable; the delay lines shift only while it is high, so the
            skew stalls with the array it feeds.
        ``i`` (in, ``n`` x ``shape``), ``o`` (out, ``n`` x ``shape``).

    Lane 0 (lane ``n - 1`` when reversed) is combinational. Latency: ``j`` enabled clocks
    for lane ``j`` (``n - 1 - j`` reversed); throughput one vector per enabled clock; no
    handshake: a valid bit, if the shape has one, is delayed with its lane. Costs
    ``n (n - 1) / 2`` registers of ``shape``; their initial value is zero (so a valid bit
    in the shape starts low).
    """

    def __init__(self, shape, n: int, *, reverse: bool = False):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"a skew needs at least one lane, not {n!r}")
        self._shape = shape
        self._n = n
        self._reverse = reverse
        super().__init__({
            "en": In(1),
            "i": In(shape).array(n),
            "o": Out(shape).array(n),
        })

    def delay(self, lane: int) -> int:
        """Enabled clocks between ``i[lane]`` and ``o[lane]``."""
        return self._n - 1 - lane if self._reverse else lane

    def elaborate(self, platform):
        m = Module()
        for j in range(self._n):
            prev = self.i[j]
            for s in range(self.delay(j)):
                reg = Signal(self._shape, name=f"d{s}_lane{j}")
                with m.If(self.en):
                    m.d.sync += reg.eq(prev)
                prev = reg
            m.d.comb += self.o[j].eq(prev)
        return m
