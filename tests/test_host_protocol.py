"""The framed protocol in pure Python: frame round trips, every corruption and truncation
detected, and Device's handling of answers, errors, lost and stale responses against a
scripted transport (docs/protocol.md)."""

import struct
import sys

import numpy as np
import pytest
from amaranth.lib.crc import catalog

from espalier.host import (
    CONFIG_FIELDS,
    HEADER_BYTES,
    PROTOCOL_VERSION,
    STATE_FORMAT,
    SYNC,
    Cmd,
    Device,
    DeviceError,
    Frame,
    IncompatibleDevice,
    LinkError,
    SerialTransport,
    Status,
    decode_frame,
    encode_frame,
    max_payload,
    ping_payload,
)
from hw.config import get_preset
from hw.image_loader import LoadError

SMALL = get_preset("small")
CRC32 = catalog.CRC32_ISO_HDLC(data_width=8)


@pytest.mark.parametrize("seq, code, payload", [
    (0, 0, b""), (255, 255, b"\xe5" * 5), (17, Cmd.LOAD_IMAGE, bytes(range(256)) * 3),
    (1, Cmd.READ, struct.pack("<BII", 1, 2, 3))])
def test_round_trip(seq, code, payload):
    frame = encode_frame(seq, code, payload)
    assert frame[0] == SYNC
    assert len(frame) == HEADER_BYTES + len(payload) + 4
    assert struct.unpack("<BBI", frame[1:7]) == (seq, code, len(payload))
    # The CRC against lib.crc's software model, as the gateware computes it.
    assert int.from_bytes(frame[-4:], "little") == CRC32.compute(frame[1:-4])
    assert decode_frame(frame) == Frame(seq, code, payload)


def bitwise_crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC a bit at a time (reflected 0xEDB88320, init and final XOR all ones)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_known_answer():
    """docs/protocol.md's example: a PING request with seq 0x12, byte for byte."""
    frame = encode_frame(0x12, Cmd.PING)
    assert frame.hex(" ") == "e5 12 01 00 00 00 00 83 2b bc c2"
    assert int.from_bytes(frame[-4:], "little") == bitwise_crc32(bytes.fromhex("120100000000"))


def test_every_bit_flip_detected():
    frame = encode_frame(7, Cmd.RUN, b"\x01\x02")
    for n in range(8 * len(frame)):
        bad = bytearray(frame)
        bad[n // 8] ^= 1 << (n % 8)
        with pytest.raises(LinkError) as e:
            decode_frame(bad)
        assert e.value.kind in {"sync", "length", "crc"}


def test_every_truncation_detected():
    frame = encode_frame(3, Cmd.LOAD_INPUT, bytes(range(10)))
    for n in range(len(frame)):
        with pytest.raises(LinkError):
            decode_frame(frame[:n])
    with pytest.raises(LinkError, match="after the frame"):
        decode_frame(frame + b"\x00")


def test_max_length():
    frame = encode_frame(3, Cmd.READ, bytes(10))
    with pytest.raises(LinkError) as e:
        decode_frame(frame, max_length=9)
    assert e.value.kind == "length"


def test_ping_payload():
    p = ping_payload(SMALL)
    assert p[:2] == bytes([PROTOCOL_VERSION, len(CONFIG_FIELDS)])
    assert struct.unpack(f"<{len(CONFIG_FIELDS)}I", p[4:]) == tuple(
        getattr(SMALL, f) for f in CONFIG_FIELDS)
    assert max_payload(SMALL) == SMALL.image_bytes


class Scripted:
    """A transport that answers each request with ``handler(request_frame)`` (bytes)."""

    byte_time = 0.0

    def __init__(self, handler):
        self.handler = handler
        self.buffer = b""
        self.requests = []
        self.flushes = 0

    def write(self, data):
        frame = decode_frame(data)
        self.requests.append(frame)
        self.buffer += self.handler(frame)

    def read(self, n, timeout=None):
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def flush_input(self):
        self.flushes += 1
        self.buffer = b""


def answer(status=Status.OK, payload=b"", seq_delta=0):
    return lambda req: encode_frame((req.seq + seq_delta) & 0xFF, status, payload)


def ping_answer(req):
    return encode_frame(req.seq, Status.OK, ping_payload(SMALL))


def test_device_ping_status():
    dev = Device(Scripted(ping_answer))
    info = dev.ping()
    assert info.config() == SMALL and info.version == PROTOCOL_VERSION
    dev.transport.handler = answer(payload=struct.pack(STATE_FORMAT, 1, 0, 4, 1, 2, 1234))
    s = dev.status()
    assert (s.loaded, s.load_status, s.n_layers, s.have_input, s.run_status, s.cycles) == (
        True, 0, 4, True, 2, 1234)
    assert not s.resident
    assert [r.seq for r in dev.transport.requests] == [0, 1]
    assert [r.code for r in dev.transport.requests] == [Cmd.PING, Cmd.STATUS]
    dev.transport.handler = answer(payload=struct.pack(STATE_FORMAT, 3, 0, 4, 1, 0, 0))
    s = dev.status()
    assert s.loaded and s.resident  # (byte 0, bit 1: the image is prepared)


def test_device_incompatible():
    dev = Device(Scripted(answer(payload=bytes([2, len(CONFIG_FIELDS), 0, 0])
                                 + bytes(4 * len(CONFIG_FIELDS)))))
    with pytest.raises(IncompatibleDevice, match="version 2"):
        dev.ping()


@pytest.mark.parametrize("bw", [8, 16])
def test_device_input_read_run(bw):
    fields = {f: getattr(SMALL, f) for f in CONFIG_FIELDS} | {"bw": bw}
    info = bytes([PROTOCOL_VERSION, len(CONFIG_FIELDS), 0, 0]) + b"".join(
        struct.pack("<I", fields[f]) for f in CONFIG_FIELDS)
    lo, hi = -(1 << (bw - 1)), (1 << (bw - 1)) - 1
    x = np.array([lo, -1, 0, 1, hi])
    seen = {}

    def handler(req):
        if req.code == Cmd.PING:
            return encode_frame(req.seq, Status.OK, info)
        if req.code == Cmd.LOAD_INPUT:
            seen["input"] = req.payload
            return encode_frame(req.seq, Status.OK)
        if req.code == Cmd.READ:
            seen["read"] = struct.unpack("<BII", req.payload)
            return encode_frame(req.seq, Status.OK, seen["input"])
        if req.code == Cmd.RUN:
            return encode_frame(req.seq, Status.OK, struct.pack(STATE_FORMAT, 1, 0, 4, 1, 3, 99))
        raise AssertionError(req)

    dev = Device(Scripted(handler))
    dev.load_input(x.reshape(1, 5))
    assert seen["input"] == x.astype(f"<i{bw // 8}").tobytes()
    np.testing.assert_array_equal(dev.read(1, 2, 5), x)
    assert seen["read"] == (1, 2, 5)
    assert dev.run(1, 2) == (3, 99)
    with pytest.raises(ValueError, match="signed"):
        dev.load_input(np.array([hi + 1]))
    with pytest.raises(TypeError):
        dev.load_input(np.array([0.5]))


def test_device_errors():
    dev = Device(Scripted(answer(Status.NOT_LOADED)))
    with pytest.raises(DeviceError, match="NOT_LOADED") as e:
        dev.run(0, 1)
    assert e.value.status == Status.NOT_LOADED and e.value.name == "NOT_LOADED"
    dev.transport.handler = answer(Status.LOAD_FAILED, struct.pack(
        STATE_FORMAT, 0, LoadError.CRC.value, 0, 0, 0, 0))
    with pytest.raises(DeviceError, match="CRC") as e:
        dev.load_image(b"xyz")
    assert e.value.status == Status.LOAD_FAILED and e.value.detail == LoadError.CRC.value
    dev.transport.handler = answer(42)
    with pytest.raises(DeviceError, match="status 42"):
        dev.status()


def test_device_link_errors():
    """Seq mismatch, silence, a short answer, a bad CRC: each a LinkError of its kind, and
    the next request flushes the input first."""
    t = Scripted(answer(seq_delta=1, payload=bytes(9)))
    dev = Device(t)
    with pytest.raises(LinkError) as e:
        dev.status()
    assert e.value.kind == "seq"
    t.handler = lambda req: b""
    with pytest.raises(LinkError) as e:
        dev.status()
    assert e.value.kind == "timeout" and t.flushes == 1
    t.handler = answer(payload=bytes(8))
    with pytest.raises(LinkError) as e:
        dev.status()
    assert e.value.kind == "length"
    t.handler = lambda req: encode_frame(req.seq, Status.OK, bytes(9))[:-1] + b"\x00"
    with pytest.raises(LinkError) as e:
        dev.status()
    assert e.value.kind == "crc"
    t.handler = lambda req: encode_frame(req.seq, Status.OK, bytes(20))
    with pytest.raises(LinkError) as e:
        dev.status()  # a length above the command's answer: refused before reading it
    assert e.value.kind == "length"
    t.handler = answer(payload=bytes(9))
    assert not dev.status().loaded
    assert t.flushes == 5


def test_serial_loopback():
    pytest.importorskip("serial")
    link = SerialTransport("loop://", 115200)
    link.write(b"hello")
    assert link.read(5, 0.5) == b"hello"
    assert link.read(1, 0.05) == b""
    link.write(b"stale")
    link.quiet = 0.01
    link.flush_input()
    assert link.read(1, 0.05) == b""
    link.close()


def test_serial_without_pyserial(monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(ImportError, match="pip install pyserial"):
        SerialTransport("/dev/null")
