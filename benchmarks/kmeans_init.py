"""Deep Compression's k-means initialisations compared on a shipped model.

    python benchmarks/kmeans_init.py --model lenet300 [--json]

Compresses the model with its shipped settings three times, changing only ``kmeans_init``
(linear, density, random), and prints each image's size and golden-model error on the
10,000 MNIST test images. Ref: Deep Compression (ICLR 2016) section 3.2 and Figure 4.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from golden.model import GoldenModel
from weights.compress import KMEANS_INITS, compress
from weights.datasets import load_mnist, to_float
from weights.pipeline import CONFIGS
from weights.train import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(CONFIGS), default="lenet300")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    train = load_mnist("train")
    x, y = load_mnist("test")
    xf = to_float(x)
    rows = []
    for init in KMEANS_INITS:
        model, _ = load_checkpoint(ROOT / "weights" / "checkpoints" / f"{args.model}.pt")
        config = dataclasses.replace(CONFIGS[args.model], kmeans_init=init)
        calib = (train[0][: config.calib_size], train[1][: config.calib_size])
        t0 = time.perf_counter()
        image, data, _ = compress(model, train, calib, config)
        err = 100.0 * float(np.mean(GoldenModel(image).predict(xf) != y))
        rows.append(dict(init=init, bytes=len(data), error_pct=err,
                         seconds=time.perf_counter() - t0))
    if args.json:
        print(json.dumps(dict(model=args.model, runs=rows), indent=2))
    else:
        print(f"{args.model}: k-means initialisation, shipped settings otherwise")
        for r in rows:
            print(f"{r['init']:8} {r['bytes']:7d} bytes  error {r['error_pct']:.2f} %")


if __name__ == "__main__":
    main()
