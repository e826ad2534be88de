"""Where nextpnr's router2 finds congestion: a summary of its ``--router2-heatmap`` files.

    .venv/bin/python benchmarks/heatmap.py build/s6/hm/hm --iter 9 [--top 20] [--json]

nextpnr-ecp5 ``--router router2 --router2-heatmap PREFIX`` writes, after each routing
iteration ``N``, ``PREFIX_congestion_by_net_N.csv`` (each net and the overused wires it
uses) and ``PREFIX_congestion_by_coordinate_N.csv`` (overused wires per tile, one row per
``x``). The board build's nextpnr command (``build/BOARD/build_top.sh``) with that option
added, run in the build directory, makes them. This prints the overuse per block of the
accelerator (the net name's first three parts, e.g. ``accel.core.tiles``), per group of
nets inside it (a net's first four parts, five in the weight unit and the array; numbers
replaced by ``N``, Yosys' cell suffixes dropped) and the hottest
8 x 8-tile windows.
"""

import argparse
import csv
import json
import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["main", "summarize"]

_SUFFIX = re.compile(r"_(LUT4|TRELLIS|CCU2C|PFUMX|L6MUX).*$")
WINDOW = 8


def _group(net: str, depth: int) -> str:
    g = ".".join(net.split(".")[:depth])
    return _SUFFIX.sub("_*", re.sub(r"\d+", "N", g))


def summarize(prefix: str, iteration: int, top: int = 20) -> dict:
    """``overused`` (the sum over nets), ``blocks`` and ``groups`` (name, overuse, nets;
    most first), ``windows`` (x, y of an 8 x 8-tile window's corner, its overuse; most
    first, ``top`` of them). Raises ``FileNotFoundError`` naming a missing file."""
    nets_path = Path(f"{prefix}_congestion_by_net_{iteration}.csv")
    grid_path = Path(f"{prefix}_congestion_by_coordinate_{iteration}.csv")
    for p in (nets_path, grid_path):
        if not p.is_file():
            raise FileNotFoundError(f"no heatmap file {p}")
    blocks, groups, count = Counter(), Counter(), Counter()
    total = 0
    with nets_path.open() as f:
        for row in csv.reader(f):
            if len(row) != 2:
                continue
            name, value = row[0], int(row[1])
            total += value
            blocks[_group(name, 3)] += value
            g = _group(name, 5 if name.startswith(("accel.core.unit.", "accel.core.array."))
                       else 4)
            groups[g] += value
            count[g] += 1
    with grid_path.open() as f:
        grid = [[int(v) for v in row if v.strip()] for row in csv.reader(f)]
    windows = Counter()
    for x, row in enumerate(grid):
        for y, v in enumerate(row):
            windows[(x // WINDOW * WINDOW, y // WINDOW * WINDOW)] += v
    return {
        "iteration": iteration,
        "overused": total,
        "blocks": [[b, v] for b, v in blocks.most_common(top)],
        "groups": [[g, v, count[g]] for g, v in groups.most_common(top)],
        "windows": [[x, y, v] for (x, y), v in windows.most_common(top)],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", help="the --router2-heatmap prefix, with its directory")
    parser.add_argument("--iter", type=int, required=True, dest="iteration",
                        help="the router2 iteration whose files to read")
    parser.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        result = summarize(args.prefix, args.iteration, args.top)
    except (FileNotFoundError, ValueError) as e:
        print(f"heatmap: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"iteration {result['iteration']}: {result['overused']:,} overused wire uses "
          f"(summed over nets)")
    print("| block | overuse |\n|---|---|")
    for b, v in result["blocks"]:
        print(f"| `{b}` | {v:,} |")
    print("| nets | overuse | nets |\n|---|---|---|")
    for g, v, n in result["groups"]:
        print(f"| `{g}` | {v:,} | {n:,} |")
    print(f"| {WINDOW}x{WINDOW} window (x, y) | overuse |\n|---|---|")
    for x, y, v in result["windows"]:
        print(f"| ({x}, {y}) | {v:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
