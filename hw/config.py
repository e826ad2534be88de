"""One accelerator build's parameters: array shape, widths, buffers and decoder limits.

Every hardware block takes an ``AcceleratorConfig`` and derives its widths from it, so the
RTL, its tests and the software that checks an image against a build can never disagree
about a constant. Presets are copies of ``DEFAULT`` made with ``dataclasses.replace``.
"""

import dataclasses
from dataclasses import dataclass

from golden.fixedpoint import BIT_WIDTHS
from weights.huffman import MAX_CODE_LENGTH
from weights.image import MAX_ALPHABET, MAX_INDEX_BITS, MAX_RUN_BITS

__all__ = ["DEFAULT", "PRESETS", "AcceleratorConfig", "get_preset", "with_settings"]

# The weight image's own ranges (docs/weight-image.md, "Layer table entry"): one definition,
# in weights.image.
_FORMAT_INDEX_BITS = range(1, MAX_INDEX_BITS + 1)
_FORMAT_RUN_BITS = range(0, MAX_RUN_BITS + 1)
_FORMAT_SYMBOL_BITS = (MAX_ALPHABET - 1).bit_length()


def _bits(n: int) -> int:
    """Bits of an unsigned number that holds every value 0..n."""
    return max(1, n.bit_length())


@dataclass(frozen=True, kw_only=True)
class AcceleratorConfig:
    """An accelerator build. All fields are keyword-only; ``__post_init__`` checks them.

    Array and arithmetic:
        ``rows`` x ``cols`` processing elements; ``bw`` data bits (weights and activations,
        8 or 16, equal to the image's ``bw``); ``acc_width`` accumulator bits.
    Weight decoding:
        ``decode_lanes`` Huffman decoders that work on different output channels at once;
        ``max_code_len`` the longest Huffman code the decoder accepts (at most the format's
        16); ``max_index_bits`` / ``max_run_bits`` the widest codebook index and zero-run
        field; ``max_table_symbols`` entries of the decoder's symbol memory (the number of
        distinct symbols a layer's table may list); ``max_fan_in`` the largest fan-in ``N``.
    Buffers:
        ``image_bytes`` the compressed-image buffer; ``tile_depth`` decoded weights held per
        array column in the weight tile buffer; ``max_layers`` the layers an image may have
        (the depth of the loader's descriptor memory, ``max_layers · DESC_WORDS`` words).
    Compute:
        ``act_depth`` activations (``bw``-bit words) per bank of the ping-pong activation
        buffer (a layer reads one bank and writes the other; the input goes to bank 0);
        ``max_channels`` the most output channels a layer may have (the depth of the bias
        memory); ``drain_width`` convolution outputs post-processed and written a clock
        (1 or 2: with 2, the drain emits a channel's results for two neighbouring pooling
        windows together, and each activation bank is split into even and odd words so
        both are written in one clock).
    Array dataflow:
        ``row_broadcast``: each row's activation reaches all ``cols`` PEs of the row in the
        same clock (a fan-out of ``cols``) instead of moving east one PE a clock. The
        weights then enter every column together, so there is no weight skew, and a row's
        accumulators finish together, so there is no output de-skew: ``cols (cols - 1) / 2``
        weights and as many ``acc_width``-bit results of registers fewer, and ``cols - 1``
        clocks less latency. Weights still move south one PE a clock. For small arrays on
        devices short of flip-flops (the 1x8 iCE40 array: 980 of them).
        ``fc_on_array``: the fully connected path's lane ``j`` multiplies on PE ``(0, j)``'s
        multiplier (a fully connected layer does not use the array) instead of its own:
        ``decode_lanes`` multipliers fewer, for a multiplexer in front of those PEs'
        multipliers. For devices whose multipliers are all in the array (the UP5K's 8
        SB_MAC16).
        ``resident_tables``: an image whose layers' table symbols, codebook entries and
        channels fit the memories side by side is prepared at its load, and its runs load
        only each table's counts (docs/architecture.md, "Resident tables"). Without it
        every run loads each layer's table, codebook and biases: about 400 logic cells
        fewer on the iCE40 (session 18).
        ``serial_decoder``: each lane's Huffman decoder takes a bit a clock, one code
        length after another (``hw.huffman_decode``, its serial form), instead of a code a
        clock with every length compared at once: a code of ``l`` bits takes ``l - j + 1``
        clocks, ``j`` the table's shortest length (at most 4, taken in one step),
        for a decoder without per-length registers, comparators or shifters (its counts
        in a small memory). For devices short of logic cells (docs/decoder.md, "The
        serial form").
    Image buffer:
        ``image_read_latency``: clocks from an image-buffer read's address to its word, 1
        or 2. With 2 the buffer registers its address, enables and write data before its
        RAMs (``hw.image_buffer``), so the path into them is a register and a route: the
        clients' address multiplexers and the route to a buffer of many block RAMs spread
        over the device (the ULX3S's 64) no longer share a clock, for one more clock of
        latency on every read (the loader's parse, the table reader, the sequencer's
        entries and biases, the fetch; docs/architecture.md, "The image buffer's read
        latency").
    """

    rows: int
    cols: int
    bw: int
    acc_width: int
    decode_lanes: int
    image_bytes: int
    tile_depth: int
    max_fan_in: int
    max_index_bits: int
    max_run_bits: int
    max_code_len: int
    max_table_symbols: int
    max_layers: int = 16
    act_depth: int = 4096
    max_channels: int = 1024
    drain_width: int = 1
    row_broadcast: bool = False
    fc_on_array: bool = False
    resident_tables: bool = True
    serial_decoder: bool = False
    image_read_latency: int = 1

    def __post_init__(self):
        for name in ("rows", "cols", "decode_lanes", "image_bytes", "tile_depth", "max_fan_in",
                     "max_table_symbols", "max_layers", "act_depth", "max_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.bw not in BIT_WIDTHS:
            raise ValueError(f"the data width bw must be one of {BIT_WIDTHS}, not {self.bw}")
        if self.acc_width < self.min_acc_width:
            raise ValueError(
                f"an accumulator of {self.acc_width} bits cannot hold a sum of "
                f"{self.max_fan_in} products of two {self.bw}-bit numbers; "
                f"it needs at least {self.min_acc_width} bits")
        if self.max_index_bits not in _FORMAT_INDEX_BITS:
            raise ValueError(f"max_index_bits must be 1..8 (the image format's codebook index "
                             f"width), not {self.max_index_bits}")
        if self.max_run_bits not in _FORMAT_RUN_BITS:
            raise ValueError(f"max_run_bits must be 0..8 (the image format's zero-run width), "
                             f"not {self.max_run_bits}")
        if not 1 <= self.max_code_len <= MAX_CODE_LENGTH:
            raise ValueError(f"max_code_len must be 1..{MAX_CODE_LENGTH} (the image format's "
                             f"longest Huffman code), not {self.max_code_len}")
        for name in ("image_bytes", "tile_depth", "max_table_symbols", "max_layers",
                     "act_depth"):
            value = getattr(self, name)
            if value & (value - 1):
                raise ValueError(f"{name} must be a power of two (it is a memory depth), "
                                 f"not {value}")
        if self.drain_width not in (1, 2):
            raise ValueError(f"drain_width must be 1 or 2 (outputs written a clock), "
                             f"not {self.drain_width!r}")
        for name in ("row_broadcast", "fc_on_array", "resident_tables", "serial_decoder"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, not "
                                 f"{getattr(self, name)!r}")
        if self.image_read_latency not in (1, 2) or isinstance(self.image_read_latency, bool):
            raise ValueError(f"image_read_latency must be 1 or 2 (clocks from an image-buffer "
                             f"read's address to its word), not {self.image_read_latency!r}")
        if self.decode_lanes > self.cols:
            raise ValueError(f"{self.decode_lanes} decode lanes for {self.cols} array columns: "
                             f"a lane decodes one column's output channel, so use at most "
                             f"{self.cols}")

    # -- derived forms and widths ---------------------------------------------------------

    @property
    def pool_after_post(self) -> bool:
        """Max-pooling after post-processing, on the ``bw``-bit outputs: the drain's
        channel-by-channel form (one row, ``drain_width`` 1: the ``icebreaker`` preset)
        passes every position's accumulators with their window's flags, and
        ``PostProcess`` keeps each channel's running maximum (``cols`` registers of
        ``bw`` bits instead of the drain's ``cols`` of ``acc_width`` bits)."""
        return self.rows == 1 and self.drain_width == 1

    @property
    def min_acc_width(self) -> int:
        """Bits that hold any sum of ``max_fan_in`` products of two ``bw``-bit integers."""
        # |product| <= 2^(2bw-2), so |sum| <= 2^(2bw-2+ceil(log2 N)); a two's-complement
        # number that holds +2^x needs x+2 bits.
        return 2 * self.bw + (self.max_fan_in - 1).bit_length()

    @property
    def max_codebook_size(self) -> int:
        """The largest codebook ``K`` a layer may have on this build."""
        return 1 << self.max_index_bits

    @property
    def max_alphabet(self) -> int:
        """The largest symbol alphabet ``(R+1)·K + 2`` of a layer on this build."""
        return min(1 << _FORMAT_SYMBOL_BITS,
                   (1 << self.max_run_bits) * self.max_codebook_size + 2)

    @property
    def symbol_width(self) -> int:
        """Bits of a raw Huffman-table symbol as the image stores it (u16)."""
        return _FORMAT_SYMBOL_BITS

    @property
    def fan_in_width(self) -> int:
        """Bits of a position counter that holds 0..``max_fan_in``."""
        return _bits(self.max_fan_in)

    @property
    def table_addr_width(self) -> int:
        """Address bits of the decoder's symbol memory."""
        return max(1, (self.max_table_symbols - 1).bit_length())

    @property
    def code_len_width(self) -> int:
        """Bits of a code length 0..``max_code_len``."""
        return _bits(self.max_code_len)

    @property
    def image_addr_width(self) -> int:
        """Byte-address bits of the compressed-image buffer."""
        return max(1, (self.image_bytes - 1).bit_length())

    @property
    def image_word_bytes(self) -> int:
        """Bytes in one word of the image buffer: the least power of two that is at least
        4 and at least 2 bytes a decode lane, so that lanes reading it in turn (one word a
        clock between them) each get more than the byte a clock a decoder can take, but at
        most 16 (32-byte words made the 10-lane fetch a quarter of the ULX3S design and its
        read bus the worst congestion, docs/results.md). 1.5 bytes a lane starved the
        lanes at channel starts: 5 lanes on 8-byte words decoded the shipped LeNet-5 at
        0.9495 symbols a clock a lane, on 16-byte words at 0.955 (docs/results.md)."""
        return 1 << min(4, max(2, (2 * self.decode_lanes - 1).bit_length()))

    @property
    def image_words(self) -> int:
        """Depth of the image buffer in words."""
        return max(1, self.image_bytes // self.image_word_bytes)

    @property
    def act_addr_width(self) -> int:
        """Address bits of one bank of the activation buffer."""
        return max(1, (self.act_depth - 1).bit_length())

    @property
    def channel_width(self) -> int:
        """Bits of an output-channel number 0..``max_channels - 1``."""
        return max(1, (self.max_channels - 1).bit_length())

    @property
    def tile_addr_width(self) -> int:
        """Address bits of one column of the weight tile buffer."""
        return max(1, (self.tile_depth - 1).bit_length())

    @property
    def row_clocks(self) -> int:
        """Clocks between a row's activation entering the array and its accumulators
        leaving the output de-skew, beyond the PE's own three: ``cols`` in the systolic
        dataflow (east through ``cols`` PEs and back through the de-skew), 1 with
        ``row_broadcast``."""
        return 1 if self.row_broadcast else self.cols

    # -- checks against an image ----------------------------------------------------------

    def check_layer(self, layer, bw: int) -> None:
        """Raise ValueError if a weight-image layer (``weights.image.Layer``) of an image with
        data width ``bw`` does not fit this build's decoder."""
        problems = []
        if bw != self.bw:
            problems.append(f"the image's data width is {bw} bits, the build's {self.bw}")
        if layer.fan_in > self.max_fan_in:
            problems.append(f"fan-in {layer.fan_in} exceeds the build's {self.max_fan_in}")
        if len(layer.codebook) > self.max_codebook_size:
            problems.append(f"codebook of {len(layer.codebook)} entries exceeds the build's "
                            f"{self.max_codebook_size}")
        if layer.run_bits > self.max_run_bits:
            problems.append(f"run_bits {layer.run_bits} exceeds the build's "
                            f"{self.max_run_bits}")
        if layer.table.max_len > self.max_code_len:
            problems.append(f"a {layer.table.max_len}-bit Huffman code exceeds the build's "
                            f"{self.max_code_len}")
        if len(layer.table.symbols) > self.max_table_symbols:
            problems.append(f"a table of {len(layer.table.symbols)} symbols exceeds the "
                            f"build's {self.max_table_symbols}")
        if problems:
            raise ValueError("the layer does not fit this accelerator: " + "; ".join(problems))

    def check_image(self, image, size: int) -> None:
        """Raise ValueError if a weight image (``weights.image.Image``) of ``size`` bytes does
        not fit this build: the checks ``hw.image_loader.ImageLoader`` makes in hardware
        (buffer size, layer count, data width, then every layer's ``check_layer``)."""
        if size > self.image_bytes:
            raise ValueError(f"the image of {size} bytes exceeds the build's image buffer of "
                             f"{self.image_bytes}")
        if image.bw != self.bw:
            raise ValueError(f"the image's data width is {image.bw} bits, the build's "
                             f"{self.bw}")
        if len(image.layers) > self.max_layers:
            raise ValueError(f"the image's {len(image.layers)} layers exceed the build's "
                             f"{self.max_layers}")
        for n, layer in enumerate(image.layers):
            try:
                self.check_layer(layer, image.bw)
            except ValueError as e:
                raise ValueError(f"layer {n}: {e}") from None


#: The base every preset is copied from: a mid-size 8-bit build with the format's full
#: decoding range.
DEFAULT = AcceleratorConfig(
    rows=4, cols=4, bw=8, acc_width=32, decode_lanes=1,
    image_bytes=64 * 1024, tile_depth=512, max_fan_in=1024,
    max_index_bits=8, max_run_bits=8, max_code_len=MAX_CODE_LENGTH, max_table_symbols=1024)

PRESETS = {
    # Fast simulation. A 2x2 array and 2 lanes exercise every parallel path at the least
    # pysim cost; the decode limits stay at the format's maximum (16-bit codes, 8-bit index
    # and run fields) so tests can reach every corner of the format; the image buffer
    # (64 KB), the tile buffer (512 weights a column: LeNet-5 conv2's fan-in is 500) and the
    # activation banks hold the shipped LeNets, so whole networks run on it. acc_width 26 is
    # exactly min_acc_width for bw 8 and a fan-in of 1024, so the tightest legal width is
    # what the tests see.
    "small": dataclasses.replace(
        DEFAULT, rows=2, cols=2, decode_lanes=2, acc_width=26, image_bytes=64 * 1024,
        tile_depth=512, max_table_symbols=1024),
    # iCE40UP5K (iCEBreaker): 5,280 LUT4, 8 SB_MAC16, 30 EBR x 4 kbit, 4 SPRAM x 256 kbit.
    # - 1x8 array: 8 PEs = the 8 SB_MAC16; a 4x4 array in LUTs already took 70 % of the
    #   LUTs, leaving too little for the decoder and control. One row (and one lane) reads
    #   one activation a clock, so each activation bank needs one read port and is an
    #   SPRAM (``hw.act_bank``): two rows would need two block-RAM copies of each bank,
    #   32 of the 30 EBR. LeNet-5's conv layers run at 82 % and 88 % of the array's peak
    #   (their 20 and 50 channels in tiles of 8), against 99 % and 95 % on 2x4.
    # - acc_width 26, the minimum for bw 8 and fan-in 1024: the SB_MAC16 only
    #   multiplies (the accumulator is in fabric, PE by PE), and every accumulator bit
    #   is carried through the de-skew, the drain and post-processing.
    # - 1 decode lane: a lane is ~ a few hundred LUTs plus 4 EBR; the conv layers reuse each
    #   weight hundreds of times, so one lane keeps up with the 8 MACs there.
    # - image_bytes 64 KB: two of the four SPRAMs (32 KB each); the compressed LeNet-5
    #   image (31.6 KB) fits, and the other two SPRAMs are the activation banks (LeNet-5's
    #   largest feature map, conv1's pooled 20x12x12 output, is 2.9 KB at 8 bits).
    # - tile_depth 512: one EBR as 512 x 8 bits per array column.
    # - max_fan_in 1024: the shipped LeNets' largest fan-ins are 800 (LeNet-5 fc1) and
    #   784 (LeNet-300-100 fc1).
    # - max_table_symbols 1024: the shipped LeNets' tables list at most about 500 symbols;
    #   a 1024 x 18-bit symbol memory (2 kind + 8 run + 8 index bits) takes 5 EBR. The
    #   index and run widths stay at the format's 8 bits, and codes at its 16: the
    #   compression settings are still being tuned (run_bits 2..6 so far). Narrower limits
    #   save little (session 17, docs/results.md: max_code_len 15, max_run_bits 6 and
    #   max_index_bits 6, which the shipped images fit: about 190 of some 10,000 cells).
    # - max_channels 512: a 512 x 32-bit bias memory, 4 EBR (1024 took 8); the shipped
    #   LeNets' widest layer has 500 channels. With it the design takes 29 of the 30 EBR
    #   (16 of them the tile buffer's two banks of eight 512-weight columns).
    # - fc_on_array: the fc lane multiplies on PE (0, 0)'s SB_MAC16, so the array has all
    #   8 (its own took a ninth).
    # - row_broadcast: the one row's activation goes to the eight PEs in the same clock
    #   (a fan-out of 8), which removes the weight skew and the output de-skew, 980
    #   flip-flops (14,112 -> 13,157 logic cells), and 7 clocks a conv layer.
    # - no serial_decoder (yet): the serial decoder takes about 1,200 logic cells fewer
    #   (10,200 -> 9,007, session 25), but the fully connected layers' Huffman stage 4
    #   times the clocks (LeNet-300-100 15,417 -> 58,466 cycles, LeNet-5 299,913 ->
    #   392,733, with its first step of the shortest code's bits), and the design does
    #   not fit either way (docs/decoder.md).
    # - one row, drain_width 1: pooling after post-processing (pool_after_post), on 8-bit
    #   outputs rather than 26-bit accumulators (-151 logic cells, -137 with the serial
    #   decoder, session 25).
    # - no resident_tables: they take 400 logic cells (10,336 -> 10,736) on a device the
    #   design is already twice too big for; LeNet-300-100's fc1 and fc2 meet issue 5's
    #   1.25 without them here (one lane: the per-layer loads are a smaller share).
    "icebreaker": dataclasses.replace(
        DEFAULT, rows=1, cols=8, acc_width=26, decode_lanes=1, image_bytes=64 * 1024,
        tile_depth=512, max_fan_in=1024, max_table_symbols=1024, max_channels=512,
        row_broadcast=True, fc_on_array=True, resident_tables=False),
    # ECP5 LFE5U-85F (ULX3S 85F): 83,640 LUT4, 156 MULT18X18D, 208 DP16KD x 18 kbit.
    # - 13x10 array: 130 multipliers (issue 6 asks for at least 128 PEs), plus the 5
    #   lanes' fc multipliers: 135 of the 156. Ten columns tile LeNet-5's 20 and 50
    #   channels and LeNet-300's 300, 100 and 10 exactly; 13 rows tile conv2's 64
    #   positions in 5 groups (65). drain_width 2: a 2x2-pooled group of 13 positions
    #   and 10 channels is 33 items for conv1's 25 steps, so one item a clock would hold
    #   the array to 76 %; two a clock leave it step-bound (docs/results.md, the model's
    #   shape search).
    # - acc_width 28: fabric accumulators (nextpnr times the DSPs as combinational, so
    #   they are registered in fabric), at the minimum for bw 8 and fan-in 4096: every
    #   accumulator bit is carried through the de-skew, the drain's FIFO and folding
    #   registers and post-processing, 130 PEs' worth (32 took four more bits of each).
    # - 5 decode lanes, 16-byte image words: a fully connected layer (each weight used
    #   once) gets 5 weights a clock. Ten lanes (sessions 4-6, one per column) gave twice
    #   that, but decoded the shipped images at 0.93 / 0.91 symbols a clock a lane (the
    #   deal of whole channels, and a clock at each channel's end, weigh more the fewer
    #   channels a lane gets; issue 4 asks 0.95), took 38,301 logic LUT4 against 25,406
    #   and did not route (docs/results.md). Five decoded them at 0.958 / 0.955 (session
    #   7; 0.956 / 0.948 since session 14 deals a convolution's channels in turn, which
    #   costs no clock of the network); LeNet-5 took 14 % more clocks (24,001),
    #   LeNet-300-100 (all fc) 38 % (4,732).
    # - image_bytes 128 KB: 64 of the 208 DP16KD; room for images about three times
    #   LeNet-5's.
    # - tile_depth 2048: one DP16KD as 2048 x 9 bits per column.
    # - max_fan_in 4096, max_table_symbols 2048: room for larger nets than the LeNets.
    # - image_read_latency 1, for now: the image buffer's 64 block RAMs are spread over the
    #   device, and the path through its clients' address multiplexers and the route to
    #   them was among the latest in every placement of sessions 28-30 (17.4-18.1 ns).
    #   With 2 (the address registered; LeNet-300-100 3 clocks more, LeNet-5 4) that path
    #   left the top in three placements of four, but none of the four met 58.33 MHz
    #   (49.85-55.61 achieved: the fetch's lanes, a decoder, the sequencer), so the
    #   default stays the netlist that meets 55 MHz (session 31, docs/results.md).
    "ulx3s-85f": dataclasses.replace(
        DEFAULT, rows=13, cols=10, acc_width=28, decode_lanes=5, image_bytes=128 * 1024,
        tile_depth=2048, max_fan_in=4096, max_table_symbols=2048, drain_width=2),
}


def get_preset(name: str) -> AcceleratorConfig:
    """The preset called ``name``; an unknown name is a ValueError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown accelerator preset {name!r}; known presets: "
                         f"{', '.join(PRESETS)}") from None


def with_settings(config: AcceleratorConfig, settings) -> AcceleratorConfig:
    """``config`` with ``FIELD=VALUE`` settings (strings, as a command line gives them; a
    value is an integer, ``true`` or ``false``) applied; ``ValueError`` for an unknown
    field, a value that is neither, or a configuration ``AcceleratorConfig`` refuses."""
    fields = {f.name for f in dataclasses.fields(AcceleratorConfig)}
    changes = {}
    for item in settings:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(sorted(fields))}")
        if text.lower() in ("true", "false"):
            changes[name] = text.lower() == "true"
        else:
            try:
                changes[name] = int(text)
            except ValueError:
                raise ValueError(f"--set {item!r}: the value must be an integer, true "
                                 f"or false") from None
    return dataclasses.replace(config, **changes)
