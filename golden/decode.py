"""Weight decoding, one function per hardware stage (docs/weight-image.md, "Streams").

bytes --huffman_symbols--> symbols --expand_runs--> codebook indices (-1 = zero)
      --codebook_lookup--> bw-bit weights

Each stage is a function of its input transactions alone, so a hardware block's test is
``rtl(x) == golden(x)``. ``decode_channel`` chains them and enforces the stream's framing.

Ref: Deep Compression (ICLR 2016) section 2, relative indices with filler zeros; EIE
(ISCA 2016) section III, (run, index) pairs per non-zero weight.
"""

from dataclasses import dataclass

import numpy as np

from weights.huffman import HuffmanError, Table, decode

__all__ = [
    "Alphabet",
    "StreamError",
    "advance",
    "codebook_lookup",
    "decode_channel",
    "expand_runs",
    "huffman_symbols",
]


class StreamError(ValueError):
    """A weight stream that does not decode to exactly its channel's fan-in."""


@dataclass(frozen=True)
class Alphabet:
    """The (zero-run, codebook-index) symbol alphabet of a layer.

    Symbol ``s < (R+1)*K`` is ``s // K`` zeros then the weight ``codebook[s % K]``;
    ``zrun = (R+1)*K`` is ``R+1`` zeros; ``eos = (R+1)*K + 1`` is zeros to the channel's end.
    """

    codebook_size: int
    run_bits: int

    @property
    def max_run(self) -> int:
        return (1 << self.run_bits) - 1

    @property
    def zrun(self) -> int:
        return (self.max_run + 1) * self.codebook_size

    @property
    def eos(self) -> int:
        return self.zrun + 1

    @property
    def size(self) -> int:
        return self.zrun + 2

    def pair(self, run: int, index: int) -> int:
        """The symbol for ``run`` zeros (``0 <= run <= R``) then codebook ``index``."""
        return run * self.codebook_size + index

    def encode_channel(self, indices: np.ndarray) -> list[int]:
        """Symbols for one channel: ``indices`` holds a codebook index per kept weight, -1 per zero.

        The writer's normative rule: ZRUN fillers for gaps above R, (run, index) pairs, and
        EOS after the last kept weight when zeros remain.
        """
        out = []
        gap = 0
        n = len(indices)
        kept = np.flatnonzero(np.asarray(indices) >= 0)
        prev_end = 0
        for p in kept:
            gap = int(p) - prev_end
            out.extend([self.zrun] * (gap // (self.max_run + 1)))
            out.append(self.pair(gap % (self.max_run + 1), int(indices[p])))
            prev_end = int(p) + 1
        if prev_end < n:
            out.append(self.eos)
        return out


def advance(alpha: Alphabet, s: int, pos: int, fan_in: int) -> tuple[int, int | None]:
    """Apply symbol ``s`` at position ``pos``: (new position, written index or None)."""
    if s == alpha.zrun:
        pos += alpha.max_run + 1
        if pos > fan_in:
            raise StreamError(f"a zero run passes the channel's end ({pos} > {fan_in})")
        return pos, None
    if s == alpha.eos:
        return fan_in, None
    if s > alpha.eos:
        raise StreamError(f"symbol {s} is outside the alphabet of {alpha.size}")
    pos += s // alpha.codebook_size
    if pos >= fan_in:
        raise StreamError(f"a weight lands at position {pos}, past the fan-in {fan_in}")
    return pos + 1, s % alpha.codebook_size


def huffman_symbols(stream: bytes, table: Table, alpha: Alphabet, fan_in: int) -> list[int]:
    """The Huffman-decode stage: a channel's stream bytes to its symbols.

    Decodes until the symbols cover ``fan_in`` weights; checks that the stream then ends
    within the last byte and that the padding bits are zero.
    """
    symbols = []
    pos = 0
    end_bit = 0
    try:
        for s, end in decode(stream, table):
            symbols.append(s)
            end_bit = end
            pos, _ = advance(alpha, s, pos, fan_in)
            if pos == fan_in:
                break
    except HuffmanError as e:
        raise StreamError(str(e)) from None
    if pos != fan_in:
        raise StreamError(f"the stream ended after {pos} of {fan_in} weights")
    if len(stream) != (end_bit + 7) // 8:
        raise StreamError(
            f"the stream is {len(stream)} bytes but its symbols end at bit {end_bit}"
        )
    if end_bit % 8 and stream[-1] & ((1 << (8 - end_bit % 8)) - 1):
        raise StreamError("the padding bits after the last symbol are not zero")
    return symbols


def expand_runs(symbols, alpha: Alphabet, fan_in: int) -> np.ndarray:
    """The zero-run expansion stage: symbols to one codebook index per weight (-1 = zero)."""
    out = np.full(fan_in, -1, dtype=np.int64)
    pos = 0
    for s in symbols:
        if pos >= fan_in:
            raise StreamError("symbols follow the channel's last weight")
        pos, index = advance(alpha, int(s), pos, fan_in)
        if index is not None:
            out[pos - 1] = index
    if pos != fan_in:
        raise StreamError(f"the symbols cover {pos} of {fan_in} weights")
    return out


def codebook_lookup(indices: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The codebook stage: indices to weights (index -1, a pruned weight, gives 0)."""
    indices = np.asarray(indices, dtype=np.int64)
    codebook = np.asarray(codebook, dtype=np.int64)
    if indices.size and int(indices.max()) >= len(codebook):
        raise StreamError(f"codebook index {int(indices.max())} >= codebook size {len(codebook)}")
    padded = np.concatenate([codebook, np.zeros(1, dtype=np.int64)])
    return padded[indices]  # -1 picks the appended zero


def decode_channel(stream: bytes, table: Table, alpha: Alphabet, fan_in: int,
                   codebook: np.ndarray) -> np.ndarray:
    """All three stages for one output channel: stream bytes to ``fan_in`` integer weights."""
    symbols = huffman_symbols(stream, table, alpha, fan_in)
    return codebook_lookup(expand_runs(symbols, alpha, fan_in), codebook)
