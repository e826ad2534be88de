"""Transports from synchronous host code (``espalier.host.Device``) onto a simulated gateware
top, so the host library runs unchanged against the Amaranth simulator and the board.

``SimTransport`` drives a top's byte streams (a ``hw.host_interface.HostInterface``'s ``i``
and ``o``, or any top with an 8-bit stream in and out); ``UARTSimTransport`` drives a top's
UART pins (``hw.uart`` timing: 8N1, ``divisor`` clocks a bit). ``write`` queues bytes;
``read(n, timeout)`` advances the simulation until ``n`` bytes have come out, or until
no byte has come for ``timeout_cycles`` clocks after the last byte written was sent (the
host's ``timeout`` in seconds is ignored: simulated time is what counts here); it then
returns what it has, as pyserial does, and ``Device`` raises ``LinkError``. ``cycles``
counts the clocks simulated so far; ``run(cycles)`` simulates more without reading.

Both own their ``amaranth.sim.Simulator`` (``sim``, one clock on ``sync``); add further
testbenches to it before the first read. ``vcd`` names a file for waveforms (written on
``close``).
"""

import collections

from amaranth.sim import Simulator

__all__ = ["SimTransport", "UARTSimTransport"]


class _SimLink:
    def __init__(self, dut, *, timeout_cycles, quiet_cycles, period, rng, stall, vcd):
        self.dut = dut
        self.timeout_cycles = timeout_cycles
        self.quiet_cycles = quiet_cycles
        self.byte_time = 0.0
        self._rng = rng
        self._stall = stall
        self._period = period
        self._tx = collections.deque()  # host to device
        self._rx = collections.deque()  # device to host
        self.cycles = 0
        self._target = 0
        self.sim = Simulator(dut)
        self.sim.add_clock(period)
        self.sim.add_testbench(self._pump, background=True)
        self._vcd = None
        if vcd is not None:
            self._vcd = self.sim.write_vcd(vcd)
            self._vcd.__enter__()

    def _go(self) -> bool:
        return self._rng is None or self._rng.random() >= self._stall

    # -- the transport interface --------------------------------------------------------------

    def _sending(self) -> bool:
        return bool(self._tx)

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the device (it is sent while the simulation runs)."""
        self._tx.extend(bytes(data))

    def read(self, n: int, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes from the device: fewer if none came for ``timeout_cycles``
        after the last byte written was sent."""
        idle = 0
        while len(self._rx) < n and idle < self.timeout_cycles:
            before = len(self._rx)
            self.run(1)
            idle = 0 if len(self._rx) > before or self._sending() else idle + 1
        return bytes(self._rx.popleft() for _ in range(min(n, len(self._rx))))

    def flush_input(self) -> None:
        """Run until every byte written has been sent and the device has then sent nothing
        for ``quiet_cycles``; discard what came."""
        idle = 0
        while idle < self.quiet_cycles:
            before = len(self._rx)
            self.run(1)
            idle = 0 if len(self._rx) > before or self._sending() else idle + 1
        self._rx.clear()

    # -- simulation -----------------------------------------------------------------------------

    def run(self, cycles: int) -> None:
        """Simulate ``cycles`` more clocks."""
        self._target += cycles
        self.sim.run_until(self._target * self._period)

    @property
    def pending(self) -> int:
        """Bytes written but not yet taken by the device."""
        return len(self._tx)

    def close(self) -> None:
        """Finish the waveform file, if any."""
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SimTransport(_SimLink):
    """A simulated top's byte streams: ``i`` (the top's input, 8-bit payload; default
    ``dut.i``) and ``o`` (its output; default ``dut.o``).

    With ``rng`` (e.g. ``numpy.random.default_rng(seed)``), each clock the host withholds
    ``i.valid`` (before a transfer) and ``o.ready`` with probability ``stall``, keeping the
    stream rules (a byte offered stays offered until taken).
    """

    def __init__(self, dut, *, i=None, o=None, timeout_cycles: int = 100_000,
                 quiet_cycles: int = 1000, period: float = 1e-6, rng=None,
                 stall: float = 0.0, vcd=None):
        self._i = dut.i if i is None else i
        self._o = dut.o if o is None else o
        super().__init__(dut, timeout_cycles=timeout_cycles, quiet_cycles=quiet_cycles,
                         period=period, rng=rng, stall=stall, vcd=vcd)

    async def _pump(self, ctx):
        i, o = self._i, self._o
        valid = False
        ready = self._go()
        ctx.set(o.ready, ready)
        async for _, _, i_ready, o_valid, o_payload in ctx.tick().sample(
                i.ready, o.valid, o.payload):
            self.cycles += 1
            if valid and i_ready:
                self._tx.popleft()
                valid = False
            if ready and o_valid:
                self._rx.append(int(o_payload))
            if not valid and self._tx and self._go():
                valid = True
                ctx.set(i.payload, self._tx[0])
            ctx.set(i.valid, valid)
            ready = self._go()
            ctx.set(o.ready, ready)


class UARTSimTransport(_SimLink):
    """A simulated top's UART pins: the host drives ``rx`` (the top's receive pin; default
    ``dut.rx``) and listens on ``tx`` (default ``dut.tx``), 8N1 at ``divisor`` clocks a bit.

    The host samples ``tx`` in the middle of each bit; a frame whose stop bit is 0 is
    counted in ``framing_errors`` and dropped. With ``rng``, the host pauses a bit time
    before each byte it sends with probability ``stall``.
    """

    def __init__(self, dut, *, divisor: int, rx=None, tx=None, timeout_cycles: int = 100_000,
                 quiet_cycles: int | None = None, period: float = 1e-6, rng=None,
                 stall: float = 0.0, vcd=None):
        self._rx_pin = dut.rx if rx is None else rx
        self._tx_pin = dut.tx if tx is None else tx
        self.divisor = divisor
        self.framing_errors = 0
        self._out_bits = []
        if quiet_cycles is None:
            quiet_cycles = 40 * divisor
        super().__init__(dut, timeout_cycles=timeout_cycles, quiet_cycles=quiet_cycles,
                         period=period, rng=rng, stall=stall, vcd=vcd)

    def _sending(self) -> bool:
        return bool(self._tx) or bool(self._out_bits)

    async def _pump(self, ctx):
        d = self.divisor
        ctx.set(self._rx_pin, 1)
        self._out_bits = []  # line levels still to send, one per clock
        out_bits = self._out_bits
        in_timer = None  # clocks since the start bit's falling edge, while receiving
        in_bits = []
        in_break = False  # after a framing error: waiting for the line to go high
        async for _, _, line in ctx.tick().sample(self._tx_pin):
            self.cycles += 1
            # Receive: sample in the middle of each bit after the falling edge.
            if in_break:
                in_break = not line
            elif in_timer is None:
                if not line:
                    in_timer, in_bits = 0, []
            else:
                in_timer += 1
                if in_timer % d == d // 2:
                    in_bits.append(line)
                    if len(in_bits) == 10:
                        if in_bits[0] == 0 and in_bits[9] == 1:
                            self._rx.append(sum(b << n for n, b in enumerate(in_bits[1:9])))
                        else:
                            self.framing_errors += 1
                        in_timer = None
                        in_break = not in_bits[9]
            # Send.
            if not out_bits and self._tx:
                if self._go():
                    byte = self._tx.popleft()
                    frame = [0] + [(byte >> n) & 1 for n in range(8)] + [1]
                    out_bits.extend(b for b in frame for _ in range(d))
                else:
                    out_bits.extend([1] * d)
            ctx.set(self._rx_pin, out_bits.pop(0) if out_bits else 1)
