"""Block-RAM read ports that Yosys maps without collision logic.

A synchronous read port straight from ``amaranth.lib.memory`` is marked "the old data
when a write hits the same address in the same clock". Neither the iCE40's nor the
ECP5's block RAM promises that, so Yosys emulates it: for every read port it compares the
read address with the write address and multiplexes the written data in, logic that sits
on the read address's path (on the Huffman decoder it was the critical path) and costs
LUTs per port. Where the design never reads a word in the clock it is written, that logic
is wasted. ``read_port`` builds the same port as an asynchronous read followed by a
register, which Yosys folds back into the RAM's synchronous port (``memory_dff``), and
marks the memory ``no_rw_check``, which for such folded ports declares the collision
don't-care: no emulation. In simulation the port behaves exactly as a synchronous one
(the register takes the word the memory holds before the clock's write).
"""

from amaranth.hdl import Signal
from amaranth.lib import memory

__all__ = ["SyncReadPort", "read_port"]


class SyncReadPort:
    """``addr`` and ``en`` in; ``data`` is the word at ``addr`` of the last clock with
    ``en`` high, held while ``en`` is low (as ``memory.ReadPort`` in a sync domain)."""

    def __init__(self, addr, en, data):
        self.addr = addr
        self.en = en
        self.data = data


def read_port(m, mem: memory.Memory, *, name: str = "rd") -> SyncReadPort:
    """A synchronous read port on ``mem`` (added to module ``m``) without collision
    logic. Only for memories whose words are never read in the clock they are written,
    or whose user ignores such a read (the data is undefined on the device)."""
    mem.attrs["no_rw_check"] = 1
    port = mem.read_port(domain="comb")
    en = Signal(name=f"{name}_en", init=1)  # as ``memory.ReadPort``: enabled unless driven
    # No reset: a reset value would be emulated with logic on the RAM's output.
    data = Signal(mem.shape, name=f"{name}_data", reset_less=True)
    with m.If(en):
        m.d.sync += data.eq(port.data)
    return SyncReadPort(port.addr, en, data)
