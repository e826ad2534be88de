"""One processing element of the output-stationary systolic array (docs/pe-array.md).

Ref: Kung, "Why systolic architectures?" (IEEE Computer, 1982); Gemmini ``PE`` (its
output-stationary mode), without Gemmini's double buffer: here the result is read out
through the column bus in the one clock it is final (see ``PE``).
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

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

        # The multiplier is written portably (a signed `*`) with a register on both sides:
        # Yosys infers MULT18X18D (ECP5) or SB_MAC16 (iCE40, with synth_opts="-dsp") from
        # it, and nextpnr times ECP5 DSPs as combinational, so without fabric registers
        # around it the multiplier would sit in a long combinational path
        # (/work/shared/REFERENCES.md). The input registers are the systolic forwarding
        # registers, so they cost nothing extra. No vendor cell is instantiated, so there
        # is no `match platform:` here and the same code simulates.
        d_a = Signal(ActivationLane(cfg))
        d_w = Signal(signed(cfg.bw))
        x_prod = Signal(signed(2 * cfg.bw))
        x_valid = Signal()
        x_first = Signal()
        x_last = Signal()
        acc = Signal(signed(cfg.acc_width))
        done = Signal()

        with m.If(self.en):
            m.d.sync += [
                d_a.eq(self.a_i),
                d_w.eq(self.w_i),
                x_prod.eq(self.mul_p if self._shared else d_a.x * d_w),
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
