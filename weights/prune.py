"""Magnitude pruning after Han et al., "Learning both Weights and Connections" (NIPS 2015).

Per-layer sensitivity analysis (error against the fraction of weights pruned, one layer at
a time, no retraining), thresholds of the form quality x the layer's weight standard
deviation chosen from it, and masks for iterative prune -> retrain rounds. numpy and torch.

Ref: Han et al. 2015, section 3.3 (iterative pruning), 3.4 (sensitivity analysis) and
section 4 (threshold = quality parameter x standard deviation of the layer's weights).
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "SensitivityCurve",
    "keep_for_tolerance",
    "magnitude_mask",
    "quality_for_keep",
    "sensitivity",
]


def magnitude_mask(w: np.ndarray, keep: float, prior: np.ndarray | None = None) -> np.ndarray:
    """Keep the ``round(keep * w.size)`` largest |w| (at least 1) among ``prior``'s survivors.

    Ties are broken by position (the earlier weight is kept), so masks are deterministic.
    """
    w = np.asarray(w, dtype=np.float64)
    mag = np.abs(w).ravel()
    alive = np.ones(mag.size, dtype=bool) if prior is None else np.asarray(prior).ravel()
    k = max(1, int(round(keep * mag.size)))
    k = min(k, int(alive.sum()))
    order = np.lexsort((np.arange(mag.size), -np.where(alive, mag, -1.0)))
    mask = np.zeros(mag.size, dtype=bool)
    mask[order[:k]] = True
    return mask.reshape(w.shape)


def quality_for_keep(w: np.ndarray, keep: float) -> float:
    """The quality parameter q whose threshold ``q * std(w)`` keeps a ``keep`` fraction of ``w``."""
    mag = np.sort(np.abs(np.asarray(w, dtype=np.float64)).ravel())[::-1]
    k = max(1, int(round(keep * mag.size)))
    return float(mag[k - 1] / np.std(w))


@dataclass(frozen=True)
class SensitivityCurve:
    """Error (percent) against the fraction of one layer's weights kept, the others intact."""

    layer: str
    keep: tuple[float, ...]
    error_pct: tuple[float, ...]
    base_error_pct: float


def sensitivity(model: nn.Module, layers: dict[str, nn.Module], x: np.ndarray, y: np.ndarray,
                keeps=(1.0, 0.8, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02),
                batch: int = 1000, progress=None) -> list[SensitivityCurve]:
    """Prune each layer alone to each fraction in ``keeps`` and measure the float error."""

    def error() -> float:
        model.eval()
        wrong = 0
        with torch.no_grad():
            for i in range(0, len(x), batch):
                pred = model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy()
                wrong += int(np.sum(pred != y[i : i + batch]))
        return 100.0 * wrong / len(x)

    base = error()
    curves = []
    for name, module in layers.items():
        original = module.weight.detach().clone()
        errs = []
        for keep in keeps:
            mask = magnitude_mask(original.numpy(), keep)
            with torch.no_grad():
                module.weight.copy_(original * torch.from_numpy(mask).to(original.dtype))
            errs.append(error())
        with torch.no_grad():
            module.weight.copy_(original)
        curves.append(SensitivityCurve(name, tuple(keeps), tuple(errs), base))
        if progress:
            progress(f"sensitivity {name}: " + ", ".join(
                f"{k:.0%}->{e:.2f}%" for k, e in zip(keeps, errs, strict=True)))
    return curves


def keep_for_tolerance(curve: SensitivityCurve, tolerance_pct: float) -> float:
    """The smallest fraction kept whose error stays within ``tolerance_pct`` of the base.

    Assumes the error grows as fewer weights are kept: scans from dense towards sparse and
    stops at the first fraction that exceeds the tolerance.
    """
    best = 1.0
    for keep, err in sorted(zip(curve.keep, curve.error_pct, strict=True), reverse=True):
        if err > curve.base_error_pct + tolerance_pct:
            break
        best = keep
    return best
