"""Figures for people: sensitivity curves, weight histograms, bytes per layer, trade-offs.

matplotlib with the non-interactive Agg backend; every function writes one PNG.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_bytes", "plot_sensitivity", "plot_tradeoff", "plot_weights"]


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sensitivity(curves, title: str, path) -> None:
    """Error against the fraction of one layer's weights pruned (Han et al. 2015, Figure 5)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in curves:
        ax.plot([100 * (1 - k) for k in c.keep], c.error_pct, marker="o", label=c.layer)
    ax.axhline(curves[0].base_error_pct, color="gray", lw=0.8, ls="--", label="unpruned")
    ax.set_xlabel("weights pruned in that layer alone (%)")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_weights(layers, path, title: str) -> None:
    """Per layer: the float weights before pruning, the kept ones after retraining, and the
    trained, quantized codebook centroids marked (Deep Compression, Figure 6 style).

    ``layers``: list of dicts with ``name``, ``before`` (all float weights), ``after`` (kept
    weights before sharing) and ``centroids`` (real values of the codebook).
    """
    fig, axes = plt.subplots(len(layers), 1, figsize=(7, 2.2 * len(layers)), squeeze=False)
    for ax, layer in zip(axes[:, 0], layers, strict=True):
        everything = np.concatenate([layer["before"], layer["centroids"]])
        bins = np.linspace(everything.min(), everything.max(), 121)
        ax.hist(layer["before"], bins=bins, color="lightgray", label="before pruning")
        ax.hist(layer["after"], bins=bins, color="tab:blue", alpha=0.8,
                label="kept after pruning and retraining")
        for c in layer["centroids"]:
            ax.axvline(c, color="tab:red", lw=0.6, alpha=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{layer['name']}: {len(layer['centroids'])} shared weights (red)",
                     fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_bytes(reports: dict, path) -> None:
    """Stacked bytes per layer of each image, split into streams and everything else."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = 0
    ticks, labels = [], []
    for model, rep in reports.items():
        for layer in rep["layers"]:
            ax.bar(x, layer["stream_bytes"], color="tab:blue")
            ax.bar(x, layer["bytes"] - layer["stream_bytes"], bottom=layer["stream_bytes"],
                   color="tab:orange")
            ticks.append(x)
            labels.append(f"{model}\n{layer['name']}")
            x += 1
        x += 0.5
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_ylabel("bytes")
    ax.legend(["Huffman streams", "tables, codebook, biases, sizes"], fontsize=8)
    ax.set_title("Bytes per layer of the committed images")
    _save(fig, path)


def plot_tradeoff(points: dict, path, paper: dict | None = None) -> None:
    """Compression ratio against golden-model error, one line per model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, pts in points.items():
        pts = sorted(pts, key=lambda p: p["ratio"])
        ax.plot([p["ratio"] for p in pts], [p["error_pct"] for p in pts], marker="o",
                label=f"Espalier {model}")
    for model, (ratio, err) in (paper or {}).items():
        ax.scatter([ratio], [err], marker="*", s=120, label=f"Deep Compression {model}")
    ax.set_xlabel("compression ratio (float32 bytes / image bytes)")
    ax.set_ylabel("golden-model error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
