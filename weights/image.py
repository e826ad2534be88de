"""The weight image: the one definition in code of docs/weight-image.md (version 1).

``write_image(Image) -> bytes`` and ``read_image(bytes) -> Image``; numpy only. The reader
checks everything the document lists, in its order, and raises ``ImageError`` with one
line saying what is wrong and where.
"""

import dataclasses
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

from golden.decode import Alphabet, StreamError, decode_channel, expand_runs, huffman_symbols
from golden.fixedpoint import BIT_WIDTHS, int_range
from weights.huffman import MAX_CODE_LENGTH, HuffmanError, Table, code_lengths, encode

__all__ = [
    "MAGIC",
    "MAX_ALPHABET",
    "MAX_BIAS_BITS",
    "MAX_INDEX_BITS",
    "MAX_RUN_BITS",
    "VERSION",
    "Activation",
    "Image",
    "ImageError",
    "Kind",
    "Layer",
    "encode_streams",
    "layer_bytes",
    "read_image",
    "read_image_file",
    "write_image",
]

MAGIC = b"ESPW"
VERSION = 1
#: The format's ranges (docs/weight-image.md, "Layer table entry"): codebook index 1..8 bits,
#: zero-run field 0..8 bits, bias 1..32 bits, symbols are u16 (an alphabet of at most 2^16).
MAX_INDEX_BITS = 8
MAX_RUN_BITS = 8
MAX_BIAS_BITS = 32
MAX_ALPHABET = 1 << 16
_HEADER = struct.Struct("<4sBBBbHHHHI")  # 20 bytes
_ENTRY = struct.Struct("<BBBBBBBBHHHHHHbbbBHBBI")  # 32 bytes
_CRC_BYTES = 4
_MAX_U16 = 0xFFFF
assert _HEADER.size == 20 and _ENTRY.size == 32


class ImageError(ValueError):
    """A weight image that is not valid; the message says what is wrong and where."""


class Kind(IntEnum):
    CONV = 1
    FC = 2


class Activation(IntEnum):
    NONE = 0
    RELU = 1


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One layer of an image: geometry, fixed-point formats, codebook, code and streams.

    ``in_shape`` is ``(in_c, in_h, in_w)`` (an fc layer: ``(features, 1, 1)``); ``out_shape``
    is the output before pooling. ``streams[o]`` is output channel ``o``'s Huffman stream.
    """

    kind: Kind
    activation: Activation
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: int = 0
    pool: int = 0
    pool_stride: int = 0
    w_fl: int
    b_fl: int
    out_fl: int
    index_bits: int
    run_bits: int
    bias_bits: int
    codebook: np.ndarray
    table: Table
    bias: np.ndarray
    streams: tuple[bytes, ...]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def fan_in(self) -> int:
        return self.in_shape[0] * self.kernel[0] * self.kernel[1]

    @property
    def out_c(self) -> int:
        return self.out_shape[0]

    @property
    def alphabet(self) -> Alphabet:
        return Alphabet(len(self.codebook), self.run_bits)

    @property
    def pooled_shape(self) -> tuple[int, int, int]:
        """The layer's output shape after pooling."""
        c, h, w = self.out_shape
        if not self.pool:
            return c, h, w
        return c, (h - self.pool) // self.pool_stride + 1, (w - self.pool) // self.pool_stride + 1

    def weights(self) -> np.ndarray:
        """Decoded integer weights, shape ``(out_c, fan_in)`` (conv: ``(c, ky, kx)`` order)."""
        if "w" not in self._cache:
            w = np.stack([decode_channel(s, self.table, self.alphabet, self.fan_in, self.codebook)
                          for s in self.streams])
            w.setflags(write=False)
            self._cache["w"] = w
        return self._cache["w"]

    def indices(self) -> np.ndarray:
        """Codebook indices, shape ``(out_c, fan_in)``, -1 for a pruned weight."""
        if "idx" not in self._cache:
            idx = np.stack([expand_runs(huffman_symbols(s, self.table, self.alphabet,
                                                        self.fan_in), self.alphabet, self.fan_in)
                            for s in self.streams])
            idx.setflags(write=False)
            self._cache["idx"] = idx
        return self._cache["idx"]

    def with_indices(self, indices: np.ndarray, *, run_bits: int | None = None,
                     max_code_len: int = MAX_CODE_LENGTH) -> "Layer":
        """This layer with ``indices`` (``(out_c, fan_in)``, -1 pruned) encoded anew
        (``encode_streams``): its table and streams, with ``run_bits`` (default its own)."""
        run_bits = self.run_bits if run_bits is None else run_bits
        table, streams = encode_streams(indices, len(self.codebook), run_bits, max_code_len)
        return dataclasses.replace(self, run_bits=run_bits, table=table, streams=streams,
                                   _cache={})

    def symbol_count(self) -> int:
        """Number of Huffman symbols in all of this layer's streams."""
        if "n_sym" not in self._cache:
            self._cache["n_sym"] = sum(
                len(huffman_symbols(s, self.table, self.alphabet, self.fan_in))
                for s in self.streams)
        return self._cache["n_sym"]


@dataclass(frozen=True, kw_only=True)
class Image:
    """A whole weight image: data width, input format and layers."""

    bw: int
    input_fl: int
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]

    def layer_names(self) -> list[str]:
        """``conv1, conv2, fc1, ...``: kind and 1-based count of that kind."""
        seen = {Kind.CONV: 0, Kind.FC: 0}
        names = []
        for layer in self.layers:
            seen[layer.kind] += 1
            names.append(f"{'conv' if layer.kind == Kind.CONV else 'fc'}{seen[layer.kind]}")
        return names


# ---------------------------------------------------------------------------------------
# Writing


def encode_streams(indices: np.ndarray, codebook_size: int, run_bits: int,
                   max_code_len: int = MAX_CODE_LENGTH) -> tuple[Table, tuple[bytes, ...]]:
    """A layer's Huffman table and per-channel streams from codebook indices (-1 = pruned).

    ``indices`` is ``(out_c, fan_in)``. Symbols follow the writer's rule
    (``Alphabet.encode_channel``); code lengths are optimal for the layer's symbol counts,
    limited to ``max_code_len`` bits.
    """
    alpha = Alphabet(codebook_size, run_bits)
    chans = [alpha.encode_channel(row) for row in np.asarray(indices)]
    freqs = np.bincount(np.concatenate([np.asarray(c, dtype=np.int64) for c in chans]),
                        minlength=alpha.size)
    table = Table.from_lengths(code_lengths(freqs, max_code_len))
    return table, tuple(encode(c, table)[0] for c in chans)


def _pack_signed(values: np.ndarray, bits: int) -> bytes:
    """Two's-complement ``bits``-bit fields, MSB-first, zero-padded to a byte."""
    acc = 0
    mask = (1 << bits) - 1
    for v in values:
        acc = (acc << bits) | (int(v) & mask)
    nbits = bits * len(values)
    pad = -nbits % 8
    return (acc << pad).to_bytes((nbits + pad) // 8, "big")


def _unpack_signed(data: bytes, bits: int, count: int) -> np.ndarray:
    acc = int.from_bytes(data, "big") >> (len(data) * 8 - bits * count)
    out = np.empty(count, dtype=np.int64)
    for i in range(count - 1, -1, -1):
        v = acc & ((1 << bits) - 1)
        out[i] = v - (1 << bits) if v >> (bits - 1) else v
        acc >>= bits
    return out


def _section(layer: Layer, bw: int) -> bytes:
    codebook = np.asarray(layer.codebook, dtype=np.int64)
    lo, hi = int_range(bw)
    if codebook.min() < lo or codebook.max() > hi:
        raise ImageError(f"a codebook entry does not fit {bw} bits")
    blo, bhi = int_range(layer.bias_bits)
    if len(layer.bias) != layer.out_c or (
            len(layer.bias) and (layer.bias.min() < blo or layer.bias.max() > bhi)):
        raise ImageError(f"the biases are not {layer.out_c} values of {layer.bias_bits} bits")
    if len(layer.streams) != layer.out_c:
        raise ImageError(f"{len(layer.streams)} streams for {layer.out_c} output channels")
    t = layer.table
    parts = [
        codebook.astype("<i1" if bw == 8 else "<i2").tobytes(),
        struct.pack(f"<B{t.max_len}H{len(t.symbols)}H", t.max_len, *t.counts, *t.symbols),
        _pack_signed(layer.bias, layer.bias_bits),
    ]
    sizes = [len(s) for s in layer.streams]
    if max(sizes) > _MAX_U16:
        raise ImageError(f"a stream of {max(sizes)} bytes exceeds the format's 65,535")
    parts.append(struct.pack(f"<{len(sizes)}H", *sizes))
    parts.extend(layer.streams)
    return b"".join(parts)


def layer_bytes(image: Image) -> list[int]:
    """Bytes each layer occupies in the file: its 32-byte table entry plus its section."""
    return [_ENTRY.size + len(_section(layer, image.bw)) for layer in image.layers]


def write_image(image: Image) -> bytes:
    """Serialize ``image``; the result is checked by reading it back before it is returned."""
    sections = [_section(layer, image.bw) for layer in image.layers]
    entries = []
    for layer, sec in zip(image.layers, sections, strict=True):
        entries.append(_ENTRY.pack(
            layer.kind, layer.activation, layer.pool, layer.pool_stride, *layer.kernel,
            layer.stride, layer.padding, *layer.in_shape, *layer.out_shape,
            layer.w_fl, layer.b_fl, layer.out_fl, layer.index_bits, len(layer.codebook),
            layer.run_bits, layer.bias_bits, len(sec)))
    size = (_HEADER.size + _ENTRY.size * len(image.layers) + sum(map(len, sections))
            + _CRC_BYTES)
    try:
        header = _HEADER.pack(MAGIC, VERSION, image.bw, len(image.layers), image.input_fl,
                              *image.input_shape, 0, size)
    except struct.error as e:
        raise ImageError(f"a header field is out of range: {e}") from None
    body = header + b"".join(entries) + b"".join(sections)
    data = body + struct.pack("<I", zlib.crc32(body))
    read_image(data)  # never hand out an image the reader would refuse
    return data


# ---------------------------------------------------------------------------------------
# Reading


def _check_entry(i: int, f: dict, prev_shape: tuple[int, int, int], prev_fl: int) -> None:
    where = f"layer {i}"

    def need(cond, what):
        if not cond:
            raise ImageError(f"{where}: {what}")

    need(f["kind"] in (1, 2), f"unknown kind {f['kind']} (1 = conv, 2 = fc)")
    need(f["activation"] in (0, 1), f"unknown activation {f['activation']} (0 = none, 1 = ReLU)")
    need(1 <= f["index_bits"] <= MAX_INDEX_BITS,
         f"index_bits {f['index_bits']} is not 1..{MAX_INDEX_BITS}")
    need(1 <= f["k"] <= 1 << f["index_bits"],
         f"codebook size {f['k']} is not 1..{1 << f['index_bits']}")
    need(0 <= f["run_bits"] <= MAX_RUN_BITS, f"run_bits {f['run_bits']} is not 0..{MAX_RUN_BITS}")
    need((1 << f["run_bits"]) * f["k"] + 2 <= MAX_ALPHABET,
         f"the symbol alphabet exceeds {MAX_ALPHABET:,}")
    need(1 <= f["bias_bits"] <= MAX_BIAS_BITS,
         f"bias_bits {f['bias_bits']} is not 1..{MAX_BIAS_BITS}")
    need(f["b_fl"] <= prev_fl + f["w_fl"],
         f"bias fl {f['b_fl']} exceeds the accumulator's fl {prev_fl + f['w_fl']}")
    need(f["out_c"] >= 1, "no output channels")
    in_shape = (f["in_c"], f["in_h"], f["in_w"])
    if f["kind"] == Kind.FC:
        need((f["kh"], f["kw"], f["stride"], f["padding"]) == (1, 1, 1, 0),
             "an fc layer must have kernel 1x1, stride 1 and padding 0")
        need(f["pool"] == 0 and f["pool_stride"] == 0, "an fc layer cannot pool")
        need(in_shape == (int(np.prod(prev_shape)), 1, 1),
             f"input {in_shape} does not chain to the previous output {prev_shape} flattened")
        need((f["out_h"], f["out_w"]) == (1, 1), "an fc layer's output must be 1x1")
        return
    need(in_shape == prev_shape,
         f"input {in_shape} does not chain to the previous output {prev_shape}")
    need(f["kh"] >= 1 and f["kw"] >= 1 and f["stride"] >= 1, "kernel and stride must be >= 1")
    oh = (f["in_h"] + 2 * f["padding"] - f["kh"]) // f["stride"] + 1
    ow = (f["in_w"] + 2 * f["padding"] - f["kw"]) // f["stride"] + 1
    need(oh >= 1 and ow >= 1, "the kernel does not fit the padded input")
    need((f["out_h"], f["out_w"]) == (oh, ow),
         f"output {f['out_h']}x{f['out_w']} should be {oh}x{ow} for this kernel")
    if f["pool"]:
        need(f["pool_stride"] >= 1, "pooling needs a stride >= 1")
        need(f["pool"] <= min(oh, ow), f"a {f['pool']}x{f['pool']} pool does not fit {oh}x{ow}")
    else:
        need(f["pool_stride"] == 0, "pool stride set without pooling")


def _parse_section(i: int, data: bytes, f: dict, bw: int) -> dict:
    where = f"layer {i} section"
    pos = 0

    def take(n, what):
        nonlocal pos
        if pos + n > len(data):
            raise ImageError(f"{where}: {what} needs {n} bytes at offset {pos}, "
                             f"past the section's end ({len(data)} bytes)")
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    k = f["k"]
    codebook = np.frombuffer(take(k * bw // 8, "the codebook"),
                             dtype="<i1" if bw == 8 else "<i2").astype(np.int64)
    max_len = take(1, "the Huffman table")[0]
    if not 1 <= max_len <= MAX_CODE_LENGTH:
        raise ImageError(f"{where}: longest code length {max_len} is not 1..{MAX_CODE_LENGTH}")
    counts = struct.unpack(f"<{max_len}H", take(2 * max_len, "the code counts"))
    symbols = struct.unpack(f"<{sum(counts)}H", take(2 * sum(counts), "the code symbols"))
    alpha = Alphabet(k, f["run_bits"])
    try:
        table = Table(counts, symbols, alpha.size)
    except HuffmanError as e:
        raise ImageError(f"{where}: Huffman table: {e}") from None
    out_c = f["out_c"]
    bias = _unpack_signed(take((out_c * f["bias_bits"] + 7) // 8, "the biases"),
                          f["bias_bits"], out_c)
    sizes = struct.unpack(f"<{out_c}H", take(2 * out_c, "the stream sizes"))
    streams = tuple(take(n, f"stream {o}") for o, n in enumerate(sizes))
    if pos != len(data):
        raise ImageError(f"{where}: {len(data) - pos} bytes left after the last stream")
    fan_in = f["in_c"] * f["kh"] * f["kw"]
    for o, s in enumerate(streams):
        try:
            huffman_symbols(s, table, alpha, fan_in)
        except StreamError as e:
            raise ImageError(f"layer {i} stream {o}: {e}") from None
    return dict(codebook=codebook, table=table, bias=bias, streams=streams)


def read_image(data: bytes) -> Image:
    """Parse and fully check an image; raises ImageError (docs/weight-image.md, order of checks)."""
    data = bytes(data)
    if len(data) < _HEADER.size + _CRC_BYTES:
        raise ImageError(f"truncated: {len(data)} bytes, shorter than a header and a CRC (24)")
    magic, version, bw, n_layers, input_fl, in_c, in_h, in_w, reserved, size = \
        _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ImageError(f"header: bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ImageError(f"header: version {version} is not supported (this reader: {VERSION})")
    if size > len(data):
        raise ImageError(f"truncated: the header says {size} bytes, the file has {len(data)}")
    if size < len(data):
        raise ImageError(f"{len(data) - size} trailing bytes after the {size} the header gives")
    (crc,) = struct.unpack_from("<I", data, size - _CRC_BYTES)
    if zlib.crc32(data[: size - _CRC_BYTES]) != crc:
        raise ImageError("CRC-32 mismatch: the image is corrupt")
    if bw not in BIT_WIDTHS:
        raise ImageError(f"header: bit width {bw} is not one of {BIT_WIDTHS}")
    if n_layers < 1:
        raise ImageError("header: no layers")
    if min(in_c, in_h, in_w) < 1 or reserved:
        raise ImageError(f"header: bad input shape {in_c}x{in_h}x{in_w} or reserved field")
    table_end = _HEADER.size + _ENTRY.size * n_layers
    if table_end > size - _CRC_BYTES:
        raise ImageError(f"header: a table of {n_layers} layers runs past the end of the file")
    names = ("kind activation pool pool_stride kh kw stride padding in_c in_h in_w out_c "
             "out_h out_w w_fl b_fl out_fl index_bits k run_bits bias_bits section_size").split()
    entries = []
    prev_shape, prev_fl = (in_c, in_h, in_w), input_fl
    for i in range(n_layers):
        f = dict(zip(names, _ENTRY.unpack_from(data, _HEADER.size + _ENTRY.size * i),
                     strict=True))
        _check_entry(i, f, prev_shape, prev_fl)
        oc, oh, ow = f["out_c"], f["out_h"], f["out_w"]
        if f["pool"]:
            oh = (oh - f["pool"]) // f["pool_stride"] + 1
            ow = (ow - f["pool"]) // f["pool_stride"] + 1
        prev_shape, prev_fl = (oc, oh, ow), f["out_fl"]
        entries.append(f)
    body = size - _CRC_BYTES - table_end
    total = sum(f["section_size"] for f in entries)
    if total != body:
        raise ImageError(f"layer table: sections add up to {total} bytes, "
                         f"but {body} lie between the table and the CRC")
    layers = []
    pos = table_end
    for i, f in enumerate(entries):
        sec = _parse_section(i, data[pos : pos + f["section_size"]], f, bw)
        pos += f["section_size"]
        layers.append(Layer(
            kind=Kind(f["kind"]), activation=Activation(f["activation"]),
            in_shape=(f["in_c"], f["in_h"], f["in_w"]),
            out_shape=(f["out_c"], f["out_h"], f["out_w"]), kernel=(f["kh"], f["kw"]),
            stride=f["stride"], padding=f["padding"], pool=f["pool"],
            pool_stride=f["pool_stride"], w_fl=f["w_fl"], b_fl=f["b_fl"], out_fl=f["out_fl"],
            index_bits=f["index_bits"], run_bits=f["run_bits"], bias_bits=f["bias_bits"],
            **sec))
    return Image(bw=bw, input_fl=input_fl, input_shape=(in_c, in_h, in_w), layers=tuple(layers))


def read_image_file(path) -> Image:
    """``read_image`` of a file; a missing or unreadable file is an ImageError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return read_image(data)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
