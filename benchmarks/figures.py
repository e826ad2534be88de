"""Figures of docs/results.md that come from the committed images alone.

    python benchmarks/figures.py

Writes docs/img/bytes-per-layer.png (bytes of each layer of weights/images/*.img, split into
Huffman streams and everything else) and redraws docs/img/MODEL-tradeoff.png from the JSON
that `espalier bench tradeoff --model MODEL --json` printed into docs/data/.
"""

import json
from pathlib import Path

from espalier.bench import DEEP_COMPRESSION
from espalier.cli import inspect_report
from espalier.plots import plot_bytes, plot_tradeoff
from weights.image import read_image

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    reports = {}
    for name in ("lenet300", "lenet5"):
        data = (ROOT / "weights" / "images" / f"{name}.img").read_bytes()
        reports[name] = inspect_report(read_image(data), len(data))
    out = ROOT / "docs" / "img" / "bytes-per-layer.png"
    plot_bytes(reports, out)
    print(out)
    for name in reports:
        data = ROOT / "docs" / "data" / f"{name}-tradeoff.json"
        if data.exists():
            out = ROOT / "docs" / "img" / f"{name}-tradeoff.png"
            plot_tradeoff({name: json.loads(data.read_text())["points"]}, out,
                          {name: DEEP_COMPRESSION[name]})
            print(out)


if __name__ == "__main__":
    main()
