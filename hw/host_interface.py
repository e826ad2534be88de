"""The host command interface: framed requests from a byte stream, the core driven, framed
responses out.

Ref: docs/protocol.md (the frame format, the commands and the device's behaviour on
errors and lost bytes); the constants are ``espalier.host``'s, the protocol's software face.
CRC-32 as zlib (ISO-HDLC), computed bytewise by ``amaranth.lib.crc``.
"""

import struct

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from hw.image_loader import LoadError
from hw.layouts import ImageByte
from hw.protocol import (
    MAX_ARGS,
    STATE_FORMAT,
    SYNC,
    Cmd,
    Status,
    max_payload,
    ping_payload,
)

__all__ = ["HostInterface", "core_signature"]

#: The state record that STATUS, LOAD_IMAGE and RUN answer: loaded, load_status, n_layers,
#: have_input, run_status (u8 each), cycles (u32).
_STATE_BYTES = struct.calcsize(STATE_FORMAT)


def core_signature(config) -> wiring.Signature:
    """The accelerator core's control port, as the host interface drives it.

    Image: ``image`` streams a weight image's bytes into the core's ``ImageLoader``
    (``last`` on the final byte); ``load`` pulses its ``start``, ``abort`` its ``abort``;
    ``load_busy``, ``load_status`` and ``loaded`` are its ``busy``, ``status`` and
    ``loaded`` (``load_busy`` until the image is prepared too); ``prepared``: the loaded
    image's tables, codebooks and biases are resident (the ``Sequencer``'s). Input:
    ``act_wr_*`` write activation bank 0 (one word a clock while ``act_wr_en``; only while
    the core is not ``busy``). Run: ``run`` pulses for a clock
    with ``run_first`` / ``run_count`` valid (and held until the next request); ``busy``
    must be high from the clock after ``run`` until the run ends, when ``run_status`` (0 =
    success, else the core's error code) and ``cycles`` (the run's clocks) describe it.
    ``n_layers`` is the loaded image's layer count. Read: ``act_rd_data`` is the word of
    bank ``act_rd_bank`` at ``act_rd_addr`` the clock after ``act_rd_en``, held while
    ``act_rd_en`` is low.
    """
    return wiring.Signature({
        "image": Out(stream.Signature(ImageByte())),
        "load": Out(1),
        "abort": Out(1),
        "load_busy": In(1),
        "load_status": In(LoadError),
        "loaded": In(1),
        "prepared": In(1),
        "act_wr_addr": Out(unsigned(config.act_addr_width)),
        "act_wr_data": Out(signed(config.bw)),
        "act_wr_en": Out(1),
        "run": Out(1),
        "run_first": Out(8),
        "run_count": Out(8),
        "busy": In(1),
        "run_status": In(unsigned(4)),
        "cycles": In(unsigned(32)),
        "n_layers": In(8),
        "act_rd_bank": Out(1),
        "act_rd_addr": Out(unsigned(config.act_addr_width)),
        "act_rd_en": Out(1),
        "act_rd_data": In(signed(config.bw)),
    })


class _S(enum.Enum, shape=4):
    """The interface's states: receiving a request, executing it, sending the response."""

    HUNT = 0  # dropping bytes until a SYNC
    HEADER = 1  # seq, cmd, length
    DECIDE = 2  # the header's checks; a load starts here
    PAYLOAD = 3
    TRAILER = 4  # the request's CRC
    CHECK = 5  # the CRC's verdict; execute
    WAIT_LOAD = 6  # the loader checks the image
    WAIT_RUN = 7
    T_HEADER = 8  # SYNC, seq, status, length
    T_READ = 9  # a READ's next word is being read
    T_PAYLOAD = 10
    T_CRC = 11
    DISCARD = 12  # after a length above the maximum: drop bytes until the line is idle


class HostInterface(wiring.Component):
    """Executes the framed requests of docs/protocol.md arriving on ``i`` on the core behind
    ``core`` (``core_signature``) and sends a response for each on ``o``.

    Ports: ``i`` (in stream of bytes, e.g. from ``hw.uart.UARTRx``), ``o`` (out stream of
    bytes, e.g. to ``hw.uart.UARTTx``), ``core``.

    One request at a time: a request is received whole (its CRC checked) before it is
    executed, and its response sent before the next request's bytes are taken (``i.ready``
    is low meanwhile, so over a UART the host must wait for each response, as
    ``espalier.host.Device`` does). Image bytes go to the loader as they arrive, except the
    last, which is held until the request's CRC has matched: a bad CRC pulses ``abort``
    instead, so a corrupt LOAD_IMAGE never leaves an image loaded. LOAD_INPUT writes words
    as they arrive and RUN is refused (``NO_INPUT``) until a LOAD_INPUT has been received
    whole with a good CRC.

    Loss: if no byte arrives for ``timeout_clocks`` clocks in the middle of a request, the
    partial request is dropped (a load in progress aborted), and the interface looks for
    the next SYNC. A request whose length exceeds ``espalier.host.max_payload(config)`` is
    answered ``BAD_LENGTH`` at once and then every byte is dropped until the line has been
    idle for ``timeout_clocks``.

    Throughput: a request byte a clock (image bytes one every two clocks), a response byte
    a clock when ``o`` is ready (a READ takes one more clock per word). Latency: a response
    starts 3 clocks after the request's last byte (LOAD_IMAGE: after the loader's checks;
    RUN: after the run).
    """

    def __init__(self, config, *, timeout_clocks: int = 1 << 20):
        if not isinstance(timeout_clocks, int) or timeout_clocks < 2:
            raise ValueError(f"timeout_clocks must be a whole number of at least 2, not "
                             f"{timeout_clocks!r}")
        if config.bw % 8:
            raise ValueError(f"the data width {config.bw} is not a whole number of bytes")
        self._config = config
        self._timeout = timeout_clocks
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "core": Out(core_signature(config)),
        })

    def elaborate(self, platform):
        cfg = self._config
        core = self.core
        nb = cfg.bw // 8
        max_pl = max_payload(cfg)
        pw = max_pl.bit_length()  # bits of a payload length that passed the maximum
        aw1 = cfg.act_addr_width + 1  # bits of 0..act_depth
        m = Module()
        # One CRC for both directions: a request's is checked before its response starts.
        m.submodules.crc = crc = catalog.CRC32_ISO_HDLC(data_width=8).create()

        crc_feed = Signal()  # a byte sent or received goes into the CRC
        crc_data = Signal(8)
        crc_go = Signal()

        state = Signal(_S)
        byte = self.i.payload
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)

        seq = Signal(8)
        cmd = Signal(8)
        length = Signal(32)
        n = Signal(3)  # header and trailer byte index
        left = Signal(pw)  # payload bytes still to come
        err = Signal(4)  # a Status found before the payload, reported after its CRC
        args = Signal(8 * MAX_ARGS)  # the payload's last 9 bytes, the last byte at the top
        discard = Signal()
        load_started = Signal()
        have_input = Signal()
        timer = Signal(range(self._timeout))

        # -- image bytes to the loader: one register, and the final byte held back ---------
        img_byte = Signal(8)
        img_last = Signal()
        img_valid = Signal()
        held = Signal(8)
        m.d.comb += [
            core.image.valid.eq(img_valid),
            core.image.payload.data.eq(img_byte),
            core.image.payload.last.eq(img_last),
        ]
        with m.If(img_valid & (core.image.ready | ~core.load_busy)):
            # Taken, or the loader has stopped (it refused the image early): dropped.
            m.d.sync += img_valid.eq(0)

        # -- input words to bank 0 ---------------------------------------------------------
        in_lo = Signal(8)
        in_hi = Signal()  # the next byte is a word's high byte
        in_addr = Signal(cfg.act_addr_width)
        wr_addr = Signal(cfg.act_addr_width)
        wr_data = Signal(cfg.bw)
        wr_en = Signal()
        m.d.sync += wr_en.eq(0)
        m.d.comb += [core.act_wr_addr.eq(wr_addr), core.act_wr_data.eq(wr_data),
                     core.act_wr_en.eq(wr_en)]

        # -- arguments (where the fields are once the payload had the command's length) ----
        run_first, run_count = args[56:64], args[64:72]
        rd_bank, rd_offset, rd_count = args[0:8], args[8:40], args[40:72]
        rd_addr = Signal(cfg.act_addr_width)
        rd_left = Signal(aw1)
        rd_k = Signal(range(nb))
        m.d.comb += [core.run_first.eq(run_first), core.run_count.eq(run_count),
                     core.act_rd_bank.eq(rd_bank[0]), core.act_rd_addr.eq(rd_addr)]
        run_skip = Signal()

        # -- response ----------------------------------------------------------------------
        ping = list(ping_payload(cfg))
        r_status = Signal(8)
        r_len = Signal(max(cfg.act_depth * nb, len(ping)).bit_length())
        t_idx = Signal(range(len(ping) + 1))

        def respond(status, length=0):
            m.d.sync += [r_status.eq(status), r_len.eq(length), t_idx.eq(0),
                         state.eq(_S.T_HEADER)]

        # -- the inter-byte timeout --------------------------------------------------------
        receiving = state.as_value().matches(_S.HEADER, _S.PAYLOAD, _S.TRAILER, _S.DISCARD)
        with m.If(take | ~receiving):
            m.d.sync += timer.eq(0)
        with m.Elif(timer == self._timeout - 1):
            m.d.sync += [state.eq(_S.HUNT), timer.eq(0), img_valid.eq(0)]
            with m.If(~state.as_value().matches(_S.DISCARD) & load_started):
                m.d.comb += core.abort.eq(1)
        with m.Else():
            m.d.sync += timer.eq(timer + 1)

        m.d.comb += self.i.ready.eq(
            state.as_value().matches(_S.HUNT, _S.HEADER, _S.TRAILER, _S.DISCARD)
            | (state.as_value().matches(_S.PAYLOAD) & ~img_valid))

        # -- receiving and executing a request ---------------------------------------------
        with m.Switch(state):
            with m.Case(_S.HUNT):
                with m.If(take & (byte == SYNC)):
                    m.d.comb += crc.start.eq(1)
                    m.d.sync += [state.eq(_S.HEADER), n.eq(0), load_started.eq(0),
                                 discard.eq(0)]

            with m.Case(_S.HEADER):
                with m.If(take):
                    m.d.comb += crc_feed.eq(1)
                    m.d.sync += n.eq(n + 1)
                    with m.Switch(n):
                        with m.Case(0):
                            m.d.sync += seq.eq(byte)
                        with m.Case(1):
                            m.d.sync += cmd.eq(byte)
                        for k in range(4):
                            with m.Case(2 + k):
                                m.d.sync += length[8 * k:8 * k + 8].eq(byte)
                    with m.If(n == 5):
                        m.d.sync += state.eq(_S.DECIDE)

            with m.Case(_S.DECIDE):
                ln = length[:pw]
                m.d.sync += [n.eq(0), left.eq(ln), err.eq(Status.OK), in_addr.eq(0),
                             in_hi.eq(0)]
                with m.If(length > max_pl):
                    # The length cannot be trusted, so neither can the frame's end.
                    m.d.sync += discard.eq(1)
                    respond(Status.BAD_LENGTH)
                with m.Else():
                    m.d.sync += state.eq(_S.PAYLOAD)
                    with m.If(ln == 0):
                        m.d.sync += state.eq(_S.TRAILER)
                    with m.Switch(cmd):
                        with m.Case(Cmd.PING, Cmd.STATUS):
                            with m.If(ln != 0):
                                m.d.sync += err.eq(Status.BAD_LENGTH)
                        with m.Case(Cmd.LOAD_IMAGE):
                            with m.If((ln == 0) | (ln > cfg.image_bytes)):
                                m.d.sync += err.eq(Status.BAD_LENGTH)
                            with m.Elif(core.busy | core.load_busy):
                                m.d.sync += err.eq(Status.BUSY)
                            with m.Else():
                                m.d.comb += core.load.eq(1)
                                m.d.sync += load_started.eq(1)
                        with m.Case(Cmd.LOAD_INPUT):
                            with m.If((ln == 0) | (ln[:(nb - 1).bit_length()] != 0)
                                      | (ln > cfg.act_depth * nb)):
                                m.d.sync += err.eq(Status.BAD_LENGTH)
                            with m.Elif(core.busy):
                                m.d.sync += err.eq(Status.BUSY)
                            with m.Else():
                                m.d.sync += have_input.eq(0)
                        with m.Case(Cmd.RUN):
                            with m.If(ln != 2):
                                m.d.sync += err.eq(Status.BAD_LENGTH)
                        with m.Case(Cmd.READ):
                            with m.If(ln != MAX_ARGS):
                                m.d.sync += err.eq(Status.BAD_LENGTH)
                        with m.Default():
                            m.d.sync += err.eq(Status.UNKNOWN_CMD)

            with m.Case(_S.PAYLOAD):
                last = left == 1
                with m.If(take):
                    m.d.comb += crc_feed.eq(1)
                    m.d.sync += [left.eq(left - 1), args.eq(Cat(args[8:], byte))]
                    with m.If(last):
                        m.d.sync += state.eq(_S.TRAILER)
                    with m.If(load_started):
                        with m.If(last):
                            m.d.sync += held.eq(byte)
                        with m.Elif(core.load_busy):
                            m.d.sync += [img_byte.eq(byte), img_last.eq(0), img_valid.eq(1)]
                    with m.If((cmd == Cmd.LOAD_INPUT) & (err == Status.OK)):
                        def write(word):
                            m.d.sync += [wr_data.eq(word), wr_addr.eq(in_addr), wr_en.eq(1),
                                         in_addr.eq(in_addr + 1)]
                        if nb == 1:
                            write(byte)
                        else:  # little-endian: the low byte first
                            m.d.sync += [in_hi.eq(~in_hi), in_lo.eq(byte)]
                            with m.If(in_hi):
                                write(Cat(in_lo, byte))

            with m.Case(_S.TRAILER):
                with m.If(take):
                    m.d.comb += crc_feed.eq(1)
                    m.d.sync += n.eq(n + 1)
                    with m.If(n == 3):
                        m.d.sync += state.eq(_S.CHECK)

            with m.Case(_S.CHECK):
                with m.If(img_valid | crc_go):
                    pass  # the loader has not taken the last forwarded byte, or the CRC
                    #       not the last byte yet
                with m.Elif(~crc.match_detected):
                    with m.If(load_started):
                        m.d.comb += core.abort.eq(1)
                    respond(Status.BAD_CRC)
                with m.Elif(err != Status.OK):
                    respond(err)
                with m.Else():
                    with m.Switch(cmd):
                        with m.Case(Cmd.PING):
                            respond(Status.OK, len(ping))
                        with m.Case(Cmd.STATUS):
                            respond(Status.OK, _STATE_BYTES)
                        with m.Case(Cmd.LOAD_IMAGE):
                            with m.If(core.load_busy):
                                m.d.sync += [img_byte.eq(held), img_last.eq(1),
                                             img_valid.eq(1)]
                            m.d.sync += state.eq(_S.WAIT_LOAD)
                        with m.Case(Cmd.LOAD_INPUT):
                            m.d.sync += have_input.eq(1)
                            respond(Status.OK)
                        with m.Case(Cmd.RUN):
                            with m.If(core.busy):
                                respond(Status.BUSY)
                            with m.Elif(~core.loaded):
                                respond(Status.NOT_LOADED)
                            with m.Elif(~have_input):
                                respond(Status.NO_INPUT)
                            with m.Elif((run_count == 0)
                                        | (run_first + run_count > core.n_layers)):
                                respond(Status.BAD_ARG)
                            with m.Else():
                                m.d.comb += core.run.eq(1)
                                m.d.sync += [state.eq(_S.WAIT_RUN), run_skip.eq(1)]
                        with m.Case(Cmd.READ):
                            with m.If(core.busy):
                                respond(Status.BUSY)
                            with m.Elif((rd_bank > 1) | (rd_count == 0)
                                        | (rd_offset[aw1:] != 0) | (rd_count[aw1:] != 0)
                                        | (rd_offset[:aw1] + rd_count[:aw1]
                                           > cfg.act_depth)):
                                respond(Status.BAD_ARG)
                            with m.Else():
                                m.d.sync += [rd_addr.eq(rd_offset), rd_left.eq(rd_count),
                                             rd_k.eq(0)]
                                respond(Status.OK, rd_count[:aw1] * nb)

            with m.Case(_S.WAIT_LOAD):
                with m.If(~img_valid & ~core.load_busy):
                    with m.If(core.loaded):
                        respond(Status.OK, _STATE_BYTES)
                    with m.Else():
                        respond(Status.LOAD_FAILED, _STATE_BYTES)

            with m.Case(_S.WAIT_RUN):
                # busy rises the clock after run: skip that clock.
                m.d.sync += run_skip.eq(0)
                with m.If(~run_skip & ~core.busy):
                    respond(Status.OK, _STATE_BYTES)

            with m.Case(_S.DISCARD):
                pass  # bytes dropped; the timeout returns to HUNT

        # -- sending the response ----------------------------------------------------------
        tx = self.o.payload
        sending = state.as_value().matches(_S.T_HEADER, _S.T_PAYLOAD, _S.T_CRC)
        sent = Signal()
        m.d.comb += [
            # The CRC's first byte waits for the last payload byte to pass the CRC.
            self.o.valid.eq(sending & ~(state.as_value().matches(_S.T_CRC) & crc_go)),
            sent.eq(self.o.valid & self.o.ready),
        ]
        # The CRC takes each byte a clock after it was sent or received: a register between
        # the byte multiplexers and the CRC's XOR network keeps the two apart.
        m.d.sync += [crc_data.eq(Mux(sending, tx, byte)), crc_go.eq(crc_feed)]
        m.d.comb += [crc.data.eq(crc_data), crc.valid.eq(crc_go)]

        def payload_bytes(values):
            with m.Switch(t_idx):
                for k, value in enumerate(values):
                    with m.Case(k):
                        m.d.comb += tx.eq(value)

        cycles = [core.cycles[8 * k:8 * k + 8] for k in range(4)]
        r_len32 = Cat(r_len, Const(0, 32 - len(r_len)))

        with m.Switch(state):
            with m.Case(_S.T_HEADER):
                payload_bytes([SYNC, seq, r_status] + [r_len32[8 * k:8 * k + 8]
                                                       for k in range(4)])
                with m.If(sent):
                    m.d.sync += t_idx.eq(t_idx + 1)
                    m.d.comb += [crc.start.eq(t_idx == 0), crc_feed.eq(t_idx != 0)]
                    with m.If(t_idx == 6):
                        m.d.sync += t_idx.eq(0)
                        with m.If(r_len == 0):
                            m.d.sync += state.eq(_S.T_CRC)
                        with m.Elif(cmd == Cmd.READ):
                            m.d.sync += state.eq(_S.T_READ)
                        with m.Else():
                            m.d.sync += state.eq(_S.T_PAYLOAD)

            with m.Case(_S.T_READ):
                m.d.comb += core.act_rd_en.eq(1)
                m.d.sync += state.eq(_S.T_PAYLOAD)

            with m.Case(_S.T_PAYLOAD):
                with m.Switch(cmd):
                    with m.Case(Cmd.PING):
                        payload_bytes(ping)
                    with m.Case(Cmd.STATUS, Cmd.LOAD_IMAGE, Cmd.RUN):
                        # (byte 0: bit 0 loaded, bit 1 prepared)
                        payload_bytes([Cat(core.loaded, core.prepared),
                                       core.load_status.as_value(),
                                       core.n_layers, have_input, core.run_status] + cycles)
                    with m.Case(Cmd.READ):
                        m.d.comb += tx.eq(core.act_rd_data.as_unsigned().word_select(rd_k, 8))
                with m.If(sent):
                    m.d.comb += crc_feed.eq(1)
                    with m.If(cmd != Cmd.READ):
                        m.d.sync += t_idx.eq(t_idx + 1)
                    with m.If(cmd == Cmd.READ):
                        m.d.sync += rd_k.eq(rd_k + 1)
                        with m.If(rd_k == nb - 1):
                            m.d.sync += [rd_k.eq(0), rd_addr.eq(rd_addr + 1),
                                         rd_left.eq(rd_left - 1), state.eq(_S.T_READ)]
                            with m.If(rd_left == 1):
                                m.d.sync += [state.eq(_S.T_CRC), t_idx.eq(0)]
                    with m.Elif(t_idx == r_len - 1):
                        m.d.sync += [state.eq(_S.T_CRC), t_idx.eq(0)]

            with m.Case(_S.T_CRC):
                m.d.comb += tx.eq(crc.crc.word_select(t_idx[:2], 8))
                with m.If(sent):
                    m.d.sync += t_idx.eq(t_idx + 1)
                    with m.If(t_idx == 3):
                        m.d.sync += state.eq(_S.HUNT)
                        with m.If(discard):
                            m.d.sync += state.eq(_S.DISCARD)
        return m
