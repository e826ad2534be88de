"""The split of a layer's Huffman-table symbols into (kind, run, index), once for all lanes.

Ref: docs/weight-image.md, "Huffman table" and the symbol alphabet of "Stream sizes and
streams": a symbol ``s < (R+1)·K`` is the pair (``s div K``, ``s mod K``), ``(R+1)·K`` is
ZRUN and ``(R+1)·K + 1`` EOS, with ``R + 1 = 2^run_bits``. ``SymbolEntry.split`` is the
same mapping in Python; ``table_items`` applies it to a whole table.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import DecodeParams, SymbolEntry, TokenKind

__all__ = ["SymbolSplit", "TableItem", "table_items"]


class TableItem(data.StructLayout):
    """A word of a Huffman table on its way to the decoders.

    The first ``L`` items are the counts: ``count`` holds ``count[l]`` (``entry`` and
    ``bad`` are 0). The rest are the symbols: ``entry`` is the symbol split into kind, run
    and index, and ``bad`` is set for a symbol outside the alphabet (``count`` holds what
    is 0).
    """

    def __init__(self, config):
        super().__init__({
            "count": unsigned(config.symbol_width),
            "entry": SymbolEntry(config),
            "bad": 1,
        })


def table_items(counts, symbols, codebook_size: int, run_bits: int) -> list[dict]:
    """The items ``SymbolSplit`` gives for a table: its software face."""
    items = [{"count": int(c)} for c in counts]
    zrun = codebook_size << run_bits
    for s in symbols:
        if int(s) > zrun + 1:
            items.append({"bad": 1})
        else:
            entry = SymbolEntry.split(int(s), codebook_size, run_bits)
            items.append({"entry": {**entry, "kind": TokenKind(entry["kind"])}})
    return items


class SymbolSplit(wiring.Component):
    """Turns a Huffman table's raw words into ``TableItem``s: counts pass through, symbols
    are split into kind, run ``s div K`` and index ``s mod K``.

    Ports:
        ``start`` (in): one-cycle pulse: forget the pipeline's contents; the next
            ``params.max_len`` words of ``i`` are counts, the words after them symbols.
            ``params`` must be steady from then on.
        ``params`` (in, ``DecodeParams``): ``codebook_size`` ``K``, ``run_bits``, ``max_len``
            ``L`` (``fan_in`` is unused).
        ``i`` (in stream of u16): the table as the image lists it after its ``L`` byte:
            ``count[1..L]``, then the symbols.
        ``o`` (out stream of ``TableItem``).

    The division is a restoring divider unrolled into a pipeline: the quotient's
    ``max_run_bits`` bits are found MSB first, ``steps`` of them per stage (``s div K <
    2^run_bits ≤ 2^max_run_bits`` for a pair, so a fixed number of steps fits every layer;
    each step is one subtractor, whose borrow is the comparison, as wide as a pair's
    remainder can be at that step). The kind comes from one subtraction ``s - ZRUN``
    (``ZRUN = K << run_bits``) on the way in; counts ride through the stages undivided.

    Latency: ``stages = max(1, ceil(max_run_bits / steps))`` clocks. Throughput: one word
    per clock. Back-pressure: ``o.valid`` and the payload are the last stage's registers;
    a stage moves on when the next one is empty or moving, so ``i.ready`` depends on
    ``o.ready`` and the stages' valid bits only.
    """

    def __init__(self, config, *, steps: int = 2):
        if steps < 1:
            self._MustUse__silence = True  # (refused: never elaborated, no warning for it)
            raise ValueError(f"a divider stage must find at least one quotient bit, not "
                             f"{steps}")
        self._config = config
        self._steps = steps
        super().__init__({
            "start": In(1),
            "params": In(DecodeParams(config)),
            "i": In(stream.Signature(unsigned(config.symbol_width))),
            "o": Out(stream.Signature(TableItem(config))),
        })

    @property
    def stages(self) -> int:
        """The pipeline's depth: its latency in clocks."""
        return max(1, -(-self._config.max_run_bits // self._steps))

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        p = self.params
        rb = cfg.max_run_bits
        sw = cfg.symbol_width

        # ZRUN = K << run_bits, registered: params are steady from start, and the first
        # symbol comes at least one count (one clock) after it.
        zrun = Signal(sw + 1)
        m.d.sync += zrun.eq(p.codebook_size << p.run_bits)

        counts_left = Signal(range(cfg.max_code_len + 1))  # words still to pass as counts

        # Stage k's registers: valid, kind and flags, remainder (or the count), quotient.
        n = self.stages
        s_valid = [Signal(name=f"s{k}_valid") for k in range(n)]
        s_count = [Signal(name=f"s{k}_count") for k in range(n)]  # a count: do not divide
        s_bad = [Signal(name=f"s{k}_bad") for k in range(n)]
        s_kind = [Signal(TokenKind, name=f"s{k}_kind") for k in range(n)]
        s_rem = [Signal(sw, name=f"s{k}_rem") for k in range(n)]
        s_quo = [Signal(max(1, rb), name=f"s{k}_quo") for k in range(n)]

        # A stage moves on when the one after it is empty or moving on.
        move = [Signal(name=f"s{k}_move") for k in range(n + 1)]  # move[k]: into stage k
        m.d.comb += move[n].eq(self.o.ready)
        for k in reversed(range(n)):
            m.d.comb += move[k].eq(~s_valid[k] | move[k + 1])
        m.d.comb += self.i.ready.eq(move[0])

        # The quotient bits each stage finds, MSB first (stage 0's steps work on the input).
        bits = list(reversed(range(rb)))
        per_stage = [bits[k * self._steps:(k + 1) * self._steps] for k in range(n)]

        def divide(count, rem, quo, steps):
            """Restoring division steps (no subtraction for a count): (rem, quo) after."""
            for b in steps:
                # Before the step for quotient bit b, a pair's remainder is below
                # K·2^(b+1) <= 2^(max_index_bits+1+b): the bits above are 0 and need no
                # subtractor. One subtraction gives both the comparison (its borrow) and
                # the new remainder.
                w = min(sw, cfg.max_index_bits + 1 + b)
                diff = Signal(w + 1, name=f"diff_{b}")
                m.d.comb += diff.eq(rem[:w] - (p.codebook_size << b))
                take = Signal(name=f"take_{b}")
                m.d.comb += take.eq(~count & ~diff[w])
                rem_b = Signal(sw, name=f"rem_{b}")
                m.d.comb += rem_b.eq(Cat(Mux(take, diff[:w], rem[:w]), rem[w:]))
                quo = quo | (take << b)
                rem = rem_b
            return rem, quo

        # Stage 0: classify the word and begin dividing it.
        word = self.i.payload
        is_count = Signal()
        m.d.comb += is_count.eq(counts_left != 0)
        # One subtraction classifies a symbol: below ZRUN a pair, then ZRUN, EOS, outside.
        past_zrun = Signal(sw + 2)
        below = Signal()
        bad = Signal()
        m.d.comb += [
            past_zrun.eq(word - zrun),
            below.eq(past_zrun[-1]),
            bad.eq(~is_count & ~below & (past_zrun[1:] != 0)),
        ]
        with m.If(self.i.valid & self.i.ready):
            with m.If(is_count):
                m.d.sync += counts_left.eq(counts_left - 1)
        rem, quo = divide(is_count, word, 0, per_stage[0])
        with m.If(move[0]):
            m.d.sync += [
                s_valid[0].eq(self.i.valid),
                s_count[0].eq(is_count),
                s_bad[0].eq(bad),
                s_kind[0].eq(Mux(is_count | below | bad, TokenKind.PAIR,
                                 Mux(past_zrun[0], TokenKind.EOS, TokenKind.ZRUN))),
                s_rem[0].eq(rem),
                s_quo[0].eq(quo),
            ]
        for k in range(1, n):
            rem, quo = divide(s_count[k - 1], s_rem[k - 1], s_quo[k - 1], per_stage[k])
            with m.If(move[k]):
                m.d.sync += [
                    s_valid[k].eq(s_valid[k - 1]),
                    s_count[k].eq(s_count[k - 1]),
                    s_bad[k].eq(s_bad[k - 1]),
                    s_kind[k].eq(s_kind[k - 1]),
                    s_rem[k].eq(rem),
                    s_quo[k].eq(quo),
                ]

        last = n - 1
        pair = Signal()
        m.d.comb += pair.eq(~s_count[last] & ~s_bad[last] & (s_kind[last] == TokenKind.PAIR))
        m.d.comb += [
            self.o.valid.eq(s_valid[last]),
            self.o.payload.count.eq(Mux(s_count[last], s_rem[last], 0)),
            self.o.payload.bad.eq(s_bad[last]),
            self.o.payload.entry.kind.eq(s_kind[last]),
            self.o.payload.entry.run.eq(Mux(pair, s_quo[last], 0)),
            self.o.payload.entry.index.eq(Mux(pair, s_rem[last], 0)),
        ]

        with m.If(self.start):
            m.d.sync += counts_left.eq(p.max_len)
            m.d.sync += [v.eq(0) for v in s_valid]
        return m

