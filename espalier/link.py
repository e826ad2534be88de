"""``espalier load`` and ``espalier infer``: a board (or the simulated gateware) over the host
link.

``open_device(port)`` gives an ``espalier.host.Device`` on a serial port (pyserial; any
pyserial URL), or on the simulated accelerator when ``port`` is ``sim:PRESET`` (the
``hw.accelerator.Accelerator`` of that preset in Amaranth's simulator, behind
``espalier.simlink.SimTransport``): the same host code talks to both.
"""

import numpy as np

from golden.model import GoldenModel

__all__ = ["infer", "load", "open_device"]


def open_device(port: str, *, baud: int = 115200, progress=None):
    """A ``Device`` on ``port``; ValueError for an unknown ``sim:`` preset."""
    from espalier.host import Device, SerialTransport

    if port.startswith("sim:"):
        from espalier.simlink import SimTransport
        from hw.accelerator import Accelerator
        from hw.config import get_preset

        config = get_preset(port[4:])
        if progress:
            progress(f"simulating the {port[4:]} accelerator (pysim: slow)")
        transport = SimTransport(Accelerator(config), timeout_cycles=1 << 26)
        return Device(transport, timeout=1e9, run_timeout=1e9)
    return Device(SerialTransport(port, baud), timeout=2.0, run_timeout=60.0)


def load(dev, data: bytes) -> dict:
    """Check ``data`` against the device's build, load it, and return the device state."""
    info = dev.ping()
    dev.check_image(data)  # ValueError: does not fit, before any byte is sent
    n_layers = dev.load_image(data)
    state = dev.status()
    return {"bytes": len(data), "n_layers": n_layers, "loaded": bool(state.loaded),
            "resident": bool(state.resident), "device": info.fields}


def infer(dev, data: bytes, inputs: np.ndarray, labels=None, progress=None) -> dict:
    """Run integer ``inputs`` (N, C, H, W) through every layer of the loaded image ``data``;
    compare each final output with the golden model's. Returns the figures."""
    from weights.image import read_image

    image = read_image(data)
    golden = GoldenModel(image)
    state = dev.status()
    if not state.loaded or state.n_layers != len(image.layers):
        raise ValueError(f"the device holds no image with {len(image.layers)} layers: load "
                         f"it first (espalier load, or --load)")
    last = image.layers[-1]
    size = int(np.prod(last.pooled_shape))
    bank = len(image.layers) % 2
    preds, exact, cycles = [], 0, []
    for i, x in enumerate(inputs):
        dev.load_input(x.reshape(-1))
        status, n = dev.run(0, len(image.layers))
        if status != 0:
            raise RuntimeError(f"the accelerator stopped with run status {status}")
        out = dev.read(bank, 0, size)
        want = golden.forward(x[None])[-1].reshape(-1)
        exact += bool(np.array_equal(out, want))
        preds.append(int(np.argmax(out)))
        cycles.append(n)
        if progress:
            progress(f"digit {i + 1}/{len(inputs)}: class {preds[-1]}, {n} cycles")
    rep = {"images": len(inputs), "predictions": preds, "bit_exact": exact,
           "cycles_per_inference": int(np.median(cycles))}
    if labels is not None:
        rep["correct"] = int(np.sum(np.asarray(preds) == np.asarray(labels)[:len(preds)]))
    return rep
