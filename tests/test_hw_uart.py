# amaranth: UnusedElaboratable=no
"""UARTTx looped into UARTRx with random stalls; framing errors and overruns; the echo
through the host-side UART transport (espalier.simlink.UARTSimTransport)."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from espalier.simlink import UARTSimTransport
from hw.uart import UARTRx, UARTTx
from tests.streams import stream_get, stream_put


class Loop(wiring.Component):
    """A transmitter's pin wired to a receiver's."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def __init__(self, divisor):
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.rx = rx = UARTRx(self.divisor)
        wiring.connect(m, wiring.flipped(self.i), tx.i)
        wiring.connect(m, rx.o, wiring.flipped(self.o))
        m.d.comb += rx.rx.eq(tx.tx)
        return m


class Echo(wiring.Component):
    """Pins in, the same bytes back out."""

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, divisor):
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        wiring.connect(m, urx.o, utx.i)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        return m


@pytest.mark.parametrize("divisor, seed", [(4, 0), (5, 1), (8, 2)])
def test_loopback(divisor, seed):
    rng = np.random.default_rng(seed)
    data = [int(b) for b in rng.integers(0, 256, 40)] + [0x00, 0xFF, 0x55, 0xAA]
    dut = Loop(divisor)
    got = []

    async def send(ctx):
        await stream_put(ctx, dut.i, data, rng=rng, stall=0.5)

    async def receive(ctx):
        got.extend(await stream_get(ctx, dut.o, len(data), rng=rng, stall=0.3,
                                    timeout=30 * divisor))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.run()
    assert got == data


def test_bad_divisor():
    with pytest.raises(ValueError, match="at least 4"):
        UARTRx(3)
    with pytest.raises(ValueError, match="at least 4"):
        UARTTx(2)


def _bits(byte, stop=1):
    return [0] + [(byte >> n) & 1 for n in range(8)] + [stop]


@pytest.mark.parametrize("divisor", [4, 7])
def test_framing_error_and_glitch(divisor):
    """A frame with a 0 stop bit is dropped with ``frame_error``; a short low glitch is no
    start bit; a byte after a break is received."""
    dut = UARTRx(divisor)
    errors = []
    got = []
    line = ([1] * 5 + [0] * (divisor // 2 - 1) + [1] * 10  # glitch
            + [b for b in _bits(0x3C, stop=0) for _ in range(divisor)]
            + [0] * 3 * divisor + [1] * 2 * divisor  # the line stays low (a break)
            + [b for b in _bits(0xC3) for _ in range(divisor)] + [1] * 4 * divisor)

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for level in line:
            ctx.set(dut.rx, level)
            _, _, valid, payload, frame_error = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.frame_error)
            if valid:
                got.append(payload)
            errors.append(frame_error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [0xC3]
    assert sum(errors) == 1


def test_overrun():
    """A byte that completes while ``o`` still holds the previous one is dropped."""
    d = 4
    dut = UARTRx(d)
    overruns = []
    line = [1] * 4 + [b for x in (0x11, 0x22, 0x33) for b in _bits(x) for _ in range(d)]
    line += [1] * 8

    async def bench(ctx):
        for level in line:
            ctx.set(dut.rx, level)
            _, _, overrun = await ctx.tick().sample(dut.overrun)
            overruns.append(overrun)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0x11

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sum(overruns) == 2


def test_uart_transport_echo():
    """The host-side UART transport's bit timing matches hw.uart's, both ways."""
    rng = np.random.default_rng(3)
    data = bytes(int(b) for b in rng.integers(0, 256, 30))
    link = UARTSimTransport(Echo(5), divisor=5, rng=rng, stall=0.3, timeout_cycles=200)
    link.write(data)
    assert link.read(len(data)) == data
    assert link.read(1) == b""  # nothing more: the read times out
    assert link.framing_errors == 0
