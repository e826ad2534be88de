"""Where a fully connected layer's clocks go, measured on the simulated RTL: the clock of
each stage boundary of one layer's run, from the RUN command to its last output written.

``benchmarks/fc_budget.py`` splits a layer's clocks with the cycle model, whose pipeline
tail is one figure (``hw.layer_plan``: 24 clocks, fitted). This runs the layer through
``hw.accelerator.AcceleratorCore`` in Amaranth's simulator and watches the handshakes
between the blocks, so the start, the lanes' decoding and the tail are each measured:

- ``decode``: the sequencer asks the weight unit for the layer (its entry is being read);
- ``go``: the sequencer lets the weight streams start (and starts the fc path);
- ``fetch``: bytes leaving ``StreamFetch`` for the decoders (first and last, per lane);
- ``path``: weights leaving the decode path (decoder, slice, run expander), per lane;
- ``fc_in``: weights taken by ``SparseFC``, per lane;
- ``fc_out``: channel sums leaving ``SparseFC`` for post-processing;
- ``post_wr``: activations written by ``PostProcess``;
- ``end``: the layer's cycles, the core's own count (what ``espalier sim`` reports).

Each stage has its first and last clock and its ``count`` (clocks with a transfer).

Derived: ``to_go`` (the sequencer's start: the entry, the derive program, the biases),
``go_to_bytes`` (the fetch's start-up, and what is left of the table's load after ``go``),
``bytes_to_weights`` (the first byte to the first weight at the fc path), ``lanes`` (the
busiest lane, its first weight to its last at the fc path) and ``tail`` (the last weight
at the fc path to the end). ``share`` is non-zeros ÷ lanes and ``ratio`` the layer's
cycles over it (issue 5's target: 1.25).

    .venv/bin/python benchmarks/fc_stages.py [--presets small,icebreaker,ulx3s-85f]
        [--images lenet300,lenet5] [--json]

The layer's input is a fixed pattern, not a digit: a fully connected layer's clocks depend
on its weights only (its non-zeros and their streams), not on the activations. Each layer
is run on its own (``RUN first=L count=1``, as ``espalier sim`` does). A preset with many
PEs simulates slowly (``ulx3s-85f``: about a minute an image).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hw.config import get_preset
from hw.layer_plan import check_runnable
from weights.image import Kind, read_image

IMAGES = Path(__file__).resolve().parent.parent / "weights" / "images"


def measure(config, data: bytes) -> list[dict]:
    """Load ``data`` into the simulated core built with ``config`` and run each fully
    connected layer on its own; per layer, the first and last clock of each stage
    (relative to the RUN) and the derived spans."""
    from amaranth.sim import Simulator

    from hw.accelerator import AcceleratorCore
    from hw.image_loader import LoadError
    from hw.sequencer import RunError

    image = read_image(data)
    check_runnable(config, image, len(data))
    dut = AcceleratorCore(config)
    ctl = dut.ctl
    lanes = config.decode_lanes
    fc_layers = [n for n, layer in enumerate(image.layers) if layer.kind == Kind.FC]
    watch = {"on": False, "t": 0, "ev": {}}

    def mark(key, t):
        ev = watch["ev"]
        ev.setdefault(key, [t, t, 0])[1] = t
        ev[key][2] += 1

    lane_signals = [s for j in range(lanes) for s in (
        dut.unit.fetch.o[j].valid, dut.unit.fetch.o[j].ready,
        dut.unit.path.o[j].valid, dut.unit.path.o[j].ready,
        dut.fc.i[j].valid, dut.fc.i[j].ready)]

    async def monitor(ctx):
        async for _clk, _rst, *v in ctx.tick().sample(
                dut.sequencer.decode, dut.sequencer.go, *lane_signals,
                dut.fc.o.valid, dut.fc.o.ready, dut.post.wr_en):
            if not watch["on"]:
                continue
            t = watch["t"]
            watch["t"] += 1
            if v[0]:
                mark("decode", t)
            if v[1]:
                mark("go", t)
            for j in range(lanes):
                fv, fr, pv, pr, iv, ir = v[2 + 6 * j: 8 + 6 * j]
                if fv and fr:
                    mark(f"fetch{j}", t)
                if pv and pr:
                    mark(f"path{j}", t)
                if iv and ir:
                    mark(f"fc_in{j}", t)
            ov, o_ready, wr = v[2 + 6 * lanes:]
            if ov and o_ready:
                mark("fc_out", t)
            if wr:
                mark("post_wr", t)

    results = []

    async def bench(ctx):
        ctx.set(ctl.load, 1)
        await ctx.tick()
        ctx.set(ctl.load, 0)
        for n, b in enumerate(data):
            ctx.set(ctl.image.payload, {"data": b, "last": int(n == len(data) - 1)})
            ctx.set(ctl.image.valid, 1)
            await ctx.tick().until(ctl.image.ready)
        ctx.set(ctl.image.valid, 0)
        while ctx.get(ctl.load_busy):
            await ctx.tick()
        status = ctx.get(ctl.load_status)
        if status != LoadError.NONE:
            raise RuntimeError(f"the core refused the image: {status}")
        # A fixed pattern in bank 0, the host's (the clocks do not depend on it): the
        # first fc layer reads it if its index is even, and each layer after it reads
        # the one before's output.
        for a in range(image.layers[fc_layers[0]].fan_in):
            ctx.set(ctl.act_wr_addr, a)
            ctx.set(ctl.act_wr_data, (a * 7) % 50)
            ctx.set(ctl.act_wr_en, 1)
            await ctx.tick()
        ctx.set(ctl.act_wr_en, 0)
        for index in fc_layers:
            watch.update(on=True, t=0, ev={})
            ctx.set(ctl.run_first, index)
            ctx.set(ctl.run_count, 1)
            ctx.set(ctl.run, 1)
            await ctx.tick()
            ctx.set(ctl.run, 0)
            while ctx.get(ctl.busy):
                await ctx.tick()
            watch["on"] = False
            run = ctx.get(ctl.run_status)
            if run != RunError.NONE.value:
                raise RuntimeError(f"layer {index} stopped: {RunError(run).name}")
            results.append((index, ctx.get(ctl.cycles), dict(watch["ev"])))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return [_derive(config, image, index, cycles, ev) for index, cycles, ev in results]


def _derive(config, image, index: int, cycles: int, ev: dict) -> dict:
    layer = image.layers[index]
    lanes = config.decode_lanes
    nnz = int(np.count_nonzero(layer.weights()))
    share = nnz / lanes
    used = [j for j in range(lanes) if f"fc_in{j}" in ev]
    first_byte = min(ev[f"fetch{j}"][0] for j in used)
    first_weight = min(ev[f"fc_in{j}"][0] for j in used)
    last_weight = max(ev[f"fc_in{j}"][1] for j in used)
    busiest = max(ev[f"fc_in{j}"][1] - ev[f"fc_in{j}"][0] + 1 for j in used)
    return {
        "layer": index,
        "nonzero_weights": nnz,
        "share": share,
        "cycles": cycles,
        "ratio": cycles / share,
        "stages": {k: {"first": v[0], "last": v[1], "count": v[2]}
                   for k, v in sorted(ev.items())},
        "to_go": ev["go"][0],
        "go_to_bytes": first_byte - ev["go"][0],
        "bytes_to_weights": first_weight - first_byte,
        "lanes": busiest,
        "tail": cycles - 1 - last_weight,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="small,icebreaker,ulx3s-85f",
                        help="comma-separated presets (default: small,icebreaker,ulx3s-85f)")
    parser.add_argument("--images", default="lenet300,lenet5",
                        help="comma-separated shipped images, or paths to image files "
                             "(default: lenet300,lenet5)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON object: preset -> image -> list of layers")
    args = parser.parse_args(argv)
    try:
        presets = {name: get_preset(name) for name in args.presets.split(",")}
    except ValueError as e:
        parser.error(str(e))
    images = {}
    for name in args.images.split(","):
        path = IMAGES / f"{name}.img" if "/" not in name and "." not in name else Path(name)
        try:
            images[name] = path.read_bytes()
        except OSError as e:
            parser.error(f"{path}: cannot read: {e.strerror}")
    out = {}
    for pname, config in presets.items():
        for iname, data in images.items():
            print(f"{pname} {iname}: simulating ...", file=sys.stderr, flush=True)
            try:
                rows = measure(config, data)
            except ValueError as e:
                parser.error(f"{iname} on {pname}: {e}")
            out.setdefault(pname, {})[iname] = rows
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print("| preset | image | layer | nnz ÷ lanes | cycles | ratio | to go | go → bytes "
          "| bytes → weights | busiest lane | tail |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for pname, per_image in out.items():
        for iname, rows in per_image.items():
            for r in rows:
                print(f"| `{pname}` | {iname} | {r['layer']} | {r['share']:,.0f} | "
                      f"{r['cycles']:,} | {r['ratio']:.2f} | {r['to_go']} | "
                      f"{r['go_to_bytes']} | {r['bytes_to_weights']} | {r['lanes']:,} | "
                      f"{r['tail']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
