"""MNIST from the files shipped in ``data/mnist``, verified on every load.

Numpy and the standard library only: the golden model imports this module, and it must not
pull in torch.

Each of the four gzip-compressed IDX files is decompressed, its SHA-256 compared with the pin in
``SHA256SUMS.uncompressed`` (the uncompressed bytes are pinned because a ``.gz`` depends on the
gzip that wrote it), and then parsed. Nothing is ever downloaded.

Ref: Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of handwritten digits" (IDX
format: big-endian header, magic 0x00000803 for images, 0x00000801 for labels).
"""

import functools
import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_ROOT", "SPLITS", "DatasetError", "load_mnist", "to_float"]

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "data" / "mnist"

#: Split name -> (images file stem, labels file stem); the stored files add ``.gz``.
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_SUMS_FILE = "SHA256SUMS.uncompressed"
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


class DatasetError(Exception):
    """A dataset file is missing, corrupt or inconsistent; the message names the file."""


def _read_sums(root: Path) -> dict[str, str]:
    path = root / _SUMS_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DatasetError(f"{path}: checksum list is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read checksum list ({exc})") from None
    sums = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        # `sha256sum` format: hex digest, a space, then ' ' (text) or '*' (binary), then name.
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DatasetError(f"{path}:{lineno}: not a sha256sum line")
        sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def _read_verified(root: Path, stem: str, sums: dict[str, str]) -> bytes:
    path = root / f"{stem}.gz"
    try:
        data = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a valid gzip file ({exc})") from None
    if stem not in sums:
        raise DatasetError(f"{root / _SUMS_FILE}: no checksum for {stem}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sums[stem]:
        raise DatasetError(
            f"{path}: SHA-256 checksum mismatch of the uncompressed bytes "
            f"(expected {sums[stem]}, got {digest})"
        )
    return data


def _parse_idx(path: Path, data: bytes, magic: int, n_dims: int) -> np.ndarray:
    header_size = 4 + 4 * n_dims
    if len(data) < header_size:
        raise DatasetError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    found, *dims = struct.unpack(f">{1 + n_dims}I", data[:header_size])
    if found != magic:
        raise DatasetError(f"{path}: bad IDX magic 0x{found:08x}, expected 0x{magic:08x}")
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DatasetError(
            f"{path}: wrong size {len(data)} bytes, header {tuple(dims)} needs {expected}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=4)
def _load(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = SPLITS[split]
    sums = _read_sums(root)
    images_path = root / f"{images_stem}.gz"
    labels_path = root / f"{labels_stem}.gz"
    images = _parse_idx(images_path, _read_verified(root, images_stem, sums), _IMAGES_MAGIC, 3)
    labels = _parse_idx(labels_path, _read_verified(root, labels_stem, sums), _LABELS_MAGIC, 1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise DatasetError(
            f"{labels_path}: count mismatch, {len(labels)} labels for {len(images)} images "
            f"in {images_path.name}"
        )
    if len(labels) and labels.max() > 9:
        raise DatasetError(f"{labels_path}: label {labels.max()} is out of range 0..9")
    return images, labels


def load_mnist(split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split: ``images`` uint8 (N, 28, 28) and ``labels`` uint8 (N,).

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000 images). ``root`` is the
    folder that holds the ``.gz`` files and ``SHA256SUMS.uncompressed`` (default
    ``data/mnist`` of the project). The arrays are read-only and cached for the process;
    copy them to modify them. Raises :class:`DatasetError` if a file is missing or corrupt.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; valid splits are {sorted(SPLITS)}")
    root = DEFAULT_ROOT if root is None else Path(root)
    return _load(split, root.resolve())


def to_float(images: np.ndarray) -> np.ndarray:
    """Turn uint8 images (N, 28, 28) into the networks' float32 input (N, 1, 28, 28).

    Each value is ``float32(pixel) / float32(255)``, an IEEE float32 division, correctly
    rounded. This exact definition is part of the numerics spec (docs/numerics.md, "Input
    quantization"): the golden model quantizes these very floats.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    return (images.astype(np.float32) / np.float32(255))[:, None, :, :]
