"""An 8N1 UART: ``UARTRx`` (pin to byte stream) and ``UARTTx`` (byte stream to pin).

A frame is a start bit (0), eight data bits LSB first, a stop bit (1); the line idles at 1.
``divisor`` is clocks per bit (``clk_freq // baud``), at least 4.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx"]


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"the UART divisor (clocks per bit) must be a whole number of at "
                         f"least 4, not {divisor!r}")


class _Rx(enum.Enum, shape=3):
    IDLE = 0
    START = 1
    DATA = 2
    STOP = 3
    BREAK = 4  # after a framing error: wait for the line to go high


class UARTRx(wiring.Component):
    """Receives 8N1 frames on ``rx`` and emits their bytes on ``o``.

    ``rx`` passes a 2-flop synchronizer (it may come straight from a pin). A falling edge
    starts a frame; the start bit is checked half a bit later (a shorter low pulse is a
    glitch and ignored), then each data bit and the stop bit are sampled one bit apart, in
    the middle of their bit time. A byte whose stop bit is 0 is dropped and ``frame_error``
    pulses for a clock; the receiver then waits for the line to go high again.

    Latency: a byte is on ``o`` 3 clocks after the middle of its stop bit (2 of them in
    the synchronizer). Back-pressure: a UART cannot stop its sender, so ``o`` holds one
    byte; a byte that completes while the previous one is still waiting on ``o`` is
    dropped and ``overrun`` pulses (the consumer has about a frame's time, ``10 · divisor``
    clocks, to take each).
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)

        state = Signal(_Rx)
        timer = Signal(range(d))
        bits = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.Switch(state):
            with m.Case(_Rx.IDLE):
                with m.If(~rx):
                    m.d.sync += [state.eq(_Rx.START), timer.eq(d // 2 - 1)]
            with m.Case(_Rx.START):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.d.sync += state.eq(_Rx.IDLE)  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [state.eq(_Rx.DATA), timer.eq(d - 1), bits.eq(0)]
            with m.Case(_Rx.DATA):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(d - 1),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.d.sync += state.eq(_Rx.STOP)
            with m.Case(_Rx.STOP):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.d.sync += state.eq(_Rx.IDLE)
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                with m.Else():
                    m.d.comb += self.frame_error.eq(1)
                    m.d.sync += state.eq(_Rx.BREAK)
            with m.Case(_Rx.BREAK):
                with m.If(rx):
                    m.d.sync += state.eq(_Rx.IDLE)
        return m


class UARTTx(wiring.Component):
    """Sends each byte of ``i`` as an 8N1 frame on ``tx``.

    Takes a byte when idle (``i.ready`` is high only then) and sends it over the next
    ``10 · divisor`` clocks; ``tx`` is a register, high when idle. Throughput: one byte per
    ``10 · divisor + 1`` clocks when ``i`` always has one.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        shreg = Signal(10, init=0x3FF)  # bit 0 is on the line; ones shift in behind
        bits = Signal(range(11))
        timer = Signal(range(d))
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         bits.eq(10), timer.eq(d - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(d - 1)]
        return m
