"""What the order of a layer's channels is worth to the decode lanes (issue 4's target of
0.95 symbols per clock per lane), by a model of the stream fetch's deal, not the RTL.

    .venv/bin/python benchmarks/deal_order.py [--lanes 10] [--json]

For each layer of each shipped image the channels are dealt one at a time to the lane with
the fewest stream bytes so far (the lowest lane on a tie), as ``hw.stream_fetch`` deals
them, and each lane takes one clock per Huffman symbol plus one per channel (the clock a
channel's end costs the decoder, docs/decoder.md), starting ``j`` clocks late on lane ``j``
(a deal a clock). The layer's rate is its symbols ÷ (lanes × its busiest lane's clocks);
an image's is its symbols ÷ (lanes × the sum of its layers' clocks), as ``espalier bench
decode`` reports it. Two orders: ``stored`` (channel order, as the image holds them: what
the hardware does) and ``longest_first`` (by decreasing stream size: the LPT rule). Since
session 7 the compressor stores every hidden layer longest first (``weights/order.py``), so
the two differ only in each network's last layer, whose channel order is the output's.
``no_end_clock`` is ``longest_first`` without the clock a channel end costs.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from golden.decode import huffman_symbols
from weights.image import read_image_file

__all__ = ["deal_order", "main"]

IMAGES = Path(__file__).resolve().parent.parent / "weights" / "images"
ORDERS = ("stored", "longest_first", "no_end_clock")


def _busiest(sizes, symbols, order, lanes: int, end_clock: int) -> int:
    """The busiest lane's clocks when the channels ``order`` are dealt by fewest bytes."""
    dealt = np.zeros(lanes, dtype=np.int64)
    clocks = np.arange(lanes, dtype=np.int64)  # lane j starts j clocks late
    for c in order:
        j = int(np.argmin(dealt))
        dealt[j] += sizes[c]
        clocks[j] += symbols[c] + end_clock
    return int(clocks.max())


def deal_order(lanes: int) -> dict:
    """Per shipped image: ``layers`` (per layer ``name``, ``symbols`` and the rate under each
    of ``ORDERS``) and the image's rate under each order."""
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, not {lanes}")
    result = {}
    for path in sorted(IMAGES.glob("*.img")):
        image = read_image_file(path)
        layers, clocks = [], dict.fromkeys(ORDERS, 0)
        total = 0
        for name, layer in zip(image.layer_names(), image.layers, strict=True):
            sizes = np.array([len(s) for s in layer.streams], dtype=np.int64)
            symbols = np.array([len(huffman_symbols(s, layer.table, layer.alphabet,
                                                    layer.fan_in))
                                for s in layer.streams], dtype=np.int64)
            longest = np.argsort(-sizes, kind="stable")
            busiest = {
                "stored": _busiest(sizes, symbols, range(len(sizes)), lanes, 1),
                "longest_first": _busiest(sizes, symbols, longest, lanes, 1),
                "no_end_clock": _busiest(sizes, symbols, longest, lanes, 0),
            }
            n = int(symbols.sum())
            total += n
            row = {"name": name, "symbols": n}
            for o in ORDERS:
                clocks[o] += busiest[o]
                row[o] = n / (lanes * busiest[o])
            layers.append(row)
        result[path.stem] = {"lanes": lanes, "layers": layers,
                             **{o: total / (lanes * clocks[o]) for o in ORDERS}}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lanes", type=int, default=10,
                        help="decode lanes (default 10, the ulx3s-85f preset's)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.lanes < 1:
        print(f"deal_order: error: --lanes must be at least 1, not {args.lanes}",
              file=sys.stderr)
        return 2
    result = deal_order(args.lanes)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.lanes} lanes, symbols per clock per lane (model)")
    print("| image | layer | symbols | " + " | ".join(ORDERS) + " |")
    print("|---|---|---|" + "---|" * len(ORDERS))
    for name, r in result.items():
        for row in r["layers"]:
            print(f"| {name} | {row['name']} | {row['symbols']:,} | "
                  + " | ".join(f"{row[o]:.3f}" for o in ORDERS) + " |")
        print(f"| {name} | all | {sum(x['symbols'] for x in r['layers']):,} | "
              + " | ".join(f"**{r[o]:.3f}**" for o in ORDERS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
