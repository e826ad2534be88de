"""``espalier sim``: MNIST digits through the simulated RTL, every layer checked against the
golden model, cycles per layer measured.

The whole accelerator (``hw.accelerator.Accelerator``: host interface and core) runs in
Amaranth's simulator behind ``espalier.simlink.SimTransport``, and this module drives it
with the same host library (``espalier.host.Device``) that drives a board: load the image,
then for each digit load the input, run each layer on its own (``RUN first=L count=1``),
read the layer's output bank and compare it with ``golden.model.GoldenModel.forward``.
A layer's cycles are the core's own count (the ``cycles`` of the RUN answer): from the RUN
to the last output written, setup included. ``cycles_per_inference`` is their sum (a single
RUN of every layer takes 2 clocks less per layer after the first: it reads the input's
fractional length once).
"""

import time

import numpy as np

from golden.model import GoldenModel
from hw.layer_plan import check_runnable, predict_cycles
from weights.image import Kind, read_image

__all__ = ["layer_names", "simulate"]


def layer_names(image) -> list[str]:
    """``conv1``, ``conv2``, ``fc1``, ... in layer order."""
    counts, names = {}, []
    for layer in image.layers:
        kind = "conv" if layer.kind == Kind.CONV else "fc"
        counts[kind] = counts.get(kind, 0) + 1
        names.append(f"{kind}{counts[kind]}")
    return names


def _dense_macs(layer) -> int:
    _, oh, ow = layer.out_shape
    return layer.out_c * oh * ow * layer.fan_in


def simulate(data: bytes, config, inputs, *, vcd=None, progress=None) -> dict:
    """Run integer ``inputs`` (each the image's input shape) through the simulated
    accelerator built with ``config``; returns the figures ``espalier sim --json`` prints.

    Raises ValueError when the image does not fit ``config`` (software refuses what the
    hardware would refuse).
    """
    from espalier.host import Device
    from espalier.simlink import SimTransport
    from hw.accelerator import Accelerator

    image = read_image(data)
    check_runnable(config, image, len(data))
    golden = GoldenModel(image)
    names = layer_names(image)
    say = progress or (lambda msg: None)

    t0 = time.perf_counter()
    dut = Accelerator(config)
    transport = SimTransport(dut, timeout_cycles=1 << 26, vcd=vcd)
    per_layer = [[] for _ in image.layers]
    exact = 0
    mismatches = []
    try:
        dev = Device(transport, timeout=1e9, run_timeout=1e9)
        dev.ping()
        start = transport.cycles
        dev.load_image(data)
        load_cycles = transport.cycles - start
        resident = dev.status().resident
        say(f"image loaded ({len(data)} bytes, {load_cycles} simulated clocks; tables "
            f"{'resident' if resident else 'loaded layer by layer'})")
        for i, x in enumerate(inputs):
            outs = golden.forward(np.asarray(x)[None])
            dev.load_input(np.asarray(x).reshape(-1))
            ok = True
            for n, layer in enumerate(image.layers):
                status, cycles = dev.run(n, 1)
                if status != 0:
                    raise RuntimeError(f"the accelerator stopped layer {n} with run status "
                                       f"{status}")
                size = int(np.prod(layer.pooled_shape))
                got = dev.read((n + 1) % 2, 0, size)
                want = outs[n].reshape(-1)
                if not np.array_equal(got, want):
                    ok = False
                    bad = int(np.flatnonzero(got != want)[0])
                    mismatches.append({"image": i, "layer": names[n], "index": bad,
                                       "got": int(got[bad]), "want": int(want[bad])})
                per_layer[n].append(cycles)
            exact += ok
            say(f"image {i + 1}/{len(inputs)}: {'bit-exact' if ok else 'MISMATCH'}, "
                f"{sum(c[-1] for c in per_layer)} cycles")
        sim_clocks = transport.cycles
    finally:
        transport.close()
    seconds = time.perf_counter() - t0

    pes = config.rows * config.cols
    layers = []
    for n, layer in enumerate(image.layers):
        cycles = int(np.median(per_layer[n]))
        nonzero = int(np.count_nonzero(layer.weights()))
        # The MACs the hardware performs: the array multiplies every weight of a
        # convolution (zeros too); the sparse fc path only the non-zero ones.
        macs = _dense_macs(layer) if layer.kind == Kind.CONV else nonzero
        predicted = predict_cycles(config, image, n, resident=resident)
        entry = {
            "name": names[n],
            "cycles": cycles,
            "macs": macs,
            "dense_macs": _dense_macs(layer),
            "utilization": macs / (pes * cycles),
            "nonzero_weights": nonzero,
            "symbols": layer.symbol_count(),
            "model_cycles": predicted,
            "model_error": (predicted - cycles) / cycles,
        }
        if layer.kind == Kind.FC:
            entry["cycles_per_nonzero_per_lane"] = cycles / (nonzero / config.decode_lanes)
        layers.append(entry)
    return {
        "images": len(inputs),
        "bit_exact": exact,
        "cycles_per_inference": sum(e["cycles"] for e in layers),
        "layers": layers,
        "mismatches": mismatches[:20],
        "pes": pes,
        "decode_lanes": config.decode_lanes,
        "load_cycles": load_cycles,
        "resident": resident,
        "sim_seconds": seconds,
        "sim_cycles_per_second": sim_clocks / seconds,
    }
