# amaranth: UnusedElaboratable=no
"""End to end through a board top's UART pins in simulation: the host library loads an image,
writes an input, runs every layer and reads the result, which must equal the golden model;
a corrupted or cut-short frame is detected and the link recovers."""

import dataclasses

import numpy as np
import pytest

from espalier.host import Device, LinkError
from espalier.simlink import UARTSimTransport
from golden.fixedpoint import int_range
from golden.model import GoldenModel
from hw.config import get_preset
from hw.image_loader import resident_fits
from platforms.boards import BoardTop, get_board
from tests.imagegen import random_image
from weights.image import write_image


def board_link(name, *, seed=0):
    """The board's top with a small accelerator, its UART at 4 clocks a bit."""
    board = get_board(name)
    cfg = dataclasses.replace(get_preset("small"), act_depth=1024, max_channels=64,
                              image_bytes=4096)
    baud = int(board.pll(None).out_hz) // 4
    top = BoardTop(board, config=cfg, baud=baud, timeout_clocks=2000)
    assert top.divisor == 4
    transport = UARTSimTransport(top, divisor=4, timeout_cycles=200_000,
                                 rng=np.random.default_rng(seed), stall=0.1)
    return top, transport, Device(transport, timeout=1e9, run_timeout=1e9)


@pytest.mark.parametrize("name", [
    "icebreaker", pytest.param("ulx3s-85f", marks=pytest.mark.slow)])
def test_inference_through_the_uart(name):
    image = random_image(5)
    data = write_image(image)
    golden = GoldenModel(image)
    lo, hi = int_range(image.bw)
    x = np.random.default_rng(5).integers(lo, hi + 1, size=image.input_shape)
    top, transport, dev = board_link(name)
    with transport:
        assert dev.ping().fields["rows"] == top.config.rows
        assert dev.load_image(data) == len(image.layers)
        dev.load_input(x.reshape(-1))
        status, cycles = dev.run(0, len(image.layers))
        assert status == 0 and cycles > 0
        size = int(np.prod(image.layers[-1].pooled_shape))
        out = dev.read(len(image.layers) % 2, 0, size)
        assert np.array_equal(out, golden.forward(x[None])[-1].reshape(-1))
        assert dev.status().loaded
        # (its tables fit the preset side by side: prepared at the load)
        assert dev.status().resident == resident_fits(top.config, image)


@pytest.mark.slow
def test_corrupt_and_lost_frames_through_the_uart():
    from espalier.host import Cmd, encode_frame

    image = random_image(6)
    data = write_image(image)
    _, transport, dev = board_link("icebreaker", seed=1)
    with transport:
        dev.load_image(data)
        # A request whose payload is corrupted on the wire: the device answers with an
        # error status, and the image it was loading is aborted, never used.
        frame = bytearray(encode_frame(200, Cmd.LOAD_IMAGE, data))
        frame[20] ^= 0x10
        transport.write(bytes(frame))
        reply = transport.read(11)
        assert reply[0] == 0xE5 and reply[1] == 200 and reply[2] != 0
        assert not dev.status().loaded
        # A request cut short: the device drops it after its timeout and answers the next.
        transport.write(encode_frame(201, Cmd.STATUS)[:5])
        transport.run(5000)
        assert dev.load_image(data) == len(image.layers)
        # A response that is never read (lost to the host) is not taken for the answer to
        # the next request: its seq differs, and the host says so.
        transport.write(encode_frame((dev._seq + 7) & 0xFF, Cmd.STATUS))
        transport.run(3000)
        with pytest.raises(LinkError, match="seq"):
            dev.status()
        assert dev.status().loaded  # the link recovers
