"""Canonical, length-limited Huffman codes: lengths, tables, encoding and decoding.

numpy only. Codes are canonical in the JPEG/DEFLATE sense (docs/weight-image.md, "Huffman
table"): a table is its code lengths, written as counts per length plus the symbols in
canonical order. Bits are MSB-first.

Ref: Deep Compression (Han, Mao, Dally, ICLR 2016), section 4; code lengths limited with
the package-merge algorithm (Larmore and Hirschberg, JACM 1990), which is optimal.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "MAX_CODE_LENGTH",
    "HuffmanError",
    "Table",
    "code_lengths",
    "decode",
    "encode",
]

#: The longest code the format allows; hardware builds may allow fewer.
MAX_CODE_LENGTH = 16


class HuffmanError(ValueError):
    """An invalid code table or an undecodable bit stream."""


def code_lengths(freqs, max_len: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal code lengths no longer than ``max_len`` for symbol frequencies ``freqs``.

    Symbols with frequency 0 get length 0 (no code). A single used symbol gets length 1.
    Deterministic: ties are broken by symbol value. Raises ValueError when no symbol is used,
    ``max_len`` is outside 1..16, or more than ``2^max_len`` symbols are used.
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    if freqs.ndim != 1 or np.any(freqs < 0):
        raise ValueError("code_lengths: frequencies must be a 1-D array of counts >= 0")
    if not 1 <= max_len <= MAX_CODE_LENGTH:
        raise ValueError(f"code_lengths: max_len must be 1..{MAX_CODE_LENGTH}, not {max_len}")
    used = np.flatnonzero(freqs)
    lengths = np.zeros(len(freqs), dtype=np.int64)
    n = len(used)
    if n == 0:
        raise ValueError("code_lengths: no symbol has a non-zero frequency")
    if n == 1:
        lengths[used[0]] = 1
        return lengths
    if n > (1 << max_len):
        raise ValueError(f"code_lengths: {n} symbols cannot have codes of at most {max_len} bits")
    # Package-merge. An item is (weight, seq, leaf symbol or None, children).
    leaves = sorted(((int(freqs[s]), i, int(s), ()) for i, s in enumerate(used)))
    current = leaves
    seq = n
    for _ in range(max_len - 1):
        packages = []
        for j in range(0, len(current) - 1, 2):
            a, b = current[j], current[j + 1]
            packages.append((a[0] + b[0], seq, None, (a, b)))
            seq += 1
        current = sorted(leaves + packages, key=lambda item: (item[0], item[1]))
    # Each appearance of a leaf in the first 2n-2 items adds one to its code length.
    stack = list(current[: 2 * n - 2])
    while stack:
        item = stack.pop()
        if item[2] is not None:
            lengths[item[2]] += 1
        else:
            stack.extend(item[3])
    return lengths


@dataclass(frozen=True)
class Table:
    """A canonical code: ``counts[l-1]`` codes of length ``l``, ``symbols`` in canonical order."""

    counts: tuple[int, ...]
    symbols: tuple[int, ...]
    alphabet_size: int

    def __post_init__(self):
        counts, symbols, a = self.counts, self.symbols, self.alphabet_size
        if not 1 <= len(counts) <= MAX_CODE_LENGTH:
            raise HuffmanError(f"longest code length {len(counts)} is not in 1..{MAX_CODE_LENGTH}")
        if any(c < 0 for c in counts):
            raise HuffmanError("a code count is negative")
        if counts[-1] == 0:
            raise HuffmanError(f"no code has the longest length {len(counts)}")
        if sum(counts) != len(symbols):
            raise HuffmanError(f"counts add up to {sum(counts)} but {len(symbols)} symbols follow")
        if any(not 0 <= s < a for s in symbols):
            bad = next(s for s in symbols if not 0 <= s < a)
            raise HuffmanError(f"symbol {bad} is outside the alphabet of {a}")
        if len(set(symbols)) != len(symbols):
            raise HuffmanError("a symbol is listed twice")
        k = 0
        for c in counts:
            group = symbols[k : k + c]
            if any(x >= y for x, y in zip(group, group[1:], strict=False)):
                raise HuffmanError("symbols of one code length are not in increasing order")
            k += c
        n_max = len(counts)
        kraft = sum(c << (n_max - 1 - i) for i, c in enumerate(counts))
        if len(symbols) == 1:
            if counts != (1,):
                raise HuffmanError("a single-symbol code must have one 1-bit code")
        elif kraft > (1 << n_max):
            raise HuffmanError("the code is over-subscribed (Kraft sum above 1)")
        elif kraft < (1 << n_max):
            raise HuffmanError("the code is incomplete (Kraft sum below 1)")

    @classmethod
    def from_lengths(cls, lengths) -> "Table":
        """The canonical table of per-symbol code lengths (0 = symbol unused)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.size == 0 or lengths.max() < 1:
            raise HuffmanError("no symbol has a code")
        max_len = int(lengths.max())
        counts = tuple(int(np.count_nonzero(lengths == n)) for n in range(1, max_len + 1))
        order = np.lexsort((np.arange(len(lengths)), lengths))
        symbols = tuple(int(s) for s in order if lengths[s] > 0)
        return cls(counts, symbols, len(lengths))

    @property
    def max_len(self) -> int:
        return len(self.counts)

    def lengths(self) -> np.ndarray:
        """Per-symbol code lengths over the whole alphabet (0 for unused symbols)."""
        out = np.zeros(self.alphabet_size, dtype=np.int64)
        k = 0
        for n, c in enumerate(self.counts, start=1):
            out[list(self.symbols[k : k + c])] = n
            k += c
        return out

    def codes(self) -> dict[int, tuple[int, int]]:
        """``{symbol: (code, length)}`` assigned canonically (JPEG / DEFLATE order)."""
        out = {}
        code = 0
        k = 0
        for n, c in enumerate(self.counts, start=1):
            for _ in range(c):
                out[self.symbols[k]] = (code, n)
                code += 1
                k += 1
            code <<= 1
        return out

    @cached_property
    def lookup(self) -> tuple[list[int], list[int]]:
        """Decode tables indexed by the next ``max_len`` bits: (symbol, length).

        Length 0 marks a bit pattern that starts no code.
        """
        n_max = self.max_len
        sym = np.zeros(1 << n_max, dtype=np.int64)
        length = np.zeros(1 << n_max, dtype=np.int64)
        for s, (code, n) in self.codes().items():
            lo = code << (n_max - n)
            hi = (code + 1) << (n_max - n)
            sym[lo:hi] = s
            length[lo:hi] = n
        return sym.tolist(), length.tolist()


def encode(symbols, table: Table) -> tuple[bytes, int]:
    """Huffman-code ``symbols``: (bytes MSB-first with zero padding, number of bits used)."""
    codes = table.codes()
    acc = 0
    nbits = 0
    for s in symbols:
        try:
            code, n = codes[int(s)]
        except KeyError:
            raise HuffmanError(f"symbol {int(s)} has no code in the table") from None
        acc = (acc << n) | code
        nbits += n
    pad = -nbits % 8
    return (acc << pad).to_bytes((nbits + pad) // 8, "big"), nbits


def decode(data: bytes, table: Table, count: int | None = None, start_bit: int = 0):
    """Decode symbols from ``data`` (MSB-first) starting at bit ``start_bit``.

    A generator of ``(symbol, end_bit)``: it stops after ``count`` symbols (or runs until the
    data cannot hold another whole code when ``count`` is None). Raises HuffmanError at a bit
    pattern that is no code or when the data ends before ``count`` symbols.
    """
    sym, length = table.lookup
    n_max = table.max_len
    total = len(data) * 8
    value = int.from_bytes(data, "big")
    pos = start_bit
    done = 0
    while count is None or done < count:
        remaining = total - pos
        if remaining <= 0:
            if count is None:
                return
            raise HuffmanError(f"the data ended at bit {pos} after {done} of {count} symbols")
        if remaining >= n_max:
            peek = (value >> (remaining - n_max)) & ((1 << n_max) - 1)
        else:
            peek = (value & ((1 << remaining) - 1)) << (n_max - remaining)
        n = length[peek]
        if n == 0:
            raise HuffmanError(f"the bits at bit {pos} are no code of the table")
        if n > remaining:
            if count is None:
                return
            raise HuffmanError(f"the data ended inside a code at bit {pos}")
        pos += n
        done += 1
        yield sym[peek], pos
