"""Board tops: the accelerator behind the FTDI UART of an iCEBreaker or a ULX3S 85F, its
clock from the board's oscillator through a PLL, and status LEDs.

``BOARDS`` names each board's amaranth-boards platform, accelerator preset, target clock
and device totals; ``get_board(name)`` looks one up. ``BoardTop(board)`` is the top a
bitstream is built from (``espalier.build``). With no platform (simulation) the top has no
PLL: the simulator's clock drives ``sync``, and the UART pins and LEDs are the top's ports
``rx``, ``tx`` and ``leds``, so the host library's ``espalier.simlink.UARTSimTransport``
talks to exactly the gateware the board runs (at ``top.divisor`` clocks a bit).
"""

from dataclasses import dataclass, field
from fractions import Fraction

from amaranth.hdl import ClockDomain, ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out
from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from hw.accelerator import Accelerator
from hw.config import get_preset
from hw.global_buffer import global_buffer
from hw.image_loader import LoadError
from hw.uart import UARTRx, UARTTx
from platforms.pll import ecp5_pll, ice40_pll

__all__ = ["BOARDS", "Board", "BoardTop", "get_board"]

#: The FTDI serial line's rate. Both boards' FTDI chips (FT2232H on the iCEBreaker, FT231X on
#: the ULX3S) also make 1 Mbaud exactly (3 MHz / 3); 115200 is what the host library's
#: ``SerialTransport`` opens by default, so a board and a host agree without options.
DEFAULT_BAUD = 115200

#: The status LEDs, in the order of ``BoardTop.leds``.
STATUS = ("loaded", "busy", "error")


@dataclass(frozen=True, kw_only=True)
class Board:
    """A board Espalier builds for.

    ``platform`` is the amaranth-boards platform class; ``preset`` the accelerator preset
    (``hw.config.PRESETS``); ``target_mhz`` the accelerator clock asked of the PLL by default
    (it makes the highest it can at or below: ``pll``);
    ``luts_total``, ``dsps_total`` and ``brams_total`` the device's LUT4s, multipliers
    (SB_MAC16 / MULT18X18D) and block RAMs (EBR / DP16KD), as its datasheet counts them;
    ``leds`` maps each ``STATUS`` name the board shows to an LED resource (name, number);
    ``synth_opts`` are the options of Yosys's ``synth_<family>`` and ``nextpnr_opts``
    nextpnr's own (Espalier adds ``--timing-allow-fail``); ``seed`` nextpnr's placer seed
    when the build gives none (None: nextpnr's own); ``cells`` names the nextpnr cell types
    counted as ``luts``, ``dsps`` and ``brams`` in its utilisation report.
    """

    name: str
    platform: type
    device: str
    preset: str
    target_mhz: float
    luts_total: int
    dsps_total: int
    brams_total: int
    leds: dict = field(default_factory=dict)
    synth_opts: str = ""
    nextpnr_opts: str = ""
    seed: int | None = None
    cells: dict = field(default_factory=dict)
    baud: int = DEFAULT_BAUD

    @property
    def config(self):
        """The accelerator configuration of this board's preset."""
        return get_preset(self.preset)

    @property
    def clock_hz(self) -> int:
        """The board oscillator's frequency (the platform's default clock)."""
        platform = self.platform()
        return int(platform.lookup(platform.default_clk).clock.frequency)

    def pll(self, target_mhz: float | None = None):
        """The PLL setting for ``target_mhz`` (default: the board's target): the highest
        frequency the PLL makes that is not above it."""
        mhz = self.target_mhz if target_mhz is None else target_mhz
        if not isinstance(mhz, int | float) or mhz <= 0:
            raise ValueError(f"the target clock must be a positive number of MHz, not {mhz!r}")
        out_hz = Fraction(mhz).limit_denominator(1000) * 1_000_000
        if issubclass(self.platform, LatticeICE40Platform):
            return ice40_pll(self.clock_hz, out_hz)
        return ecp5_pll(self.clock_hz, out_hz)


BOARDS = {
    # iCE40UP5K: 5,280 LUT4, 8 SB_MAC16, 30 EBR (4 kbit); the 4 SPRAMs are not counted here.
    # 30 MHz: exactly 12 MHz x 80 / 32 (DIVR 0, DIVF 79, DIVQ 5): issue 6's target.
    "icebreaker": Board(
        name="icebreaker", platform=ICEBreakerPlatform, device="iCE40UP5K-SG48",
        preset="icebreaker", target_mhz=30.0, luts_total=5280, dsps_total=8,
        brams_total=30,
        # Two user LEDs on the main board (the break-off PMOD's five may be snapped off).
        leds={"loaded": ("led_g", 0), "error": ("led_r", 0)},
        # -dsp: multipliers into the SB_MAC16s (Yosys does not check there are only 8);
        # -spram: the image buffer into the SPRAMs.
        synth_opts="-dsp -spram",
        cells={"luts": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM"}),
    # ECP5 LFE5U-85F: 83,640 LUT4, 156 MULT18X18D, 208 DP16KD (18 kbit).
    # 55 MHz: 25 MHz x 11 / 5 (CLKI_DIV 5, CLKFB_DIV 11, CLKOP_DIV 11), a clock this
    # design meets (55.36 MHz achieved with seed 1, session 34's sweep; 55.45 MHz with
    # seed 4 on session 30's netlist; CI builds it and asks for timing met), so the
    # default bitstream runs on a board.
    # (53.57 MHz, 25 MHz x 15 / 7, in session 29: 55.06 MHz achieved with seed 1; 50 MHz,
    # 25 MHz x 2, in sessions 26-28: 54.02 MHz achieved with seed 3, session 28; 46.875
    # MHz, 25 MHz x 15 / 8, in sessions 24-25.)
    # Issue 6's target is 100 MHz (25 MHz x 4), which the design's paths do not allow
    # (about 55 MHz): `--mhz 100` builds it, and the report then says it will not run
    # reliably (docs/results.md). (At 45 MHz session 24's netlist and seed placed for a
    # congestion the router had not cleared after 47 iterations: a clock's constraint
    # moves the timing-driven placement, so the default is a clock whose build was
    # measured.)
    "ulx3s-85f": Board(
        name="ulx3s-85f", platform=ULX3S_85F_Platform, device="LFE5U-85F-6BG381C",
        preset="ulx3s-85f", target_mhz=55.0, luts_total=83640, dsps_total=156,
        brams_total=208,
        leds={"loaded": ("led", 0), "busy": ("led", 1), "error": ("led", 2)},
        # router2: on the 8x8 build the default router1 still had 61,000 of 142,000 wires
        # overused after 9 minutes; router2 was down to about 1,000 after 8.
        # The static (analytic) placer: with the default heap placer router2 never
        # converged on the 13x10 preset (sessions 4-11, thousands of wires overused after
        # 30+ iterations). Its timing-driven placement left the router a congestion it
        # could not clear while the tile buffer had its write crossbar (session 12, hence
        # --no-tmdriv then); without the crossbar (session 14) it routes, and gives the
        # committed netlist 50.13 MHz against 48.45 without it (session 15,
        # docs/results.md).
        nextpnr_opts="--router router2 --placer static",
        # Seed 1: session 34's netlist meets the 55 MHz default with it (55.36 MHz, the
        # sweep's first seed; session 30's netlist met it with seed 4, 55.45 MHz, and not
        # with seeds 1-3: see docs/results.md). Session 28's netlist met
        # 53.57 MHz with seed 1 (55.06 MHz, session 29); at 50 MHz the same netlist met
        # timing with seed 3 (54.02 MHz), not with seed 1 (47.64) nor seed 2 (its router
        # had not converged after an hour): the clock's constraint moves the timing-driven
        # placement, so a seed holds for one netlist at one clock. A placement is a matter
        # of seeds, and each netlist or clock change draws again: sweep them with
        # `espalier build --board ulx3s-85f --seeds 1-4 --jobs 2` (docs/results.md,
        # "Boards") before changing either.
        seed=1,
        cells={"luts": "TRELLIS_COMB", "dsps": "MULT18X18D", "brams": "DP16KD"}),
}


def get_board(name: str) -> Board:
    """The board called ``name``; an unknown name is a ValueError listing the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: "
                         f"{', '.join(BOARDS)}") from None


class BoardTop(wiring.Component):
    """The accelerator on a board: UART receiver -> ``Accelerator`` -> UART transmitter.

    ``rx`` / ``tx`` are the UART lines and ``leds`` the status (``STATUS`` order: an image
    is loaded; a run is going; the last load or run failed). On a board they come from
    ``platform.request("uart")`` and the board's LEDs; in simulation they are the ports.

    Clock: on an iCE40 the oscillator pin feeds an ``SB_PLL40_PAD`` directly (the
    iCEBreaker's 12 MHz is on the PLL's pad); on an ECP5 the oscillator's input buffer
    feeds an ``EHXPLLL``. ``sync`` is held in reset until the PLL has locked and then for
    15 µs more (iCE40 block RAMs read as zero for about 3 µs after configuration; amaranth's
    own iCE40 reset waits as long). With no platform there is no PLL: the simulator's clock
    is ``sync``. ``clk_hz`` is the PLL's output, and ``divisor`` (UART clocks per bit) is
    derived from it and ``baud``.

    ``config`` overrides the board's preset (e.g. a small one for simulation);
    ``target_mhz`` the board's target clock.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    leds: Out(len(STATUS))

    def __init__(self, board: Board, *, config=None, target_mhz: float | None = None,
                 baud: int | None = None, timeout_clocks: int | None = None):
        self.board = board
        self.config = board.config if config is None else config
        self.pll = board.pll(target_mhz)
        self.clk_hz = self.pll.out_hz
        self.baud = board.baud if baud is None else baud
        if not isinstance(self.baud, int) or self.baud <= 0:
            raise ValueError(f"the baud rate must be a positive whole number, not {self.baud!r}")
        self.divisor = round(self.clk_hz / self.baud)
        if self.divisor < 4:
            raise ValueError(f"{self.baud} baud is too fast for a {float(self.clk_hz) / 1e6:g} "
                             f"MHz clock (the UART needs at least 4 clocks a bit)")
        super().__init__()
        self.accel = Accelerator(self.config, timeout_clocks=timeout_clocks)

    @property
    def target_mhz(self) -> float:
        """The accelerator clock the PLL makes, in MHz."""
        return self.pll.out_mhz

    def _clocking(self, m, platform):
        """The ``sync`` domain: the PLL's output, reset until lock + 15 µs."""
        pll = self.pll
        clk = Signal(name="pll_clk")
        lock = Signal(name="pll_lock")
        match platform:
            case LatticeICE40Platform():
                pin = platform.request(platform.default_clk, dir="-")
                m.submodules.pll = Instance(
                    "SB_PLL40_PAD",
                    p_FEEDBACK_PATH="SIMPLE",
                    p_DIVR=Const(pll.divr, 4),
                    p_DIVF=Const(pll.divf, 7),
                    p_DIVQ=Const(pll.divq, 3),
                    p_FILTER_RANGE=Const(pll.filter_range, 3),
                    i_PACKAGEPIN=pin.io,
                    i_RESETB=Const(1),
                    i_BYPASS=Const(0),
                    o_PLLOUTGLOBAL=clk,
                    o_LOCK=lock,
                )
            case LatticeECP5Platform():
                m.submodules.clk_buf = clk_buf = io.Buffer(
                    "i", platform.request(platform.default_clk, dir="-"))
                clk_in = clk_buf.i
                m.submodules.pll = Instance(
                    "EHXPLLL",
                    # Ref: prjtrellis ecppll's EHXPLLL template (charge pump and filter).
                    a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                    a_MFG_GMCREF_SEL="2",
                    a_FREQUENCY_PIN_CLKI=f"{pll.in_hz / 1e6:g}",
                    a_FREQUENCY_PIN_CLKOP=f"{pll.out_mhz:g}",
                    p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                    p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                    p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                    p_CLKI_DIV=pll.clki_div, p_CLKFB_DIV=pll.clkfb_div,
                    p_CLKOP_DIV=pll.clkop_div, p_CLKOP_CPHASE=pll.clkop_cphase,
                    p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                    i_CLKI=clk_in, i_CLKFB=clk, i_RST=Const(0), i_STDBY=Const(0),
                    i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(0),
                    i_PHASESTEP=Const(0), i_PHASELOADREG=Const(0),
                    i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
                    o_CLKOP=clk, o_LOCK=lock,
                )
            case None:
                return  # simulation: the simulator drives sync
            case _:
                raise TypeError(f"no PLL for {type(platform).__name__}: the board tops are "
                                f"for Lattice iCE40 and ECP5 platforms")

        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("por").eq(clk)]
        # No clock constraint on the PLL's output: nextpnr (ice40 and ecp5) derives it from the
        # oscillator pin's and the PLL's dividers, and Yosys renames the net anyway.
        locked = Signal()
        m.submodules.lock_sync = FFSynchronizer(lock, locked, o_domain="por")
        delay = int(15e-6 * self.clk_hz)
        timer = Signal(range(delay + 1))
        reset = Signal(init=1)
        with m.If(~locked):
            m.d.por += [timer.eq(0), reset.eq(1)]
        with m.Elif(timer == delay):
            m.d.por += reset.eq(0)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        # The reset reaches every flip-flop of the design: on the ECP5 it goes through a
        # global buffer. Routed in the fabric it was the most congested net of the 13x10
        # build.
        m.d.comb += ResetSignal("sync").eq(global_buffer(m, platform, reset, "reset_buf"))

    def elaborate(self, platform):
        m = Module()
        self._clocking(m, platform)

        m.submodules.uart_rx = uart_rx = UARTRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UARTTx(self.divisor)
        m.submodules.accel = accel = self.accel
        wiring.connect(m, uart_rx.o, accel.i)
        wiring.connect(m, accel.o, uart_tx.i)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]

        ctl = accel.core.ctl
        status = {
            "loaded": ctl.loaded,
            "busy": ctl.busy | ctl.load_busy,
            "error": (ctl.load_status != LoadError.NONE) | (ctl.run_status != 0),
        }
        for n, name in enumerate(STATUS):
            m.d.comb += self.leds[n].eq(status[name])

        if platform is not None:
            pins = platform.request("uart", 0, dir="-")
            m.submodules.rx_buf = rx_buf = io.Buffer("i", pins.rx)
            m.submodules.tx_buf = tx_buf = io.Buffer("o", pins.tx)
            # The top's own ports carry the pins' values, so the same logic serves both.
            m.d.comb += [self.rx.eq(rx_buf.i), tx_buf.o.eq(self.tx)]
            for name, (resource, number) in self.board.leds.items():
                buf = io.Buffer("o", platform.request(resource, number, dir="-"))
                m.submodules[f"{resource}_{number}_buf"] = buf
                m.d.comb += buf.o.eq(self.leds[STATUS.index(name)])
        return m
