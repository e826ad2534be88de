"""The committed weight images: they read, they are refused whole when damaged, their golden
accuracy stays within the documented quantization loss, and the pipeline reproduces them."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from espalier.cli import inspect_report
from golden.model import GoldenModel
from weights.datasets import load_mnist, to_float
from weights.image import ImageError, read_image
from weights.torchref import float_model

ROOT = Path(__file__).resolve().parent.parent
IMAGES = {name: ROOT / "weights" / "images" / f"{name}.img" for name in ("lenet300", "lenet5")}
# docs/results.md: the golden model (8-bit fixed point) may lose at most this much accuracy
# against float inference on the same decoded weights, and must agree on this many digits.
MAX_QUANT_LOSS_PCT = 0.30
MIN_AGREEMENT_PCT = 99.0


@pytest.fixture(scope="module", params=sorted(IMAGES))
def shipped(request):
    data = IMAGES[request.param].read_bytes()
    return request.param, data, read_image(data)


def test_inspect_figures(shipped):
    _, data, image = shipped
    rep = inspect_report(image, len(data))
    assert rep["total_bytes"] == len(data)
    n_params = sum(layer.weights().size + layer.out_c for layer in image.layers)
    assert rep["float32_bytes"] == 4 * n_params
    assert rep["ratio"] == rep["float32_bytes"] / len(data)


def test_golden_within_quantization_loss_of_float(shipped):
    """Golden (fixed point) against float inference on the same decoded weights."""
    _, _, image = shipped
    x8, y = load_mnist("test")
    x = to_float(x8)
    golden = GoldenModel(image).predict(x)
    torch.set_num_threads(1)
    with torch.no_grad():
        ref = np.concatenate([float_model(image)(torch.from_numpy(x[i : i + 1000])).argmax(1)
                              .numpy() for i in range(0, len(x), 1000)])
    golden_err = 100 * np.mean(golden != y)
    float_err = 100 * np.mean(ref != y)
    assert golden_err <= float_err + MAX_QUANT_LOSS_PCT
    assert 100 * np.mean(golden == ref) >= MIN_AGREEMENT_PCT


def test_every_truncation_refused(shipped):
    _, data, _ = shipped
    for n in range(len(data)):
        with pytest.raises(ImageError):
            read_image(data[:n])


def flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(b)


def test_bit_flips_refused_sample(shipped):
    """A random sample of 3,000 single-bit flips (every bit: the slow test below)."""
    _, data, _ = shipped
    rng = np.random.default_rng(7)
    for bit in rng.choice(len(data) * 8, size=3000, replace=False):
        with pytest.raises(ImageError):
            read_image(flip(data, int(bit)))


@pytest.mark.slow
def test_every_bit_flip_refused(shipped):
    _, data, _ = shipped
    for bit in range(len(data) * 8):
        with pytest.raises(ImageError):
            read_image(flip(data, bit))


# CPUs on which PyTorch's kernels (its ATen CPU capability, the vector ISA they dispatch to)
# round the training's floats differently from the machine the committed images were made
# on: there the pipeline is deterministic but not byte-identical to them. Seen on 2026-12-03:
# an AMD EPYC with AVX2 (no AVX-512) gave other bytes from byte 1204 of LeNet-300-100's
# image on, the same size, with the commit the images were last reproduced byte for byte
# (before ``weights`` pinned MKL's code path; not tried since).
NOT_REFERENCE_CPUS = {"AVX2"}
# The images an Intel Xeon at 2.80 GHz with AVX-512 (VNNI, VBMI2, BITALG; capability
# "AVX512", the reference's) makes, as SHA-256 digests. With MKL on its own AVX-512 code
# path (2026-12-05, before the pin): other bytes from byte 1104 of LeNet-300-100's image
# (the same size and error), LeNet-5's 30,600 bytes for 30,641. Since ``weights`` sets
# ``MKL_CBWR=AVX2`` (session 20) it makes the committed LeNet-300-100 byte for byte, and a
# LeNet-5 of 30,656 bytes (its convolutions' kernels still round otherwise; capping
# oneDNN's ISA at AVX2 or AVX512_CORE does not restore them either). The test takes
# exactly these, with the tolerances below; anything else still fails.
OTHER_CPU_IMAGES = {
    "lenet300": {"972777219d91b46761c26734026483e121bc9699f78e22af461d5178f378f960"},
    "lenet5": {"3848172f6c2093647b0ac0976e138bbe06e4dddc7184ee95365c800e59f77e29",
               "8f6aed6f6565057868545bed6799b48bc21c2188f27d0302f04e7a205f4a2daa"},
}
# What a run on such a CPU must still give: the same structure, a size within 2 %, and a
# golden-model error within this much of the committed image's.
OTHER_CPU_SIZE_PCT = 2.0
OTHER_CPU_ERROR_PP = 0.3


def _golden_error_pct(image) -> float:
    x8, y = load_mnist("test")
    return 100 * float(np.mean(GoldenModel(image).predict(to_float(x8)) != y))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_pipeline_reproduces_the_committed_image(name, tmp_path):
    """Byte for byte; on a CPU known to round differently (``NOT_REFERENCE_CPUS``), the
    same network within the stated size and error tolerances."""
    out = tmp_path / f"{name}.img"
    proc = subprocess.run([sys.executable, "-m", "espalier.cli", "compress", "--model", name,
                           "--out", str(out)], capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-2000:]
    new, ref = out.read_bytes(), IMAGES[name].read_bytes()
    if new == ref:
        return
    capability = torch.backends.cpu.get_cpu_capability()
    digest = hashlib.sha256(new).hexdigest()
    assert capability in NOT_REFERENCE_CPUS or digest in OTHER_CPU_IMAGES[name], (
        f"{name}: the pipeline's image (SHA-256 {digest}) is not the committed one, on a "
        f"CPU ({capability}) not known to round differently")
    a, b = read_image(new), read_image(ref)
    assert [(la.kind, la.in_shape, la.out_shape, len(la.codebook)) for la in a.layers] == [
        (lb.kind, lb.in_shape, lb.out_shape, len(lb.codebook)) for lb in b.layers]
    assert abs(len(new) - len(ref)) <= OTHER_CPU_SIZE_PCT / 100 * len(ref)
    assert abs(_golden_error_pct(a) - _golden_error_pct(b)) <= OTHER_CPU_ERROR_PP


def test_numpy_side_never_imports_torch_or_amaranth():
    code = ("import sys, golden.model, golden.decode, weights.image, weights.datasets; "
            "bad = [m for m in ('torch', 'amaranth') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("preset, expected", [(None, "AVX2"), ("COMPATIBLE", "COMPATIBLE")])
def test_weights_pins_mkl_code_path(preset, expected):
    """Importing ``weights`` sets ``MKL_CBWR=AVX2`` (the pin that makes an AVX-512 Intel
    CPU reproduce the committed images), before torch runs, and keeps a user's own."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if preset is not None:
        env["MKL_CBWR"] = preset
    code = "import os, weights.compress; print(os.environ['MKL_CBWR'])"
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env,
                         capture_output=True, text=True).stdout.split()
    assert out[-1] == expected
