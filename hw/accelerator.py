"""The whole accelerator: weight decompression, the compute paths and the sequencer behind a
control port, and the same behind the host command interface's byte streams.

Ref: docs/architecture.md (block diagram, memory map, dataflow, cycle model).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.act_bank import ActivationBank
from hw.conv_drain import ConvDrain
from hw.conv_feed import ConvFeed
from hw.host_interface import HostInterface, core_signature
from hw.image_buffer import ImageBuffer
from hw.image_loader import LoadError
from hw.pe_array import PEArray
from hw.postprocess import PostProcess
from hw.sequencer import Sequencer
from hw.sparse_fc import SparseFC
from hw.tile_buffer import TileBuffer
from hw.weight_unit import WeightUnit

__all__ = ["Accelerator", "AcceleratorCore"]


class AcceleratorCore(wiring.Component):
    """Everything but the host link: ``ctl`` is the control port the ``HostInterface``
    drives (``hw.host_interface.core_signature``, flipped).

    Blocks: ``WeightUnit`` (image loader, image buffer, decode lanes); ``TileBuffer`` ->
    ``ConvFeed`` -> ``PEArray`` -> ``ConvDrain`` for convolutions; ``SparseFC`` for fully
    connected layers; ``PostProcess`` (bias, requantize, ReLU, max-pool) for both;
    ``Sequencer``; two activation banks. Bank memories have one write port and
    ``max(rows, decode_lanes)`` read ports: one per array row (conv) or decode lane (fc)
    on the layer's input bank; the first also serves the host's reads while idle.

    The image buffer (``ImageBuffer``: SPRAM on the iCE40UP5K) is a single-port RAM
    outside the ``WeightUnit``: the loader and the decode path own it, except in the clocks
    the weight unit does not need it (``port_free``: idle, holding a loaded table, or its
    table reader not asking) while no load runs, when the sequencer reads layer entries
    and biases through it.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({"ctl": In(core_signature(config))})
        self.unit = WeightUnit(config, external_buffer=True)
        self.sequencer = Sequencer(config)
        self.tiles = TileBuffer(config)
        self.feed = ConvFeed(config)
        self.array = PEArray(config)
        self.drain = ConvDrain(config)
        self.fc = SparseFC(config)
        self.post = PostProcess(config)

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        ctl = self.ctl
        lanes, rows = cfg.decode_lanes, cfg.rows

        m.submodules.unit = unit = self.unit
        m.submodules.sequencer = seq = self.sequencer
        m.submodules.tiles = tiles = self.tiles
        m.submodules.feed = feed = self.feed
        m.submodules.array = array = self.array
        m.submodules.drain = drain = self.drain
        m.submodules.fc = fc = self.fc
        m.submodules.post = post = self.post

        # -- the image buffer ---------------------------------------------------------------
        m.submodules.image = ram = ImageBuffer(cfg)
        b = unit.buffer
        seq_owns = Signal()
        # The weight unit has the port while it streams and in the clocks its table reader
        # asks for it; in the others (and while the unit is idle or holds a loaded table)
        # the sequencer reads entries and biases through it.
        m.d.comb += seq_owns.eq(seq.busy & seq.img_free)
        m.d.comb += [
            ram.bus.addr.eq(Mux(seq_owns, seq.img_addr, b.addr)),
            ram.bus.wr_data.eq(b.wr_data),
            ram.bus.wr_en.eq(Mux(seq_owns, 0, b.wr_en)),
            # The sequencer uses a word only in the clock it arrives after it asked for it
            # (``seq.img_en``), so while it owns the port the buffer reads every clock: its
            # enable, which reaches every block RAM of the buffer, then depends on no
            # sequencer logic (the bias loop's byte request was the ULX3S build's critical
            # path through the enable, 30.4 ns, session 12).
            ram.bus.rd_en.eq(Mux(seq_owns, 1, b.rd_en)),
            b.rd_data.eq(ram.bus.rd_data),
            seq.img_data.eq(ram.bus.rd_data),
        ]

        # -- loading, through the control port ----------------------------------------------
        # An image whose tables, codebooks and biases fit side by side is prepared as its
        # load ends: the sequencer puts each layer's there once (docs/architecture.md,
        # "Resident tables"); the load is busy until then.
        wiring.connect(m, wiring.flipped(ctl.image), unit.i)
        load_was_busy = Signal()
        prepare = Signal()
        m.d.sync += load_was_busy.eq(unit.load_busy)
        m.d.comb += [
            prepare.eq(load_was_busy & ~unit.load_busy & unit.loaded
                       & (unit.status == LoadError.NONE) & unit.image_resident),
            seq.prepare.eq(prepare),
            seq.unprepare.eq(unit.load),
            unit.load.eq(ctl.load & ~seq.busy),
            unit.abort.eq(ctl.abort),
            ctl.load_busy.eq(unit.load_busy | prepare | seq.preparing),
            ctl.load_status.eq(unit.status),
            ctl.loaded.eq(unit.loaded),
            ctl.prepared.eq(seq.prepared),
            ctl.n_layers.eq(unit.n_layers),
        ]

        # -- the sequencer --------------------------------------------------------------------
        m.d.comb += [
            seq.run.eq(ctl.run & ~unit.load_busy),
            seq.first.eq(ctl.run_first),
            seq.count.eq(ctl.run_count),
            ctl.busy.eq(seq.busy),
            ctl.run_status.eq(seq.status),
            ctl.cycles.eq(seq.cycles),
            seq.loaded.eq(unit.loaded & (unit.status == LoadError.NONE)),
            seq.n_layers.eq(unit.n_layers),
            unit.aux_desc_addr.eq(seq.desc_addr),
            seq.desc_data.eq(unit.desc_data),
            unit.decode.eq(seq.decode),
            unit.go.eq(seq.go),
            unit.drop.eq(seq.drop),
            seq.img_free.eq(unit.port_free & ~unit.load_busy),
            unit.layer.eq(seq.decode_layer),
            unit.sparse.eq(seq.sparse),
            unit.resident.eq(seq.prepared),
            seq.held.eq(unit.held),
            seq.bias_base.eq(unit.bias_base),
            seq.decode_busy.eq(unit.busy),
            seq.decode_error.eq(unit.error),
        ]

        # -- weights: to the tile buffer (conv) or the sparse fc path -------------------------
        conv = seq.conv
        for j in range(lanes):
            o, t, f = unit.o[j], tiles.i[j], fc.i[j]
            m.d.comb += [
                t.payload.eq(o.payload), f.payload.eq(o.payload),
                t.valid.eq(o.valid & conv), f.valid.eq(o.valid & ~conv),
                o.ready.eq(Mux(conv, t.ready, f.ready)),
            ]
        m.d.comb += [
            tiles.start.eq(seq.conv_start), tiles.out_c.eq(seq.out_c),
            tiles.rd_addr.eq(feed.tile_addr), tiles.rd_en.eq(feed.tile_en),
            tiles.release.eq(feed.tile_release),
            feed.tile_data.eq(tiles.rd_data), feed.tile_head_ready.eq(tiles.head_ready),
            feed.start.eq(seq.conv_start), feed.params.eq(seq.conv_params),
            drain.start.eq(seq.conv_start), drain.params.eq(seq.drain_params),
            seq.conv_done.eq(drain.done),
            fc.start.eq(seq.fc_start),
            seq.fc_idle.eq(fc.idle),
        ]
        wiring.connect(m, feed.i, array.i)
        wiring.connect(m, feed.w, array.w)
        wiring.connect(m, array.o, drain.i)
        if cfg.fc_on_array:
            # Lane j's multiplies on PE (0, j)'s multiplier: the array's operands while a
            # convolution runs, the fc lane's while a fully connected layer does.
            for j in range(lanes):
                product = Signal(signed(2 * cfg.bw), name=f"shared_product{j}")
                m.d.comb += [
                    product.eq(Mux(conv, array.mul_a[j], fc.mul_a[j])
                               * Mux(conv, array.mul_b[j], fc.mul_b[j])),
                    array.mul_p[j].eq(product),
                    fc.mul_p[j].eq(product),
                ]

        # -- post-processing: from the drain (conv) or the fc path --------------------------
        m.d.comb += [
            post.params.eq(seq.post_params),
            post.bias_wr_addr.eq(seq.bias_wr_addr),
            post.bias_wr_data.eq(seq.bias_wr_data),
            post.bias_wr_en.eq(seq.bias_wr_en),
            seq.post_idle.eq(post.idle),
            post.i.payload.eq(Mux(conv, drain.o.payload, fc.o.payload)),
            post.i.valid.eq(Mux(conv, drain.o.valid, fc.o.valid)),
            drain.o.ready.eq(conv & post.i.ready),
            fc.o.ready.eq(~conv & post.i.ready),
        ]

        # -- the activation banks -----------------------------------------------------------
        # Each port reads only the bank it reads for (the input bank while running, the
        # host's bank on port 0 while idle), so a bank is never read while it is written.
        n_in = max(rows, lanes)
        m.submodules.act0 = bank0 = ActivationBank(cfg, n_in)
        m.submodules.act1 = bank1 = ActivationBank(cfg, n_in)
        banks = [bank0, bank1]
        running = seq.busy
        in_bank, out_bank = seq.in_bank, seq.out_bank

        for r in range(n_in):
            addr = Signal.like(feed.x_addr[0], name=f"in_addr{r}")
            en = Signal(name=f"in_en{r}")
            conv_addr = feed.x_addr[r] if r < rows else 0
            conv_en = feed.x_en if r < rows else 0
            fc_addr = fc.x_addr[r] if r < lanes else 0
            fc_en = fc.x_en[r] if r < lanes else 0
            m.d.comb += [addr.eq(Mux(conv, conv_addr, fc_addr)),
                         en.eq(Mux(conv, conv_en, fc_en))]
            sel = in_bank
            if r == 0:
                addr, en = (Mux(running, addr, ctl.act_rd_addr),
                            Mux(running, en, ctl.act_rd_en))
                sel = Mux(running, in_bank, ctl.act_rd_bank)
            r_sel = Signal(name=f"in_sel{r}")  # the bank the data on port r came from
            with m.If(en):
                m.d.sync += r_sel.eq(sel)
            for b in range(2):
                m.d.comb += [banks[b].rd[r].addr.eq(addr),
                             banks[b].rd[r].en.eq(en & (sel == b))]
            data = Mux(r_sel, banks[1].rd[r].data, banks[0].rd[r].data)
            if r < rows:
                m.d.comb += feed.x_data[r].eq(data)
            if r < lanes:
                m.d.comb += fc.x_data[r].eq(data)
            if r == 0:
                m.d.comb += ctl.act_rd_data.eq(data)

        for b in range(2):
            m.d.comb += [
                banks[b].wr_addr.eq(Mux(running, post.wr_addr, ctl.act_wr_addr)),
                banks[b].wr_data.eq(Mux(running, post.wr_data, ctl.act_wr_data)),
                banks[b].wr_en.eq(Mux(running, post.wr_en & (out_bank == b),
                                      ctl.act_wr_en & (b == 0))),
            ]
            if cfg.drain_width == 2:
                m.d.comb += [banks[b].wr_data1.eq(post.wr_data1),
                             banks[b].wr_two.eq(running & post.wr_two)]
        return m


class Accelerator(wiring.Component):
    """The accelerator behind its host command interface (docs/protocol.md): command bytes
    in on ``i``, response bytes out on ``o`` (a UART's receiver and transmitter on a
    board; the host library's simulation transport in tests)."""

    def __init__(self, config, *, timeout_clocks=None):
        self._config = config
        self._timeout = timeout_clocks
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
        })
        self.core = AcceleratorCore(config)

    def elaborate(self, platform):
        m = Module()
        kwargs = {} if self._timeout is None else {"timeout_clocks": self._timeout}
        m.submodules.host = host = HostInterface(self._config, **kwargs)
        m.submodules.core = core = self.core
        wiring.connect(m, host.core, core.ctl)
        wiring.connect(m, wiring.flipped(self.i), host.i)
        wiring.connect(m, host.o, wiring.flipped(self.o))
        return m
