"""Zero-run expansion and codebook lookup: tokens to weights with their fan-in positions.

Dense mode gives every weight of a channel, one per clock; sparse mode gives only the
weights (run, index) pairs carry, one token per clock, for layers whose time should be
proportional to their non-zero weights (EIE, ISCA 2016, section III).

Ref: docs/weight-image.md, "Stream sizes and streams" (the normative decoding rule);
mirrors ``golden.decode.codebook_lookup(expand_runs(symbols))`` token for token; Deep
Compression (ICLR 2016) section 2, relative indices with filler zeros.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import DecodeParams, Token, TokenKind, WeightOut
from hw.ram import read_port

__all__ = ["ExpandError", "RunExpander"]


class ExpandError(enum.Enum, shape=2):
    """Why an expander stopped. Sticky until the next ``start``."""

    NONE = 0
    PAST_FAN_IN = 1  # a zero run or a weight that passes the channel's fan-in
    FRAMING = 2  # a token's first/last marker disagrees with the channel's position
    PARAMS = 3  # parameters beyond the build


class RunExpander(wiring.Component):
    """Expands tokens into a channel's weights with their fan-in positions ``k``.

    Ports:
        ``start`` (in): a one-cycle pulse that clears everything (error included) and
            begins loading a codebook. ``params`` and ``sparse`` must be steady from then on.
        ``params`` (in, ``DecodeParams``): fan-in ``N``, codebook size ``K``, ``run_bits``
            (``max_len`` is not used).
        ``sparse`` (in): the output mode (below).
        ``codebook`` (in stream of signed ``bw``-bit): the ``K`` codebook entries in order.
        ``i`` (in stream of ``Token``): accepted only once the codebook is loaded.
        ``o`` (out stream of ``WeightOut``): the weights, ``first``/``last`` marking each
            channel's first and last entry.
        ``error`` (out, ``ExpandError``): sticky; the expander stops at the first error.

    Dense mode (``sparse`` = 0): ``N`` weights per channel in fan-in order, ``k`` = 0 ..
    ``N - 1``: a pair gives ``run`` zeros then ``codebook[index]``, ZRUN ``R + 1`` zeros,
    EOS zeros to the channel's end.
    Sparse mode (``sparse`` = 1): one entry per pair, ``codebook[index]`` at its position
    ``k`` (the run's zeros are skipped; the entry is emitted even if the codebook entry is
    0). ZRUN and EOS give nothing, except that a token that ends the channel (EOS, or a
    ZRUN that reaches ``N``) gives one entry with ``weight`` 0 at ``k = N - 1``, so every
    channel ends with an entry that carries ``last``, at ``k = N - 1``, and its ``k``
    increase.

    The expander keeps its own position in the channel and checks each token against it,
    as ``expand_runs`` does, in both modes: a token that passes ``N`` or whose
    ``first``/``last`` markers disagree with the position is an error.

    Latency: a token's first output leaves one clock after the token is accepted.
    Throughput: dense, one weight per clock (a token with ``z`` zeros and a weight takes
    ``z + 1`` clocks; the next token is accepted in the clock its last weight is emitted);
    sparse, one token per clock whatever its kind (a token that gives nothing is taken
    without a bubble), so a channel takes as many clocks as it has symbols.
    Back-pressure: ``o.valid`` does not depend on ``o.ready``; ``i.ready`` does (the
    token register frees when its last output moves to the output register).
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "params": In(DecodeParams(config)),
            "sparse": In(1),
            "codebook": In(stream.Signature(signed(config.bw))),
            "i": In(stream.Signature(Token(config))),
            "o": Out(stream.Signature(WeightOut(config))),
            "error": Out(ExpandError),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        p = self.params

        m.submodules.codebook = mem = memory.Memory(
            shape=self.codebook.payload.shape(), depth=cfg.max_codebook_size, init=[])
        wr = mem.write_port()
        rd = read_port(m, mem)  # (read only once the whole codebook is written)

        ok = Signal()
        m.d.comb += ok.eq(self.error == ExpandError.NONE)

        # -- codebook load ----------------------------------------------------------------
        loaded = Signal(range(cfg.max_codebook_size + 1))  # entries written so far
        ready_for_tokens = Signal()
        m.d.comb += [
            ready_for_tokens.eq(ok & (loaded == p.codebook_size)),
            self.codebook.ready.eq(ok & (loaded < p.codebook_size)),
            wr.addr.eq(loaded + p.codebook_base),
            wr.data.eq(self.codebook.payload),
            wr.en.eq(self.codebook.valid & self.codebook.ready),
        ]
        with m.If(wr.en):
            m.d.sync += loaded.eq(loaded + 1)

        # -- output register: a zero or the codebook word read in the previous clock -------
        b_valid = Signal()
        b_zero = Signal()
        b_k = Signal(cfg.fan_in_width)
        b_first = Signal()
        b_last = Signal()
        b_free = Signal()
        m.d.comb += [
            self.o.valid.eq(b_valid),
            self.o.payload.weight.eq(Mux(b_zero, 0, rd.data)),
            self.o.payload.k.eq(b_k),
            self.o.payload.first.eq(b_first),
            self.o.payload.last.eq(b_last),
            b_free.eq(~b_valid | self.o.ready),
            rd.en.eq(b_free),
        ]

        # -- token register: zeros still to emit, then maybe a weight ----------------------
        # Sparse mode loads only tokens that emit (with a_zeros = 0); a token that emits
        # nothing never occupies it.
        a_valid = Signal()
        a_zeros = Signal(cfg.fan_in_width)
        a_weight = Signal()  # a codebook word follows the zeros (else only zeros)
        a_index = Signal(cfg.max_index_bits)
        a_k = Signal(cfg.fan_in_width)  # the position of the token's next output
        a_first = Signal()  # the token's first output is the channel's first entry
        a_last = Signal()  # the token's last output is the channel's last entry
        m.d.comb += rd.addr.eq(a_index)

        emit = Signal()
        a_done = Signal()  # the token's last output moves to the output register
        m.d.comb += [
            emit.eq(a_valid & b_free & ok),
            a_done.eq(emit & Mux(a_zeros == 0, 1, (a_zeros == 1) & ~a_weight)),
        ]
        with m.If(emit):
            m.d.sync += [
                b_valid.eq(1),
                # Dense tokens always have a zero or a weight; a sparse end marker has
                # neither and emits a zero.
                b_zero.eq((a_zeros != 0) | ~a_weight),
                b_k.eq(a_k),
                b_first.eq(a_first),
                b_last.eq(a_last & a_done),
                a_first.eq(0),
                a_k.eq(a_k + 1),
            ]
            with m.If(a_zeros != 0):
                m.d.sync += a_zeros.eq(a_zeros - 1)
        with m.Elif(self.o.ready):
            m.d.sync += b_valid.eq(0)

        # -- token intake: check it against the channel's position ------------------------
        # The parameters the intake uses, kept in registers at ``start`` (they are steady
        # from then on, and no token is taken before the clock after it): the intake's
        # paths began at the parameters' registers, far off in the weight unit (18.2 ns
        # from ``run_bits`` through the zero run's shift on the ULX3S, session 32).
        n_fan_in = Signal.like(p.fan_in)
        n_zrun = Signal(cfg.fan_in_width)  # 2^run_bits: a ZRUN's zeros
        n_base = Signal.like(p.codebook_base)
        t_rem = Signal(cfg.fan_in_width)  # weights of the channel no accepted token covers
        t_pos = Signal(cfg.fan_in_width)  # = N - t_rem: where the next token starts
        t_fresh = Signal()  # no token of the channel has emitted anything yet
        tok = self.i.payload
        t_pair = Signal()
        t_zeros = Signal(cfg.fan_in_width)
        t_adv = Signal(cfg.fan_in_width + 1)
        t_eos = Signal()
        t_ends = Signal()
        t_first = Signal()
        t_emits = Signal()
        m.d.comb += [
            t_pair.eq(tok.kind == TokenKind.PAIR),
            t_eos.eq(tok.kind == TokenKind.EOS),
            t_zeros.eq(Mux(t_pair, tok.run, Mux(t_eos, t_rem, n_zrun))),
            t_adv.eq(t_zeros + t_pair),
            t_ends.eq(t_eos | (t_adv == t_rem)),
            t_first.eq(t_rem == n_fan_in),
            t_emits.eq(~self.sparse | t_pair | t_ends),
            self.i.ready.eq(ready_for_tokens & (~a_valid | a_done)),
        ]
        with m.If(self.i.valid & self.i.ready):
            with m.If(~t_eos & (t_adv > t_rem)):
                m.d.sync += self.error.eq(ExpandError.PAST_FAN_IN)
            with m.Elif((tok.first != t_first) | (tok.last != t_ends)):
                m.d.sync += self.error.eq(ExpandError.FRAMING)
            with m.Else():
                m.d.sync += [
                    a_valid.eq(t_emits),
                    a_zeros.eq(Mux(self.sparse, 0, t_zeros)),
                    a_weight.eq(t_pair),
                    # (the layer's codebook starts at codebook_base)
                    a_index.eq(tok.index + n_base),
                    # A dense token always emits, so its first output is the channel's
                    # first entry exactly when the token is the channel's first.
                    a_first.eq(t_fresh),
                    a_last.eq(t_ends),
                    t_rem.eq(Mux(t_ends, n_fan_in, t_rem - t_adv)),
                    t_pos.eq(Mux(t_ends, 0, t_pos + t_adv)),
                    t_fresh.eq(t_ends | (t_fresh & ~t_emits)),
                ]
                with m.If(~self.sparse):
                    m.d.sync += a_k.eq(t_pos)
                with m.Elif(t_pair):
                    m.d.sync += a_k.eq(t_pos + tok.run)
                with m.Else():
                    m.d.sync += a_k.eq(n_fan_in - 1)
        with m.Elif(a_done):
            m.d.sync += a_valid.eq(0)

        # -- start ------------------------------------------------------------------------
        with m.If(self.start):
            m.d.sync += [
                self.error.eq(ExpandError.NONE),
                # (a resident codebook is in the memory already)
                loaded.eq(Mux(p.resident, p.codebook_size, 0)),
                a_valid.eq(0),
                b_valid.eq(0),
                t_rem.eq(p.fan_in),
                t_pos.eq(0),
                t_fresh.eq(1),
                n_fan_in.eq(p.fan_in),
                n_zrun.eq(Const(1, 1) << p.run_bits),
                n_base.eq(p.codebook_base),
            ]
            bad = ((p.fan_in == 0) | (p.fan_in > cfg.max_fan_in) | (p.codebook_size == 0)
                   | (p.codebook_size > cfg.max_codebook_size)
                   | (p.run_bits > cfg.max_run_bits))
            with m.If(bad):
                m.d.sync += self.error.eq(ExpandError.PARAMS)

        return m
