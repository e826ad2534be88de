"""The host side of Espalier's framed command protocol (docs/protocol.md).

One definition of the protocol in software: the command and status codes, the frame format
(``encode_frame`` / ``decode_frame``, CRC-32 as zlib), the layout of the PING and STATUS
answers, and ``Device``, which talks to an accelerator through a *transport*: anything with
``write(data)``, ``read(n, timeout) -> bytes`` (fewer than ``n`` bytes when ``timeout``
passes, as pyserial does) and ``flush_input()``. ``SerialTransport`` is a serial port
(pyserial); ``espalier.simlink`` provides transports onto a simulated gateware top, so the
same host code runs against the simulator and the board. ``hw.host_interface`` is the
gateware face of this module; both take the protocol's constants from ``hw.protocol``.

Every failure is an exception: ``LinkError`` when a response is lost, cut short, corrupt,
or answers another request (a lost or garbled response is never accepted silently);
``DeviceError`` when the device answered with an error status.

No Amaranth import at module level: the host library runs without the gateware tools.
"""

import dataclasses
import struct
import zlib

import numpy as np

# The protocol's constants are defined once, in hw.protocol (pure Python); re-exported here.
from hw.protocol import (  # noqa: F401
    CONFIG_FIELDS,
    CRC_BYTES,
    HEADER_BYTES,
    MAX_ARGS,
    PROTOCOL_VERSION,
    STATE_FORMAT,
    SYNC,
    Cmd,
    Status,
    max_payload,
    ping_payload,
)

__all__ = ["CONFIG_FIELDS", "HEADER_BYTES", "MAX_ARGS", "PROTOCOL_VERSION", "STATE_FORMAT",
           "SYNC", "Cmd", "Device", "DeviceError", "DeviceInfo", "DeviceStatus", "Frame",
           "IncompatibleDevice", "LinkError", "SerialTransport", "Status", "decode_frame",
           "encode_frame", "max_payload", "ping_payload", "read_frame"]


# -- frames ----------------------------------------------------------------------------------

class LinkError(Exception):
    """A response was lost, cut short, corrupt or answers another request.

    ``kind`` names what happened: ``"timeout"``, ``"sync"``, ``"length"``, ``"crc"`` or
    ``"seq"``.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class DeviceError(Exception):
    """The device answered with an error status (``status``, a ``Status``); ``detail`` is a
    further code where the status carries one (the ``LoadError`` of ``LOAD_FAILED``)."""

    def __init__(self, status: int, message: str = "", detail=None):
        try:
            name = Status(status).name
        except ValueError:
            name = f"status {status}"
        super().__init__(f"device error {name}" + (f": {message}" if message else ""))
        self.status = status
        self.name = name
        self.detail = detail


class IncompatibleDevice(Exception):
    """The device speaks another version of the protocol."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """A decoded frame: ``code`` is the command (request) or status (response)."""

    seq: int
    code: int
    payload: bytes


def encode_frame(seq: int, code: int, payload: bytes = b"") -> bytes:
    """``SYNC``, seq, code, length (u32 LE), payload, CRC-32 (LE) of seq..payload."""
    body = struct.pack("<BBI", seq, code, len(payload)) + bytes(payload)
    return bytes([SYNC]) + body + struct.pack("<I", zlib.crc32(body))


def decode_frame(data: bytes, *, max_length: int = 1 << 32) -> Frame:
    """The frame that ``data`` holds exactly; ``LinkError`` if it is not one (no sync, a
    length above ``max_length`` or not matching ``data``, a bad CRC)."""
    data = bytes(data)
    pos = [0]

    def take(n):
        chunk = data[pos[0]:pos[0] + n]
        pos[0] += len(chunk)
        if len(chunk) < n:
            raise LinkError("length", f"the frame ends after {pos[0]} bytes")
        return chunk

    frame = _parse(take, max_length)
    if pos[0] != len(data):
        raise LinkError("length", f"{len(data) - pos[0]} bytes after the frame")
    return frame


def _parse(take, max_length) -> Frame:
    sync = take(1)[0]
    if sync != SYNC:
        raise LinkError("sync", f"expected sync byte 0x{SYNC:02X}, got 0x{sync:02X}")
    header = take(HEADER_BYTES - 1)
    seq, code, length = struct.unpack("<BBI", header)
    if length > max_length:
        raise LinkError("length", f"a frame of {length} payload bytes, expected at most "
                                  f"{max_length} (a corrupt header)")
    payload = take(length)
    (crc,) = struct.unpack("<I", take(CRC_BYTES))
    if crc != zlib.crc32(header + payload):
        raise LinkError("crc", f"CRC mismatch in a frame with seq {seq}, code {code}")
    return Frame(seq, code, payload)


def read_frame(transport, *, max_length: int, timeout: float) -> Frame:
    """Read one frame from ``transport``; ``LinkError`` on a timeout or a corrupt frame."""
    def take(n):
        chunk = transport.read(n, timeout)
        if len(chunk) < n:
            raise LinkError("timeout", f"no response within {timeout} s (got {len(chunk)} "
                                       f"of {n} bytes)")
        return chunk

    return _parse(take, max_length)


# -- the device ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """A PING answer: the protocol version and the build's ``CONFIG_FIELDS``."""

    version: int
    fields: dict

    def config(self):
        """The build as a ``hw.config.AcceleratorConfig`` (to check an image against it)."""
        from hw.config import AcceleratorConfig
        return AcceleratorConfig(**self.fields)


@dataclasses.dataclass(frozen=True)
class DeviceStatus:
    """A STATUS answer. ``load_status`` is the loader's last ``LoadError`` code;
    ``run_status`` and ``cycles`` describe the last run. ``resident``: the loaded image
    was prepared (every layer's table, codebook and biases stay on chip; its runs load
    only each table's counts, docs/architecture.md)."""

    loaded: bool
    load_status: int
    n_layers: int
    have_input: bool
    run_status: int
    cycles: int
    resident: bool = False


_STATE_BYTES = struct.calcsize(STATE_FORMAT)


def _state(payload: bytes) -> DeviceStatus:
    loaded, load_status, n_layers, have_input, run_status, cycles = struct.unpack(
        STATE_FORMAT, payload)
    return DeviceStatus(bool(loaded & 1), load_status, n_layers, bool(have_input), run_status,
                        cycles, bool(loaded & 2))


def load_error_name(code: int) -> str:
    """The name of a loader error code (``hw.image_loader.LoadError``), if Amaranth is
    importable; else the number."""
    try:
        from hw.image_loader import LoadError
        return LoadError(code).name
    except (ImportError, ValueError):
        return f"load error {code}"




class Device:
    """An Espalier accelerator behind ``transport``.

    ``timeout`` (seconds) bounds the wait for each response, plus the time ``transport``
    needs to send the request (its ``byte_time`` per byte, if it has one); RUN waits
    ``run_timeout`` instead. Requests go one at a time: each waits for its response.
    """

    def __init__(self, transport, *, timeout: float = 1.0, run_timeout: float = 60.0):
        self.transport = transport
        self.timeout = timeout
        self.run_timeout = run_timeout
        self._seq = 0
        self._dirty = False
        self._info = None

    # -- frames ------------------------------------------------------------------------------

    def request(self, cmd: int, payload: bytes = b"", *, max_length: int = _STATE_BYTES,
                timeout: float | None = None) -> Frame:
        """Send one request and return its response frame (any status). ``LinkError`` if
        the response is lost, corrupt, longer than ``max_length`` or has another ``seq``."""
        if self._dirty:
            # The rest of a response we gave up on may still be arriving.
            self.transport.flush_input()
            self._dirty = False
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        frame = encode_frame(seq, cmd, payload)
        if timeout is None:
            timeout = self.timeout
        timeout += len(frame) * getattr(self.transport, "byte_time", 0.0)
        self.transport.write(frame)
        try:
            response = read_frame(self.transport, max_length=max_length, timeout=timeout)
        except LinkError:
            self._dirty = True
            raise
        if response.seq != seq:
            self._dirty = True
            raise LinkError("seq", f"a response with seq {response.seq} to request {seq} "
                                   f"(a lost or stale response)")
        return response

    def _call(self, cmd: Cmd, payload: bytes = b"", *, length: int, timeout=None) -> bytes:
        """A request whose OK answer has exactly ``length`` bytes; errors raise."""
        response = self.request(cmd, payload, max_length=max(length, _STATE_BYTES),
                                timeout=timeout)
        if response.code == Status.LOAD_FAILED and len(response.payload) == _STATE_BYTES:
            code = _state(response.payload).load_status
            raise DeviceError(response.code, f"the loader refused the image: "
                                             f"{load_error_name(code)}", detail=code)
        if response.code != Status.OK:
            raise DeviceError(response.code, Cmd(cmd).name)
        if len(response.payload) != length:
            self._dirty = True
            raise LinkError("length", f"{Cmd(cmd).name} answered {len(response.payload)} "
                                      f"bytes, expected {length}")
        return response.payload

    # -- commands ----------------------------------------------------------------------------

    def ping(self) -> DeviceInfo:
        """The device's protocol version and build parameters."""
        n = len(CONFIG_FIELDS)
        payload = self._call(Cmd.PING, length=4 + 4 * n)
        version, count = payload[0], payload[1]
        if version != PROTOCOL_VERSION or count != n:
            raise IncompatibleDevice(f"the device speaks protocol version {version} with "
                                     f"{count} build fields; this host speaks version "
                                     f"{PROTOCOL_VERSION} with {n}")
        values = struct.unpack(f"<{n}I", payload[4:])
        self._info = DeviceInfo(version, dict(zip(CONFIG_FIELDS, values, strict=True)))
        return self._info

    @property
    def info(self) -> DeviceInfo:
        """The PING answer, asked once."""
        return self._info or self.ping()

    def status(self) -> DeviceStatus:
        """Whether an image is loaded, the loader's last status, the last run's result."""
        return _state(self._call(Cmd.STATUS, length=_STATE_BYTES))

    def check_image(self, data: bytes) -> None:
        """Raise ValueError if ``data`` is not a valid weight image, or if the device's
        build would refuse to load or to run it (``hw.layer_plan.check_runnable``), before
        sending it."""
        from hw.layer_plan import check_runnable
        from weights.image import read_image
        check_runnable(self.info.config(), read_image(bytes(data)), len(data))

    def load_image(self, data: bytes) -> int:
        """Load a weight image; return its layer count. ``DeviceError`` (``LOAD_FAILED``,
        with the loader's ``LoadError`` in ``detail``) if the loader refuses it."""
        return _state(self._call(Cmd.LOAD_IMAGE, bytes(data), length=_STATE_BYTES)).n_layers

    def load_input(self, values) -> None:
        """Write the network's input (integers, CHW order) into activation bank 0."""
        bw = self.info.fields["bw"]
        values = np.asarray(values).ravel()
        if values.dtype.kind not in "iu":
            raise TypeError(f"the input must be integers, not {values.dtype}")
        lo, hi = -(1 << (bw - 1)), (1 << (bw - 1)) - 1
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(f"input values must be {bw}-bit signed integers ({lo}..{hi})")
        self._call(Cmd.LOAD_INPUT, values.astype(f"<i{bw // 8}").tobytes(), length=0)

    def run(self, first: int, count: int) -> tuple[int, int]:
        """Run layers ``first .. first + count - 1``; return the core's ``(run_status,
        cycles)`` (status 0 is success)."""
        state = _state(self._call(Cmd.RUN, bytes([first, count]), length=_STATE_BYTES,
                                  timeout=self.run_timeout))
        return state.run_status, state.cycles

    def read(self, bank: int, offset: int, count: int) -> np.ndarray:
        """``count`` activations of ``bank`` from word ``offset`` (signed ``bw``-bit)."""
        nb = self.info.fields["bw"] // 8
        payload = self._call(Cmd.READ, struct.pack("<BII", bank, offset, count),
                             length=count * nb)
        return np.frombuffer(payload, dtype=f"<i{nb}").astype(np.int64)


# -- transports ------------------------------------------------------------------------------

class SerialTransport:
    """A serial port (pyserial, imported when a port is opened). ``port`` is a device
    (``/dev/ttyUSB1``, ``COM3``) or any pyserial URL (``socket://host:port``, ``loop://``).

    ``quiet`` (seconds): how long ``flush_input`` waits for the line to be quiet; keep it
    above the device's inter-byte timeout, so that a request cut short has been dropped by
    the device before the next one is sent.
    """

    def __init__(self, port: str, baud: int = 115200, *, quiet: float = 0.2):
        try:
            import serial
        except ImportError:
            raise ImportError("SerialTransport needs pyserial: pip install pyserial") from None
        self.port = serial.serial_for_url(port, baud, timeout=1.0)
        self.quiet = quiet
        #: Seconds to send one byte (8N1: 10 bits).
        self.byte_time = 10 / baud

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self.port.timeout = timeout
        return self.port.read(n)

    def flush_input(self) -> None:
        """Discard what arrives until the line has been quiet for ``quiet`` seconds."""
        self.port.timeout = self.quiet
        while self.port.read(4096):
            pass
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()
