"""One processing element of the output-stationary systolic array (docs/pe-array.md).

Ref: Kung, "Why systolic architectures?" (IEEE Computer, 1982); Gemmini ``PE`` (its
output-stationary mode), without Gemmini's double buffer: here the result is read out
through the column bus in the one clock it is final (see ``PE``).
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform

__all__ = ["PE", "ActivationLane", "multiplier_ports"]


class ActivationLane(data.StructLayout):
    """What travels along a row of the array, one PE per clock: an activation ``x`` and the
    control that belongs to it. ``valid`` marks a real activation (no handshake: a PE uses
    what arrives with ``valid`` and ignores the rest); ``first`` clears the accumulator (the
    product is loaded instead of added); ``last`` marks the final product of a reduction."""

    def __init__(self, config):
        super().__init__({"x": signed(config.bw), "valid": 1, "first": 1, "last": 1})


def multiplier_ports(config, n=None) -> dict:
    """The ports of a multiplier kept outside its user (``AcceleratorConfig.fc_on_array``):
    the operands ``mul_a``, ``mul_b`` (out, signed ``bw``) and the product ``mul_p`` (in,
    signed ``2 bw``); ``n`` of each (arrays) unless ``n`` is None."""
    ports = {"mul_a": Out(signed(config.bw)), "mul_b": Out(signed(config.bw)),
             "mul_p": In(signed(2 * config.bw))}
    return ports if n is None else {k: v.array(n) for k, v in ports.items()}


class PE(wiring.Component):
    """A multiply-accumulate cell: ``acc = sum x·w`` over one reduction, exactly.

    Ports:
        ``en`` (in): clock enable, shared by the whole array (the array's stall).
        ``a_i`` (in, ``ActivationLane``) from the west; ``a_o`` (out) to the east neighbour:
            the lane one enabled clock later.
        ``w_i`` (in, signed ``bw``) from the north; ``w_o`` (out) to the south neighbour:
            the weight one enabled clock later. Weights carry no valid bit: a weight matters
            only where it meets a valid activation, and both move in lockstep.
        ``acc`` (out, signed ``acc_width``), ``done`` (out): ``done`` is high for exactly one
            enabled clock, the one in which ``acc`` holds a finished reduction (the sum up to
            and including the product marked ``last``). The next reduction may load ``acc``
            at the end of that clock, so ``acc`` is read while ``done`` is high.
        ``finishing`` (out): ``done`` rises at the end of the next enabled clock (the
            product marked ``last`` is being added).

    Pipeline: ``d_`` registers hold the inputs (they are also the values passed on to the
    neighbours), ``x_`` registers the product, then the accumulator. An activation that
    enters ``a_i`` in clock ``t`` makes ``done`` rise in clock ``t + 3`` (if it is ``last``).
    Throughput: one multiply-accumulate per enabled clock. No back-pressure of its own: with
    ``en`` low every register holds.

    The product of two ``bw``-bit numbers needs ``2 bw`` bits; the accumulator adds it
    exactly (``golden.fixedpoint.accumulate``: no rounding, no saturation) into
    ``acc_width`` bits. ``AcceleratorConfig`` guarantees ``acc_width >= min_acc_width``, which
    holds any sum of ``max_fan_in`` products, so the sum cannot wrap for a legal layer.

    With ``shared=True`` the PE has no multiplier of its own: it shows its multiplier's
    operands on ``mul_a`` and ``mul_b`` (out, its input registers) and takes the product on
    ``mul_p`` (in, signed ``2 bw``, combinational from them), so that the accelerator can
    let another user (``SparseFC``, ``AcceleratorConfig.fc_on_array``) share the device's
    multiplier while the array is idle.
    """

    def __init__(self, config, *, shared: bool = False):
        self._config = config
        self._shared = shared
        ports = {
            "en": In(1),
            "a_i": In(ActivationLane(config)),
            "a_o": Out(ActivationLane(config)),
            "w_i": In(signed(config.bw)),
            "w_o": Out(signed(config.bw)),
            "acc": Out(signed(config.acc_width)),
            "done": Out(1),
            "finishing": Out(1),
        }
        if shared:
            ports.update(multiplier_ports(config))
        super().__init__(ports)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()

        # The multiplier has a register on both sides: the input registers (the systolic
        # forwarding registers ``d_``) and ``x_prod``. It is written portably (a signed
        # `*` between them): in simulation, and for a shared multiplier, the definition.
        # On the ECP5 a MULT18X18D (``_ecp5_product``), on the iCE40 an SB_MAC16
        # (``_ice40_product``, ``_in_dsp``) is instantiated with those two registers in
        # it: Yosys infers only the combinational form, which nextpnr timed as a path
        # from the fabric's input registers to x_prod (the 13x10 build's critical path,
        # 23.6 ns, session 14); with both registers in the DSP, nextpnr times its ports
        # as register inputs and outputs.
        d_a = Signal(ActivationLane(cfg))
        d_w = Signal(signed(cfg.bw))
        x_prod = Signal(signed(2 * cfg.bw))
        x_valid = Signal()
        x_first = Signal()
        x_last = Signal()
        acc = Signal(signed(cfg.acc_width))
        done = Signal()

        match platform:
            case LatticeECP5Platform() | LatticeICE40Platform() if _in_dsp(platform, cfg, self):
                _dsp_product(platform)(m, self.a_i.x, self.w_i, self.en, x_prod)
            case _:
                with m.If(self.en):
                    m.d.sync += x_prod.eq(self.mul_p if self._shared else d_a.x * d_w)
        with m.If(self.en):
            m.d.sync += [
                d_a.eq(self.a_i),
                d_w.eq(self.w_i),
                x_valid.eq(d_a.valid),
                x_first.eq(d_a.first),
                x_last.eq(d_a.last),
                done.eq(x_valid & x_last),
            ]
            with m.If(x_valid):
                # golden.fixedpoint.accumulate: exact. `first` loads the product instead of
                # adding it, so the accumulator never relies on a reset value (an
                # accumulator that Yosys moves into an SB_MAC16 with `-dsp` has none).
                with m.If(x_first):
                    m.d.sync += acc.eq(x_prod)
                with m.Else():
                    m.d.sync += acc.eq(acc + x_prod)

        if self._shared:
            m.d.comb += [self.mul_a.eq(d_a.x), self.mul_b.eq(d_w)]
        m.d.comb += [
            self.a_o.eq(d_a),
            self.w_o.eq(d_w),
            self.acc.eq(acc),
            self.done.eq(done),
            self.finishing.eq(x_valid & x_last),
        ]
        return m


def _ecp5_product(m, a, b, en, p):
    """``p`` (signed ``2 bw``) = ``a · b`` two enabled clocks after ``a`` and ``b`` (signed
    ``bw`` each), on a MULT18X18D with its A, B input registers and its output register
    on CLK0, all enabled by ``en`` (CE0): the same two registers as the portable PE's
    ``d_a.x``/``d_w`` and ``x_prod``, so the PE's timing is the same clock for clock. The
    pipeline register is off; the operands are sign-extended to 18 bits and multiplied
    signed (SIGNEDA, SIGNEDB high); ``p`` is the product's low ``2 bw`` bits (its full
    value, as ``|a · b| < 2^(2 bw - 1)``). Ref: Lattice TN1267, "ECP5 and ECP5-5G
    sysDSP Usage Guide" (MULT18X18D); nextpnr's ECP5 timing model takes a MULT18X18D with
    both input registers and the output register as ``MULT18X18D_REGS_ALL``."""
    n = len(p)
    a18 = Signal(signed(18), name=f"{p.name}_a")
    b18 = Signal(signed(18), name=f"{p.name}_b")
    p36 = Signal(36, name=f"{p.name}_p36")
    m.d.comb += [a18.eq(a), b18.eq(b), p.eq(p36[:n])]
    ports = {f"i_A{k}": a18[k] for k in range(18)}
    ports.update({f"i_B{k}": b18[k] for k in range(18)})
    ports.update({f"i_C{k}": Const(0) for k in range(18)})
    ports.update({f"o_P{k}": p36[k] for k in range(36)})
    for k in range(4):
        ports[f"i_CLK{k}"] = ClockSignal("sync") if k == 0 else Const(0)
        ports[f"i_CE{k}"] = en if k == 0 else Const(1)
        ports[f"i_RST{k}"] = Const(0)
    regs = {}
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        regs.update({f"p_REG_{reg}_CLK": "CLK0", f"p_REG_{reg}_CE": "CE0",
                     f"p_REG_{reg}_RST": "RST0"})
    m.submodules[f"{p.name}_mult"] = Instance(
        "MULT18X18D",
        **regs,
        p_REG_INPUTC_CLK="NONE",
        p_REG_PIPELINE_CLK="NONE",
        p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
        p_CLK3_DIV="ENABLED",
        p_GSR="DISABLED",
        p_RESETMODE="SYNC",
        p_SOURCEB_MODE="B_SHIFT",
        p_MULT_BYPASS="DISABLED",
        p_CAS_MATCH_REG="FALSE",
        p_HIGHSPEED_CLK="NONE",
        i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
        **ports,
    )


# (These two helpers and ``_ice40_product`` follow the rest of the module: added after
# it, they left the PE's ECP5 netlist as it was, source positions included.)
def _in_dsp(platform, cfg, pe) -> bool:
    """Whether ``pe``'s multiplier and both its registers go into one of ``platform``'s
    DSP blocks: not for a shared multiplier (``fc_on_array``), and only for operands the
    block takes (18 bits on the ECP5's MULT18X18D, 16 on the iCE40's SB_MAC16).

    On the iCE40 too Yosys infers the SB_MAC16 with its multiplier only (it takes no
    register with a clock enable into it), which left ``x_prod`` in 16 logic cells a PE,
    each a flip-flop behind a pass-through LUT (an iCE40 logic cell's flip-flop takes only
    its own LUT's output); instantiating it saved 97 of the iCEBreaker build's logic
    cells (session 17)."""
    limit = 18 if isinstance(platform, LatticeECP5Platform) else 16
    return not pe._shared and cfg.bw <= limit


def _dsp_product(platform):
    """``_ecp5_product`` or ``_ice40_product``, for ``platform``."""
    return _ecp5_product if isinstance(platform, LatticeECP5Platform) else _ice40_product


def _ice40_product(m, a, b, en, p):
    """``p`` (signed ``2 bw``, ``bw <= 16``) = ``a · b`` two enabled clocks after ``a`` and
    ``b``, on an SB_MAC16 with its A and B input registers and the 16x16 product's
    pipeline register (``PIPELINE_16x16_MULT_REG2``), all enabled by ``en`` (CE): the same
    two registers as the portable PE's ``d_a.x``/``d_w`` and ``x_prod``. Both outputs show
    the registered product (``TOPOUTPUT_SELECT`` and ``BOTOUTPUT_SELECT`` 3); the adders and
    accumulators are unused, the operands sign-extended to 16 bits and multiplied signed.
    The resets (IRSTTOP, IRSTBOT: asynchronous) are off, as a product register's value
    before its first valid product is never used (``x_valid``). Ref: Lattice TN1295,
    "DSP Function Usage Guide for iCE40 Devices"; Yosys's model, ``techlibs/ice40/
    cells_sim.v`` (``SB_MAC16``)."""
    n = len(p)
    a16 = Signal(signed(16), name=f"{p.name}_a")
    b16 = Signal(signed(16), name=f"{p.name}_b")
    o32 = Signal(32, name=f"{p.name}_o32")
    m.d.comb += [a16.eq(a), b16.eq(b), p.eq(o32[:n])]
    zero16 = Const(0, 16)
    m.submodules[f"{p.name}_mac"] = Instance(
        "SB_MAC16",
        p_NEG_TRIGGER=Const(0, 1),
        p_A_REG=Const(1, 1), p_B_REG=Const(1, 1),
        p_C_REG=Const(0, 1), p_D_REG=Const(0, 1),
        p_TOP_8x8_MULT_REG=Const(0, 1), p_BOT_8x8_MULT_REG=Const(0, 1),
        p_PIPELINE_16x16_MULT_REG1=Const(0, 1), p_PIPELINE_16x16_MULT_REG2=Const(1, 1),
        p_TOPOUTPUT_SELECT=Const(3, 2), p_BOTOUTPUT_SELECT=Const(3, 2),
        p_TOPADDSUB_LOWERINPUT=Const(0, 2), p_TOPADDSUB_UPPERINPUT=Const(0, 1),
        p_TOPADDSUB_CARRYSELECT=Const(0, 2),
        p_BOTADDSUB_LOWERINPUT=Const(0, 2), p_BOTADDSUB_UPPERINPUT=Const(0, 1),
        p_BOTADDSUB_CARRYSELECT=Const(0, 2),
        p_MODE_8x8=Const(0, 1), p_A_SIGNED=Const(1, 1), p_B_SIGNED=Const(1, 1),
        i_CLK=ClockSignal("sync"), i_CE=en,
        i_A=a16, i_B=b16, i_C=zero16, i_D=zero16,
        i_AHOLD=Const(0), i_BHOLD=Const(0), i_CHOLD=Const(0), i_DHOLD=Const(0),
        i_IRSTTOP=Const(0), i_IRSTBOT=Const(0), i_ORSTTOP=Const(0), i_ORSTBOT=Const(0),
        i_OLOADTOP=Const(0), i_OLOADBOT=Const(0), i_ADDSUBTOP=Const(0), i_ADDSUBBOT=Const(0),
        i_OHOLDTOP=Const(0), i_OHOLDBOT=Const(0),
        i_CI=Const(0), i_ACCUMCI=Const(0), i_SIGNEXTIN=Const(0),
        o_O=o32,
    )
