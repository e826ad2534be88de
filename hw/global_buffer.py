"""A signal with thousands of loads onto the FPGA's global network.

Ref: nextpnr-ecp5 ``globals.cc``: nextpnr promotes only clocks to the global network by
itself; a ``DCCA`` the design instantiates is routed onto a global that can also reach
fabric inputs (resets, clock enables). docs/results.md, "The ULX3S, session 5".
"""

from amaranth.hdl import Const, Instance, Signal
from amaranth.vendor import LatticeECP5Platform

__all__ = ["global_buffer"]


def global_buffer(m, platform, signal, name: str):
    """``signal`` through a global buffer on the ECP5 (a ``DCCA``, submodule ``name``), else
    ``signal`` itself (simulation, the iCE40). Returns the signal the loads should use."""
    if not isinstance(platform, LatticeECP5Platform):
        return signal
    out = Signal(name=f"{name}_o")
    m.submodules[name] = Instance("DCCA", i_CLKI=signal, i_CE=Const(1), o_CLKO=out)
    return out
