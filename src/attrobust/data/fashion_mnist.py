"""Fashion-MNIST read directly from the standard IDX files (gzipped or raw).

The Debian package ``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist``. The files are
parsed here rather than through a checksum-verifying downloader, whose MD5 of the gzip container would reject
re-compressed files whose content is identical.

IDX format: two zero bytes, a dtype code (0x08 ubyte, 0x09 sbyte, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then the data in C order, big-endian.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from attrobust._checks import check_choice
from attrobust.data.base import ImageDataset

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "as root: apt-get install dataset-fashion-mnist"

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, detected from its first bytes) into a native-endian array.

    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` (naming the file, what was expected
    and what was found) for a bad magic number, an unknown dtype code, a truncated header or data, trailing bytes
    or a corrupt gzip stream.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: expected a valid gzip stream, got a corrupt one ({exc})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: expected a 4-byte IDX magic number, got a file of {len(raw)} bytes")
    if raw[:2] != b"\x00\x00":
        raise ValueError(f"{path}: expected an IDX magic number starting with 0x0000, got 0x{raw[:4].hex()}")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: expected an IDX dtype code in ({known}), got 0x{code:02x}")
    if ndim < 1:
        raise ValueError(f"{path}: expected an IDX file with at least 1 dimension, got 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: expected a header of {header} bytes for {ndim} dims, got {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated data" if got < expected else "trailing bytes"
        raise ValueError(f"{path}: expected {expected} data bytes for shape {dims} {dtype.name}, got {got} ({what})")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def fashion_mnist_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched, in order: ``data_dir`` and ``data_dir/fashion-mnist`` when given; otherwise
    ``$ATTROBUST_DATA/fashion-mnist`` (when the variable is set) and ``/usr/share/datasets/fashion-mnist``."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    env = os.environ.get("ATTROBUST_DATA")
    return ([Path(env) / "fashion-mnist"] if env else []) + [SYSTEM_DIR]


def find_fashion_mnist_files(split: str, data_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Paths ``(images, labels)`` of one split from the first searched directory holding both files.

    Each file may be gzipped (``train-images-idx3-ubyte.gz``) or raw (``train-images-idx3-ubyte``). Raises
    ``FileNotFoundError`` listing the directories searched, the file names expected and how to install them.
    """
    check_choice(split, "split", ("train", "test"))
    stems = FASHION_MNIST_FILES[split]
    dirs = fashion_mnist_dirs(data_dir)
    for directory in dirs:
        found = [_first_file(directory, stem) for stem in stems]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    names = ", ".join(f"{s}.gz (or {s})" for s in stems)
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files not found; searched: {', '.join(map(str, dirs))}; expected files: {names}. "
        f"Install them ({INSTALL_HINT}) or put the IDX files in a directory passed as data_dir / ATTROBUST_DATA"
    )


def _first_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


@functools.lru_cache(maxsize=4)
def _read_split(images_path: str, labels_path: str, stamp: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N, H, W)`` and int64 labels ``(N,)``; cached per paths and (mtime, size) ``stamp``."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels (one per image in {images_path}), got {labels.shape[0]}"
        )
    return images, labels.astype(np.int64)


def load_fashion_mnist(split: str = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST as an :class:`ImageDataset` (60000 train / 10000 test images for the standard files).

    Images are float32 ``(N, 1, H, W)`` (28x28 for the standard files) with values ``k/255``; labels int64
    ``(N,)`` in 0..9 named by ``FASHION_MNIST_CLASSES``. See :func:`find_fashion_mnist_files` for the lookup.
    """
    images_path, labels_path = find_fashion_mnist_files(split, data_dir)
    stamp = tuple(v for p in (images_path, labels_path) for v in (p.stat().st_mtime_ns, p.stat().st_size))
    codes, labels = _read_split(str(images_path.resolve()), str(labels_path.resolve()), stamp)
    images = torch.from_numpy(codes).unsqueeze(1).float().div_(255.0)
    return ImageDataset(images, torch.from_numpy(labels.copy()), FASHION_MNIST_CLASSES, "fashion_mnist")
