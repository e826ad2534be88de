"""Figures of docs/results.md that come from the committed images alone.

    python benchmarks/figures.py

Writes docs/img/bytes-per-layer.png (bytes of each layer of weights/images/*.img, split into
Huffman streams and everything else).
"""

from pathlib import Path

from espalier.cli import inspect_report
from espalier.plots import plot_bytes
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


if __name__ == "__main__":
    main()
