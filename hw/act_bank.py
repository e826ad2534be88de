"""One activation bank: ``act_depth`` words of ``bw`` bits, one write port and ``n`` read
ports; an SPRAM on the iCE40UP5K when one read port is enough, block RAM otherwise.

Ref: Lattice TN1314 / the iCE40 UltraPlus SPRAM (``SB_SPRAM256KA``: 16,384 x 16 bits,
nibble write mask, one port; yosys' ``cells_sim.v`` model: the output updates on a read
and holds otherwise, during writes too).
"""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.vendor import SiliconBluePlatform

from hw.ram import read_port

__all__ = ["ActivationBank"]

_SPRAM_WORDS = 16384
_SPRAM_BITS = 16
_PORTS_A_COPY = 4  # read ports of one Memory (see ActivationBank._copies)


def read_signature(config):
    return wiring.Signature({
        "addr": Out(unsigned(config.act_addr_width)),
        "en": Out(1),
        "data": In(signed(config.bw)),
    })


class ActivationBank(wiring.Component):
    """``act_depth`` signed ``bw``-bit words.

    Ports:
        ``rd[r]`` (``n`` read ports, flipped ``read_signature``): ``data`` is the word at
            ``addr`` of the last clock with ``en`` high, held while ``en`` is low.
        ``wr_addr``, ``wr_data``, ``wr_en`` (in): the write port.
        ``wr_data1``, ``wr_two`` (in, ``drain_width`` 2 only): with ``wr_en``, ``wr_two``
            also writes ``wr_data1`` to word ``wr_addr + 1`` (below ``act_depth``) in the
            same clock. With ``drain_width`` 2 a write lands a clock after ``wr_en``: a
            word is read no sooner than two clocks after its write (the sequencer's next
            layer and the host read a bank tens of clocks after its last write at least).

    The user never reads and writes the bank in the same clock (a layer reads one bank and
    writes the other; the host does one at a time): the SPRAM has a single port, and the
    block RAM copies are read without collision logic (``hw.ram``).

    The RAM is chosen once, by platform: on an iCE40 (``SiliconBluePlatform``) with one
    read port, an ``SB_SPRAM256KA`` holding ``16 / bw`` words in each of its 16-bit words
    (``act_depth · bw`` up to 256 kbit); anywhere else (and with more read ports, as the
    SPRAM has one) an ``amaranth.lib.memory.Memory``, one block-RAM copy per read port.
    With ``drain_width`` 2 the words are two memories of ``act_depth / 2``, the even and
    the odd addresses (word ``a`` is word ``a >> 1`` of memory ``a & 1``), so two
    neighbouring words are written in one clock, one to each; a read reads both and
    keeps the one its address picks.
    """

    def __init__(self, config, n_read: int):
        self._config = config
        self._n = n_read
        ports = {
            "rd": In(read_signature(config)).array(n_read),
            "wr_addr": In(unsigned(config.act_addr_width)),
            "wr_data": In(signed(config.bw)),
            "wr_en": In(1),
        }
        if config.drain_width == 2:
            ports["wr_data1"] = In(signed(config.bw))
            ports["wr_two"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        per_word = _SPRAM_BITS // cfg.bw  # words of bw bits in an SPRAM word
        fits = cfg.act_depth <= _SPRAM_WORDS * per_word
        if cfg.drain_width == 2:
            self._split(m)
            return m
        match platform:
            case SiliconBluePlatform() if self._n == 1 and fits:
                rd = self.rd[0]
                sb = (per_word - 1).bit_length()  # address bits that pick the bw-bit word
                wr = self.wr_en
                # bytes of the SPRAM word the write touches, as its nibble mask
                lane = self.wr_addr[:sb] if sb else 0
                mask = Cat(*(Cat(b, b) if cfg.bw == 8 else Cat(b, b, b, b)
                             for b in [wr & (lane == k) for k in range(per_word)]))
                dout = Signal(_SPRAM_BITS)
                addr = Signal(14)
                m.d.comb += addr.eq(Mux(wr, self.wr_addr[sb:], rd.addr[sb:]))
                m.submodules.spram = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr,
                    i_DATAIN=Cat(*([self.wr_data] * per_word)),
                    i_MASKWREN=mask,
                    i_WREN=wr,
                    i_CHIPSELECT=wr | rd.en,
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=dout)
                r_lane = Signal(max(1, sb))  # the word's place in the data on the outputs
                if sb:
                    with m.If(rd.en):
                        m.d.sync += r_lane.eq(rd.addr[:sb])
                m.d.comb += rd.data.eq(dout.word_select(r_lane, cfg.bw).as_signed())
            case _:
                ports = self._copies(m, "ram", cfg.act_depth, self.wr_addr, self.wr_data,
                                     self.wr_en)
                for r, port in enumerate(ports):
                    m.d.comb += [port.addr.eq(self.rd[r].addr), port.en.eq(self.rd[r].en),
                                 self.rd[r].data.eq(port.data)]
        return m

    def _copies(self, m, name, depth, addr, data, en):
        """Memories of ``depth`` words written together, with ``n`` read ports between them;
        the read ports, in order. At most ``_PORTS_A_COPY`` read ports share a memory:
        Yosys' ``memory_libmap`` (0.70) takes time and memory exponential in a memory's
        read ports (8: 5 s; 10: 42 s and 540 MB; 13: past the 4 GB of its WebAssembly
        build, which then fails), and makes one block-RAM copy per read port anyway."""
        cfg = self._config
        ports = []
        for k in range(-(-self._n // _PORTS_A_COPY)):
            mem = memory.Memory(shape=signed(cfg.bw), depth=depth, init=[])
            m.submodules[f"{name}_{k}"] = mem
            wr = mem.write_port()
            m.d.comb += [wr.addr.eq(addr), wr.data.eq(data), wr.en.eq(en)]
            for r in range(k * _PORTS_A_COPY, min(self._n, (k + 1) * _PORTS_A_COPY)):
                ports.append(read_port(m, mem, name=f"{name}_rd{r}"))
        return ports

    def _split(self, m):
        """``drain_width`` 2: even and odd words in two memories."""
        cfg = self._config
        half = cfg.act_depth // 2
        a = self.wr_addr
        odd = a[0]
        hi = a[1:]
        # Word a goes to memory a & 1; word a + 1 to the other one, at the same row when
        # a is even and at the next row when a is odd.
        # The two memories' write ports are registers, so the write lands a clock after
        # ``wr_en``: formed from the write port (the top's multiplexer of the
        # post-processing's and the host's, by the sequencer's state) and sent straight
        # to the copies, spread over the device, these were among the ULX3S build's
        # longest paths (16.9 ns into the odd memories' data, session 24).
        even_addr = Signal(range(half))
        even_data = Signal(signed(cfg.bw))
        even_en = Signal()
        odd_addr = Signal(range(half))
        odd_data = Signal(signed(cfg.bw))
        odd_en = Signal()
        m.d.sync += [
            even_addr.eq(Mux(odd, hi + 1, hi)),
            even_data.eq(Mux(odd, self.wr_data1, self.wr_data)),
            even_en.eq(self.wr_en & (~odd | self.wr_two)),
            odd_addr.eq(hi),
            odd_data.eq(Mux(odd, self.wr_data, self.wr_data1)),
            odd_en.eq(self.wr_en & (odd | self.wr_two)),
        ]
        evens = self._copies(m, "even", half, even_addr, even_data, even_en)
        odds = self._copies(m, "odd", half, odd_addr, odd_data, odd_en)
        for r in range(self._n):
            rd = self.rd[r]
            pick = Signal(name=f"pick{r}")  # the memory the word on the outputs came from
            with m.If(rd.en):
                m.d.sync += pick.eq(rd.addr[0])
            for port in (evens[r], odds[r]):
                m.d.comb += [port.addr.eq(rd.addr[1:]), port.en.eq(rd.en)]
            m.d.comb += rd.data.eq(Mux(pick, odds[r].data, evens[r].data))
