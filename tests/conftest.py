"""Test-wide settings: one torch thread (on a shared 2-core machine torch's default threading
ran many times slower than one thread), and an optional VCD dump flag for hardware tests."""

import os

import pytest

try:
    import torch
except ImportError:  # the numpy side is usable without torch
    torch = None
else:
    torch.set_num_threads(1)


@pytest.fixture
def dump_vcd():
    """True when DUMP_VCD=1: hardware tests then write waveforms into pytest's tmp_path."""
    return os.environ.get("DUMP_VCD") == "1"
