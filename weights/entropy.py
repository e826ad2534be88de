"""What each compression stage and each entropy-coding choice costs, measured on an image.

numpy only. For every layer it re-encodes the image's own symbols:

- ``pruned``: the sparse layer with float32 weights and fixed-width relative indices
  (Deep Compression's "P" column: 32 + run_bits bits per symbol);
- ``quantized``: codebook indices and relative indices at fixed width ("P+Q":
  index_bits + run_bits bits per symbol, plus the codebook);
- ``joint``: one Huffman code over (run, index) pairs, as the image stores them ("P+Q+H");
- ``separate``: two Huffman codes, one over runs (with ZRUN and EOS) and one over codebook
  indices, as Deep Compression codes weights and indices separately. It needs two symbols
  per non-zero weight, so a decoder doing one symbol per cycle delivers half a weight per
  cycle.

Stream bits are rounded up to whole bytes per output channel (each channel's stream starts
on a byte, as in the format). Tables count as the format stores them (JPEG-style counts and
2-byte symbols).

Ref: Deep Compression (ICLR 2016) Tables 2 and 3 (P, P+Q, P+Q+H).
"""

import numpy as np

from golden.decode import huffman_symbols
from weights.huffman import MAX_CODE_LENGTH, Table, code_lengths
from weights.image import Image

__all__ = ["coding_costs"]


def _table_bytes(table: Table) -> int:
    return 1 + 2 * table.max_len + 2 * len(table.symbols)


def _huffman_bytes(channels: list[list[int]], alphabet: int) -> tuple[int, int]:
    """(stream bytes, table bytes) of one optimal length-limited code over ``channels``."""
    flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in channels])
    lengths = code_lengths(np.bincount(flat, minlength=alphabet), MAX_CODE_LENGTH)
    table = Table.from_lengths(lengths)
    stream = sum((int(lengths[np.asarray(c, dtype=np.int64)].sum()) + 7) // 8 for c in channels)
    return stream, _table_bytes(table)


def coding_costs(image: Image) -> list[dict]:
    """Per layer: bytes of weights+indices under each scheme (see the module docstring)."""
    out = []
    for layer in image.layers:
        alpha = layer.alphabet
        chans = [huffman_symbols(s, layer.table, alpha, layer.fan_in) for s in layer.streams]
        n_sym = sum(len(c) for c in chans)
        k = len(layer.codebook)
        # Separate codes: a run symbol per pair (0..R, ZRUN = R+1, EOS = R+2) and an index
        # symbol for every pair that carries a weight.
        runs, idxs = [], []
        for c in chans:
            r, i = [], []
            for s in c:
                if s == alpha.zrun:
                    r.append(alpha.max_run + 1)
                elif s == alpha.eos:
                    r.append(alpha.max_run + 2)
                else:
                    r.append(s // k)
                    i.append(s % k)
            runs.append(r)
            idxs.append(i)
        run_stream, run_table = _huffman_bytes(runs, alpha.max_run + 3)
        idx_stream, idx_table = _huffman_bytes(idxs, k) if any(idxs) else (0, 0)
        # Two streams per channel: charge the byte rounding of both.
        separate = run_stream + idx_stream + run_table + idx_table
        joint_stream = sum(len(s) for s in layer.streams)
        fixed_bits = layer.index_bits + layer.run_bits
        out.append(dict(
            symbols=n_sym,
            nonzero=int(np.count_nonzero(layer.weights())),
            pruned=sum((len(c) * (32 + layer.run_bits) + 7) // 8 for c in chans),
            quantized=sum((len(c) * fixed_bits + 7) // 8 for c in chans)
            + k * image.bw // 8,
            joint=joint_stream + _table_bytes(layer.table),
            joint_table=_table_bytes(layer.table),
            separate=separate,
            separate_tables=run_table + idx_table,
            symbols_per_weight_joint=n_sym / max(1, sum(len(i) for i in idxs)),
        ))
    return out
