"""PLL settings for the boards' clocks: the dividers an iCE40 ``SB_PLL40_*`` or an ECP5
``EHXPLLL`` needs for an output frequency, found the way the vendor-neutral tools find them.

Ref: icestorm ``icepll`` (``analyze``, SIMPLE feedback: f_pfd = f_in / (DIVR+1),
f_vco = f_pfd · (DIVF+1), f_out = f_vco / 2^DIVQ; PFD 10..133 MHz, VCO 533..1066 MHz,
output 16..275 MHz; FILTER_RANGE from f_pfd). Ref: prjtrellis ``ecppll``
(``calc_pll_params``, feedback from CLKOP: f_pfd = f_in / CLKI_DIV, f_vco = f_pfd ·
CLKFB_DIV · CLKOP_DIV, f_out = f_vco / CLKOP_DIV; PFD 3.125..400 MHz, VCO 400..800 MHz,
output 10..400 MHz; ties go to the VCO nearest 600 MHz).

Both searches return the highest frequency that does not exceed the one asked for, so a
target the PLL cannot make exactly is rounded down, never up past what timing was asked for.
Frequencies are whole hertz and the arithmetic is exact (``fractions.Fraction``).
"""

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["ECP5PLLParams", "ICE40PLLParams", "ecp5_pll", "ice40_pll"]

_MHZ = 1_000_000


@dataclass(frozen=True)
class ICE40PLLParams:
    """``SB_PLL40_PAD`` / ``SB_PLL40_CORE`` parameters, SIMPLE feedback."""

    divr: int
    divf: int
    divq: int
    filter_range: int
    in_hz: int
    out_hz: Fraction

    @property
    def out_mhz(self) -> float:
        return float(self.out_hz / _MHZ)


@dataclass(frozen=True)
class ECP5PLLParams:
    """``EHXPLLL`` parameters, CLKOP fed back to CLKFB."""

    clki_div: int
    clkfb_div: int
    clkop_div: int
    in_hz: int
    out_hz: Fraction

    @property
    def clkop_cphase(self) -> int:
        # ecppll shifts the primary output by 180 degrees (half a period counted in VCO
        # cycles), as Lattice's own tool does; with CLKOP as the feedback the phase of CLKOP
        # against CLKI is locked either way.
        return self.clkop_div // 2

    @property
    def out_mhz(self) -> float:
        return float(self.out_hz / _MHZ)


def _no_pll(device, in_hz, out_hz, lo, hi):
    return ValueError(f"the {device} PLL cannot make {out_hz / _MHZ:g} MHz from "
                      f"{in_hz / _MHZ:g} MHz (its output range is {lo:g}..{hi:g} MHz)")


def ice40_pll(in_hz: int, out_hz: float) -> ICE40PLLParams:
    """The iCE40 PLL setting whose output is the highest frequency not above ``out_hz``."""
    mhz = Fraction(_MHZ)
    target = Fraction(out_hz)
    if target > 275 * mhz:
        raise _no_pll("iCE40", in_hz, out_hz, 16, 275)
    best = None
    for divr in range(16):
        pfd = Fraction(in_hz, divr + 1)
        if not 10 * mhz <= pfd <= 133 * mhz:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 * mhz <= vco <= 1066 * mhz:
                continue
            for divq in range(1, 7):
                f = vco / (1 << divq)
                if not 16 * mhz <= f <= 275 * mhz or f > target:
                    continue
                if best is None or f > best[0]:
                    best = (f, divr, divf, divq, pfd)
    if best is None:
        raise _no_pll("iCE40", in_hz, out_hz, 16, 275)
    f, divr, divf, divq, pfd = best
    pfd_mhz = pfd / mhz
    filter_range = (1 if pfd_mhz < 17 else 2 if pfd_mhz < 26 else 3 if pfd_mhz < 44 else
                    4 if pfd_mhz < 66 else 5 if pfd_mhz < 101 else 6)
    return ICE40PLLParams(divr, divf, divq, filter_range, in_hz, f)


def ecp5_pll(in_hz: int, out_hz: float) -> ECP5PLLParams:
    """The ECP5 PLL setting whose output is the highest frequency not above ``out_hz``
    (on a tie, the VCO nearest 600 MHz, as ecppll)."""
    mhz = Fraction(_MHZ)
    target = Fraction(out_hz)
    if target > 400 * mhz:
        raise _no_pll("ECP5", in_hz, out_hz, 10, 400)
    best = None
    for clki_div in range(1, 129):
        pfd = Fraction(in_hz, clki_div)
        if not Fraction(3125, 1000) * mhz <= pfd <= 400 * mhz:
            continue
        for clkfb_div in range(1, 81):
            f = pfd * clkfb_div
            if not 10 * mhz <= f <= 400 * mhz or f > target:
                continue
            for clkop_div in range(1, 129):
                vco = f * clkop_div
                if not 400 * mhz <= vco <= 800 * mhz:
                    continue
                key = (f, -abs(vco - 600 * mhz))
                if best is None or key > best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div)
    if best is None:
        raise _no_pll("ECP5", in_hz, out_hz, 10, 400)
    (f, _), clki_div, clkfb_div, clkop_div = best
    return ECP5PLLParams(clki_div, clkfb_div, clkop_div, in_hz, f)
