"""Where a fully connected layer's clocks go, by the cycle model, against issue 5's target
of 1.25 × (non-zero weights ÷ decode lanes): the sequencer's setup (entry, derive program,
biases), the weight unit's table load (which runs beside the derive program and the
biases), the clocks to the weight streams' start (the entry and the later of the two), and
the core (the lanes' work and the pipeline tail). ``core_ratio`` is the ratio the layer
would have if everything before the streams were hidden behind the previous layer;
``lanes_ratio`` the busiest lane's decoding alone (its symbols, filler zeros included, and
a clock per channel end), with no start and no pipeline tail: a layer above the target
there cannot meet it on this image by hiding clocks, only by fewer symbols or more than a
symbol a clock.
``resident``: the image's tables, codebooks and biases fit the preset side by side, so the
accelerator prepares them at the load and a layer's table is its ``L`` counts, with no
biases (docs/architecture.md, "Resident tables").

    .venv/bin/python benchmarks/fc_budget.py [--presets small,icebreaker,ulx3s-85f] [--json]

The figures are ``hw.layer_plan`` (``setup_cycles``, ``table_cycles``, ``go_cycles``,
``predict_cycles``;
within 5 % of the simulated RTL on every shipped layer, docs/results.md), not simulations.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hw.config import PRESETS, get_preset
from hw.image_loader import resident_fits
from hw.layer_plan import (
    entry_cycles,
    go_cycles,
    lane_clocks,
    predict_cycles,
    setup_cycles,
    table_cycles,
)
from weights.image import Kind, read_image_file

__all__ = ["fc_budget", "main"]

IMAGES = Path(__file__).resolve().parent.parent / "weights" / "images"
TARGET = 1.25


def fc_budget(preset: str) -> list[dict]:
    """One dict per fully connected layer of each shipped image on ``preset``: ``image``,
    ``layer`` (index), ``resident``, ``nonzero``, ``lanes``, ``share`` (non-zeros ÷ lanes),
    ``setup``
    (the sequencer's own clocks, ``setup_cycles``), ``table`` (``table_cycles``),
    ``busiest`` (the busiest lane's decoding, ``hw.layer_plan.lane_clocks``),
    ``start`` (clocks to the streams' start: ``entry_cycles + go_cycles``), ``cycles`` (the
    whole layer, not the first of a run), ``ratio`` (cycles ÷ share) and ``core_ratio``
    ((cycles − start) ÷ share) and ``lanes_ratio`` (``busiest`` ÷ share)."""
    cfg = get_preset(preset)
    rows = []
    for path in sorted(IMAGES.glob("*.img")):
        image = read_image_file(path)
        resident = resident_fits(cfg, image)
        for i, layer in enumerate(image.layers):
            if layer.kind != Kind.FC:
                continue
            nonzero = int(np.count_nonzero(layer.weights()))
            share = nonzero / cfg.decode_lanes
            setup = setup_cycles(cfg, image, i, first=False)
            table = table_cycles(layer, resident=resident)
            start = entry_cycles(first=False, prepared=resident) + go_cycles(cfg, image, i)
            cycles = predict_cycles(cfg, image, i, first=False)
            busiest = max(lane_clocks(layer, cfg.decode_lanes))
            rows.append({"image": path.stem, "layer": i, "resident": resident,
                         "nonzero": nonzero,
                         "lanes": cfg.decode_lanes, "share": share, "setup": setup,
                         "table": table, "start": start, "cycles": cycles,
                         "ratio": cycles / share, "core_ratio": (cycles - start) / share,
                         "busiest": busiest, "lanes_ratio": busiest / share})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS),
                        help=f"comma-separated presets (default: {','.join(PRESETS)})")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON object: preset -> list of layers")
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        print(f"fc_budget: error: unknown preset {', '.join(unknown)}; known: "
              f"{', '.join(PRESETS)}", file=sys.stderr)
        return 2
    result = {p: fc_budget(p) for p in presets}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"| preset | image | resident | layer | nnz ÷ lanes | setup | table | to the streams "
          f"| cycles | ratio (target {TARGET}) | core only | lanes only |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p, rows in result.items():
        for r in rows:
            print(f"| `{p}` | {r['image']} | {'yes' if r['resident'] else 'no'} | "
                  f"{r['layer']} | {r['share']:,.0f} | {r['setup']} | "
                  f"{r['table']} | {r['start']} | {r['cycles']:,} | {r['ratio']:.2f} | "
                  f"{r['core_ratio']:.2f} | {r['lanes_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
