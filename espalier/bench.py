"""Benchmarks that print figures: golden-model throughput against PyTorch's float forward."""

import statistics
import time

import numpy as np

__all__ = ["DEEP_COMPRESSION", "bench_golden", "bench_tradeoff"]

#: Deep Compression's Table 1 (ratio, top-1 error %) for the two networks, to beat.
DEEP_COMPRESSION = {"lenet300": (40.0, 1.58), "lenet5": (39.0, 0.74)}


def bench_golden(image, repeats: int = 3, progress=None) -> dict:
    """Time the golden model and a float torch model of the same decoded weights, one thread each.

    Both run the 10,000 MNIST test images in batches of 500, ``repeats`` times each,
    interleaved so that machine noise hits both alike; medians and their ratio are reported.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from golden.fixedpoint import argmax
    from golden.model import GoldenModel
    from weights.datasets import load_mnist, to_float
    from weights.torchref import float_model

    x8, y = load_mnist("test")
    x = to_float(x8)
    torch.set_num_threads(1)
    golden = GoldenModel(image)
    ref = float_model(image)
    g_times, t_times = [], []
    with threadpool_limits(limits=1):
        for r in range(repeats):
            t0 = time.perf_counter()
            pred = golden.predict(x, batch=500)
            g_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.no_grad():
                tpred = np.concatenate([
                    argmax(ref(torch.from_numpy(x[i : i + 500])).numpy())
                    for i in range(0, len(x), 500)])
            t_times.append(time.perf_counter() - t0)
            if progress:
                progress(f"run {r + 1}/{repeats}: golden {g_times[-1]:.2f} s, "
                         f"torch {t_times[-1]:.2f} s")
    g, t = statistics.median(g_times), statistics.median(t_times)
    n = len(x)
    return dict(images=n, repeats=repeats, threads=1, golden_seconds=g, torch_seconds=t,
                golden_images_per_s=n / g, torch_images_per_s=n / t, ratio_to_torch=t / g,
                golden_error_pct=100.0 * float(np.mean(pred != y)),
                torch_error_pct=100.0 * float(np.mean(tpred != y)),
                agreement_pct=100.0 * float(np.mean(pred == tpred)))


def bench_tradeoff(name: str, model_loader, train, test, scales, progress=None) -> dict:
    """Compression ratio against golden error: the shipped config with every layer's kept
    fraction multiplied by each of ``scales`` (capped at 1), compressed and evaluated.

    ``model_loader()`` returns a fresh ``(model, info)`` for each point.
    """
    import dataclasses

    from golden.model import GoldenModel
    from weights.compress import compress
    from weights.datasets import to_float
    from weights.pipeline import CONFIGS

    base = CONFIGS[name]
    x, y = test
    xf = to_float(x)
    points = []
    for scale in scales:
        plans = tuple(dataclasses.replace(p, keep=min(1.0, p.keep * scale)) for p in base.plans)
        config = dataclasses.replace(base, plans=plans)
        model, _ = model_loader()
        calib = (train[0][: config.calib_size], train[1][: config.calib_size])
        t0 = time.perf_counter()
        image, data, _ = compress(model, train, calib, config)
        err = 100.0 * float(np.mean(GoldenModel(image).predict(xf) != y))
        float_bytes = 4 * sum(layer.weights().size + layer.out_c for layer in image.layers)
        points.append(dict(scale=scale, keep=[p.keep for p in plans], bytes=len(data),
                           ratio=float_bytes / len(data), error_pct=err,
                           seconds=time.perf_counter() - t0))
        if progress:
            progress(f"scale {scale}: {len(data)} bytes, {points[-1]['ratio']:.1f}x, "
                     f"error {err:.2f} %")
    return dict(model=name, points=points)
