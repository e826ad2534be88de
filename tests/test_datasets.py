"""MNIST loading: shapes and known values, and a clear DatasetError for every kind of damage."""

import gzip
import hashlib
import shutil

import numpy as np
import pytest

from weights.datasets import DEFAULT_ROOT, DatasetError, load_mnist, to_float


@pytest.mark.parametrize(
    ("split", "count", "first_labels"),
    [
        ("train", 60_000, [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]),
        ("test", 10_000, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
    ],
)
def test_load_split(split, count, first_labels):
    images, labels = load_mnist(split)
    assert images.shape == (count, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (count,)
    assert labels.dtype == np.uint8
    assert labels.min() == 0 and labels.max() == 9
    assert set(np.unique(labels)) == set(range(10))
    assert labels[:10].tolist() == first_labels
    # Real digits: dark background, some saturated ink.
    assert images[:, 0, 0].max() == 0
    assert images.max() == 255


def test_load_is_cached_and_read_only():
    images, labels = load_mnist("test")
    again, _ = load_mnist("test", root=DEFAULT_ROOT)
    assert again is images
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1
    with pytest.raises(ValueError):
        labels[0] = 1


def test_to_float():
    images, _ = load_mnist("test")
    x = to_float(images[:100])
    assert x.shape == (100, 1, 28, 28)
    assert x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    # The numerics spec's definition: an IEEE float32 division by 255.
    expected = images[:100].astype(np.float32) / np.float32(255)
    assert np.array_equal(x[:, 0], expected)
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    pixels = np.pad(pixels, ((0, 0), (6, 6), (6, 6)))
    values = to_float(pixels)[0, 0, 6:22, 6:22].ravel()
    assert values[1] == np.float32(1) / np.float32(255)
    assert values[128] == np.float32(128) / np.float32(255)


def test_unknown_split():
    with pytest.raises(ValueError, match="train.*test|test.*train"):
        load_mnist("validation")


@pytest.fixture
def mnist_copy(tmp_path):
    root = tmp_path / "mnist"
    shutil.copytree(DEFAULT_ROOT, root)
    return root


def test_copy_loads(mnist_copy):
    images, labels = load_mnist("test", root=mnist_copy)
    reference, reference_labels = load_mnist("test")
    assert np.array_equal(images, reference)
    assert np.array_equal(labels, reference_labels)


def test_missing_file(mnist_copy):
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz.*missing"):
        load_mnist("test", root=mnist_copy)


def test_missing_checksums(mnist_copy):
    (mnist_copy / "SHA256SUMS.uncompressed").unlink()
    with pytest.raises(DatasetError, match="SHA256SUMS.uncompressed"):
        load_mnist("test", root=mnist_copy)


def test_flipped_byte(mnist_copy):
    path = mnist_copy / "t10k-images-idx3-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[5000] ^= 0x01  # one pixel bit: still a well-formed IDX file
    path.write_bytes(gzip.compress(bytes(data), compresslevel=1))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz.*checksum") as info:
        load_mnist("test", root=mnist_copy)
    assert "\n" not in str(info.value)


def test_not_gzip(mnist_copy):
    (mnist_copy / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data\n" * 10)
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz.*gzip"):
        load_mnist("train", root=mnist_copy)


def _repin(root, stem, data):
    """Replace a file with ``data`` and update its checksum, to reach the IDX checks."""
    (root / f"{stem}.gz").write_bytes(gzip.compress(data, compresslevel=1))
    sums = root / "SHA256SUMS.uncompressed"
    lines = [
        f"{hashlib.sha256(data).hexdigest()}  {stem}" if line.endswith(f"  {stem}") else line
        for line in sums.read_text().splitlines()
    ]
    sums.write_text("\n".join(lines) + "\n")


def test_bad_magic(mnist_copy):
    stem = "t10k-labels-idx1-ubyte"
    data = bytearray(gzip.decompress((mnist_copy / f"{stem}.gz").read_bytes()))
    data[3] = 0x03  # the images magic in a labels file
    _repin(mnist_copy, stem, bytes(data))
    with pytest.raises(DatasetError, match=rf"{stem}\.gz.*magic"):
        load_mnist("test", root=mnist_copy)


def test_truncated(mnist_copy):
    stem = "t10k-images-idx3-ubyte"
    data = gzip.decompress((mnist_copy / f"{stem}.gz").read_bytes())
    _repin(mnist_copy, stem, data[:-1])
    with pytest.raises(DatasetError, match=rf"{stem}\.gz.*size"):
        load_mnist("test", root=mnist_copy)


def test_count_mismatch(mnist_copy):
    stem = "t10k-labels-idx1-ubyte"
    data = gzip.decompress((mnist_copy / f"{stem}.gz").read_bytes())
    # A consistent labels file with one label fewer than there are images.
    short = (0x00000801).to_bytes(4, "big") + (9_999).to_bytes(4, "big") + data[8:-1]
    _repin(mnist_copy, stem, short)
    with pytest.raises(DatasetError, match=rf"{stem}\.gz.*count mismatch"):
        load_mnist("test", root=mnist_copy)
