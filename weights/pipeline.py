"""The shipped default: MNIST and the two LeNets, compressed with fixed per-model settings.

``compress_shipped`` is what ``espalier compress --model NAME`` runs; it is deterministic, so
the committed images in ``weights/images/`` are reproduced byte for byte from the committed
checkpoints.
"""

import dataclasses

from weights.compress import CompressConfig, LayerPlan, compress

__all__ = ["CONFIGS", "compress_shipped"]

# Ref: Han et al. 2015 Table 4/5 (weights kept per layer) and Deep Compression Table 2/3
# (bits per layer); issue 3 searches for better settings.
CONFIGS = {
    "lenet300": CompressConfig(
        plans=(LayerPlan(keep=0.08, weight_bits=6, run_bits=4),
               LayerPlan(keep=0.09, weight_bits=6, run_bits=4),
               LayerPlan(keep=0.26, weight_bits=6, run_bits=3)),
        retrain_epochs=4),
    "lenet5": CompressConfig(
        plans=(LayerPlan(keep=0.66, weight_bits=6, run_bits=2),
               LayerPlan(keep=0.12, weight_bits=6, run_bits=4),
               LayerPlan(keep=0.08, weight_bits=5, run_bits=4),
               LayerPlan(keep=0.19, weight_bits=5, run_bits=3)),
        retrain_epochs=2),
}


def compress_shipped(name: str, model, info: dict, train, *, seed: int = 0, progress=None):
    """Compress a trained shipped ``model`` (from its checkpoint, with its ``info``).

    ``train`` is the MNIST training split ``(images, labels)``: retraining uses all of it,
    calibration its first ``calib_size`` images. Returns ``(image, bytes, report)``.
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(CONFIGS)}")
    config = dataclasses.replace(CONFIGS[name], seed=seed)
    calib = (train[0][: config.calib_size], train[1][: config.calib_size])
    image, data, report = compress(model, train, calib, config, progress=progress)
    report.update(model=name, float_test_error_pct=info.get("test_error_pct"))
    return image, data, report
