"""Stream helpers for Amaranth 0.5 async testbenches, with random valid/ready stalls.

They keep the ``amaranth.lib.stream`` rules from the testbench side: ``valid`` never waits
for ``ready``, and once ``valid`` is high it stays high with the payload unchanged until
the transfer. Stalls are drawn per cycle with probability ``stall`` from ``rng`` (anything
with a ``random()`` method, e.g. ``numpy.random.Generator``); without ``rng`` there are none.
"""

import numbers

__all__ = ["StreamTimeout", "stream_get", "stream_put"]


class StreamTimeout(AssertionError):
    """A stream made no transfer for ``timeout`` cycles: the design under test hangs."""


def _go(rng, stall) -> bool:
    return rng is None or rng.random() >= stall


async def stream_put(ctx, stream, payloads, *, rng=None, stall=0.0, timeout=10_000):
    """Send ``payloads`` (ints, numpy integers or layout values such as dicts) on ``stream``
    (the testbench is the transmitter).

    Returns after the clock edge of the last transfer, with ``valid`` low again.
    """
    # numpy integers are not Amaranth constants; plain ints are.
    payloads = [int(p) if isinstance(p, numbers.Integral) else p for p in payloads]
    if not payloads:
        return
    sent = 0
    valid = _go(rng, stall)
    ctx.set(stream.valid, valid)
    if valid:
        ctx.set(stream.payload, payloads[0])
    idle = 0
    # A multi-shot wait: cheaper than a new trigger per cycle. It is closed on the way out
    # except when the simulator itself ends this (background) testbench.
    ticks = ctx.tick().sample(stream.ready).__aiter__()
    while True:
        _, _, ready = await ticks.__anext__()
        if valid and ready:
            sent += 1
            idle = 0
            if sent == len(payloads):
                ctx.set(stream.valid, 0)
                await ticks.aclose()
                return
            valid = _go(rng, stall)
        else:
            idle += 1
            if idle > timeout:
                await ticks.aclose()
                raise StreamTimeout(f"{stream!r}: no transfer for {timeout} cycles after "
                                    f"{sent} of {len(payloads)} payloads")
            valid = valid or _go(rng, stall)  # once valid, hold it until the transfer
        ctx.set(stream.valid, valid)
        if valid:
            ctx.set(stream.payload, payloads[sent])


async def stream_get(ctx, stream, count, *, rng=None, stall=0.0, timeout=10_000,
                     cycles=None):
    """Receive ``count`` payloads from ``stream`` (the testbench is the receiver).

    Returns the payloads (``int`` or, for a layout, ``amaranth.lib.data.Const``). If
    ``cycles`` is a list, the cycle (counted from this call) of each transfer is appended.
    """
    out = []
    if count == 0:
        return out
    ready = _go(rng, stall)
    ctx.set(stream.ready, ready)
    cycle = idle = 0
    ticks = ctx.tick().sample(stream.valid, stream.payload).__aiter__()
    while True:
        _, _, valid, payload = await ticks.__anext__()
        if valid and ready:
            out.append(payload)
            if cycles is not None:
                cycles.append(cycle)
            idle = 0
            if len(out) == count:
                ctx.set(stream.ready, 0)
                await ticks.aclose()
                return out
        else:
            idle += 1
            if idle > timeout:
                await ticks.aclose()
                raise StreamTimeout(f"{stream!r}: no transfer for {timeout} cycles after "
                                    f"{len(out)} of {count} payloads")
        cycle += 1
        ready = _go(rng, stall)
        ctx.set(stream.ready, ready)
