"""Canonical length-limited Huffman codec: round trips, the length limit, optimality, validity."""

import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weights.huffman import HuffmanError, Table, code_lengths, decode, encode

freq_lists = st.lists(st.integers(0, 10_000), min_size=1, max_size=300).filter(any)


def huffman_cost(freqs):
    """(total bits, longest code) of a classic unconstrained Huffman code."""
    heap = [(f, 0, i) for i, f in enumerate(freqs) if f > 0]
    if len(heap) == 1:
        return heap[0][0], 1
    heapq.heapify(heap)
    cost, tick = 0, len(freqs)
    while len(heap) > 1:
        (a, da, _), (b, db, _) = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        tick += 1
        heapq.heappush(heap, (a + b, max(da, db) + 1, tick))
    return cost, heap[0][1]


@settings(max_examples=200, deadline=None)
@given(freq_lists, st.integers(1, 16))
def test_lengths_limited_complete_and_roundtrip(freqs, max_len):
    used = sum(1 for f in freqs if f)
    if used > 2**max_len:
        with pytest.raises(ValueError):
            code_lengths(freqs, max_len)
        return
    lengths = code_lengths(freqs, max_len)
    assert lengths.max() <= max_len
    assert all((lengths[i] > 0) == (f > 0) for i, f in enumerate(freqs))
    table = Table.from_lengths(lengths)  # validates completeness
    assert table.lengths().tolist() == lengths.tolist()
    rng = np.random.default_rng(len(freqs))
    symbols = rng.choice(np.flatnonzero(freqs), size=50).tolist()
    data, nbits = encode(symbols, table)
    assert nbits == sum(int(lengths[s]) for s in symbols)
    assert len(data) == (nbits + 7) // 8
    assert [s for s, _ in decode(data, table, count=len(symbols))] == symbols


@settings(max_examples=200, deadline=None)
@given(freq_lists)
def test_unconstrained_lengths_are_optimal(freqs):
    lengths = code_lengths(freqs, 16)
    cost = int(np.dot(lengths, freqs))
    best, depth = huffman_cost(freqs)
    # Package-merge is optimal: it matches Huffman whenever Huffman fits in 16 bits, and can
    # never beat it.
    assert cost >= best
    if depth <= 16:
        assert cost == best


def test_known_code():
    # Frequencies 8, 4, 2, 1, 1: the Huffman lengths are 1, 2, 3, 4, 4.
    lengths = code_lengths([8, 4, 2, 1, 1])
    assert lengths.tolist() == [1, 2, 3, 4, 4]
    table = Table.from_lengths(lengths)
    assert table.counts == (1, 1, 1, 2) and table.symbols == (0, 1, 2, 3, 4)
    assert table.codes() == {0: (0b0, 1), 1: (0b10, 2), 2: (0b110, 3), 3: (0b1110, 4),
                             4: (0b1111, 4)}
    data, nbits = encode([4, 0, 2], table)
    assert (data, nbits) == (bytes([0b11110110]), 8)
    assert encode([4, 1], table) == (bytes([0b11111000]), 6)
    # With a limit of 3 bits the code must flatten.
    assert code_lengths([8, 4, 2, 1, 1], 3).max() == 3


def test_single_symbol_and_limits():
    assert code_lengths([0, 0, 5, 0]).tolist() == [0, 0, 1, 0]
    table = Table.from_lengths([0, 0, 1, 0])
    assert encode([2, 2, 2], table) == (bytes([0]), 3)
    with pytest.raises(HuffmanError):  # "1" is not a code of a single-symbol table
        list(decode(bytes([0x80]), table, count=1))
    with pytest.raises(ValueError):
        code_lengths([0, 0])
    with pytest.raises(ValueError):
        code_lengths([1, 1, 1], max_len=1)
    with pytest.raises(ValueError):
        code_lengths([1, 1], max_len=17)


@pytest.mark.parametrize("counts, symbols, message", [
    ((1, 2), (0, 1, 2), "over-subscribed"),      # 1/2 + 2/4 + ... is fine; see next
    ((2, 1), (0, 1, 2), "over-subscribed"),
    ((1, 1), (0, 1), "incomplete"),
    ((0, 3), (0, 1, 2), "incomplete"),
    ((1, 0), (0,), "no code has the longest length"),
    ((2,), (1, 0), "increasing"),
    ((2,), (0, 0), "twice"),
    ((2,), (0, 9), "outside the alphabet"),
    ((0, 1), (0,), "single-symbol"),
    ((2,), (0,), "add up"),
])
def test_invalid_tables(counts, symbols, message):
    if counts == (1, 2):  # a valid complete code, as a control
        Table(counts, symbols, 4)
        return
    with pytest.raises(HuffmanError, match=message):
        Table(counts, symbols, 4)


def test_decode_errors():
    table = Table.from_lengths([1, 2, 2])
    with pytest.raises(HuffmanError, match="ended"):
        list(decode(bytes([0b11111111]), table, count=5))
    assert [s for s, _ in decode(bytes([0b01011000]), table, count=3)] == [0, 1, 2]
