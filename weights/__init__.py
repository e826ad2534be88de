"""Espalier's compression toolchain and weight-image format.

The numpy-only modules (`weights.image`, `weights.huffman`, `weights.datasets`) define the
weight image and load data; the golden model imports them. The torch modules
(`weights.models`, `weights.train`, `weights.compress`) turn a trained PyTorch model into
an image. This package's `__init__` imports nothing, so that importing the format never
imports torch.
"""
