"""The software face of the sequencer: what it derives from each layer, the checks it makes,
and the cycles each layer takes.

``layer_params`` computes, from a ``weights.image.Layer``, the parameter values
``hw.sequencer.Sequencer`` drives into the conv feed, the drain and the post-processing
block (the tests compare the two); ``compute_problems`` lists what makes a layer refuse to
run on a build (``RunError.TOO_BIG`` / ``UNSUPPORTED``), so software refuses the same
images the hardware does; ``predict_cycles`` is the cycle model of docs/architecture.md.
"""

from hw.conv_feed import coord_width
from hw.huffman_decode import serial_first_bits
from hw.image_loader import DescWord, descriptor_words, resident_fits
from hw.sequencer import DECODE_LEAD, decode_lead, entry_bytes_read
from hw.weight_unit import TABLE_START
from weights.image import Kind

__all__ = ["bias_cycles", "channel_decode_clocks", "check_runnable", "compute_problems",
           "derive_cycles", "entry_cycles", "go_cycles", "lane_clocks", "layer_params",
           "predict_cycles", "setup_cycles", "table_cycles", "table_requests",
           "tile_decode_clocks"]



def _fls(image):
    """Each layer's input fractional length."""
    fl, out = image.input_fl, []
    for layer in image.layers:
        out.append(fl)
        fl = layer.out_fl
    return out


def layer_params(config, image, index: int) -> dict:
    """The sequencer's derived parameters for layer ``index``: ``conv`` (``ConvParams``
    values), ``drain`` (``DrainParams``), ``post`` (``PostParams``) and ``biases``."""
    layer = image.layers[index]
    in_fl = _fls(image)[index]
    c, h, w = layer.in_shape
    kh, kw = layer.kernel
    _, oh, ow = layer.out_shape
    p = layer.pool or 1
    ph, pw = oh // p, ow // p
    acc_fl = in_fl + layer.w_fl
    # ConvParams' offsets are kept modulo the bank's depth, its coordinate step modulo
    # 2^coord_width (hw.conv_feed.ConvParams).
    off = (1 << config.act_addr_width) - 1
    crd = (1 << coord_width(config)) - 1
    return {
        "conv": {
            "in_h": h, "in_w": w, "kh": kh, "kw": kw, "stride": layer.stride,
            "padding": layer.padding, "fan_in": layer.fan_in, "pool": p, "pooled_w": pw,
            "pooled_hw": ph * pw, "tiles": -(-layer.out_c // config.cols),
            "p1_stride": (p - 1) * layer.stride & crd,
            "line_step": layer.stride * w - (p - 1) * layer.stride & off,
            "win_step": layer.stride - (p - 1) * layer.stride * w & off,
            "p_s_in_w": p * layer.stride * w & off, "pad_off": layer.padding * (w + 1) & off,
            "ky_step": w - kw + 1 & off, "ci_step": h * w - (kh - 1) * w - kw + 1 & off,
        },
        "drain": {"out_c": layer.out_c, "pool_area": p * p, "pooled_hw": ph * pw},
        "post": {"bias_shift": acc_fl - layer.b_fl, "out_shift": acc_fl - layer.out_fl,
                 "relu": int(layer.activation == 1)},
        "biases": [int(b) for b in layer.bias],
    }


def compute_problems(config, image, index: int) -> list[str]:
    """Why layer ``index`` cannot run on this build's compute path (empty if it can)."""
    layer = image.layers[index]
    in_fl = _fls(image)[index]
    problems = []
    c, h, w = layer.in_shape
    pc, ph, pw = layer.pooled_shape
    if c * h * w > config.act_depth:
        problems.append(f"its input of {c * h * w} values exceeds an activation bank of "
                        f"{config.act_depth}")
    if pc * ph * pw > config.act_depth:
        problems.append(f"its output of {pc * ph * pw} values exceeds an activation bank of "
                        f"{config.act_depth}")
    if layer.out_c > config.max_channels:
        problems.append(f"{layer.out_c} output channels exceed the build's "
                        f"{config.max_channels}")
    if layer.kind == Kind.CONV and layer.fan_in > config.tile_depth:
        problems.append(f"a convolution fan-in of {layer.fan_in} exceeds the weight tile "
                        f"buffer's {config.tile_depth}")
    if ph * pw == 0:
        # (read_image refuses such a layer; the sequencer checks it all the same, as its
        # loader does not check the geometry)
        _, oh, ow = layer.out_shape
        problems.append(f"its {oh}x{ow} output holds no whole max-pool window")
    if layer.pool and layer.pool != layer.pool_stride:
        problems.append(f"max-pool window {layer.pool} with stride {layer.pool_stride}: the "
                        f"hardware pools with stride equal to the window")
    shift = in_fl + layer.w_fl - layer.b_fl
    if layer.bias_bits + shift > config.acc_width:
        problems.append(f"{layer.bias_bits}-bit biases shifted left by {shift} do not fit the "
                        f"{config.acc_width}-bit accumulator")
    return problems


def check_runnable(config, image, size: int) -> None:
    """Raise ValueError unless the image of ``size`` bytes both loads on this build
    (``AcceleratorConfig.check_image``, the loader's checks) and runs on it (every layer's
    ``compute_problems``, the sequencer's)."""
    config.check_image(image, size)
    for n in range(len(image.layers)):
        problems = compute_problems(config, image, n)
        if problems:
            raise ValueError(f"layer {n} does not fit this accelerator: " + "; ".join(problems))


def _mul_cycles(b: int) -> int:
    """Clocks of one derive step of the sequencer with multiplier ``b``: one per bit of it
    (16 bits), and one that ends the step and loads the next."""
    return 1 + (int(b) & 0xFFFF).bit_length()


def _bias_cycles(out_c: int, bb: int, busy=frozenset(), addr: int = 0, wb: int = 4,
                 latency: int = 1) -> int:
    """Clocks of the sequencer's BIAS state and its START: the same register transfers,
    counted. ``busy``: the clocks of the state (0 its first) in which the image buffer's
    port is not the sequencer's, so no byte outside the word it read last (the biases
    start at byte ``addr``; words of ``wb`` bytes) is read. ``latency``: the buffer's
    ``image_read_latency``; with 2 a byte read is on its way for a clock (``on_way``) and
    counts as in when the next read is decided."""
    n, bits, ch, arriving, on_way, cached = 0, 0, 0, False, False, None
    while True:
        n += 1
        if ch == out_c:
            return n
        emit = bits >= bb
        after = bits - bb if emit else bits
        bits = after + (8 if arriving else 0)
        hit = cached == addr // wb
        issue = bits + (8 if on_way else 0) < 2 * bb and (hit or (n - 1) not in busy)
        if issue:
            cached = addr // wb
            addr += 1
        arriving, on_way = (on_way, issue) if latency == 2 else (issue, False)
        ch += emit


def entry_cycles(*, first: bool, prepared: bool = False) -> int:
    """Clocks from the run (``first`` layer of a run), or from the previous layer's end,
    to the ``decode`` that starts the weight unit on the layer: the entry (a clock a byte
    read, ``entry_bytes_read``: 28, or 23 on a ``prepared`` image, and two to take the
    last) but its last ``DECODE_LEAD``; on the first layer of a run, a clock more for the
    input's fractional length (its byte is addressed in the clock before the entry's
    first)."""
    return (1 if first else 0) + entry_bytes_read(prepared) + 2 - DECODE_LEAD


def derive_cycles(config, image, index: int, *, resident=None) -> int:
    """Clocks of the sequencer's derive program (its DERIVE state, after the entry's last
    clock, ``DECODE_LEAD`` clocks after the ``decode`` pulse; the biases start in the clock
    after): a clock to start, a clock per step plus one per bit of its multiplier (the two
    divisions: 16 each, none by 1), and the checks'. A fully connected layer of a resident
    (prepared) image: the start and the checks' clock, with the preparation's results."""
    layer = image.layers[index]
    if layer.kind == Kind.FC and _resident(config, image, resident):
        return 2
    c, h, _ = layer.in_shape
    kh, kw = layer.kernel
    _, _, ow = layer.out_shape
    p = layer.pool or 1
    pw = ow // p
    s = layer.stride
    # The multipliers of the derive program's steps, in its order (the two divisions,
    # 16 clocks each and none by 1, come after the fourteenth), and the first step's load.
    pad = layer.padding
    # (p - 1)·stride as the sequencer holds it, modulo 2^coord_width, as a 16-bit multiplier
    p1s = (p - 1) * s & ((1 << min(coord_width(config), 16)) - 1)
    muls = [kh, kw, c, h, c, s, p, s, s, p, s, p1s, s, p1s, p, p, pw, layer.out_c, pad, pad,
            1, kw, 1, h, kh]
    return 2 + sum(_mul_cycles(b) for b in muls) + 2 * (1 + (16 if p > 1 else 0))


def _resident(config, image, resident):
    """A run's ``resident`` (its layers' tables, codebooks and biases prepared once at the
    load): by default, whether the image's fit side by side (``resident_fits``)."""
    return resident_fits(config, image) if resident is None else resident


def bias_cycles(config, image, index: int, busy=frozenset(), *, resident=None) -> int:
    """Clocks of the sequencer's biases, to the ``go`` that lets the weight streams start;
    ``busy`` as ``_bias_cycles``'s. A resident layer's are in the bias memory: none (the
    derive program's last clock goes to the start, which ``derive_cycles`` counts)."""
    if _resident(config, image, resident):
        return 0
    layer = image.layers[index]
    addr = descriptor_words(image)[index][DescWord.BIAS_ADDR]
    return _bias_cycles(layer.out_c, layer.bias_bits, busy, addr, config.image_word_bytes,
                        config.image_read_latency)


def _reader_run(start: int, addr: int, count: int, wide: bool, wb: int, latency: int = 1):
    """The clocks an ``ItemReader`` run started at clock ``start``, its output never
    stalled, asks for the image buffer's port (the start, the clock after, and the clock
    after each item that crosses into the word after ``hold``), and the clock it is no
    longer busy: its registers, clock by clock. ``latency``: the buffer's
    ``image_read_latency``. With 1 (or with 2 on words of 8 bytes or more) an item a clock
    from the first word's arrival; with 2 on 4-byte words a run of 2-byte items waits a
    clock for every other word, which is asked for only in the clock after the item that
    moves its predecessor into ``hold``."""
    lx = latency - 1
    reqs = [start]
    priming_1, priming, running = bool(lx), not lx, False
    nxt_ok = pend = pend_1 = False
    a, left, t = addr, count, start + 1
    while priming_1 or priming or running:
        ask = not nxt_ok and not pend and not pend_1
        if ask:
            reqs.append(t)
        n_nxt_ok, n_running = nxt_ok or pend, running
        if running:
            a_next = a + (2 if wide else 1)
            crossing = a_next // wb != a // wb
            if not crossing or nxt_ok or pend:
                a, left = a_next, left - 1
                if crossing:
                    n_nxt_ok = False
                if left == 0:
                    n_running = False
        if priming:
            n_running = left != 0
        priming, priming_1 = priming_1, False
        pend, pend_1 = (pend_1, ask) if lx else (ask, False)
        nxt_ok, running, t = n_nxt_ok, n_running, t + 1
    return reqs, t


def table_requests(config, image, index: int, *, resident=None) -> tuple[frozenset, int]:
    """The clocks (from the ``decode`` pulse) in which the weight unit's table reader has
    the image buffer's port, and the clock it has read the table and the codebook
    (``table_cycles``): the streams start then, or at the ``go`` if later. A resident
    layer's table is its ``L`` counts, and no codebook."""
    layer = image.layers[index]
    d = descriptor_words(image)[index]
    wb, lat = config.image_word_bytes, config.image_read_latency
    if _resident(config, image, resident):
        reqs, end = _reader_run(TABLE_START, d[DescWord.TABLE_ADDR], layer.table.max_len,
                                True, wb, lat)
        return frozenset(reqs), end
    r1, end = _reader_run(TABLE_START, d[DescWord.TABLE_ADDR],
                          layer.table.max_len + len(layer.table.symbols), True, wb, lat)
    r2, end = _reader_run(end, d[DescWord.CODEBOOK_ADDR], len(layer.codebook),
                          image.bw == 16, wb, lat)
    return frozenset(r1 + r2), end


def go_cycles(config, image, index: int, *, resident=None) -> int:
    """Clocks from the ``decode`` pulse to the weight streams' start: the derive program,
    then the biases, a byte not read in a clock the table reader has the port
    (``table_requests``), and the start; or the table's load, if that ends later."""
    derive = decode_lead(config) + derive_cycles(config, image, index, resident=resident)
    reqs, table = table_requests(config, image, index, resident=resident)
    # (the biases' first clock is the one after ``derive``)
    busy = frozenset(t - derive - 1 for t in reqs if t > derive)
    return max(derive + bias_cycles(config, image, index, busy, resident=resident), table)


def setup_cycles(config, image, index: int, *, first: bool, resident=None) -> int:
    """Clocks the sequencer itself spends on layer ``index`` before its weights may
    stream, were the image buffer's port always its own: the entry, the derive program
    (and the checks, in the clock that ends it), the biases and the start. The weight unit
    loads the layer's table meanwhile, from the entry's last clocks (``go_cycles``)."""
    return (entry_cycles(first=first, prepared=_resident(config, image, resident))
            + decode_lead(config)
            + derive_cycles(config, image, index, resident=resident)
            + bias_cycles(config, image, index, resident=resident))


def _serial_steps(layer, stream) -> list[tuple[int, int]]:
    """Per symbol of one channel's ``stream``: the serial decoder's clocks on its code (a
    first step of the table's shortest length's bits, ``serial_first_bits``, then a bit a
    clock: ``l - j + 1`` for a code of ``l`` bits) and the weights it covers."""
    from golden.decode import advance, huffman_symbols

    lengths = layer.table.lengths()
    j = serial_first_bits(layer.table.counts)
    out = []
    pos = 0
    for s in huffman_symbols(stream, layer.table, layer.alphabet, layer.fan_in):
        after, _ = advance(layer.alphabet, s, pos, layer.fan_in)
        out.append((int(lengths[s]) - j + 1, after - pos))
        pos = after
    return out


def channel_decode_clocks(layer, stream, *, serial: bool = False) -> int:
    """Clocks a lane's Huffman decoder takes on one channel's ``stream``: a symbol a clock
    and a clock for the channel's end (``HuffmanDecoder``), or in its serial form
    (``serial_decoder``) ``l - j + 1`` clocks a code of ``l`` bits (``_serial_steps``) and
    the end."""
    from golden.decode import huffman_symbols

    if serial:
        return 1 + sum(clocks for clocks, _ in _serial_steps(layer, stream))
    return 1 + len(huffman_symbols(stream, layer.table, layer.alphabet, layer.fan_in))


def lane_clocks(layer, lanes: int, *, serial: bool = False) -> list[int]:
    """The clock each lane finishes decoding when channels go to the lane with the fewest
    bytes (``channel_decode_clocks`` each), from the clock its first channel is dealt
    (``StreamFetch`` deals one a clock, so lane ``j`` of a layer's first ``lanes`` channels
    starts ``j`` clocks after the first)."""
    load = [0] * lanes
    clocks = [None] * lanes
    for dealt, stream in enumerate(layer.streams):
        j = load.index(min(load))
        load[j] += len(stream)
        if clocks[j] is None:
            clocks[j] = dealt
        clocks[j] += channel_decode_clocks(layer, stream, serial=serial)
    return [c or 0 for c in clocks]


def tile_decode_clocks(config, layer, tile: int) -> int:
    """Clocks the lanes take to decode a convolution tile's weights into the tile buffer:
    its channels dealt to the lanes in turn, a weight a clock (the expanders emit every
    weight of a channel, ``fan_in`` of them), or with ``serial_decoder`` per symbol the
    longer of its code's clocks and its weights (``_serial_steps``: the expander waits for
    a code, the decoder for the expander to take the last one), and the channel's end."""
    first = tile * config.cols
    channels = range(first, min(first + config.cols, layer.out_c))
    lanes = config.decode_lanes
    if not config.serial_decoder:
        return -(-len(channels) // lanes) * layer.fan_in

    def channel(c):
        steps = _serial_steps(layer, layer.streams[c])
        return 1 + sum(max(clocks, weights) for clocks, weights in steps)

    return max(sum(channel(c) for c in channels[j::lanes])
               for j in range(min(lanes, len(channels))))


def table_cycles(layer, *, resident: bool = False) -> int:
    """Clocks the weight unit takes from ``decode`` to its last table read (it holds the
    table, and the image buffer's port is free, from the next clock; with an early ``go``
    its streams start in this one): the descriptor words the load needs and the start
    (``hw.weight_unit.TABLE_START``, 11), then the Huffman table's ``L`` counts and ``n``
    symbols and the ``K`` codebook entries at one a clock, plus two clocks for each of the
    two runs; for a ``resident`` layer the counts alone, one run."""
    if resident:
        return TABLE_START + layer.table.max_len + 2
    return (TABLE_START + layer.table.max_len + len(layer.table.symbols)
            + len(layer.codebook) + 4)


def predict_cycles(config, image, index: int, *, first: bool = True, resident=None) -> int:
    """The cycle model: clocks of one layer, from the run (or the previous layer's end) to
    its last output written, on a prepared image if ``resident`` (by default: if the
    image's tables fit side by side, ``resident_fits``, as the accelerator then prepares
    it at the load). docs/architecture.md derives each term."""
    layer = image.layers[index]
    # The weight unit loads the table from the entry's last clocks, beside the derive
    # program and the biases, which share the image buffer's port with it; the streams
    # start at the later of the ``go`` and the table's end.
    n = (entry_cycles(first=first, prepared=_resident(config, image, resident))
         + go_cycles(config, image, index, resident=resident))
    lanes = config.decode_lanes
    if layer.kind == Kind.CONV:
        n_in = layer.fan_in
        _, oh, ow = layer.out_shape
        p = layer.pool or 1
        positions = (oh // p) * (ow // p) * p * p  # those in whole pooling windows
        groups = -(-positions // config.rows)
        tiles = -(-layer.out_c // config.cols)
        # The first tile's weights: its channels, dealt to the lanes in turn
        # (``tile_decode_clocks``).
        n += tile_decode_clocks(config, layer, 0)
        for t in range(tiles):
            live = min(config.cols, layer.out_c - t * config.cols)
            # The array's step rate, or the drain's item a clock (one per window and
            # channel; one per pair of windows and channel with drain_width 2) when a
            # group has more items than steps.
            per_group = max(n_in, config.rows,
                            -(-config.rows * live // (p * p * config.drain_width)))
            # The tile's start: the walker's restart and its first group's positions
            # (rows + 2); with one row the walker's position is the group's, so a clock
            # to restart it and one at the tile's end (a position past the windows).
            compute = (2 if config.rows == 1 else config.rows + 2) + groups * per_group
            # The next tile's weights are decoded meanwhile, into the tile buffer's other
            # bank; the next tile waits for them if they take longer (the serial
            # decoder's lanes on a layer of few positions; never on the shipped images).
            if t + 1 < tiles:
                compute = max(compute, tile_decode_clocks(config, layer, t + 1))
            n += compute
        n += config.row_clocks + config.rows + 8  # the array, the drain and post-processing
    else:
        # One symbol a clock per lane, and a clock per channel end. StreamFetch deals
        # each channel to the lane with the fewest stream bytes left; modelled as the
        # least bytes dealt so far, so a lane's time is that of the channels it drew,
        # from its first deal. Then the pipeline's tail: 24 clocks, the median excess
        # over the lanes' decoding of the shipped fc layers on all three presets (16-33,
        # fetch start-up and the fc path's pipeline; docs/results.md).
        n += max(lane_clocks(layer, lanes, serial=config.serial_decoder)) + 24
    return n  # (the clock that finds the blocks idle goes to the next entry, or ends)
