"""Espalier command line: compress, inspect, evaluate and benchmark weight images."""

__all__ = ["__version__"]
__version__ = "0.1.0"
