"""The payloads that flow between the weight-decoding blocks, and the layer parameters.

A Huffman symbol ``s`` of a layer with codebook size ``K`` and zero-run width ``run_bits``
(docs/weight-image.md, "Stream sizes and streams"; ``golden.decode.Alphabet``) travels in
hardware as a *token*: its kind (a (run, index) pair, ZRUN or EOS) with the pair's run
``s div K`` and index ``s mod K`` already split out, so no block divides by ``K`` per
symbol. ``SymbolEntry.split`` is the software face of that mapping; ``hw.symbol_split``
computes the same split in hardware, once per table word, for every lane.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

__all__ = ["DecodeParams", "ImageByte", "PostItem", "PostParams", "SymbolEntry", "Token",
           "TokenKind", "WeightOut"]


class TokenKind(enum.Enum, shape=2):
    """What a symbol means (docs/weight-image.md, symbol table)."""

    PAIR = 0  # ``run`` zero weights, then the weight ``codebook[index]``
    ZRUN = 1  # ``R + 1`` zero weights (a filler)
    EOS = 2  # zero weights up to the end of the channel


def _entry_fields(config) -> dict:
    return {
        "kind": TokenKind,
        "run": unsigned(config.max_run_bits),
        "index": unsigned(config.max_index_bits),
    }


class SymbolEntry(data.StructLayout):
    """One word of the decoder's symbol memory: a symbol split into kind, run and index."""

    def __init__(self, config):
        super().__init__(_entry_fields(config))

    @staticmethod
    def split(symbol: int, codebook_size: int, run_bits: int) -> dict:
        """The fields of ``symbol`` (``run`` and ``index`` are 0 for ZRUN and EOS).

        Raises ValueError for a symbol outside the alphabet ``(R+1)·K + 2``.
        """
        zrun = codebook_size << run_bits
        if symbol < zrun:
            return {"kind": TokenKind.PAIR, "run": symbol // codebook_size,
                    "index": symbol % codebook_size}
        if symbol == zrun:
            return {"kind": TokenKind.ZRUN, "run": 0, "index": 0}
        if symbol == zrun + 1:
            return {"kind": TokenKind.EOS, "run": 0, "index": 0}
        raise ValueError(f"symbol {symbol} is outside the alphabet of {zrun + 2}")


class Token(data.StructLayout):
    """A decoded symbol with its channel's boundaries: ``first`` on a channel's first
    symbol, ``last`` on the symbol that completes its fan-in."""

    def __init__(self, config):
        super().__init__({**_entry_fields(config), "first": 1, "last": 1})


class DecodeParams(data.StructLayout):
    """A layer's decoding parameters, held steady while the layer is loaded and decoded.

    ``fan_in`` is ``N``; ``codebook_size`` is ``K``; ``run_bits`` gives ``R = 2^run_bits - 1``;
    ``max_len`` is the Huffman table's longest code ``L`` (the number of counts it lists).
    ``table_base`` and ``codebook_base`` are where the layer's symbols and codebook entries
    start in the lanes' memories (0 unless the image is resident); with ``resident`` they
    are there already, and only the table's ``L`` counts are sent.
    """

    def __init__(self, config):
        super().__init__({
            "fan_in": unsigned(config.fan_in_width),
            "codebook_size": unsigned(config.max_index_bits + 1),
            "run_bits": range(config.max_run_bits + 1),
            "max_len": range(config.max_code_len + 1),
            "table_base": unsigned(config.table_addr_width),
            "codebook_base": unsigned(config.max_index_bits),
            "resident": 1,
        })


class WeightOut(data.StructLayout):
    """A weight with its fan-in position ``k`` and its channel's boundaries.

    Dense mode: every weight of the channel in fan-in order (``k`` = 0, 1, ..., N-1).
    Sparse mode (``RunExpander.sparse``): only the weights a (run, index) pair gives, at
    their positions ``k``; a channel that ends in zeros ends with a ``weight`` 0 entry
    carrying ``last``.
    """

    def __init__(self, config):
        super().__init__({"weight": signed(config.bw), "k": unsigned(config.fan_in_width),
                          "first": 1, "last": 1})


class PostItem(data.StructLayout):
    """An exact accumulator on its way to post-processing and the activation buffer.

    ``channel`` selects the bias; ``addr`` is the output's word in the output bank (after
    pooling: a pooled layer's item is its window's largest accumulator).

    With ``drain_width`` 2 an item can carry a second accumulator of the same channel:
    ``two`` set, ``acc1`` goes to word ``addr + 1`` (the next pooling window).

    With ``config.pool_after_post`` every position's accumulator is an item, and
    post-processing pools: ``opens`` (the window's first position: the channel's running
    maximum starts again), ``closes`` (its last: the maximum is written to ``addr``) and
    ``live`` (the channel is one of the layer's; a tile's dead columns come too, unwritten,
    ``cols`` items a position, so each channel's maximum is always ``cols`` items back).
    An unpooled or fully connected layer's items have all three set.
    """

    def __init__(self, config):
        fields = {
            "acc": signed(config.acc_width),
            "channel": unsigned(config.channel_width),
            "addr": unsigned(config.act_addr_width),
        }
        if config.drain_width == 2:
            fields["acc1"] = signed(config.acc_width)
            fields["two"] = unsigned(1)
        if config.pool_after_post:
            fields.update(opens=unsigned(1), closes=unsigned(1), live=unsigned(1))
        super().__init__(fields)


class PostParams(data.StructLayout):
    """A layer's post-processing parameters (docs/numerics.md, steps 2-5).

    ``bias_shift`` = ``acc_fl - b_fl`` (>= 0: ``golden.fixedpoint.align_bias``);
    ``out_shift`` = ``acc_fl - out_fl`` (``golden.fixedpoint.requantize``; negative is a
    left shift); ``relu`` applies ``golden.fixedpoint.relu``; ``bias_base`` is where the
    layer's biases start in the bias memory (0 unless the image is resident).
    """

    def __init__(self, config):
        super().__init__({
            "bias_shift": unsigned(9),
            "out_shift": signed(10),
            "relu": 1,
            "bias_base": unsigned(config.channel_width),
        })


class ImageByte(data.StructLayout):
    """A byte of a weight image on its way into the loader; ``last`` marks the file's last
    byte (a byte with ``last`` before ``file_size`` bytes is a truncated image)."""

    def __init__(self):
        super().__init__({"data": 8, "last": 1})
