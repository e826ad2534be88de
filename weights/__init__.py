"""Espalier's compression toolchain and weight-image format.

The numpy-only modules (`weights.image`, `weights.huffman`, `weights.datasets`) define the
weight image and load data; the golden model imports them. The torch modules
(`weights.models`, `weights.train`, `weights.compress`) turn a trained PyTorch model into
an image. This package's `__init__` imports nothing but `os`, so that importing the format
never imports torch.

It pins Intel MKL's code path (`MKL_CBWR=AVX2`, its conditional numerical reproducibility,
read when MKL first runs, so before any torch module here computes): MKL picks its kernels
by CPU, and on an Intel CPU with AVX-512 its own rounded the training's float sums
otherwise than the machine that made the committed images. With the pin that CPU makes the
committed LeNet-300-100 image byte for byte (LeNet-5's convolutions still differ there;
docs/results.md, "The method"). A user's own setting of the variable is kept.
"""

import os

os.environ.setdefault("MKL_CBWR", "AVX2")
