"""The shipped default: MNIST and the two LeNets, compressed with fixed per-model settings.

``compress_shipped`` is what ``espalier compress --model NAME`` runs; it is deterministic, so
the committed images in ``weights/images/`` are reproduced byte for byte from the committed
checkpoints.
"""

import dataclasses

from weights.compress import CompressConfig, LayerPlan, compress

__all__ = ["CONFIGS", "compress_shipped"]

# How these were chosen (docs/results.md): `espalier sensitivity` ranks the layers (conv1 is
# by far the most sensitive, then the small last layers; conv2 and fc1 tolerate the most
# pruning), then kept fractions and bits were searched with retraining. Long zero runs
# (run_bits 5 and 6: up to 31 and 63 zeros) in the very sparse layers keep filler symbols
# rare, so the hardware decodes close to one non-zero weight per symbol.
# Ref: Han et al. 2015 section 3.4 (sensitivity); Deep Compression Tables 2 and 3 (bits).
CONFIGS = {
    "lenet300": CompressConfig(
        plans=(LayerPlan(keep=0.04, weight_bits=4, run_bits=6),
               LayerPlan(keep=0.09, weight_bits=4, run_bits=5),
               LayerPlan(keep=0.25, weight_bits=4, run_bits=3)),
        prune_rounds=3, retrain_epochs=3, finetune_epochs=1, finetune_lr=1e-4),
    "lenet5": CompressConfig(
        plans=(LayerPlan(keep=0.3, weight_bits=5, run_bits=3),
               LayerPlan(keep=0.07, weight_bits=5, run_bits=5),
               LayerPlan(keep=0.06, weight_bits=4, run_bits=6),
               LayerPlan(keep=0.15, weight_bits=4, run_bits=3)),
        prune_rounds=3, retrain_epochs=3, finetune_epochs=2, finetune_lr=1e-4),
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
