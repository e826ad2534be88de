"""Array shapes for a preset, by the cycle model: each shipped network's convolution
utilization and cycles per inference on ``rows x cols`` PEs with ``cols`` (or a given
number of) decode lanes and a drain of one or two items a clock.

    .venv/bin/python benchmarks/shapes.py [--preset ulx3s-85f] [--json]
    .venv/bin/python benchmarks/shapes.py --shapes 8x8x1,13x10x2,13x10x2x8

A shape is ``ROWSxCOLSxDRAIN`` (``cols`` decode lanes) or ``ROWSxCOLSxDRAINxLANES``.
The figures are ``hw.layer_plan.predict_cycles`` (within 5 % of the simulated RTL on
every shipped layer, docs/results.md), not simulations:
utilization is a convolution's dense MACs ÷ (PEs × predicted cycles).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from hw.config import get_preset
from hw.layer_plan import compute_problems, predict_cycles
from weights.image import Kind, read_image_file

__all__ = ["main", "shape_figures"]

IMAGES = Path(__file__).resolve().parent.parent / "weights" / "images"
DEFAULT_SHAPES = ("8x8x1", "8x8x2", "16x8x1", "16x8x2", "12x12x2", "13x10x1", "13x10x2",
                  "14x10x2", "16x10x2")


def shape_figures(preset: str, rows: int, cols: int, drain_width: int,
                  lanes: int | None = None) -> dict:
    """The model's figures for one shape, as a dict (``rows``, ``cols``, ``pes``,
    ``drain_width``, ``lanes`` (default ``cols``), ``networks``: name -> ``cycles``,
    ``conv_utilization`` list)."""
    lanes = cols if lanes is None else lanes
    cfg = dataclasses.replace(get_preset(preset), rows=rows, cols=cols, decode_lanes=lanes,
                              drain_width=drain_width)
    networks = {}
    for path in sorted(IMAGES.glob("*.img")):
        image = read_image_file(path)
        total, util = 0, []
        for i, layer in enumerate(image.layers):
            problems = compute_problems(cfg, image, i)
            if problems:
                raise ValueError(f"{path.name} layer {i} does not fit {rows}x{cols}: "
                                 f"{problems[0]}")
            n = predict_cycles(cfg, image, i, first=i == 0)
            total += n
            if layer.kind == Kind.CONV:
                _, oh, ow = layer.out_shape
                util.append(layer.out_c * oh * ow * layer.fan_in / (rows * cols * n))
        networks[path.stem] = {"cycles": total, "conv_utilization": util}
    return {"rows": rows, "cols": cols, "pes": rows * cols, "drain_width": drain_width,
            "lanes": lanes, "networks": networks}


def _shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) not in (3, 4):
        raise argparse.ArgumentTypeError(f"not ROWSxCOLSxDRAIN[xLANES]: {text!r}")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ulx3s-85f",
                        help="the preset whose other fields (buffers, widths) are kept")
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help="comma-separated ROWSxCOLSxDRAIN[xLANES] (drain: 1 or 2 items a "
                             "clock; lanes: decode lanes, default COLS)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    args = parser.parse_args(argv)
    try:
        shapes = [_shape(s) for s in args.shapes.split(",")]
        rows = [shape_figures(args.preset, *s) for s in shapes]
    except (ValueError, argparse.ArgumentTypeError) as e:
        print(f"shapes: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    names = list(rows[0]["networks"])
    print("| shape | PEs | drain | lanes | " + " | ".join(
        f"{n} cycles | {n} conv util" for n in names) + " |")
    print("|---|---|---|---|" + "---|---|" * len(names))
    for r in rows:
        cells = []
        for n in names:
            f = r["networks"][n]
            util = " / ".join(f"{u:.1%}" for u in f["conv_utilization"]) or "—"
            cells += [f"{f['cycles']:,}", util]
        print(f"| {r['rows']}x{r['cols']} | {r['pes']} | {r['drain_width']} | {r['lanes']} | "
              + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
