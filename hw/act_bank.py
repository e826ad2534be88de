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

    The user never reads and writes the bank in the same clock (a layer reads one bank and
    writes the other; the host does one at a time): the SPRAM has a single port, and the
    block RAM copies are read without collision logic (``hw.ram``).

    The RAM is chosen once, by platform: on an iCE40 (``SiliconBluePlatform``) with one
    read port, an ``SB_SPRAM256KA`` holding ``16 / bw`` words in each of its 16-bit words
    (``act_depth · bw`` up to 256 kbit); anywhere else (and with more read ports, as the
    SPRAM has one) an ``amaranth.lib.memory.Memory``, one block-RAM copy per read port.
    """

    def __init__(self, config, n_read: int):
        self._config = config
        self._n = n_read
        super().__init__({
            "rd": In(read_signature(config)).array(n_read),
            "wr_addr": In(unsigned(config.act_addr_width)),
            "wr_data": In(signed(config.bw)),
            "wr_en": In(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        per_word = _SPRAM_BITS // cfg.bw  # words of bw bits in an SPRAM word
        fits = cfg.act_depth <= _SPRAM_WORDS * per_word
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
                mem = memory.Memory(shape=signed(cfg.bw), depth=cfg.act_depth, init=[])
                m.submodules.ram = mem
                wr = mem.write_port()
                m.d.comb += [wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data),
                             wr.en.eq(self.wr_en)]
                for r in range(self._n):
                    port = read_port(m, mem, name=f"rd{r}")
                    m.d.comb += [port.addr.eq(self.rd[r].addr), port.en.eq(self.rd[r].en),
                                 self.rd[r].data.eq(port.data)]
        return m
