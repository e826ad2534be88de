"""Canonical Huffman decoding of a layer's weight streams, one symbol per clock.

Ref: docs/weight-image.md, "Huffman table" and "Stream sizes and streams"; the decoding
rule mirrors ``golden.decode.huffman_symbols``. The table-driven decode (per-length
``code < limit`` comparisons in parallel, then one symbol-memory read) is the classic
canonical-code decoder of JPEG hardware (ITU-T T.81, Annex F.2.2.3, DECODE with
MINCODE/MAXCODE/VALPTR).
"""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import DecodeParams, SymbolEntry, Token, TokenKind
from hw.ram import read_port
from hw.symbol_split import TableItem

__all__ = ["SERIAL_FIRST_BITS", "serial_first_bits", "DecodeError", "HuffmanDecoder"]


# The serial form's first step of a code takes this many bits at most: the table's
# shortest code length, if it is shorter.
SERIAL_FIRST_BITS = 4


def serial_first_bits(counts) -> int:
    """The bits ``j`` the serial form's first step of a code takes for a table with
    ``counts`` (``counts[l - 1]`` codes of length ``l``): the shortest code length, at most
    ``SERIAL_FIRST_BITS``; a code of ``l`` bits then takes ``l - j + 1`` clocks. (A build
    whose longest code is shorter than ``SERIAL_FIRST_BITS`` caps its hardware there, which
    changes nothing: a table it runs has a code no longer than that.)"""
    return next((n for n, c in enumerate(counts[:SERIAL_FIRST_BITS], start=1) if c),
                SERIAL_FIRST_BITS)


class DecodeError(enum.Enum, shape=2):
    """Why a decoder stopped. Sticky until the next ``start``."""

    NONE = 0
    NO_CODE = 1  # a bit pattern that is no code (only a single-symbol table has such)
    PAST_FAN_IN = 2  # a zero run or a weight that passes the channel's fan-in
    TABLE = 3  # parameters or a table beyond the build, or a symbol outside the alphabet


class _State(enum.Enum, shape=2):
    IDLE = 0
    COUNTS = 1
    SYMBOLS = 2
    DECODE = 3


class HuffmanDecoder(wiring.Component):
    """Decodes a layer's concatenated channel streams into tokens, one per clock.

    Ports:
        ``start`` (in): a one-cycle pulse that clears everything (error included) and
            begins loading a table. ``params`` must be steady from then on.
        ``params`` (in, ``DecodeParams``): fan-in ``N``, codebook size ``K``, ``run_bits``,
            longest code ``L``.
        ``table`` (in stream of ``TableItem``): the image's Huffman table without its ``L``
            byte, as ``SymbolSplit`` gives it: ``count[1..L]``, then the ``sum(count)``
            symbols in canonical order, already split into kind, run and index.
        ``i`` (in stream of bytes): the layer's streams back to back, as in the image.
        ``o`` (out stream of ``Token``): one token per symbol; ``first``/``last`` mark the
            symbols that start and complete each channel's fan-in.
        ``error`` (out, ``DecodeError``): sticky; the decoder stops at the first error.

    Table load: one clock per count (``L`` of them), then one clock per symbol; the
    recurrence for the lengths from ``L + 1`` to ``max_code_len`` (a count of 0 each) runs
    while the symbols arrive, so ``table.ready`` is high from the clock after ``start``
    until the last symbol (while there is no error). A symbol outside the alphabet
    (``bad``) or more symbols than ``max_table_symbols`` is a ``TABLE`` error. Otherwise
    the table must be valid (complete and canonical, as ``weights.image.read_image``
    checks); the decoder does not re-check it. Decoding begins two clocks after the clock
    that takes the last symbol (later only for a table of fewer than ``max_code_len - L``
    symbols, whose lengths past ``L`` are not done by then). With ``params.resident`` the
    symbols are in the memory already (from ``params.table_base``; a load writes them
    there, and ``delta`` includes the base): only the counts come, and decoding begins
    after the last, as the limits past ``L`` start at ``2^l``, their value for a complete
    code (the single 1-bit code alone waits for the recurrence).

    Decoding: a left-aligned bit buffer of ``max_code_len + 16`` bits takes a byte per
    clock, right below its unconsumed bits, while it has room for one. Each clock the next
    code's length is the least ``l`` whose top ``l`` bits are below ``limit[l] =
    first_code[l] + count[l]`` (all lengths compared at once; the results form a
    thermometer code); its symbol-memory address is those bits plus ``delta[l] =
    offset[l] - first_code[l]`` (computed for every length while the comparisons run), and
    the buffer shifts left by ``l``. The memory read is the second pipeline stage, which
    tracks the channel's remaining fan-in and emits the token. A channel ends when its
    symbols cover ``N``; stage 2 sees that a clock after stage 1 decoded the next code,
    which is dropped (it was speculative) along with the rest of the channel's last byte
    (padding), and the next channel starts at the next byte. Padding bits are not checked
    (the image reader does).

    Latency: a token leaves two clocks after the last bit of its code entered the buffer.
    Throughput: one symbol per clock while the input delivers at least the code lengths'
    bits (a byte per clock sustains codes of up to 8 bits on average) and ``o`` is ready,
    plus one clock per channel (its end).
    Back-pressure: ``o.valid`` does not depend on ``o.ready``; when ``o`` stalls, the
    token and the memory read are held and decoding waits. ``i.ready`` depends only on
    registers (buffer room).

    The serial form (``config.serial_decoder``, ``_SerialForm``): the same ports, table,
    tokens and errors, but stage 1 tries one code length a clock against a count from a
    small memory, with a 16-bit buffer: a code's first step takes the table's shortest
    length's bits (``j``, at most ``SERIAL_FIRST_BITS``), each later step a bit, so a code
    of ``l`` bits takes ``l - j + 1`` clocks (plus a clock per channel end), for about a
    third of the parallel form's logic (docs/decoder.md, "The serial form"). Its counts
    are written to the count memory as they come, and decoding begins once the symbols
    are stored (two clocks after the last count on a resident table). ``NO_CODE`` is
    reported when ``L`` bits have matched no code.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "params": In(DecodeParams(config)),
            "table": In(stream.Signature(TableItem(config))),
            "i": In(stream.Signature(unsigned(8))),
            "o": Out(stream.Signature(Token(config))),
            "error": Out(DecodeError),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        max_len = cfg.max_code_len
        p = self.params

        # Symbols are written (table load) and read (decoding) at different times.
        m.submodules.symbols = mem = memory.Memory(
            shape=SymbolEntry(cfg), depth=cfg.max_table_symbols, init=[])
        wr = mem.write_port()
        rd = read_port(m, mem)
        entry = rd.data

        state = Signal(_State)
        # The error is kept as one sticky flag per cause, and ``error`` is formed from them:
        # each flag's input is then its cause alone, not a multiplexer of every cause and
        # ``start`` behind the symbol memory's late output (the error register was one of
        # the ULX3S build's longest paths, 19.2 ns, session 26). The first error stops the
        # decoder, so only PAST_FAN_IN and NO_CODE can come in one clock; NO_CODE is
        # reported then, as before.
        e_table = Signal()
        e_over = Signal()
        e_no_code = Signal()
        ok = Signal()
        m.d.comb += [
            ok.eq(~(e_table | e_over | e_no_code)),
            self.error.eq(Mux(e_no_code, DecodeError.NO_CODE,
                              Mux(e_over, DecodeError.PAST_FAN_IN,
                                  Mux(e_table, DecodeError.TABLE, DecodeError.NONE)))),
        ]

        # R = 2^run_bits - 1 (a ZRUN covers R + 1 zero weights) and fan_in - 1, registered
        # at ``start`` so the decode loop does not start from the parameter inputs.
        run_max = Signal(cfg.max_run_bits)
        last_left = Signal(cfg.fan_in_width)

        # -- table: the counts (per-length registers, or the serial form's count memory),
        # then the symbol memory
        t_len = Signal(range(max_len + 2))  # the length whose count comes next
        t_offset = Signal(cfg.symbol_width + 5)  # symbols of all shorter lengths
        t_total = Signal(cfg.symbol_width + 5)  # symbols in the table
        item = self.table.payload
        counting = Signal()  # this clock's length takes a count from the table
        count = Signal(cfg.symbol_width)
        m.d.comb += counting.eq((state == _State.COUNTS) & ok & self.table.valid)
        with m.If((state == _State.COUNTS) & ok):
            m.d.comb += self.table.ready.eq(1)
        form = _SerialForm(cfg) if cfg.serial_decoder else _ParallelForm(cfg)
        form.counts(m, self, state, ok, counting, count, t_len, t_offset)
        with m.If(counting & (t_len == p.max_len)):
            m.d.sync += [t_total.eq(t_offset + count), state.eq(_State.SYMBOLS)]
            with m.If(t_offset + count > cfg.max_table_symbols):
                m.d.sync += e_table.eq(1)

        # Symbols: each comes split (``SymbolSplit``) and is stored at its canonical
        # position, one a clock.
        s_addr = Signal(range(cfg.max_table_symbols + 1))
        s_done = Signal()  # every symbol is stored
        m.d.comb += [wr.addr.eq(s_addr), wr.data.eq(item.entry)]
        with m.If((state == _State.SYMBOLS) & ok & ~s_done):
            m.d.comb += self.table.ready.eq(1)
            with m.If(self.table.valid):
                with m.If(item.bad):
                    m.d.sync += e_table.eq(1)
                with m.Else():
                    m.d.comb += wr.en.eq(1)
                    m.d.sync += s_addr.eq(s_addr + 1)
                    with m.If(s_addr + 1 == t_total):
                        m.d.sync += s_done.eq(1)
        with m.If((state == _State.SYMBOLS) & s_done & form.table_done):
            m.d.sync += state.eq(_State.DECODE)

        # -- memory stage: the symbol's meaning, the channel's remaining fan-in -----------
        # ``m_left`` is the channel's weights not yet covered, less one, so that "this
        # symbol ends the channel" is one equality on the memory's output.
        m_valid = Signal()
        m_left = Signal(cfg.fan_in_width)
        m_pair = Signal()
        m_eos = Signal()
        m_ends = Signal()
        m_over = Signal()
        # The memory's data comes late in the clock (a block RAM's clock-to-output is over
        # a third of the period on the ECP5), and "this symbol ends the channel" decides
        # what stage 1 does in the same clock. So everything in it that does not need the
        # symbol is formed from registers first: whether ``m_left`` fits a run at all
        # (``m_small``) and whether a ZRUN ends the channel (``m_zrun_ends``); the symbol
        # then meets them in one equality of ``max_run_bits`` bits and one small LUT.
        rb = cfg.max_run_bits
        m_small = Signal()
        m_zrun_ends = Signal()
        m_run_ends = Signal()
        m.d.comb += [
            m_small.eq(m_left[rb:] == 0),
            m_zrun_ends.eq(m_left == run_max),
            # (written as XORs, so that it stays a LUT tree rather than joining the
            # ``>`` below, on the same operands, in a carry chain)
            m_run_ends.eq(m_small & ~(entry.run ^ m_left[:rb]).any()),
            m_pair.eq(entry.kind == TokenKind.PAIR),
            m_eos.eq(entry.kind == TokenKind.EOS),
            # a pair covers run + 1 weights, a ZRUN R + 1
            m_ends.eq(m_eos | Mux(m_pair, m_run_ends, m_zrun_ends)),
            # (a run passes ``m_left`` only when that fits a run: an 8-bit comparison
            # behind the memory rather than one of the fan-in's width)
            m_over.eq(~m_eos & Mux(m_pair, m_small & (entry.run > m_left[:rb]),
                                   run_max > m_left)),
            self.o.valid.eq(m_valid & ~m_over & ok),
            self.o.payload.kind.eq(entry.kind),
            self.o.payload.run.eq(entry.run),
            self.o.payload.index.eq(entry.index),
            self.o.payload.first.eq(m_left == last_left),
            self.o.payload.last.eq(m_ends),
        ]
        m_take = Signal()
        m_free = Signal()
        # The stage-1 code behind a channel's last symbol is speculative: drop it, and the
        # rest of the channel's last byte.
        cancel = Signal()
        m.d.comb += [
            m_take.eq(self.o.valid & self.o.ready),
            # (not ``m_take``: a token past the fan-in stops the decoder next clock, so
            # what stage 1 does meanwhile is never seen, and the loop stays short)
            m_free.eq(~m_valid | self.o.ready),
            cancel.eq(m_valid & ok & self.o.ready & m_ends),
        ]
        with m.If(m_take):
            m.d.sync += m_left.eq(Mux(m_ends, last_left,
                                      m_left - Mux(m_pair, entry.run, run_max) - 1))
        with m.If(m_valid & m_over & ok):
            m.d.sync += e_over.eq(1)

        # -- decode stage and bit buffer ---------------------------------------------------
        # Stage 1 finds the next code and its symbol-memory address (``go``: it takes one,
        # unless ``cancel`` drops it); ``no_code``: the buffer holds a pattern that is no
        # code. The bit buffer takes a byte right below its unconsumed bits, so byte
        # boundaries sit at multiples of 8 from the bottom of those, and dropping a
        # channel's padding (its last byte's unused bits) shifts out ``count mod 8`` bits.
        decoding = Signal()
        m.d.comb += decoding.eq((state == _State.DECODE) & ok)
        d_issue = Signal()
        go, no_code = form.decode(m, self, decoding, m_free, cancel, rd)
        m.d.comb += [
            d_issue.eq(go & ~cancel),
            # (not ``d_issue``: a read that ``cancel`` drops only fills an invalid stage,
            # and the memory's enable stays off the late path)
            rd.en.eq(go),
        ]
        with m.If(m_free):
            m.d.sync += m_valid.eq(d_issue)
        with m.If(no_code & m_free & ~cancel):
            m.d.sync += e_no_code.eq(1)

        # -- start: clear everything and load a new table --------------------------------
        with m.If(self.start):
            m.d.sync += [
                state.eq(_State.COUNTS),
                e_table.eq(0), e_over.eq(0), e_no_code.eq(0),
                t_len.eq(1),
                # (a resident table's symbols are in the memory from table_base on already)
                t_offset.eq(p.table_base),
                s_addr.eq(p.table_base),
                s_done.eq(p.resident),
                m_valid.eq(0),
                m_left.eq(p.fan_in - 1),
                last_left.eq(p.fan_in - 1),
                run_max.eq((Const(1, 1) << p.run_bits) - 1),
                *form.clear(p),
            ]
            bad = ((p.max_len == 0) | (p.max_len > max_len) | (p.fan_in == 0)
                   | (p.fan_in > cfg.max_fan_in) | (p.codebook_size == 0)
                   | (p.codebook_size > cfg.max_codebook_size)
                   | (p.run_bits > cfg.max_run_bits))
            with m.If(bad):
                m.d.sync += e_table.eq(1)

        return m


class _ParallelForm:
    """One code a clock: every length compared at once (``HuffmanDecoder``'s docstring).

    A form of stage 1 has three parts, which ``HuffmanDecoder.elaborate`` calls: ``counts``
    drives ``count`` (the count this clock's table word gives) and keeps what the form
    needs of the counts, and sets ``table_done`` (decoding may begin once the symbols are
    in); ``decode`` builds stage 1 and the bit buffer and returns ``go`` (stage 1 takes a
    code this clock, its symbol address on ``rd.addr``) and ``no_code``; ``clear`` gives
    the form's statements for ``start``.
    """

    def __init__(self, cfg):
        self._cfg = cfg

    def counts(self, m, dec, state, ok, counting, count, t_len, t_offset):
        cfg = self._cfg
        max_len = cfg.max_code_len
        aw = cfg.table_addr_width
        p = dec.params
        item = dec.table.payload
        self.limit = limit = [None] + [Signal(n + 1, name=f"limit_{n}")
                                       for n in range(1, max_len + 1)]
        self.delta = delta = [None] + [Signal(aw, name=f"delta_{n}")
                                       for n in range(1, max_len + 1)]
        t_code = Signal(max_len + 2)  # first code of that length
        self._t_code = t_code

        # Counts: limit[l] = first_code[l] + count[l], delta[l] = offset[l] - first_code[l].
        # Lengths past L continue the recurrence with a count of 0, so limit[l] =
        # limit[L] << (l - L): then "code < limit" holds, for every length from the code's
        # own up, which makes the comparisons a thermometer code. Those lengths need no
        # table word, so they are done while the symbols arrive.
        extending = Signal()  # this clock's length is past L: a count of 0
        t_limit = Signal.like(t_code)
        t_delta = Signal(aw)
        m.d.comb += [
            extending.eq((state == _State.SYMBOLS) & ok & (t_len <= max_len)),
            count.eq(Mux(state == _State.COUNTS, item.count, 0)),
            t_limit.eq(t_code + count),
            t_delta.eq(t_offset - t_code),
        ]
        with m.If(counting | extending):
            with m.Switch(t_len):
                for n in range(1, max_len + 1):
                    with m.Case(n):
                        m.d.sync += [limit[n].eq(t_limit), delta[n].eq(t_delta)]
            m.d.sync += [
                t_code.eq(t_limit << 1),
                t_offset.eq(t_offset + count),
                t_len.eq(t_len + 1),
            ]
        # A resident table (no symbols to wait for) may decode before the lengths past L are
        # done: their limits start at 2^l, which is what the recurrence gives them when
        # the code is complete (limit[L] = 2^L), as every table but the single 1-bit code
        # is (the loader checks); a code never ends past L, so their deltas are unused.
        complete = Signal()
        with m.If(counting & (t_len == p.max_len)):
            m.d.sync += complete.eq(~((p.max_len == 1) & (count == 1)))
        early = p.resident & complete if cfg.resident_tables else 0
        self.table_done = (t_len > max_len) | early

    def decode(self, m, dec, decoding, m_free, cancel, rd):
        cfg = self._cfg
        max_len = cfg.max_code_len
        aw = cfg.table_addr_width
        p = dec.params
        limit, delta = self.limit, self.delta
        # The bit buffer: a longest code plus two bytes. One byte would do for correctness;
        # the second absorbs runs of long codes (measured on the LeNet images: 0.95-0.99
        # symbols per clock with one byte of slack, 0.97-1.0 with two).
        width = max_len + 16

        # The bit buffer is left-aligned: ``bits[-1]`` is the next bit and the top
        # ``count`` bits are the unconsumed ones (the rest are 0). The next code's bits are
        # then always the top ``max_len`` bits, with no multiplexer in front of the
        # comparisons, and consuming a code is a shift selected by its one-hot length:
        # the loop ``bits`` -> comparisons -> shift -> ``bits`` has no adder or barrel
        # shifter in it (it was ``ptr`` -> window multiplexer -> comparisons -> subtract ->
        # ``ptr``, the design's critical path).
        buf = self.buf = _BitBuffer(m, dec, width, decoding, split=True)
        bits, count = buf.bits, buf.count
        window = Signal(max_len)
        m.d.comb += window.eq(bits[width - max_len:])

        # therm[j]: the next code is at most j + 1 bits long. Its length is the lowest set
        # bit, decoded from the thermometer code without a priority chain (a chain of 16
        # muxes was the critical path).
        therm = Signal(max_len)
        for n in range(1, max_len + 1):
            m.d.comb += therm[n - 1].eq(window[max_len - n:] < limit[n])
        onehot = Signal(max_len)
        m.d.comb += onehot.eq(therm & ~(therm << 1))
        d_found = Signal()
        d_addr = Signal(aw)
        m.d.comb += [
            d_found.eq(therm[-1]),
            # The symbol address for every length at once, the top n bits (the code,
            # modulo the memory depth) plus delta[n], added while the comparisons run;
            # the one-hot length then selects one (an and-or multiplexer).
            d_addr.eq(functools.reduce(operator.or_, (
                Mux(onehot[n - 1], (window[max_len - n:] + delta[n])[:aw], 0)
                for n in range(1, max_len + 1)))),
        ]

        # Stage 1 takes a code of n bits (``take[n - 1]``) when the code is n bits long, its
        # bits are all in the buffer (``count >= n``, from registers) and the stage may
        # go on: a gate of the one-hot length by a term ready early. (The comparisons are
        # a thermometer code, so a code of n bits is whole in the buffer exactly when
        # ``count >= n``.) Taking a code is then the one-hot select of the next ``bits``,
        # count and room among those for each length, all ready before the comparisons,
        # and the not-taken ones: no multiplexer selected by ``go`` after the one-hot
        # select. (Measured in session 30: no faster and no smaller than that multiplexer,
        # docs/decoder.md; it is the netlist the ULX3S's 55 MHz placement was found for.)
        ready = Signal()
        m.d.comb += ready.eq(decoding & m_free)
        take = Signal(max_len)
        for n in range(1, max_len + 1):
            m.d.comb += take[n - 1].eq(onehot[n - 1] & (count >= n) & ready)
        go = Signal()  # stage 1 takes a code (unless ``cancel`` drops it)
        m.d.comb += [go.eq(take.any()), rd.addr.eq(d_addr)]

        filled, filled_count = buf.filled, buf.filled_count

        def select(each, otherwise):
            return functools.reduce(operator.or_, (
                *(Mux(take[n - 1], each(n), 0) for n in range(1, max_len + 1)),
                Mux(go, 0, otherwise)))

        left = [filled_count - n for n in range(max_len + 1)]  # the count after n bits
        buf.update(m, cancel, [
            select(lambda n: Cat(Const(0, n), filled)[:width], filled),
            select(lambda n: left[n], filled_count),
            # (``room`` after a code: ``filled_count - length <= width - 8``)
            select(lambda n: left[n] <= width - 8, left[0] <= width - 8),
        ])
        return go, decoding & ~d_found & (count >= p.max_len)

    def clear(self, p):
        return [
            self._t_code.eq(0),
            *(self.limit[n].eq(1 << n) for n in range(1, self._cfg.max_code_len + 1)
              if self._cfg.resident_tables),
            *self.buf.clear(),
        ]


class _BitBuffer:
    """A left-aligned bit buffer of ``width`` bits (``bits``, the top ``count`` of them
    unconsumed, the rest 0) that takes a byte right below its unconsumed bits while it has
    room for one (``room``: ``count <= width - 8``, from registers), so byte boundaries sit at
    multiples of 8 from the bottom of those. ``filled`` is ``bits`` with this clock's byte
    and ``filled_count`` its count; dropping a channel's padding (its last byte's unused
    bits, ``pad = count mod 8``) leaves ``to_byte``, ``filled`` from its first whole byte
    on."""

    def __init__(self, m, dec, width, decoding, *, split: bool):
        self.width = width
        self.bits = bits = Signal(width)
        self.count = count = Signal(range(width + 1))
        self.room = room = Signal(init=1)  # count <= width - 8, from registers (it gates the input)
        # ``split``: each register is kept twice, its next value if the memory stage
        # cancels this clock's code (``_c``) and if it does not (``_s``), with ``cancel``
        # in a register that picks one a clock later. ``cancel`` comes from the symbol
        # memory's output, late in the clock; as the select of the bit buffer's next value
        # it went to every bit, the ULX3S build's critical path (19.1 ns, session 27).
        # Split, the pick is a multiplexer of registers at the start of stage 1 and the
        # late ``cancel`` goes into one flip-flop: the same values in the same clocks.
        self._split = split
        if split:
            self._cancelled = Signal()
            self._regs = {}
            for name, sig in (("bits", bits), ("count", count), ("room", room)):
                pair = (Signal.like(sig, name=f"{name}_s"), Signal.like(sig, name=f"{name}_c"))
                self._regs[name] = pair
                m.d.comb += sig.eq(Mux(self._cancelled, pair[1], pair[0]))
        refill = Signal()
        self.filled = filled = Signal(width)  # ``bits`` with this clock's byte
        self.filled_count = filled_count = Signal.like(count)
        m.d.comb += [
            dec.i.ready.eq(decoding & room),
            refill.eq(dec.i.valid & dec.i.ready),
            filled.eq(bits | Mux(refill, Cat(Const(0, width - 8), dec.i.payload) >> count, 0)),
            filled_count.eq(count + Mux(refill, 8, 0)),
        ]
        # Dropping padding: ``to_byte`` is ``filled`` from its first whole byte on.
        self.pad = pad = Signal(3)
        self.to_byte = to_byte = Signal(width)
        m.d.comb += [
            pad.eq(count[:3]),
            to_byte.eq(filled << pad),
        ]

    def update(self, m, cancel, otherwise):
        """The next ``bits``, count and room: on ``cancel``, ``to_byte`` and its count and
        room; otherwise ``otherwise``, the three as the caller gives them (``filled`` less
        the bits stage 1 takes, if it takes a code)."""
        width, filled_count, pad = self.width, self.filled_count, self.pad
        on_cancel = [self.to_byte, filled_count - pad, filled_count - pad <= width - 8]
        if self._split:
            m.d.sync += self._cancelled.eq(cancel)
            for (reg_s, reg_c), c, s in zip(self._regs.values(), on_cancel, otherwise,
                                            strict=True):
                m.d.sync += [reg_c.eq(c), reg_s.eq(s)]
        else:
            for reg, c, s in zip((self.bits, self.count, self.room), on_cancel, otherwise,
                                 strict=True):
                m.d.sync += reg.eq(Mux(cancel, c, s))

    def clear(self):
        if self._split:
            (bits_s, _), (count_s, _), (room_s, _) = self._regs.values()
            return [self._cancelled.eq(0), bits_s.eq(0), count_s.eq(0), room_s.eq(1)]
        return [self.bits.eq(0), self.count.eq(0), self.room.eq(1)]


class _SerialForm:
    """A length a clock (``AcceleratorConfig.serial_decoder``): the canonical decoder of
    ITU-T T.81, Annex F.2.2.3 (DECODE), one length per clock. With ``code`` the bits taken
    so far (``n`` of them) and ``first`` the first code of length ``n + 1``, the next bit
    gives ``c = 2 code + bit``, a code of that length when ``c < limit = first +
    count[n + 1]``; its symbol-memory address is ``c + delta`` (``delta = offset - first``,
    ``offset`` the symbols of the shorter lengths, from ``table_base``). Otherwise the next
    length's ``first`` is ``2 limit`` and its ``delta`` is ``delta - limit``. The counts
    are in a memory of ``max_code_len`` words, read a clock ahead (the next length's, or
    length j's after a code), so the loop holds one comparison and one adder's carry
    chain, and the per-length registers, comparisons and shifts of the parallel form are
    gone. A code starts at length ``j``, the table's shortest (at most
    ``SERIAL_FIRST_BITS``): no code is shorter, so its first code is 0 and its ``delta``
    ``table_base``, and the first step takes ``j`` bits at once; a code of ``l`` bits takes
    ``l - j + 1`` clocks."""

    def __init__(self, cfg):
        self._cfg = cfg
        self.table_done = Const(1)
        max_len = cfg.max_code_len
        self._first_max = min(SERIAL_FIRST_BITS, max_len)
        self.code = Signal(max_len)  # the bits taken of the code so far
        self.first = Signal(max_len + 1)  # the first code of length n + 1
        self.delta = Signal(cfg.table_addr_width)  # address - code for length n + 1
        self.n = Signal(range(max_len))  # bits taken of the code so far
        # A code's first step takes ``j = serial_first_bits(counts)`` bits at once (``j_m1``
        # = j - 1, found while the counts come); ``fresh``: the next step is a first step.
        self.j_m1 = Signal(range(self._first_max))
        self.fresh = Signal(init=1)

    def counts(self, m, dec, state, ok, counting, count, t_len, t_offset):
        cfg = self._cfg
        m.submodules.counts = cmem = memory.Memory(
            shape=range(cfg.max_table_symbols + 1), depth=cfg.max_code_len, init=[])
        wr = cmem.write_port()
        self.cnt_rd = read_port(m, cmem, name="cnt_rd")
        # (a count above max_table_symbols is stored short; its table is a TABLE error)
        m.d.comb += [wr.addr.eq(t_len - 1), wr.data.eq(count), wr.en.eq(counting),
                     count.eq(dec.table.payload.count)]
        with m.If(counting):
            m.d.sync += [t_offset.eq(t_offset + count), t_len.eq(t_len + 1)]
        # The shortest length (up to ``SERIAL_FIRST_BITS``): the first nonzero count's.
        # Below it the counts are 0, so its first code is 0 and its symbols' offset 0.
        # (``j_m1`` starts at the cap less one, and the lengths come in increasing order:
        # once a count below it has set it, no later length is below it.)
        with m.If(counting & (count != 0) & (t_len <= self.j_m1)):
            m.d.sync += [self.j_m1.eq(t_len - 1), self.n.eq(t_len - 1)]

    def decode(self, m, dec, decoding, m_free, cancel, rd):
        cfg = self._cfg
        max_len = cfg.max_code_len
        aw = cfg.table_addr_width
        p = dec.params
        # Two bytes: the one being taken and the next. A first step takes up to
        # ``SERIAL_FIRST_BITS`` = 4 bits and any other one bit, while a byte comes whenever
        # 8 bits or fewer are left, so an unstalled input never leaves fewer bits than a
        # step takes (after a step from c >= j bits: c + 8 - j >= 8 bits, or c - j >= 9 - 4).
        buf = self.buf = _BitBuffer(m, dec, 16, decoding, split=False)
        width = buf.width
        code, first, delta, n = self.code, self.first, self.delta, self.n
        fresh, j_m1, jmax = self.fresh, self.j_m1, self._first_max
        cnt = self.cnt_rd.data  # count[n + 1]

        # A first step's code: the top j bits; a later step's: the code so far and a bit.
        top = Signal(jmax)
        m.d.comb += top.eq(buf.bits[width - jmax:] >> (jmax - 1 - j_m1).as_unsigned())
        step = Signal()  # stage 1 takes a step (unless ``cancel`` drops it)
        c = Signal(max_len + 1)
        lim = Signal(max_len + 1)
        hit = Signal()
        go = Signal()
        m.d.comb += [
            step.eq(decoding & Mux(fresh, buf.count > j_m1, buf.count != 0) & m_free),
            c.eq(Mux(fresh, top, Cat(buf.bits[-1], code))),
            lim.eq(first + cnt),
            hit.eq(c < lim),
            go.eq(step & hit),
            rd.addr.eq((c + delta)[:aw]),
        ]
        take = Signal()  # a step taken
        restart = Signal()  # the next clock starts a code
        m.d.comb += [take.eq(step & ~cancel), restart.eq(cancel | go)]
        with m.If(restart):
            m.d.sync += [code.eq(0), first.eq(0), delta.eq(p.table_base), n.eq(j_m1),
                         fresh.eq(1)]
        with m.Elif(take):
            m.d.sync += [code.eq(c), first.eq(lim << 1), delta.eq(delta - lim), n.eq(n + 1),
                         fresh.eq(0)]
        # The count of the length the next clock tries.
        m.d.comb += self.cnt_rd.addr.eq(Mux(restart | dec.start, j_m1, Mux(take, n + 1, n)))
        taken = Mux(fresh, j_m1 + 1, 1)  # the bits a step takes
        filled, filled_count = buf.filled, buf.filled_count
        buf.update(m, cancel, [
            Mux(step, (filled << taken)[:width], filled),
            Mux(step, filled_count - taken, filled_count),
            Mux(step, filled_count - taken <= width - 8, filled_count <= width - 8)])
        # (``>=``: a table whose counts are all 0 has no first length within L)
        return go, step & ~hit & (n + 1 >= p.max_len)

    def clear(self, p):
        return [self.code.eq(0), self.first.eq(0), self.delta.eq(p.table_base),
                self.n.eq(self._first_max - 1), self.j_m1.eq(self._first_max - 1),
                self.fresh.eq(1), *self.buf.clear()]
