# amaranth: UnusedElaboratable=no
"""HostInterface in pysim against a mock core, driven by espalier.host.Device through
espalier.simlink (the host code that talks to a board), with random stalls on the byte
streams: every command, every refusal, corrupt and cut-short requests, corrupt, stale and
lost responses."""

import dataclasses
import struct

import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from espalier.host import (
    CONFIG_FIELDS,
    PROTOCOL_VERSION,
    SYNC,
    Cmd,
    Device,
    DeviceError,
    LinkError,
    Status,
    encode_frame,
)
from espalier.simlink import SimTransport, UARTSimTransport
from hw.config import get_preset
from hw.host_interface import HostInterface, core_signature
from hw.image_loader import ImageLoader, LoadError
from hw.uart import UARTRx, UARTTx
from tests.imagegen import random_image
from weights.image import write_image

TIMEOUT = 300  # the interface's inter-byte timeout in clocks
BAD_MAGIC = 0xBA  # an image starting with this byte is refused at once by the mock loader
FAIL_COUNT = 3  # a run of this many layers ends with the mock's error code RUN_ERROR
RUN_ERROR = 6


def config(bw=8, image_bytes=64):
    return dataclasses.replace(get_preset("small"), bw=bw, acc_width=2 * bw + 10,
                               image_bytes=image_bytes, act_depth=16)


class _L(enum.Enum, shape=2):
    IDLE = 0
    RECEIVE = 1
    CHECK = 2


class MockCore(wiring.Component):
    """The core's side of ``core_signature``.

    Loader: ``load`` starts a load; bytes are taken with stalls; the first byte is the
    image's layer count, except ``BAD_MAGIC``, which is refused at once (MAGIC); ``last``
    ends the load 3 clocks later as loaded; ``abort`` ends it as TRUNCATED. Activations:
    two banks of ``act_depth`` words. Run: layer ``L`` writes ``x + L + 1`` (wrapping) for
    every word ``x`` of bank ``L % 2`` into bank ``(L + 1) % 2``; a run of ``FAIL_COUNT``
    layers reports ``RUN_ERROR``.

    With ``real_loader``, the image goes to a real ``ImageLoader`` instead.
    """

    def __init__(self, config, *, real_loader=False):
        self._config = config
        self._real_loader = real_loader
        super().__init__({"ctl": In(core_signature(config))})

    def elaborate(self, platform):
        cfg = self._config
        c = self.ctl
        m = Module()

        # -- loader ---------------------------------------------------------------------------
        if self._real_loader:
            m.submodules.loader = loader = ImageLoader(cfg)
            wiring.connect(m, wiring.flipped(c.image), loader.i)
            m.d.comb += [loader.start.eq(c.load), loader.abort.eq(c.abort),
                         c.load_busy.eq(loader.busy), c.load_status.eq(loader.status),
                         c.loaded.eq(loader.loaded), c.n_layers.eq(loader.n_layers)]
        else:
            self._mock_loader(m)
        self._mock_run(m)
        return m

    def _mock_loader(self, m):
        c = self.ctl
        state = Signal(_L)
        lfsr = Signal(4, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[1]))
        first = Signal()
        wait = Signal(2)
        m.d.comb += [c.load_busy.eq(state != _L.IDLE),
                     c.image.ready.eq((state == _L.RECEIVE) & (lfsr[0] | lfsr[1]))]
        with m.If(c.image.valid & c.image.ready):
            m.d.sync += first.eq(0)
            with m.If(first):
                m.d.sync += c.n_layers.eq(c.image.payload.data)
                with m.If(c.image.payload.data == BAD_MAGIC):
                    m.d.sync += [state.eq(_L.IDLE), c.load_status.eq(LoadError.MAGIC)]
            with m.If(c.image.payload.last):
                m.d.sync += [state.eq(_L.CHECK), wait.eq(3)]
        with m.If(state == _L.CHECK):
            m.d.sync += wait.eq(wait - 1)
            with m.If(wait == 0):
                m.d.sync += [state.eq(_L.IDLE), c.loaded.eq(1)]
        with m.If((state == _L.RECEIVE) & c.abort):
            m.d.sync += [state.eq(_L.IDLE), c.load_status.eq(LoadError.TRUNCATED)]
        with m.If(c.load):
            m.d.sync += [state.eq(_L.RECEIVE), first.eq(1), c.loaded.eq(0),
                         c.load_status.eq(LoadError.NONE), c.n_layers.eq(0)]

    def _mock_run(self, m):
        cfg = self._config
        c = self.ctl
        d = cfg.act_depth
        aw = cfg.act_addr_width
        m.submodules.act = act = memory.Memory(shape=cfg.bw, depth=2 * d, init=[])
        wr = act.write_port()
        host_rd = act.read_port()
        run_rd = act.read_port()
        m.d.comb += [host_rd.addr.eq(Cat(c.act_rd_addr, c.act_rd_bank)),
                     host_rd.en.eq(c.act_rd_en), c.act_rd_data.eq(host_rd.data)]
        layer = Signal(8)
        left = Signal(8)
        addr = Signal(aw)
        phase = Signal()  # 0: read a word, 1: write it to the other bank
        with m.If(c.busy):
            m.d.sync += c.cycles.eq(c.cycles + 1)
            m.d.comb += [run_rd.addr.eq(Cat(addr, layer[0])), run_rd.en.eq(~phase)]
            m.d.sync += phase.eq(~phase)
            with m.If(phase):
                m.d.comb += [wr.addr.eq(Cat(addr, ~layer[0])),
                             wr.data.eq(run_rd.data + layer + 1), wr.en.eq(1)]
                m.d.sync += addr.eq(addr + 1)
                with m.If(addr == d - 1):
                    m.d.sync += [layer.eq(layer + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.d.sync += c.busy.eq(0)
        with m.Else():
            m.d.comb += [wr.addr.eq(c.act_wr_addr), wr.data.eq(c.act_wr_data),
                         wr.en.eq(c.act_wr_en)]
        with m.If(c.run):
            m.d.sync += [c.busy.eq(1), layer.eq(c.run_first), left.eq(c.run_count), addr.eq(0),
                         phase.eq(0), c.cycles.eq(0),
                         c.run_status.eq((c.run_count == FAIL_COUNT) * RUN_ERROR)]


class Top(wiring.Component):
    """HostInterface + MockCore, with the interface's byte streams as the top's."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def __init__(self, config, *, real_loader=False):
        self.host = HostInterface(config, timeout_clocks=TIMEOUT)
        self.mock = MockCore(config, real_loader=real_loader)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.host = self.host
        m.submodules.mock = self.mock
        wiring.connect(m, wiring.flipped(self.i), self.host.i)
        wiring.connect(m, self.host.o, wiring.flipped(self.o))
        wiring.connect(m, self.host.core, self.mock.ctl)
        return m


class UARTTop(wiring.Component):
    """The same behind UART pins."""

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, config, divisor):
        self.divisor = divisor
        self.inner = Top(config)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        m.submodules.inner = inner = self.inner
        wiring.connect(m, urx.o, inner.i)
        wiring.connect(m, inner.o, utx.i)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        return m


class Tamper:
    """A transport wrapper that corrupts the next request (``on_write``) or flips a bit of
    the response's byte ``flip_at`` (counted from the next read)."""

    def __init__(self, link):
        self.link = link
        self.on_write = None
        self.flip_at = None
        self.drop_reads = False

    def write(self, data):
        if self.on_write is not None:
            data, self.on_write = self.on_write(bytes(data)), None
        self.link.write(data)

    def read(self, n, timeout=None):
        data = bytearray(self.link.read(n, timeout))
        if self.drop_reads:
            return b""
        if self.flip_at is not None:
            if self.flip_at < len(data):
                data[self.flip_at] ^= 0x10
                self.flip_at = None
            else:
                self.flip_at -= len(data)
        return bytes(data)

    def flush_input(self):
        self.link.flush_input()


def make(bw=8, seed=0, stall=0.3, *, real_loader=False, vcd=None):
    cfg = config(bw, image_bytes=1024 if real_loader else 64)
    top = Top(cfg, real_loader=real_loader)
    link = SimTransport(top, rng=np.random.default_rng(seed), stall=stall,
                        timeout_cycles=2000, quiet_cycles=TIMEOUT + 50, vcd=vcd)
    images = []

    async def monitor(ctx):
        image = top.host.core.image
        async for _, _, valid, ready, payload in ctx.tick().sample(
                image.valid, image.ready, image.payload):
            if valid and ready:
                images.append((payload.data, payload.last))

    link.sim.add_testbench(monitor, background=True)
    tamper = Tamper(link)
    return cfg, Device(tamper), tamper, link, images


def image_bytes(n_layers, size, seed=0):
    rng = np.random.default_rng(seed)
    return bytes([n_layers]) + bytes(int(b) for b in rng.integers(0, 256, size - 1))


def wrap(x, bw):
    return (x + (1 << (bw - 1))) % (1 << bw) - (1 << (bw - 1))


def test_ping_and_status(dump_vcd, tmp_path):
    cfg, dev, _, link, _ = make(vcd=tmp_path / "host.vcd" if dump_vcd else None)
    info = dev.ping()
    assert info.version == PROTOCOL_VERSION
    assert info.fields == {f: getattr(cfg, f) for f in CONFIG_FIELDS}
    assert info.config() == cfg
    s = dev.status()
    assert not s.loaded and not s.have_input and s.cycles == 0 and s.n_layers == 0
    link.close()


def test_load_image():
    _, dev, _, _, images = make(seed=1)
    data = image_bytes(3, 40)
    assert dev.load_image(data) == 3
    assert images == [(b, int(n == len(data) - 1)) for n, b in enumerate(data)]
    s = dev.status()
    assert s.loaded and s.load_status == LoadError.NONE.value and s.n_layers == 3


@pytest.mark.parametrize("where", ["crc", "payload"])
def test_load_image_bad_crc(where):
    """A corrupt LOAD_IMAGE is aborted: the loader never sees the last byte, nothing is
    loaded (the previous image included)."""
    _, dev, tamper, _, images = make(seed=2)
    dev.load_image(image_bytes(2, 20))
    images.clear()
    data = image_bytes(3, 30, seed=5)

    def corrupt(frame):
        frame = bytearray(frame)
        frame[-2 if where == "crc" else 20] ^= 0x01
        return bytes(frame)

    tamper.on_write = corrupt
    with pytest.raises(DeviceError) as e:
        dev.load_image(data)
    assert e.value.status == Status.BAD_CRC
    assert len(images) == len(data) - 1 and not any(last for _, last in images)
    s = dev.status()
    assert not s.loaded and s.load_status == LoadError.TRUNCATED.value


def test_load_image_refused():
    """The loader refuses an image at its first byte: the rest is dropped, the loader's
    error comes back as LOAD_FAILED, and the device answers the next request."""
    _, dev, _, _, images = make(seed=3)
    with pytest.raises(DeviceError) as e:
        dev.load_image(bytes([BAD_MAGIC]) + bytes(range(30)))
    assert e.value.status == Status.LOAD_FAILED and e.value.detail == LoadError.MAGIC.value
    assert "MAGIC" in str(e.value)
    assert len(images) == 1
    assert not dev.status().loaded


@pytest.mark.parametrize("bw", [8, 16])
def test_input_run_read(bw):
    cfg, dev, _, _, _ = make(bw=bw, seed=4)
    d = cfg.act_depth
    rng = np.random.default_rng(bw)
    x = rng.integers(-(1 << (bw - 1)), 1 << (bw - 1), d)
    x[:2] = [-(1 << (bw - 1)), (1 << (bw - 1)) - 1]
    with pytest.raises(DeviceError) as e:
        dev.run(0, 1)
    assert e.value.status == Status.NOT_LOADED
    dev.load_image(image_bytes(4, 10))
    with pytest.raises(DeviceError) as e:
        dev.run(0, 1)
    assert e.value.status == Status.NO_INPUT
    dev.load_input(x)
    assert dev.status().have_input
    np.testing.assert_array_equal(dev.read(0, 0, d), x)
    status, cycles = dev.run(0, 2)
    assert status == 0 and cycles == 2 * 2 * d
    np.testing.assert_array_equal(dev.read(1, 0, d), wrap(x + 1, bw))
    np.testing.assert_array_equal(dev.read(0, 3, 5), wrap(x + 3, bw)[3:8])
    assert dev.run(2, 1) == (0, 2 * d)  # layer 2 reads bank 0, writes bank 1
    np.testing.assert_array_equal(dev.read(1, d - 1, 1), wrap(x + 6, bw)[d - 1:])
    assert dev.run(0, FAIL_COUNT) == (RUN_ERROR, FAIL_COUNT * 2 * d)
    s = dev.status()
    assert s.run_status == RUN_ERROR and s.cycles == FAIL_COUNT * 2 * d
    for first, count in [(0, 0), (4, 1), (3, 2), (255, 2)]:
        with pytest.raises(DeviceError) as e:
            dev.run(first, count)
        assert e.value.status == Status.BAD_ARG
    for bank, offset, count in [(2, 0, 1), (0, 0, 0), (0, d - 2, 3), (1, 1 << 31, 2)]:
        with pytest.raises(DeviceError) as e:
            dev.read(bank, offset, count)
        assert e.value.status == Status.BAD_ARG


def test_real_loader():
    """The interface in front of the real ImageLoader: a good image loads, one with a
    flipped bit (in a good frame) is refused with the image's own CRC error, a corrupt frame
    aborts the load."""
    _, dev, tamper, _, _ = make(seed=13, real_loader=True)
    image = random_image(0)
    data = write_image(image)
    # The host refuses up front what this build could load but not run (the mock's banks
    # hold 16 words); the device itself still loads it.
    with pytest.raises(ValueError, match="exceeds an activation bank of 16"):
        dev.check_image(data)
    assert dev.load_image(data) == len(image.layers)
    bad = bytearray(data)
    bad[100] ^= 0x04
    with pytest.raises(DeviceError) as e:
        dev.load_image(bytes(bad))
    assert e.value.status == Status.LOAD_FAILED and e.value.detail == LoadError.CRC.value
    assert dev.load_image(data) == len(image.layers)
    tamper.on_write = lambda f: f[:-1] + bytes([f[-1] ^ 1])
    with pytest.raises(DeviceError) as e:
        dev.load_image(data)
    assert e.value.status == Status.BAD_CRC
    s = dev.status()
    assert not s.loaded and s.load_status == LoadError.TRUNCATED.value
    with pytest.raises(ValueError, match="data width"):
        dev.check_image(write_image(random_image(1, bw=16)))


def test_load_input_bad_crc():
    _, dev, tamper, _, _ = make(seed=5)
    dev.load_image(image_bytes(2, 10))
    dev.load_input(np.arange(16))
    assert dev.run(0, 1)[0] == 0
    tamper.on_write = lambda f: f[:-1] + bytes([f[-1] ^ 0x80])
    with pytest.raises(DeviceError) as e:
        dev.load_input(np.arange(16))
    assert e.value.status == Status.BAD_CRC
    assert not dev.status().have_input
    with pytest.raises(DeviceError) as e:
        dev.run(0, 1)
    assert e.value.status == Status.NO_INPUT
    for values in [np.arange(17), np.arange(0)]:
        with pytest.raises(DeviceError) as e:
            dev.load_input(values)
        assert e.value.status == Status.BAD_LENGTH


def test_unknown_command_and_bad_lengths():
    cfg, dev, _, link, _ = make(seed=6)
    for cmd, payload, status in [(0x77, b"abc", Status.UNKNOWN_CMD),
                                 (0x00, b"", Status.UNKNOWN_CMD),
                                 (Cmd.PING, b"x", Status.BAD_LENGTH),
                                 (Cmd.RUN, b"\x00", Status.BAD_LENGTH),
                                 (Cmd.READ, bytes(10), Status.BAD_LENGTH),
                                 (Cmd.LOAD_INPUT, bytes(cfg.act_depth + 1),
                                  Status.BAD_LENGTH)]:
        response = dev.request(cmd, payload, max_length=0)
        assert (response.code, response.payload) == (status, b"")
    # A length above every command's maximum is answered at once; the rest of the frame
    # (and anything until the line is idle) is dropped.
    response = dev.request(Cmd.LOAD_IMAGE, bytes(cfg.image_bytes + 1), max_length=0)
    assert response.code == Status.BAD_LENGTH
    link.flush_input()
    assert dev.ping().version == PROTOCOL_VERSION


def test_cut_short_then_resync():
    """A frame cut short is dropped after the timeout (a load in it aborted); garbage before
    the next SYNC is skipped."""
    _, dev, _, link, images = make(seed=7)
    dev.load_image(image_bytes(2, 10))
    frame = encode_frame(9, Cmd.LOAD_IMAGE, image_bytes(3, 30))
    link.write(frame[:20])
    link.run(TIMEOUT + 100)
    assert link.pending == 0 and link.read(1) == b""
    link.write(b"\x00\x12" + encode_frame(9, Cmd.PING)[:5])  # garbage, then a cut header
    link.run(TIMEOUT + 100)
    link.write(b"\x00\x13\x55")  # garbage just before the next frame
    s = dev.status()
    assert not s.loaded and s.load_status == LoadError.TRUNCATED.value
    assert not any(last for _, last in images[10:])
    # The same for an input cut short: RUN is refused until a whole one arrives.
    dev.load_input(np.arange(16))
    assert dev.status().have_input
    link.write(encode_frame(10, Cmd.LOAD_INPUT, bytes(16))[:12])
    link.run(TIMEOUT + 100)
    assert not dev.status().have_input


def test_lost_response():
    """A request cut short gets no response: the host times out (LinkError), then talks
    to the device again."""
    _, dev, tamper, _, _ = make(seed=8)
    tamper.on_write = lambda f: f[:-2]
    with pytest.raises(LinkError) as e:
        dev.ping()
    assert e.value.kind == "timeout"
    tamper.drop_reads = True
    with pytest.raises(LinkError) as e:
        dev.status()
    tamper.drop_reads = False
    assert dev.ping().version == PROTOCOL_VERSION


@pytest.mark.parametrize("at", [0, 1, 3, 7, 20, -1])
def test_corrupt_response(at):
    """A flipped bit anywhere in a response is a LinkError; the next request works."""
    _, dev, tamper, _, _ = make(seed=9, stall=0.1)
    tamper.flip_at = at if at >= 0 else 7 + 64 + 3
    with pytest.raises(LinkError) as e:
        dev.ping()
    assert e.value.kind in {"sync", "seq", "length", "crc", "timeout"}
    assert not dev.status().loaded


def test_seq_mismatch():
    _, dev, tamper, _, _ = make(seed=10)

    def reseq(frame):
        body = bytearray(frame[1:-4])
        body[0] ^= 0x40
        return encode_frame(body[0], body[1], bytes(body[6:]))

    tamper.on_write = reseq
    with pytest.raises(LinkError) as e:
        dev.status()
    assert e.value.kind == "seq"
    dev.ping()


def test_stale_response():
    """A response the host gave up on does not answer the next request."""
    _, dev, _, link, _ = make(seed=11)
    dev.ping()
    link.write(encode_frame(200, Cmd.STATUS))  # a request whose response nobody reads
    link.run(200)
    with pytest.raises(LinkError) as e:
        dev.status()
    assert e.value.kind == "seq"
    assert dev.status().n_layers == 0


def test_uart():
    """The same interface behind hw.uart, driven through UART pins."""
    cfg = config()
    d = 4
    link = UARTSimTransport(UARTTop(cfg, d), divisor=d, rng=np.random.default_rng(12),
                            stall=0.2, timeout_cycles=40 * d)
    dev = Device(link)
    assert dev.ping().config() == cfg
    dev.load_image(image_bytes(2, 12))
    dev.load_input(np.arange(-8, 8))
    assert dev.run(0, 1) == (0, 2 * cfg.act_depth)
    np.testing.assert_array_equal(dev.read(1, 0, 16), np.arange(-7, 9))
    assert link.framing_errors == 0


def test_sync_constant():
    assert encode_frame(0, 0)[0] == SYNC
    assert struct.unpack("<I", encode_frame(1, 2, b"ab")[3:7])[0] == 2
