"""The framed command protocol's constants: one definition for the gateware
(``hw.host_interface``) and the host library (``espalier.host``).

Pure Python (no Amaranth): docs/protocol.md is the specification.
"""

import enum
import struct

__all__ = ["CONFIG_FIELDS", "CRC_BYTES", "HEADER_BYTES", "MAX_ARGS", "PROTOCOL_VERSION",
           "STATE_FORMAT", "SYNC", "Cmd", "Status", "max_payload", "ping_payload"]

SYNC = 0xE5
PROTOCOL_VERSION = 1
#: sync, seq, code, length (u32): the bytes before the payload.
HEADER_BYTES = 7
CRC_BYTES = 4
#: The longest argument payload of a command other than LOAD_IMAGE and LOAD_INPUT (READ).
MAX_ARGS = 9

#: The state record that STATUS, LOAD_IMAGE and RUN answer: ``loaded``, ``load_status``,
#: ``n_layers``, ``have_input``, ``run_status``, ``cycles`` (``DeviceStatus``).
STATE_FORMAT = "<BBBBBI"

#: The ``hw.config.AcceleratorConfig`` fields a PING answer lists, in order, each as a u32.
CONFIG_FIELDS = ("rows", "cols", "bw", "acc_width", "decode_lanes", "image_bytes",
                 "tile_depth", "max_fan_in", "max_index_bits", "max_run_bits", "max_code_len",
                 "max_table_symbols", "max_layers", "act_depth", "max_channels")


class Cmd(enum.IntEnum):
    """A request's command code (docs/protocol.md, "Commands")."""

    PING = 1
    STATUS = 2
    LOAD_IMAGE = 3
    LOAD_INPUT = 4
    RUN = 5
    READ = 6


class Status(enum.IntEnum):
    """A response's status code (docs/protocol.md, "Status codes")."""

    OK = 0
    BAD_CRC = 1  # the request frame's CRC did not match: nothing was done (a load aborted)
    BAD_LENGTH = 2  # the length does not suit the command
    UNKNOWN_CMD = 3
    NOT_LOADED = 4  # RUN without a loaded image
    NO_INPUT = 5  # RUN without a good LOAD_INPUT since the last bad or cut-short one
    BUSY = 6  # the core is running
    BAD_ARG = 7  # RUN's layer range or READ's bank/range is outside the build or image
    LOAD_FAILED = 8  # LOAD_IMAGE: the loader refused the image (payload: the state record)


def max_payload(config) -> int:
    """The longest request payload a device of this build accepts: the image buffer, the
    input (a whole activation bank) or READ's arguments, whichever is longest."""
    return max(config.image_bytes, config.act_depth * config.bw // 8, MAX_ARGS)


def ping_payload(config) -> bytes:
    """The PING answer of a build: protocol version, field count, two reserved zero bytes,
    then each of ``CONFIG_FIELDS`` as a u32."""
    return bytes([PROTOCOL_VERSION, len(CONFIG_FIELDS), 0, 0]) + b"".join(
        struct.pack("<I", getattr(config, f)) for f in CONFIG_FIELDS)
