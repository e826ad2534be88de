"""The compressed-image buffer: one single-port RAM, SPRAM on the iCE40UP5K, block RAM or a
portable memory elsewhere.

Ref: Lattice TN1314 / the iCE40 UltraPlus SPRAM (``SB_SPRAM256KA``: 16,384 x 16 bits,
nibble write mask; yosys' ``cells_sim.v`` model: the output updates on a read and holds
otherwise, during writes too).
"""

from amaranth.hdl import C, Cat, ClockSignal, Elaboratable, Instance, Module, Mux, Signal, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In
from amaranth.vendor import SiliconBluePlatform

from hw.image_loader import buffer_inputs, buffer_signature

__all__ = ["ImageBuffer", "SpramModel"]

_SPRAM_WORDS = 16384
_SPRAM_BITS = 16


class ImageBuffer(wiring.Component):
    """``image_words`` words of ``8 · image_word_bytes`` bits behind the loader's buffer
    port (``hw.image_loader.buffer_signature``): ``addr`` for reads and writes, a byte
    enable per byte lane, ``rd_data`` the word at the address of the last clock with
    ``rd_en`` high (held otherwise, as the SPRAM behaves). With ``image_read_latency`` 2
    the port's inputs are registered first (``buffer_inputs``), so every read and write
    takes effect a clock later.

    The RAM is chosen once, by platform: on an iCE40 (``SiliconBluePlatform``) it is
    ``SB_SPRAM256KA`` blocks side by side (each 16 bits of the word) and, for deeper
    buffers, one row of them per 16,384 words; anywhere else (ECP5 block RAM through
    Yosys' inference, and simulation) an ``amaranth.lib.memory.Memory``.
    ``spram_model=True`` builds the SPRAM arrangement on any platform with ``SpramModel``
    in place of each primitive, so that simulation covers the iCE40 glue (byte enables to
    nibble masks, chip selects, the row of the last read).
    """

    def __init__(self, config, *, spram_model: bool = False):
        self._config = config
        self._spram_model = spram_model
        super().__init__({"bus": In(buffer_signature(config))})

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        bus = self.bus
        bits = 8 * cfg.image_word_bytes
        spram = self._spram_model or isinstance(platform, SiliconBluePlatform)
        assert bits % _SPRAM_BITS == 0  # image_word_bytes >= 4
        addr, wr_data, wr_en, rd_en = buffer_inputs(m, cfg, bus.addr, bus.wr_data, bus.wr_en,
                                                    bus.rd_en)
        if spram:
            rows = -(-cfg.image_words // _SPRAM_WORDS)
            cols = bits // _SPRAM_BITS
            row = addr[14:] if rows > 1 else C(0, 1)
            r_row = Signal.like(row)  # the row the data on the outputs came from
            with m.If(rd_en):
                m.d.sync += r_row.eq(row)
            outs = []
            for r in range(rows):
                words = []
                for c in range(cols):
                    dout = Signal(_SPRAM_BITS, name=f"spram_{r}_{c}_out")
                    sel = row == r
                    we = wr_en[2 * c:2 * c + 2]
                    ports = dict(
                        i_ADDRESS=addr[:14],
                        i_DATAIN=wr_data[_SPRAM_BITS * c:_SPRAM_BITS * (c + 1)],
                        i_MASKWREN=Cat(we[0], we[0], we[1], we[1]),
                        i_WREN=sel & we.any(),
                        i_CHIPSELECT=sel & (rd_en | we.any()),
                        i_CLOCK=ClockSignal("sync"),
                        i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                        o_DATAOUT=dout)
                    m.submodules[f"spram_{r}_{c}"] = (
                        SpramModel(**ports) if self._spram_model
                        else Instance("SB_SPRAM256KA", **ports))
                    words.append(dout)
                outs.append(Cat(*words))
            with m.Switch(r_row):
                for r in range(rows):
                    with m.Case(r):
                        m.d.comb += bus.rd_data.eq(outs[r])
        else:
            mem = memory.Memory(shape=bits, depth=cfg.image_words, init=[])
            m.submodules.ram = mem
            wr = mem.write_port(granularity=8)
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(addr), wr.data.eq(wr_data), wr.en.eq(wr_en),
                rd.addr.eq(addr), rd.en.eq(rd_en), bus.rd_data.eq(rd.data),
            ]
        return m


class SpramModel(Elaboratable):
    """A behavioural model of one ``SB_SPRAM256KA`` for simulation, taking the primitive's
    ports as ``Instance`` does (``i_ADDRESS`` ... ``o_DATAOUT``; ``i_CLOCK`` is the ``sync``
    domain's clock and is not modelled). As Yosys' ``cells_sim.v`` (ice40) has it: with
    ``CHIPSELECT`` high and the block powered (``STANDBY``, ``SLEEP`` low, ``POWEROFF``
    high), ``WREN`` writes ``DATAIN``'s nibbles whose ``MASKWREN`` bit is set and leaves
    ``DATAOUT`` as it was; otherwise the clock loads ``DATAOUT`` with the word at
    ``ADDRESS``. Without ``CHIPSELECT`` nothing changes."""

    def __init__(self, **ports):
        self._ports = ports

    def elaborate(self, platform):
        p = {k: Value.cast(v) for k, v in self._ports.items() if k != "i_CLOCK"}
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=_SPRAM_BITS, depth=_SPRAM_WORDS, init=[])
        on = p["i_CHIPSELECT"] & ~p["i_STANDBY"] & ~p["i_SLEEP"] & p["i_POWEROFF"]
        wr = mem.write_port(granularity=4)
        rd = mem.read_port(transparent_for=())
        m.d.comb += [
            wr.addr.eq(p["i_ADDRESS"]), wr.data.eq(p["i_DATAIN"]),
            wr.en.eq(Mux(on & p["i_WREN"], p["i_MASKWREN"], 0)),
            rd.addr.eq(p["i_ADDRESS"]), rd.en.eq(on & ~p["i_WREN"]),
            p["o_DATAOUT"].eq(rd.data),
        ]
        return m
