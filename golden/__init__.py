"""The bit-exact numpy model of the Espalier accelerator.

`golden.fixedpoint` holds the integer primitives (docs/numerics.md), `golden.decode` the
weight-decoding steps (docs/weight-image.md) and `golden.model` whole-network inference.
numpy only: never torch or Amaranth.
"""
